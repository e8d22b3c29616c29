"""`make run`, `python -m deployments.run`: the `mltrade serve` command (library:
deployments.launcher.serve_app).

    python -m deployments.run [--port 8000] [--model-name lstm_price_forecast] [--no-sentiment]
"""

from mltrade.cli import run_command


def main(argv: list[str] | None = None):
    """Run `mltrade serve` (argv None: as a program on sys.argv)."""
    return run_command(("serve",), argv, "python -m deployments.run")


if __name__ == "__main__":
    main()
