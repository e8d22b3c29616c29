"""`python -m training.deploy`: the `mltrade deploy` commands (library: training.registry).

    python -m training.deploy promote --model-uri runs:/<run_id>/model \
        --model-name lstm_price_forecast --stage production
    python -m training.deploy --action rollback --model-name lstm_price_forecast
    python -m training.deploy list
"""

from mltrade.cli import run_command


def main(argv: list[str] | None = None):
    """Run `mltrade deploy` (argv None: as a program on sys.argv)."""
    return run_command(("deploy",), argv, "python -m training.deploy")


if __name__ == "__main__":
    main()
