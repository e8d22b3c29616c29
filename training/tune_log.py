"""The MLflow record of a sweep, written by the driver after the trials (trials never log):
the sweep's settings on the parent run, one nested run per trial with its per-epoch losses, the
best trial's full train-run record and model, and the winning config on the registered version.
"""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from training.experiment import input_example, log_fit
from training.loaders import FitResult
from training.specs import TrialSummary, TuneSettings
from training.tracking import log_model, log_params, start_run

MLFLOW_BATCH = 1000  # MLflow caps a log_batch at 1000 metrics


def log_sweep_settings(settings: TuneSettings, space: dict) -> None:
    """The sweep's settings on the active (parent) run, prefixed: under `mlflow run` the parent
    already holds the entry point's raw params."""
    data = settings.data
    values = {
        "model_type": settings.model_type,
        "model_name": settings.model_name,
        "symbols": ",".join(data.symbols),
        "interval": data.interval,
        "days_back": data.days_back,
        "data_source": data.source or data.exchange,
        "num_samples": settings.num_samples,
        "max_concurrent_trials": settings.max_concurrent_trials,
        "epochs": settings.epochs,
        "cpus_per_trial": settings.cpus_per_trial,
        "gpus_per_trial": settings.gpus_per_trial,
        "use_optuna": settings.use_optuna,
        "scheduler": settings.scheduler,
        "grace_period": settings.grace_period,
        "reduction_factor": settings.reduction_factor,
        "seed": settings.seed,
    }
    log_params({f"sweep.{k}": v for k, v in values.items()})
    mlflow.log_dict({k: str(v) for k, v in space.items()}, "search_space.json")


def log_trial_epochs(run_id: str, trial: TrialSummary) -> None:
    """Per-epoch losses of a trial into its nested run, in batches."""
    now = int(datetime.now(UTC).timestamp() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for key, values in (("train_loss", trial.train_loss), ("val_loss", trial.val_loss))
        for step, value in enumerate(values)
    ]
    for start in range(0, len(metrics), MLFLOW_BATCH):
        MlflowClient().log_batch(run_id, metrics=metrics[start : start + MLFLOW_BATCH])


def log_sweep(
    settings: TuneSettings, trials: list[TrialSummary], best_index: int, best: FitResult
) -> tuple[str | None, str]:
    """One nested run per trial under the active parent run; the best one gets the train-run
    record and the model (registered unless settings.register is off).

    Returns:
        The registered version (None when not registering) and the best trial's run id.
    """
    version, best_run_id = None, ""
    for index, trial in enumerate(trials):
        with start_run(run_name=f"trial_{index:03d}", nested=True) as run:
            tags = {"trial_id": trial.trial_id, "stopped_by": trial.stopped_by}
            mlflow.set_tags(tags | ({"error": trial.error[:5000]} if trial.error else {}))
            if trial.epochs:
                log_trial_epochs(run.info.run_id, trial)
                mlflow.log_metrics(
                    {"best_val_loss": trial.best_val_loss, "epochs_run": trial.epochs}
                )
            if index != best_index:
                log_params(trial.config)
                continue
            log_fit(best, settings.data)  # the same params, metrics and plots as a train run
            info = log_model(
                best.forecaster,
                settings.model_name if settings.register else None,
                input_example=input_example(best),
            )
            best_run_id = run.info.run_id
            if info.registered_model_version is not None:
                version = str(info.registered_model_version)
    best_trial = trials[best_index]
    mlflow.log_metrics(
        {"best_val_loss": best_trial.best_val_loss}
        | {f"best_test_{k}": v for k, v in best.metrics.items()}
    )
    mlflow.set_tags({"best_run_id": best_run_id, "best_trial_id": best_trial.trial_id})
    mlflow.log_dict(dict(best_trial.config), "best_config.json")
    return version, best_run_id


def tag_best_version(model_name: str, version: str, best: TrialSummary) -> None:
    """The winning hyperparameters and validation loss, on the registered version itself."""
    tags = {f"param.{k}": v for k, v in best.config.items()}
    tags["tune.best_val_loss"] = f"{best.best_val_loss:.6g}"
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, str(value))
