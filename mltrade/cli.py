"""The `mltrade` command line: one Typer app, one way to fail.

    mltrade --help
    mltrade train --epochs 20 --json
    mltrade deploy promote --model-uri runs:/<run_id>/model --model-name lstm_price_forecast

A user error (bad data, an unknown model, a bad option value, a cluster too small, ...) prints one
line, `error: ...`, on stderr and exits with code 2; a bug keeps its traceback. Logging is set
up once, here. `python -m training.train` and the other module entry points run the same
commands through `run_command`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import typer

from mltrade.base import Command, new_app

__all__ = ["app", "main", "run_command"]


def _build() -> typer.Typer:
    from mltrade import backtest, data, deploy, sentiment, serve, train

    root = new_app("mltrade", help=__doc__.split("\n\n")[0])
    root.command("train", cls=Command)(train.train)
    root.command("tune", cls=Command)(train.tune)
    root.add_typer(deploy.app, name="deploy")
    root.command("backtest", cls=Command)(backtest.backtest)
    root.command("walk-forward", cls=Command)(backtest.walk_forward)
    root.command("serve", cls=Command)(serve.serve)
    root.add_typer(sentiment.app, name="sentiment")
    root.add_typer(data.app, name="data")
    return root


app = _build()


def run_command(path: Sequence[str], argv: Sequence[str] | None, prog_name: str):
    """Run one (sub)command of the app as its own program: the `python -m` shims' `main`.

    Args:
        path: the command's names below the app, e.g. ("train",) or ("sentiment", "train");
            () for the whole app.
        argv: its arguments; None runs it as a program on sys.argv[1:] (exit code 0 or 2, one
            `error:` line). Given, it runs as a Python function: it returns the command's
            result and raises the library's errors (--help and bad options exit, like argparse).
        prog_name: shown in its usage line, e.g. "python -m training.train".
    """
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    if argv is None:
        return command.main(sys.argv[1:], prog_name=prog_name)
    return command.main(list(argv), prog_name=prog_name, raise_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The `mltrade` console script."""
    command = typer.main.get_command(app)
    return command.main(None if argv is None else list(argv), prog_name="mltrade")
