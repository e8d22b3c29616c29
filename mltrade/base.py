"""How every `mltrade` command runs: user errors as one `error:` line and exit code 2, a bug with
its traceback, logging set up once, plain --help text."""

from __future__ import annotations

import logging
import sys

import typer
from typer.core import TyperCommand, TyperGroup

__all__ = ["USER_ERROR_EXIT", "Command", "Group", "is_user_error", "new_app", "setup_logging"]

USER_ERROR_EXIT = 2
# Errors of these classes are the user's to fix. Only the modules already imported can have
# raised one, so the check never imports a heavy module (torch, transformers) just to look.
USER_ERRORS = {
    "training.cluster": ("ClusterCapacityError",),
    "training.distributed": ("ClusterCapacityError",),
    "training.data": ("DataSourceError",),
    "training.tracking": ("TrackingError",),
    "sentiment.model": ("SentimentModelError",),
    "sentiment.news": ("NewsSourceError",),
}


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines with time, level and logger, once per process."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def is_user_error(exc: BaseException) -> bool:
    """Whether `exc` says what the user must change (bad input) rather than a bug."""
    if isinstance(exc, (ValueError, LookupError, FileNotFoundError, typer.TyperException)):
        return True
    for module, names in USER_ERRORS.items():
        loaded = sys.modules.get(module)
        if loaded and any(isinstance(exc, getattr(loaded, n, ())) for n in names):
            return True
    return False


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, typer.TyperException):  # Click's (vendored by Typer) usage errors
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        text = exc.format_message() + hint
    else:
        text = str(exc) or type(exc).__name__
    return "error: " + " ".join(text.split())


class _UserErrors:
    """Runs a Click command so that user errors end as one `error:` line and exit code 2."""

    def main(
        self,
        args=None,
        prog_name=None,
        complete_var=None,
        standalone_mode=True,
        raise_errors=False,
        **extra,
    ):
        """Run the command.

        Args:
            standalone_mode: exit with the code (0, 2 for a user error) instead of returning it.
            raise_errors: called as a Python function (the `python -m` shims' `main(argv)`):
                return the command's result and let the library's errors propagate; --help and
                bad options still exit (code 0 and 2), like argparse.
        """
        setup_logging()
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            rv = 130
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # `mltrade` alone: show the help
                typer.echo(exc.format_message())
                rv = 0
            elif not is_user_error(exc) or (
                raise_errors and not isinstance(exc, typer.TyperException)
            ):
                raise
            else:
                typer.echo(_one_line(exc), err=True)
                rv = USER_ERROR_EXIT
        if raise_errors:
            if isinstance(rv, int):  # --help, a bad option, Ctrl-C: commands never return ints
                sys.exit(rv)
            return rv
        code = rv if isinstance(rv, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


class Command(_UserErrors, TyperCommand):
    """A subcommand that can also be run on its own (the `python -m` shims)."""


class Group(_UserErrors, TyperGroup):
    """The app and its command groups."""


def new_app(name: str | None = None, help: str | None = None) -> typer.Typer:
    """A Typer app with this CLI's error handling and plain --help text."""
    return typer.Typer(
        name=name,
        help=help,
        cls=Group,
        no_args_is_help=True,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
