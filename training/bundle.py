"""The self-contained forecaster: feature pipeline + fitted normalisation + config + interval
calibration + weights. Training saves it, the pyfunc model loads it, and the API, backtests and
signals all call its `predict`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from training.cluster import pick_device
from training.config import ModelConfig
from training.drift import psi, summarise, window_psi
from training.drift import threshold as drift_threshold
from training.features import FeaturePipeline, WindowShapeError
from training.models import get_model_spec

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.pt"
PREDICTION_COLUMNS = ("prediction", "predicted_return", "lower", "upper")
GRAD_CHUNK = 1024  # windows per backward pass, bounding activation memory on huge batches


def importance_shares(weights: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    """Per-window attributions [n, F] -> {feature_name: share}, averaged, summing to 1."""
    mean = weights.mean(axis=0)
    mean = mean / mean.sum() if mean.sum() > 0 else mean
    return {name: float(w) for name, w in zip(names, mean, strict=True)}


@dataclass(frozen=True)
class ForecastAnalysis:
    """What `Forecaster.analyze` finds for n windows; slicing selects windows.

    Attributes:
        forecast: per window: prediction, predicted_return, lower, upper, last_close ([n] each).
        importance: |gradient x input| per window and feature, [n, F].
        drift: PSI per window and feature against the training reference, [n, F].
    """

    forecast: dict[str, np.ndarray]
    importance: np.ndarray
    drift: np.ndarray
    feature_names: tuple[str, ...]
    drift_threshold: float

    def __len__(self) -> int:
        return len(self.importance)

    def __getitem__(self, part: slice) -> ForecastAnalysis:
        return ForecastAnalysis(
            forecast={k: v[part] for k, v in self.forecast.items()},
            importance=self.importance[part],
            drift=self.drift[part],
            feature_names=self.feature_names,
            drift_threshold=self.drift_threshold,
        )

    @property
    def feature_importance(self) -> dict[str, float]:
        """Shares over these windows, as `Forecaster.feature_importance` gives them."""
        return importance_shares(self.importance, self.feature_names)

    @property
    def drift_report(self) -> dict:
        """Drift over these windows, as `Forecaster.drift` gives it."""
        return summarise(self.drift, self.drift_threshold, self.feature_names)

    def predictions(self) -> pd.DataFrame:
        """The frame `Forecaster.predict` returns."""
        return pd.DataFrame({c: self.forecast[c] for c in PREDICTION_COLUMNS})


@dataclass
class Forecaster:
    """A trained model ready to predict from raw OHLCV windows.

    Attributes:
        model_type: key of training.models.MODEL_TYPES.
        config: the model's config (sizes, sequence length, confidence).
        pipeline: the fitted feature pipeline.
        model: the network; it forecasts the next log return in units of window volatility.
        interval_q: calibrated quantile of |actual - forecast| in those units.
        reference: training feature distribution for drift scores.
        metadata: data range, hash, metrics and anything else worth keeping.
        example: a few real windows for a logged model's input example (saved with it).
    """

    model_type: str
    config: ModelConfig
    pipeline: FeaturePipeline
    model: nn.Module
    interval_q: float
    reference: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    example: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def sequence_length(self) -> int:
        return self.pipeline.sequence_length

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.pipeline.symbols

    @property
    def confidence(self) -> float:
        return self.config.confidence

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def forecast(self, windows, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Forecasts as arrays: prediction, predicted_return, lower, upper, last_close."""
        arr = self.pipeline.check_windows(windows)
        x = self.pipeline.normalise(arr)
        self.model.eval()
        with torch.inference_mode():
            z = torch.cat(
                [
                    self.model(torch.from_numpy(x[i : i + batch_size]).to(self.device)).cpu()
                    for i in range(0, len(x), batch_size)
                ]
            )
        return self._intervals(arr, z.double().numpy())

    def _intervals(self, arr: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
        """Model outputs z (volatility units) of checked windows -> prices and interval."""
        sigma = self.pipeline.volatility(arr)
        last_close = arr[:, -1, 0, 3]
        log_ret = z * sigma
        half = self.interval_q * sigma
        return {
            "prediction": last_close * np.exp(log_ret),
            "predicted_return": np.expm1(log_ret),
            "lower": last_close * np.exp(log_ret - half),
            "upper": last_close * np.exp(log_ret + half),
            "last_close": last_close,
        }

    def input_example(self) -> np.ndarray | None:
        """A few real windows as the model takes them ([n, T, 5] or [n, T, A, 5]), when known."""
        return self.example

    def predict(self, windows) -> pd.DataFrame:
        """One row per window: prediction (next close), predicted_return (simple return),
        lower and upper (the calibrated interval on the next close at `confidence`)."""
        out = self.forecast(windows)
        return pd.DataFrame({c: out[c] for c in PREDICTION_COLUMNS})

    def _forward_with_grad(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One forward and one backward pass per chunk of normalised inputs [n, T, F]: the
        outputs [n] and |gradient x input| summed over time [n, F].

        Windows do not interact in an eval-mode forward, so one backward pass over a batch
        gives every window its own attribution.
        """
        self.model.eval()
        outputs, weights = [], []
        # cuDNN RNNs refuse backward in eval mode; enable_grad: callers may be under no_grad
        with torch.backends.cudnn.flags(enabled=False), torch.enable_grad():
            for i in range(0, len(x), GRAD_CHUNK):
                xt = torch.from_numpy(x[i : i + GRAD_CHUNK]).to(self.device).requires_grad_()
                out = self.model(xt)
                # autograd.grad, not backward(): the shared model's parameter .grad stays
                # untouched, so concurrent requests and a later fine-tune see no stray gradients
                (grad,) = torch.autograd.grad(out.sum(), xt)
                outputs.append(out.detach().cpu())
                weights.append((grad * xt).abs().sum(dim=1).detach().cpu())
        return torch.cat(outputs).double().numpy(), torch.cat(weights).numpy()

    def importance_per_window(self, arr: np.ndarray) -> np.ndarray:
        """|gradient x input| of the forecast, summed over time, per checked window: [n, F]."""
        return self._forward_with_grad(self.pipeline.normalise(arr))[1]

    def importance_shares(self, weights: np.ndarray) -> dict[str, float]:
        """Per-window attributions [n, F] -> {feature_name: share}, averaged, summing to 1."""
        return importance_shares(weights, self.pipeline.feature_names)

    def feature_importance(self, windows) -> dict[str, float]:
        """Share of the forecast attributable to each feature (|gradient x input|, summed over
        time, averaged over windows, normalised to sum to 1)."""
        arr = self.pipeline.check_windows(windows)
        return self.importance_shares(self.importance_per_window(arr))

    def drift(self, windows) -> dict:
        """PSI of these windows' features against the training reference (see training.drift)."""
        feats = self.pipeline.raw_features(self.pipeline.check_windows(windows))
        return psi(feats, self.reference, self.pipeline.feature_names)

    def analyze(self, windows) -> ForecastAnalysis:
        """Forecast, per-window importance and per-window drift of raw windows, checked and
        normalised once, with one forward and one backward pass.

        Raises:
            WindowShapeError: the windows do not fit this model (see FeaturePipeline).
        """
        return self._analyze_checked(self.pipeline.check_windows(windows))

    def analyze_many(self, requests: Sequence) -> list[ForecastAnalysis | WindowShapeError]:
        """`analyze` over several requests' windows in one pass; a request whose windows do not
        fit gets its WindowShapeError in its place instead of failing the others."""
        results: list = [None] * len(requests)
        checked = []
        for i, windows in enumerate(requests):
            try:
                checked.append((i, self.pipeline.check_windows(windows)))
            except WindowShapeError as exc:
                results[i] = exc
        if len(checked) == 1:  # the common case when serving: nothing to split
            i, arr = checked[0]
            results[i] = self._analyze_checked(arr)
        elif checked:
            whole = self._analyze_checked(np.concatenate([arr for _, arr in checked]))
            offset = 0
            for i, arr in checked:
                results[i] = whole[offset : offset + len(arr)]
                offset += len(arr)
        return results

    def _analyze_checked(self, arr: np.ndarray) -> ForecastAnalysis:
        raw = self.pipeline.raw_features(arr)  # [n, T-1, F]
        z, weights = self._forward_with_grad(self.pipeline.scale(raw))
        return ForecastAnalysis(
            forecast=self._intervals(arr, z),
            importance=weights,
            drift=window_psi(raw, self.reference),
            feature_names=self.pipeline.feature_names,
            drift_threshold=drift_threshold(self.reference),
        )

    def save(self, directory: str | Path) -> Path:
        """Write bundle.json (everything but weights) and weights.pt (a plain state dict)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {
            "model_type": self.model_type,
            "config": self.config.to_dict(),
            "pipeline": self.pipeline.to_dict(),
            "interval_q": self.interval_q,
            "reference": self.reference,
            "metadata": self.metadata,
            "example": None if self.example is None else np.asarray(self.example).tolist(),
        }
        (directory / BUNDLE_FILE).write_text(json.dumps(state, indent=1))
        cpu_state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        torch.save(cpu_state, directory / WEIGHTS_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None) -> Forecaster:
        """Rebuild from a saved bundle; weights load with weights_only=True (no unpickling)."""
        directory = Path(directory)
        state = json.loads((directory / BUNDLE_FILE).read_text())
        spec = get_model_spec(state["model_type"])
        config = spec.config_class.from_dict(state["config"])
        pipeline = FeaturePipeline.from_dict(state["pipeline"])
        if config.input_size != pipeline.num_features:
            raise ValueError(
                f"bundle config input_size {config.input_size} != pipeline features "
                f"{pipeline.num_features}"
            )
        model = spec.model_class(config)
        weights = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(weights)
        return cls(
            model_type=state["model_type"],
            config=config,
            pipeline=pipeline,
            model=model.to(pick_device(device)).eval(),
            interval_q=float(state["interval_q"]),
            reference=state["reference"],
            metadata=state["metadata"],
            example=None if state.get("example") is None else np.asarray(state["example"]),
        )
