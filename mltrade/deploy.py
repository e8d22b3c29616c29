"""`mltrade deploy {promote,rollback,list}`: move registry aliases, list registered models.

`mltrade deploy --action promote --model-uri ... --model-name ...` does the same as the
subcommand: the MLproject `deploy` entry (one command for every action) runs that form.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mltrade.base import Command, new_app
from mltrade.options import Json, ModelName, emit

app = new_app(help="Promote a model version to an alias, roll an alias back, list models.")

ModelUri = Annotated[
    str, typer.Option("--model-uri", help="runs:/<run_id>/model or models:/<name>/<version>.")
]
Stage = Annotated[
    str,
    typer.Option("--stage", help="The alias to move (MLflow aliases replace the old stages)."),
]
ACTIONS = ("promote", "rollback", "list")


def _version_row(mv) -> dict:
    return {"name": mv.name, "version": int(mv.version), "run_id": mv.run_id}


@app.command("promote", cls=Command)
def promote(
    model_uri: ModelUri,
    model_name: ModelName = "lstm_price_forecast",
    stage: Stage = "production",
    json_out: Json = False,
) -> dict:
    """Point the alias at the version made from --model-uri, registering it if needed."""
    from training import registry
    from training.tracking import setup_tracking

    setup_tracking()
    mv = registry.promote(model_uri, model_name, stage)
    out = {**_version_row(mv), "alias": stage}
    emit(out, json_out, [f"{model_name}@{stage} -> version {mv.version} (run {mv.run_id})"])
    return out


@app.command("rollback", cls=Command)
def rollback(
    model_name: ModelName = "lstm_price_forecast",
    stage: Stage = "production",
    json_out: Json = False,
) -> dict:
    """Return the alias to the version that held it before the last promotion."""
    from training import registry
    from training.tracking import setup_tracking

    setup_tracking()
    mv = registry.rollback(model_name, stage)
    out = {**_version_row(mv), "alias": stage}
    emit(out, json_out, [f"{model_name}@{stage} rolled back to version {mv.version}"])
    return out


@app.command("list", cls=Command)
def list_models(
    model_name: Annotated[
        str, typer.Option("--model-name", help="Only this model (default: every model).")
    ] = "",
    json_out: Json = False,
) -> list[dict]:
    """Registered models with each version's aliases, run and test metrics (JSON)."""
    import json

    from training import registry
    from training.tracking import setup_tracking

    setup_tracking()
    models = registry.list_models(model_name or None)
    emit(models, json_out, [json.dumps(models, indent=2, default=str)])
    return models


@app.callback(invoke_without_command=True)
def deploy(
    ctx: typer.Context,
    action: Annotated[
        str | None,
        typer.Option("--action", help="promote, rollback or list: the subcommand, as an option."),
    ] = None,
    model_uri: ModelUri = "",
    model_name: ModelName = "lstm_price_forecast",
    stage: Stage = "production",
) -> None:
    """Promote a model version to an alias, roll an alias back, list models."""
    if ctx.invoked_subcommand is not None:
        if action is not None:
            raise typer.BadParameter(
                "give --action or a subcommand, not both", param_hint="--action"
            )
        return
    if action is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    if action == "promote":
        if not model_uri:
            raise typer.BadParameter("promote needs --model-uri", param_hint="--model-uri")
        promote(model_uri, model_name, stage)
    elif action == "rollback":
        rollback(model_name, stage)
    elif action == "list":
        list_models(model_name)
    else:
        raise typer.BadParameter(f"{action!r} is not one of {ACTIONS}", param_hint="--action")
