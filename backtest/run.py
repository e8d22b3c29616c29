"""`python -m backtest.run {backtest,walk-forward}`: the `mltrade` commands of the same names
(library: backtest.jobs).

python -m backtest.run backtest --model-name lstm_price_forecast --symbol BTC/USDT --days-back 90
python -m backtest.run walk-forward --symbol BTC/USDT --days-back 0 --train-days 180 --epochs 5
"""

from mltrade.cli import run_command


def main(argv: list[str] | None = None):
    """Run `mltrade` (argv None: as a program on sys.argv); returns the command's result."""
    return run_command((), argv, "python -m backtest.run")


if __name__ == "__main__":
    main()
