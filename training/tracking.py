"""MLflow tracking for every entry point: where runs go, which run is active, what is logged,
and how a registered model of any kind is logged, loaded and made to exist.

Experiment selection is right under `mlflow run`: the launcher creates the run in the experiment
it was asked for (`--experiment-name`, or MLflow's default) and passes its id in MLFLOW_RUN_ID;
`start_run` then resumes that run and never selects another experiment (selecting one makes
MLflow refuse the run: "active experiment ID does not match environment run ID").

Nothing here runs at import time: entry points call `setup_tracking` first.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo

from training.data import PROJECT_ROOT
from training.registry import ModelNotFoundError, check_model_name, resolve_version

__all__ = [
    "DEFAULT_DB",
    "TrackingError",
    "artifact_location",
    "ensure_registered",
    "launched_run_id",
    "load_model",
    "log_model",
    "log_params",
    "run_name_of",
    "setup_tracking",
    "start_run",
    "tracking_uri",
    "use_experiment",
]

DEFAULT_DB = PROJECT_ROOT / "mlflow.db"
MODEL_ARTIFACT = "model_dir"  # the artifact every pyfunc adapter loads its model from
PYFUNC_FILE = "pyfunc_model.py"  # beside the model's class, unless it names PYFUNC_CODE
log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """Raised when the tracking server cannot be reached."""


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the project's SQLite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"


def setup_tracking(check_server: bool = True) -> str:
    """Point MLflow at the tracking store and, for a server, check it answers before any work.

    Returns:
        The tracking URI in use.
    """
    uri = tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri  # Ray workers and subprocesses inherit it
    logging.getLogger("mlflow.pyfunc").addFilter(_not_validation_notice)  # added once
    if not uri.startswith(("http://", "https://")):
        # artifacts are local files, copied in milliseconds: MLflow's download bars were only
        # noise after each logged model (a server's downloads keep them)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    if check_server and uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as resp:
                resp.read()
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(
                f"MLflow tracking server at {uri} is not reachable ({exc}); start it with "
                "`mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri "
                "sqlite:///mlflow.db` or unset MLFLOW_TRACKING_URI to use the local store"
            ) from exc
    return uri


# MLflow logs this for every model logged with an input example, as all of ours are: a line per
# walk-forward window between the windows' results. A mismatch still raises.
VALIDATION_NOTICE = "Validating input example against model signature"


def _not_validation_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(VALIDATION_NOTICE)


def artifact_location() -> str | None:
    """For a SQLite store, artifacts go to mlruns/ beside the database file (independent of the
    working directory); a tracking server decides for itself."""
    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()


def use_experiment(name: str) -> str:
    """Select (creating if needed) an experiment; SQLite stores keep artifacts beside the file.

    Returns:
        The experiment id.
    """
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = mlflow.create_experiment(name, artifact_location=artifact_location())
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def launched_run_id() -> str | None:
    """The run `mlflow run` created for this process, until it has been resumed."""
    return os.environ.get("MLFLOW_RUN_ID") or None


def run_name_of(*parts: object) -> str:
    """A readable run name from its parts: ("lstm", "BTC/USDT", "1h") -> "lstm_BTCUSDT_1h"."""
    return "_".join(str(p).replace("/", "") for p in parts if p not in (None, ""))


def _current_experiment_name() -> str:
    """The experiment MLflow has selected, if it exists in the current store, else "Default".

    MLflow keeps the selection per process; after the tracking URI changes it may name an
    experiment of another store, and a run started there fails with "No Experiment with id".
    """
    from mlflow.tracking.fluent import _get_experiment_id  # MLflow's own resolution order

    experiment_id = _get_experiment_id()
    try:
        return mlflow.get_experiment(experiment_id).name if experiment_id else "Default"
    except MlflowException:
        return "Default"


@contextmanager
def start_run(
    experiment_name: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, object] | None = None,
    nested: bool = False,
) -> Iterator[Run]:
    """Start (or resume) the MLflow run an entry point logs into.

    Under `mlflow run` (MLFLOW_RUN_ID set, no run active) it resumes the launcher's run in the
    launcher's experiment, whatever `experiment_name` says. A nested run goes under the active
    run, in its experiment. Otherwise it selects (creating if needed) `experiment_name`, or
    MLflow's active/default experiment when None.

    Args:
        experiment_name: the experiment outside `mlflow run`.
        run_name: a readable name (see run_name_of); it also renames an `mlflow run` run.
        tags: set on the run (stringified).
        nested: start a child of the active run.
    """
    launched = launched_run_id()
    active = mlflow.active_run()
    if launched and active is None:
        # the launcher's experiment, so a stale selection cannot make MLflow refuse the run
        mlflow.set_experiment(experiment_id=mlflow.get_run(launched).info.experiment_id)
        context = mlflow.start_run(run_id=launched, run_name=run_name)
    elif nested and active is not None:
        context = mlflow.start_run(run_name=run_name, nested=True)
    else:
        use_experiment(experiment_name or _current_experiment_name())
        context = mlflow.start_run(run_name=run_name, nested=nested and active is not None)
    with context as run:
        if tags:
            mlflow.set_tags({k: str(v) for k, v in tags.items()})
        yield run


def log_params(params: Mapping[str, object]) -> None:
    """Log parameters to the active run, each once.

    `mlflow run` has already logged the entry point's raw parameters (e.g. symbols="" or
    epochs="100.0"); a parameter cannot change, so a resolved value that differs from the one
    logged goes to a `resolved.<key>` tag instead.
    """
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_params needs an active run: wrap it in training.tracking.start_run")
    logged = mlflow.get_run(run.info.run_id).data.params
    fresh = {k: v for k, v in params.items() if k not in logged}
    if fresh:
        mlflow.log_params(fresh)
    resolved = {
        f"resolved.{k}": str(v) for k, v in params.items() if k in logged and logged[k] != str(v)
    }
    if resolved:
        mlflow.set_tags(resolved)


def _pyfunc_code(model: object) -> Path:
    """The models-from-code file that loads this kind of model: the class's PYFUNC_CODE, or
    pyfunc_model.py in the module's directory."""
    explicit = getattr(model, "PYFUNC_CODE", None)
    if explicit:
        return Path(explicit)
    path = Path(sys.modules[type(model).__module__].__file__).with_name(PYFUNC_FILE)
    if not path.is_file():
        raise TypeError(
            f"{type(model).__name__} has no pyfunc adapter: expected {path} or a PYFUNC_CODE "
            "attribute naming a models-from-code file"
        )
    return path


