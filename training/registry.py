"""MLflow model registry helpers: resolve `latest` / a number / an alias, promote and roll back
aliases, list models with their test metrics. Names are checked by MLflow's rules and quoted for
search filters; versions are ASCII digits only."""

from __future__ import annotations

import json
import re

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_model_name

ALIAS_HISTORY_TAG = "alias_history.{alias}"
_VERSION = re.compile(r"[0-9]+")  # str.isdigit() would accept "²" or "٣"


class ModelNotFoundError(LookupError):
    """Raised for an unknown model name, version or alias; the message lists what exists."""


class UnknownModelError(ModelNotFoundError):
    """No registered model of that name (as opposed to an unknown version or alias of one)."""


class InvalidModelNameError(ValueError):
    """A registered model name MLflow would refuse (empty, '/' or ':') or cannot search for."""


def check_model_name(name: str) -> str:
    """The name, if MLflow accepts it as a registered model name (and it can be searched for).

    Raises:
        InvalidModelNameError: what is wrong with it.
    """
    if not isinstance(name, str):
        raise InvalidModelNameError(f"a model name must be a string, got {name!r}")
    try:
        _validate_model_name(name)
    except MlflowException as exc:
        raise InvalidModelNameError(f"invalid model name {name!r}: {exc.message}") from None
    if "'" in name and '"' in name:
        raise InvalidModelNameError(
            f"invalid model name {name!r}: it holds both ' and \", which no MLflow search "
            "filter can quote"
        )
    return name


def quote_filter_value(value: str) -> str:
    """`value` as a search-filter string literal: single quotes, or double quotes when it holds
    a single quote (MLflow's filter parser has no escapes)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise InvalidModelNameError(f"{value!r} holds both ' and \" and cannot be searched for")


def parse_version(text: str | int) -> int | None:
    """A version number from "3" or 3; None for anything else (an alias, "latest", "²")."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text if text >= 1 else None
    wanted = str(text).strip()
    return int(wanted) if _VERSION.fullmatch(wanted) else None


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    check_model_name(name)
    versions = client.search_model_versions(f"name={quote_filter_value(name)}")
    if not versions:
        known = sorted(m.name for m in client.search_registered_models())
        raise UnknownModelError(f"no registered model {name!r}; registered models: {known}")
    return sorted(versions, key=lambda v: int(v.version))


def resolve_version(
    name: str, version: str | int = "latest", tracking_uri: str | None = None
) -> ModelVersion:
    """The model version meant by `latest`, a version number or an alias such as `production`.

    Args:
        name: the registered model name.
        version: "latest", a version number or an alias.
        tracking_uri: the registry to ask (None: MLflow's current tracking URI).

    Raises:
        UnknownModelError: no model of that name (the message lists the registered ones).
        ModelNotFoundError: no such version or alias (the message lists those that exist).
    """
    client = MlflowClient(tracking_uri)
    versions = _versions(client, name)
    wanted = str(version).strip()
    number = parse_version(version)
    if wanted == "latest":
        return versions[-1]
    if number is not None:
        for v in versions:
            if int(v.version) == number:
                return v
    elif wanted:
        try:
            return client.get_model_version_by_alias(name, wanted)
        except MlflowException:
            pass
    raise ModelNotFoundError(
        f"model {name!r} has no version or alias {wanted!r}; {_choices(client, name, versions)}"
    )


def _choices(client: MlflowClient, name: str, versions: list[ModelVersion]) -> str:
    aliases = sorted(client.get_registered_model(name).aliases)
    return f"versions {[int(v.version) for v in versions]}, aliases {aliases}, or 'latest'"


def version_choices(name: str, tracking_uri: str | None = None) -> str:
    """What a version of `name` may be: "versions [1, 2], aliases ['production'], or 'latest'".

    Raises:
        UnknownModelError: no model of that name.
    """
    client = MlflowClient(tracking_uri)
    return _choices(client, name, _versions(client, name))


