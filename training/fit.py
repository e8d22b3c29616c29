"""Fit a forecaster on candles: splits, pipeline, trainer, calibration, test metrics.

No MLflow logging here beyond the trainer's per-epoch metrics, so walk-forward windows, Tune
trials and Ray Train workers can call it and log as they need.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.bundle import Forecaster
from training.config import ModelConfig
from training.dataset import DEFAULT_FRACTIONS, Split, make_splits
from training.drift import calibrate_threshold, fit_reference
from training.evaluation import conformal_quantile, forecast_metrics
from training.features import FeaturePipeline
from training.models import get_model_spec
from training.trainer import BaseTrainer, TensorBatches


@dataclass
class PreparedData:
    """Model-ready arrays for one split: inputs, volatility-scaled targets and the raw split."""

    x: np.ndarray  # [n, T-1, F]
    y: np.ndarray  # [n] next log return / window volatility
    split: Split


@dataclass
class FitResult:
    forecaster: Forecaster
    history: dict[str, list[float]]
    metrics: dict[str, float]
    splits: dict[str, Split]
    test_forecast: dict[str, np.ndarray]


def build_config(model_type: str, pipeline: FeaturePipeline, overrides: dict) -> ModelConfig:
    """The model's config from user overrides plus what the data decides (input size, assets)."""
    spec = get_model_spec(model_type)
    values = dict(overrides)
    values.update(input_size=pipeline.num_features, sequence_length=pipeline.sequence_length)
    if spec.multi_asset:
        values["num_assets"] = pipeline.num_assets
    return spec.config_class.from_dict(values)


def prepare(pipeline: FeaturePipeline, split: Split) -> PreparedData:
    """Normalised inputs and targets (next log return in units of window volatility)."""
    arr = pipeline.check_windows(split.windows)
    sigma = pipeline.volatility(arr)
    y = np.log(split.next_close / arr[:, -1, 0, 3]) / sigma
    return PreparedData(x=pipeline.normalise(arr), y=y.astype(np.float32), split=split)


def prepare_splits(
    frames: dict[str, pd.DataFrame], model_type: str, overrides: dict, fractions=DEFAULT_FRACTIONS
) -> tuple[ModelConfig, FeaturePipeline, dict[str, PreparedData]]:
    """Split candles, fit the pipeline on the training split only, and prepare every split."""
    spec = get_model_spec(model_type)
    symbols = tuple(frames)
    if spec.multi_asset and len(symbols) < 2:
        raise ValueError(f"{model_type} forecasts from several assets: pass at least two symbols")
    if not spec.multi_asset and len(symbols) != 1:
        raise ValueError(f"{model_type} takes one symbol, got {list(symbols)}")
    sequence_length = int(overrides.get("sequence_length", ModelConfig.sequence_length))
    splits = make_splits(frames, sequence_length, fractions)
    pipeline = FeaturePipeline(sequence_length, symbols).fit(splits["train"].windows)
    config = build_config(model_type, pipeline, overrides)
    return config, pipeline, {name: prepare(pipeline, s) for name, s in splits.items()}


def finish_forecaster(
    model_type: str,
    config: ModelConfig,
    pipeline: FeaturePipeline,
    trainer: BaseTrainer,
    data: dict[str, PreparedData],
) -> tuple[Forecaster, dict[str, float], dict[str, np.ndarray]]:
    """Calibrate the interval on the calibration split and score the test split."""
    residual = np.abs(data["cal"].y - trainer.predict(data["cal"].x))
    train_arr = pipeline.check_windows(data["train"].split.windows)
    val_arr = pipeline.check_windows(data["val"].split.windows)
    reference = calibrate_threshold(
        fit_reference(pipeline.raw_features(train_arr)), pipeline.raw_features(val_arr)
    )
    forecaster = Forecaster(
        model_type=model_type,
        config=config,
        pipeline=pipeline,
        model=trainer.model,
        interval_q=conformal_quantile(residual, config.confidence),
        reference=reference,
    )
    test = data["test"].split
    forecast = forecaster.forecast(test.windows)
    closes = test.windows[:, :, 0, 3]
    last_return = closes[:, -1] / closes[:, -2] - 1.0
    metrics = forecast_metrics(forecast, test.next_close, last_return)
    return forecaster, metrics, forecast


def fit_forecaster(
    frames: dict[str, pd.DataFrame],
    model_type: str = "lstm",
    overrides: dict | None = None,
    show_progress: bool = True,
) -> FitResult:
    """Train, calibrate and test a forecaster on chronologically split candles.

    Args:
        frames: validated candles per symbol; the first symbol is forecast.
        model_type: a key of training.models.MODEL_TYPES.
        overrides: config values (e.g. {"epochs": 20, "hidden_size": 32}).
        show_progress: show the epoch progress bar.
    """
    config, pipeline, data = prepare_splits(frames, model_type, overrides or {})
    trainer = get_model_spec(model_type).trainer_class(config, show_progress=show_progress)
    history = trainer.train(
        TensorBatches(data["train"].x, data["train"].y, config.batch_size, True, config.seed),
        TensorBatches(data["val"].x, data["val"].y, 1024),
    )
    forecaster, metrics, forecast = finish_forecaster(model_type, config, pipeline, trainer, data)
    splits = {name: d.split for name, d in data.items()}
    forecaster.metadata.update(data_metadata(frames, splits), test_metrics=metrics)
    return FitResult(forecaster, history, metrics, splits, forecast)


def data_metadata(frames: dict[str, pd.DataFrame], splits: dict[str, Split]) -> dict:
    """Data range, split boundaries and a content hash, for reproducibility."""
    import hashlib

    digest = hashlib.sha256()
    for symbol, df in frames.items():
        digest.update(symbol.encode())
        digest.update(df.index.asi8.tobytes())
        digest.update(np.ascontiguousarray(df.to_numpy(dtype=np.float64)).tobytes())
    first = next(iter(frames.values()))
    return {
        "symbols": list(frames),
        "data_start": str(first.index[0]),
        "data_end": str(first.index[-1]),
        "data_sha256": digest.hexdigest(),
        "split_starts": {n: str(s.target_time[0]) for n, s in splits.items()},
    }
