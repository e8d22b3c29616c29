"""`python -m mltrade ...`: the same as the `mltrade` console script."""

from mltrade.cli import main

main()