def load_forecaster(name: str, version: str | int = "latest"):
    """Alias of training.tracking.load_model for the many call sites that load a forecaster.

    Returns:
        (forecaster, the resolved ModelVersion).
    """
    from training.tracking import load_model  # tracking builds on this module

    return load_model(name, version)


def _run_id_of(model_uri: str) -> str | None:
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].split("/")[0]
    return None


def _check_run(client: MlflowClient, model_uri: str, run_id: str | None) -> None:
    """A runs:/ URI must name an existing run before anything is registered from it."""
    if not model_uri.startswith(("runs:/", "models:/")):
        raise ValueError(
            f"model_uri must be runs:/<run_id>/<path> or models:/<name>/<version>, "
            f"got {model_uri!r}"
        )
    if run_id is None:
        return
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ModelNotFoundError(
            f"no run {run_id!r} in the tracking store {mlflow.get_tracking_uri()} (from "
            f"model_uri {model_uri!r}); copy the run id from `mltrade train` or the MLflow UI"
        ) from None


def _alias_history(client: MlflowClient, name: str, alias: str) -> list[str]:
    tags = client.get_registered_model(name).tags
    return json.loads(tags.get(ALIAS_HISTORY_TAG.format(alias=alias), "[]"))


def promote(model_uri: str, name: str, alias: str = "production") -> ModelVersion:
    """Point `alias` at the version made from model_uri, registering it if needed.

    The version that held the alias before is remembered so `rollback` can return to it.
    """
    client = MlflowClient()
    check_model_name(name)
    run_id = _run_id_of(model_uri)
    _check_run(client, model_uri, run_id)
    if model_uri.startswith("models:/"):
        model_name, _, version = model_uri[len("models:/") :].partition("/")
        mv = resolve_version(model_name, version or "latest")
    else:
        query = f"name={quote_filter_value(name)} and run_id={quote_filter_value(run_id or '')}"
        found = client.search_model_versions(query) if run_id else []
        mv = found[0] if found else mlflow.register_model(model_uri, name)
    try:
        previous = str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        previous = None
    if previous != str(mv.version):
        if previous is not None:
            history = [*_alias_history(client, name, alias), previous]
            client.set_registered_model_tag(
                name, ALIAS_HISTORY_TAG.format(alias=alias), json.dumps(history)
            )
        client.set_registered_model_alias(name, alias, mv.version)
    return client.get_model_version(name, mv.version)


def rollback(name: str, alias: str = "production") -> ModelVersion:
    """Return `alias` to the version that held it before the last promotion."""
    client = MlflowClient()
    _versions(client, name)
    history = _alias_history(client, name, alias)
    if not history:
        raise ModelNotFoundError(
            f"alias {alias!r} of model {name!r} has no earlier version to roll back to"
        )
    target = history.pop()
    client.set_registered_model_tag(
        name, ALIAS_HISTORY_TAG.format(alias=alias), json.dumps(history)
    )
    client.set_registered_model_alias(name, alias, target)
    return client.get_model_version(name, target)


def list_models(name: str | None = None) -> list[dict]:
    """Registered models with each version's aliases, run and test metrics."""
    client = MlflowClient()
    if name:
        _versions(client, name)  # a clear error for an unknown name
    models = [client.get_registered_model(name)] if name else client.search_registered_models()
    out = []
    for model in models:
        versions = []
        by_version: dict[str, list[str]] = {}
        for alias, number in model.aliases.items():
            by_version.setdefault(str(number), []).append(alias)
        for v in _versions(client, model.name):
            metrics = client.get_run(v.run_id).data.metrics if v.run_id else {}
            versions.append(
                {
                    "version": int(v.version),
                    "aliases": sorted(by_version.get(str(v.version), [])),
                    "run_id": v.run_id,
                    "created": v.creation_timestamp,
                    "test_metrics": {
                        k.removeprefix("test_"): val
                        for k, val in sorted(metrics.items())
                        if k.startswith("test_")
                    },
                }
            )
        out.append({"name": model.name, "aliases": dict(model.aliases), "versions": versions})
    return out
