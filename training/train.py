"""`python -m training.train`: the `mltrade train` command (library: training.experiment).

python -m training.train --model-type lstm --symbol BTC/USDT --data-path sample --epochs 20
"""

from mltrade.cli import run_command
from training.data import load_data  # the guide's `from training.train import load_data, main`

__all__ = ["load_data", "main"]


def main(argv: list[str] | None = None):
    """Run `mltrade train` (argv None: as a program on sys.argv)."""
    return run_command(("train",), argv, "python -m training.train")


if __name__ == "__main__":
    main()