def _signature(model: object, example: Any) -> ModelSignature | None:
    """Outputs from the model's own predict on the example; inputs left open on purpose.

    A tensor input schema would make MLflow refuse nested lists, float32 arrays and the 4-D
    multi-asset windows that the model checks itself (with errors naming the window and bar).
    Models without `predict` get the signature MLflow infers from their adapter's type hints.
    """
    predict = getattr(model, "predict", None)
    if example is None or predict is None:
        return None
    return ModelSignature(inputs=None, outputs=infer_signature(example, predict(example)).outputs)


def log_model(
    model: object,
    registered_name: str | None = None,
    input_example: Any = None,
    name: str = "model",
) -> ModelInfo:
    """Log a model (a Forecaster, a SentimentAnalyzer, any object with `save(directory)` and a
    pyfunc adapter) as a models-from-code pyfunc in the active run, and register it.

    Args:
        model: the model object; `save(dir)` writes what its adapter loads from the
            "model_dir" artifact.
        registered_name: register the logged model under this name (None: log only).
        input_example: a few inputs; None asks the model's `input_example()` if it has one.
        name: the artifact path in the run ("model": runs:/<run_id>/model).

    Returns:
        MLflow's ModelInfo (model_uri, registered_model_version, signature).
    """
    if registered_name is not None:
        check_model_name(registered_name)
    if input_example is None and callable(getattr(model, "input_example", None)):
        input_example = model.input_example()
    code = _pyfunc_code(model)
    package = Path(sys.modules[type(model).__module__.split(".")[0]].__file__).parent
    context = start_run() if mlflow.active_run() is None else nullcontext()
    with context, tempfile.TemporaryDirectory() as tmp:
        model_dir = model.save(Path(tmp) / MODEL_ARTIFACT)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(code),
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(package)],
            registered_model_name=registered_name,
            signature=_signature(model, input_example),
            input_example=input_example,
            pip_requirements=[],  # runs in the project environment; see constraints.txt
        )


def load_model(name: str, version: str | int = "latest") -> tuple[Any, ModelVersion]:
    """Load a registered model of any kind through its pyfunc adapter.

    Args:
        name: the registered model name.
        version: "latest", a version number or an alias such as "production".

    Returns:
        (the model object inside: a Forecaster, a SentimentAnalyzer, ..., the resolved version).

    Raises:
        ModelNotFoundError: unknown name, version or alias (the message lists what exists).
    """
    mv = resolve_version(name, version)
    adapter = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}").unwrap_python_model()
    # adapters name their object `model`; the sentiment adapter and older ones another name
    for attribute in ("model", "forecaster", "analyzer"):
        if hasattr(adapter, attribute):
            return getattr(adapter, attribute), mv
    raise TypeError(f"models:/{name}/{mv.version} has no model object in its pyfunc adapter")


def ensure_registered(name: str, train_fn: Callable[[], object], what: str = "") -> str:
    """The latest version of `name`, calling `train_fn()` to train and register one first when
    the registry has none.

    Args:
        name: the registered model name.
        train_fn: trains and registers `name` (its return value is ignored).
        what: how the model will be trained and about how long, for the log line.

    Returns:
        The latest registered version, as MLflow spells it ("1").
    """
    try:
        return str(resolve_version(name, "latest").version)
    except ModelNotFoundError:
        log.info("no registered model %r: training one%s", name, f" ({what})" if what else "")
    start = time.perf_counter()
    train_fn()
    version = str(resolve_version(name, "latest").version)
    log.info("registered %s v%s in %.0f s", name, version, time.perf_counter() - start)
    return version
