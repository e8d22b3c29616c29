"""The `mltrade` command line: --help everywhere, user errors as one line and exit code 2,
--json output, MLproject-style numbers ("100.0"), and a real (tiny) training run."""

from __future__ import annotations

import json

import mlflow
import pytest
import typer
from typer.testing import CliRunner

from mltrade.cli import app

COMMANDS = [
    [],
    ["train"],
    ["tune"],
    ["deploy"],
    ["deploy", "promote"],
    ["deploy", "rollback"],
    ["deploy", "list"],
    ["backtest"],
    ["walk-forward"],
    ["serve"],
    ["sentiment"],
    ["sentiment", "train"],
    ["sentiment", "score"],
    ["data"],
    ["data", "fetch"],
    ["data", "validate"],
]
TINY = ["--days-back", "30", "--sequence-length", "24", "--param", "hidden_units=8"]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "mltrade")
def test_every_command_has_help(runner, command):
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: mltrade" in result.stdout and "--help" in result.stdout


def test_options_are_named_alike(runner):
    for command in (["train"], ["backtest"], ["walk-forward"], ["data", "fetch"]):
        out = runner.invoke(app, [*command, "--help"]).stdout
        for option in ("--symbol", "--data-path", "--interval", "--days-back", "--json"):
            assert option in out, (command, option)


def assert_user_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    # one `error:` line, last; log lines of the work done before the error may precede it
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["train", "--epochs", "1.5"], ("--epochs", "not a whole number")),
        (["train", "--epochs", "ten"], ("--epochs",)),
        (["train", "--no-such-option"], ("--no-such-option",)),
        (["tune", "--use-optuna", "maybe"], ("--use-optuna",)),
        (["deploy", "--action", "promote"], ("--model-uri",)),
        (["deploy", "--action", "retire"], ("retire",)),
        (["train", "--model-type", "gru", *TINY], ("gru", "lstm")),
        (["train", "--days-back", "-3"], ("days_back",)),
        (["data", "validate", "no/such/file.csv"], ("no/such/file.csv",)),
    ],
)
def test_user_errors_are_one_line_and_exit_2(runner, tracking, args, words):
    assert_user_error(runner.invoke(app, args), *words)


def test_registry_errors_are_one_line_and_exit_2(runner, tracking):
    assert_user_error(
        runner.invoke(app, ["deploy", "rollback", "--model-name", "nope"]), "no registered model"
    )
    assert_user_error(runner.invoke(app, ["deploy", "list", "--model-name", "a/b"]), "a/b")
    assert_user_error(
        runner.invoke(app, ["backtest", "--model-name", "nope", "--days-back", "10"]), "nope"
    )


def test_bad_candles_are_one_line_and_exit_2(runner, tracking, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close\n1,1,1,1,1\n")
    assert_user_error(runner.invoke(app, ["train", "--data-path", str(bad)]), str(bad), "volume")


def test_data_fetch_and_validate_print_json(runner, tmp_path):
    out = tmp_path / "btc.csv.gz"
    fetched = runner.invoke(
        app, ["data", "fetch", "--data-path", "sample", "--days-back", "20", "-o", str(out)]
    )
    assert fetched.exit_code == 0, fetched.output
    assert out.exists() and "wrote" in fetched.stdout
    result = runner.invoke(app, ["data", "validate", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["bars"] >= 20 * 24 - 24 and summary["source"] == str(out)


def test_train_in_another_experiment_prints_json(runner, tracking):
    result = runner.invoke(
        app,
        [
            "train",
            "--epochs",
            "1.0",  # MLproject passes numbers as floats
            *TINY,
            "--model-name",
            "cli_lstm",
            "--experiment-name",
            "cli_experiment",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["version"] == "1" and out["model_uri"] == f"runs:/{out['run_id']}/model"
    assert "rmse" in out["metrics"]
    run = mlflow.get_run(out["run_id"])
    assert mlflow.get_experiment(run.info.experiment_id).name == "cli_experiment"
    assert run.info.run_name == "lstm_BTCUSDT_1h" and run.data.params["epochs"] == "1"

    listed = runner.invoke(app, ["deploy", "list", "--model-name", "cli_lstm", "--json"])
    assert json.loads(listed.stdout)[0]["versions"][0]["version"] == 1
    promoted = runner.invoke(
        app, ["deploy", "promote", "--model-uri", out["model_uri"], "--model-name", "cli_lstm"]
    )
    assert promoted.exit_code == 0 and "cli_lstm@production -> version 1" in promoted.stdout


SHIMS = {
    "training.train": ("train",),
    "training.tune": ("tune",),
    "training.deploy": ("deploy",),
    "backtest.run": (),
    "sentiment.train": ("sentiment", "train"),
}


def parse(path: tuple[str, ...], args: list[str]):
    """Parse (without running) args as `python -m <shim>` would: the command reached, its params."""
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    while True:
        ctx = command.make_context("mltrade", list(args))
        sub = getattr(command, "commands", None)
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not sub or not rest or rest[0] not in sub:
            return command, ctx.params
        command, args = sub[rest[0]], rest[1:]


@pytest.mark.parametrize(
    "entry", ["train", "tune", "deploy", "backtest", "walk_forward", "train_sentiment"]
)
def test_mlproject_entries_parse_with_their_defaults(entry):
    """Each MLproject entry runs a `python -m` shim whose arguments the CLI accepts, with the
    floats MLproject passes for whole numbers ("365.0")."""
    import shlex
    from pathlib import Path

    from mlflow.projects._project_spec import load_project

    point = load_project(Path(__file__).resolve().parents[1]).get_entry_point(entry)
    params = {k: p.default for k, p in point.parameters.items()}
    floats = {
        k: f"{float(v):.1f}" for k, v in params.items() if point.parameters[k].type == "float"
    }
    argv = shlex.split(point.compute_command({**params, **floats}, storage_dir=None))
    assert argv[:2] == ["python", "-m"] and argv[2] in SHIMS
    command, values = parse(SHIMS[argv[2]], argv[3:])
    expected = {"walk_forward": "walk-forward", "train_sentiment": "train"}.get(entry, entry)
    assert command.name == expected
    for key, value in values.items():
        assert (
            not isinstance(value, float) or key not in floats or float(value) == float(floats[key])
        )


@pytest.mark.parametrize("command", [[], ["deploy"], ["sentiment"], ["data"]])
def test_a_group_alone_shows_its_help(runner, command):
    result = runner.invoke(app, command)
    assert result.exit_code == 0 and "Commands:" in result.stdout, result.output


def test_the_model_type_help_names_every_registered_type():
    from mltrade.train import CHOICES
    from training.models import MODEL_TYPES

    assert CHOICES == "{" + ",".join(sorted(MODEL_TYPES)) + "}"


def test_json_output_is_strict_with_infinite_metrics(capsys):
    """A profit factor with no losing trade is infinite; --json still prints valid JSON."""
    from mltrade.options import emit

    emit({"profit_factor": float("inf"), "trades": [{"pnl": float("-inf")}], "x": 1.5}, True, [])
    document = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)
    assert document == {"profit_factor": "inf", "trades": [{"pnl": "-inf"}], "x": 1.5}
