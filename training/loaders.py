"""From candles to model-ready data and back to a servable model: the programmatic path.

```python
df = load_data("BTC/USDT", interval="1h", days_back=30, data_path="sample")
config = LSTMModelConfig(sequence_length=60, input_features=5, hidden_units=50, epochs=2)
data = prepare_data(df, config)              # splits; the pipeline is fit on the train split only
train_loader, val_loader = data.loaders()    # plain torch DataLoaders of (x [B, T, F], y [B])
trainer = LSTMTrainer(config)
history = trainer.train(train_loader, val_loader)
forecaster = data.finish(trainer)            # calibrated on the cal split, scored on test
```

`TrainingData.fit_result` is the one finish every training path ends with (in process, Tune's
best trial, Ray Train): interval calibration, drift reference, test metrics and metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.bundle import Forecaster
from training.config import ModelConfig
from training.dataset import DEFAULT_FRACTIONS, Split, make_splits
from training.drift import calibrate_threshold, fit_reference
from training.evaluation import conformal_quantile, forecast_metrics
from training.features import FeaturePipeline, feature_set_for
from training.models import model_type_of
from training.trainer import BaseTrainer, TensorBatches
from training.validation import OHLCV_COLUMNS

VAL_BATCH = 1024  # validation batches only run forward passes: larger is faster


@dataclass(frozen=True)
class PreparedSplit:
    """Model-ready arrays for one split: inputs, volatility-scaled targets and the raw split."""

    x: np.ndarray  # [n, T-1, F] normalised features
    y: np.ndarray  # [n] next log return / window volatility
    split: Split


@dataclass(frozen=True)
class FitResult:
    """A finished fit: the calibrated, tested forecaster and how it got there."""

    forecaster: Forecaster
    history: Mapping[str, list[float]]
    metrics: Mapping[str, float]  # test-split metrics next to the naive baselines
    splits: Mapping[str, Split]
    test_forecast: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class TrainingData:
    """Candles split chronologically (train, val, cal, test), the feature pipeline fit on the
    train split, and every split prepared for the model `config` describes."""

    config: ModelConfig
    pipeline: FeaturePipeline
    splits: Mapping[str, PreparedSplit]
    frames: Mapping[str, pd.DataFrame]

    @property
    def model_type(self) -> str:
        return model_type_of(self.config)

    def loaders(self, batch_size: int | None = None) -> tuple[DataLoader, DataLoader]:
        """Plain torch DataLoaders (train shuffled from the config's seed, val in order)."""
        train, val = self.splits["train"], self.splits["val"]
        generator = torch.Generator().manual_seed(self.config.seed)
        return (
            DataLoader(
                TensorDataset(torch.from_numpy(train.x), torch.from_numpy(train.y)),
                batch_size=batch_size or self.config.batch_size,
                shuffle=True,
                generator=generator,
            ),
            DataLoader(
                TensorDataset(torch.from_numpy(val.x), torch.from_numpy(val.y)),
                batch_size=VAL_BATCH,
            ),
        )

    def batches(self) -> tuple[TensorBatches, TensorBatches]:
        """The same batches as `loaders`, cheaper per batch (what the platform trains on)."""
        train, val = self.splits["train"], self.splits["val"]
        config = self.config
        return (
            TensorBatches(train.x, train.y, config.batch_size, True, config.seed),
            TensorBatches(val.x, val.y, VAL_BATCH),
        )

    def finish(self, trainer: BaseTrainer) -> Forecaster:
        """The trained model as a Forecaster, calibrated on the cal split and tested."""
        return self.fit_result(trainer).forecaster

    def fit_result(
        self, trainer: BaseTrainer, history: Mapping | None = None, **metadata
    ) -> FitResult:
        """Calibrate the interval on the cal split, fit the drift reference, score the test
        split and record where the data came from.

        Args:
            trainer: holds the trained weights (the best ones after `train`).
            history: the loss history; None takes the trainer's last `train` call's.
            metadata: extra facts for the bundle's metadata (e.g. ray_train).
        """
        config = trainer.config
        for name in ("input_features", "sequence_length", "num_assets"):
            if getattr(config, name) != getattr(self.config, name):
                raise ValueError(
                    f"the trainer's {name}={getattr(config, name)} differs from the data's "
                    f"{getattr(self.config, name)}: build the trainer from the config the data "
                    "was prepared with"
                )
        cal = self.splits["cal"]
        residual = np.abs(cal.y - trainer.predict(cal.x))
        raw = {
            n: self.pipeline.raw_features(self.pipeline.check_windows(self.splits[n].split.windows))
            for n in ("train", "val")
        }
        forecaster = Forecaster(
            model_type=model_type_of(config),
            config=config,
            pipeline=self.pipeline,
            model=trainer.model,
            interval_q=conformal_quantile(residual, config.confidence),
            reference=calibrate_threshold(fit_reference(raw["train"]), raw["val"]),
        )
        test = self.splits["test"].split
        example = test.windows[:2]  # [2, T, A, 5]
        forecaster.example = example if example.shape[2] > 1 else example[:, :, 0, :]
        forecast = forecaster.forecast(test.windows)
        closes = test.windows[:, :, 0, 3]
        last_return = closes[:, -1] / closes[:, -2] - 1.0
        metrics = forecast_metrics(forecast, test.next_close, last_return, test.target_time)
        splits = {name: s.split for name, s in self.splits.items()}
        forecaster.metadata.update(
            data_metadata(self.frames, splits), test_metrics=metrics, **metadata
        )
        history = dict(trainer.history if history is None else history)
        return FitResult(forecaster, history, metrics, splits, forecast)


def prepare(pipeline: FeaturePipeline, split: Split) -> PreparedSplit:
    """Normalised inputs and targets (next log return in units of window volatility)."""
    arr = pipeline.check_windows(split.windows)
    sigma = pipeline.volatility(arr)
    y = np.log(split.next_close / arr[:, -1, 0, 3]) / sigma
    return PreparedSplit(x=pipeline.normalise(arr), y=y.astype(np.float32), split=split)


def prepare_data(
    candles: pd.DataFrame | Mapping[str, pd.DataFrame],
    config: ModelConfig,
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS,
    symbol: str | None = None,
) -> TrainingData:
    """Split candles in time, fit the feature pipeline on the train split only, and prepare
    every split for `config`'s model.

    Args:
        candles: one symbol's candles (as `load_data` returns them), or {symbol: candles} with
            the forecast symbol first (several for the CNN-LSTM: as many as num_assets).
        config: the model's config; its input_features picks the feature set (7: "candle",
            5: "ohlcv") and its sequence_length the window.
        fractions: shares of bars for train, val, cal and test, in time order.
        symbol: a single DataFrame's symbol, saved in the model; None: its
            `attrs["symbol"]` if set, else "asset".

    Raises:
        ValueError: the symbols do not match num_assets, input_features matches no feature
            set, a frame lacks OHLCV columns, or the candles are too short for the splits.
    """
    if isinstance(candles, pd.DataFrame):
        name = symbol or (candles.attrs["symbol"] if "symbol" in candles.attrs else "asset")
        frames = {name: candles}
    else:
        frames = dict(candles)
    if len(frames) != config.num_assets:
        raise ValueError(
            f"{type(config).__name__} takes {config.num_assets} symbol(s) (num_assets), got "
            f"{len(frames)}: {list(frames)}"
        )
    for name, df in frames.items():
        missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"candles of {name} lack column(s) {missing}; need {OHLCV_COLUMNS}")
        if list(df.columns) != list(OHLCV_COLUMNS):
            frames[name] = df[list(OHLCV_COLUMNS)]
    feature_set = feature_set_for(config.input_features)
    splits = make_splits(frames, config.sequence_length, fractions)
    pipeline = FeaturePipeline(config.sequence_length, tuple(frames), feature_set)
    pipeline.fit(splits["train"].windows)
    prepared = {name: prepare(pipeline, s) for name, s in splits.items()}
    return TrainingData(config=config, pipeline=pipeline, splits=prepared, frames=frames)


def data_metadata(frames: Mapping[str, pd.DataFrame], splits: Mapping[str, Split]) -> dict:
    """Data range, split boundaries and a content hash, for reproducibility."""
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
