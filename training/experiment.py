"""One training run, recorded: load candles, fit (in process or on Ray Train), log the run's
parameters, metrics, plots and data provenance to MLflow, log and register the model.

```python
from training.experiment import train_model
from training.specs import DataSpec, TrainSettings
from training.models.lstm import LSTMModelConfig

result = train_model(TrainSettings(data=DataSpec(days_back=90), config=LSTMModelConfig(epochs=5)))
result.run_id, result.model_uri, result.version, result.metrics
```
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import mlflow
import numpy as np

from training.config import ModelConfig
from training.loaders import FitResult
from training.models import build_config, model_type_of
from training.specs import DataSpec, TrainResult, TrainSettings
from training.tracking import log_model, log_params, run_name_of, setup_tracking, start_run

__all__ = [
    "DEFAULT_EXPERIMENT",
    "input_example",
    "log_fit",
    "log_plots",
    "resolve_config",
    "run_tags",
    "train_model",
]

DEFAULT_EXPERIMENT = "lstm_forecasting"
log = logging.getLogger(__name__)


def resolve_config(settings: TrainSettings) -> ModelConfig:
    """The settings' model config, or the model type's defaults (num_assets from the symbols).

    Raises:
        ValueError: the config's class is another model type than `settings.model_type`.
    """
    if settings.config is None:
        return build_config(settings.model_type, {}, num_assets=len(settings.data.symbols))
    model_type = model_type_of(settings.config)
    if model_type != settings.model_type:
        raise ValueError(
            f"model_type {settings.model_type!r} does not match the config given "
            f"({type(settings.config).__name__} is {model_type!r})"
        )
    return settings.config


def run_tags(model_type: str, data: DataSpec, metadata: Mapping | None = None) -> dict[str, str]:
    """Searchable run tags: symbol, interval, model type and, after a fit, the data range."""
    tags = {
        "symbol": data.symbol,
        "symbols": ",".join(data.symbols),
        "interval": data.interval,
        "model_type": model_type,
    }
    if metadata:
        tags |= {k: str(metadata[k]) for k in ("data_start", "data_end", "data_sha256")}
    return tags


def log_fit(result: FitResult, data: DataSpec, num_workers: int = 0) -> None:
    """Parameters, test metrics, data provenance and plots of a finished fit, to the active run.

    Args:
        result: the fit (forecaster, history, test metrics, splits, test forecast).
        data: the candles it was trained on.
        num_workers: Ray Train workers (0: in process).
    """
    forecaster = result.forecaster
    model_type = model_type_of(forecaster.config)
    log_params(
        {
            **forecaster.config.to_dict(),
            "model_type": model_type,
            "symbols": ",".join(data.symbols),
            "interval": data.interval,
            "days_back": data.days_back,
            "data_source": data.source or data.exchange,
            "num_workers": num_workers,
        }
    )
    mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
    mlflow.log_metrics(
        {"best_epoch": result.history["best_epoch"][0], "interval_q": forecaster.interval_q}
    )
    mlflow.set_tags(run_tags(model_type, data, forecaster.metadata))
    mlflow.log_dict(forecaster.metadata, "data_metadata.json")
    log_plots(result)


def log_plots(result: FitResult) -> None:
    """The loss curves and the test split in return space (predictions.png), with the interval's
    coverage per month as a table (coverage_by_month.json), to the active run."""
    from training.evaluation import coverage_by_month, plot_forecast, plot_losses

    test = result.splits["test"]
    monthly = coverage_by_month(test.target_time, test.next_close, result.test_forecast)
    confidence = result.forecaster.confidence
    mlflow.log_dict(
        {"nominal": confidence, "months": monthly.to_dict(orient="records")},
        "coverage_by_month.json",
    )
    mlflow.log_figure(plot_losses(result.history), "loss_curves.png")
    figure = plot_forecast(
        test.target_time, test.next_close, result.test_forecast, confidence, monthly
    )
    mlflow.log_figure(figure, "predictions.png")


def input_example(result: FitResult) -> np.ndarray | None:
    """Real test windows as the model takes them (kept on the forecaster by the fit)."""
    return result.forecaster.input_example()


def _fit(frames: Mapping, config: ModelConfig, settings: TrainSettings) -> FitResult:
    if settings.num_workers > 0:
        from training.distributed import DistributedSettings, fit_forecaster_distributed

        return fit_forecaster_distributed(
            frames,
            config,
            settings.num_workers,
            DistributedSettings(cpus_per_worker=settings.cpus_per_worker),
        )
    from training.fit import fit_forecaster

    return fit_forecaster(frames, config)


def train_model(settings: TrainSettings) -> TrainResult:
    """Load the candles, fit, log everything to one MLflow run and register the model.

    Under `mlflow run` the run is the launcher's (whatever experiment it was given); otherwise
    it goes to `settings.experiment_name` (default "lstm_forecasting").

    Returns:
        The run id, the model's runs:/ URI, the registered version (None when not registering)
        and the test metrics.
    """
    setup_tracking()
    config = resolve_config(settings)
    model_type = model_type_of(config)
    frames = settings.data.load()  # bad data fails here, before a run is started
    with start_run(
        settings.experiment_name or DEFAULT_EXPERIMENT,
        run_name=run_name_of(model_type, settings.data.symbol, settings.data.interval),
        tags=run_tags(model_type, settings.data),
    ) as run:
        result = _fit(frames, config, settings)
        log_fit(result, settings.data, settings.num_workers)
        info = log_model(result.forecaster, settings.model_name if settings.register else None)
    version = info.registered_model_version
    version = None if version is None else str(version)
    log.info(
        "run %s: test %s; registered %s v%s",
        run.info.run_id,
        result.metrics,
        settings.model_name,
        version,
    )
    return TrainResult(
        run_id=run.info.run_id,
        model_uri=f"runs:/{run.info.run_id}/model",
        version=version,
        metrics=dict(result.metrics),
    )
