"""The self-contained forecaster: feature pipeline + fitted normalisation + config + interval
calibration + weights. Training saves it, the pyfunc model loads it, and the API, backtests and
signals all call its `predict`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from training.config import ModelConfig
from training.drift import psi
from training.features import FeaturePipeline
from training.models import get_model_spec

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.pt"
PREDICTION_COLUMNS = ("prediction", "predicted_return", "lower", "upper")


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
    """

    model_type: str
    config: ModelConfig
    pipeline: FeaturePipeline
    model: nn.Module
    interval_q: float
    reference: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

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
        sigma = self.pipeline.volatility(arr)
        self.model.eval()
        with torch.inference_mode():
            z = (
                torch.cat(
                    [
                        self.model(torch.from_numpy(x[i : i + batch_size]).to(self.device)).cpu()
                        for i in range(0, len(x), batch_size)
                    ]
                )
                .double()
                .numpy()
            )
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

    def predict(self, windows) -> pd.DataFrame:
        """One row per window: prediction (next close), predicted_return (simple return),
        lower and upper (the calibrated interval on the next close at `confidence`)."""
        out = self.forecast(windows)
        return pd.DataFrame({c: out[c] for c in PREDICTION_COLUMNS})

    def importance_per_window(self, arr: np.ndarray) -> np.ndarray:
        """|gradient x input| of the forecast, summed over time, per checked window: [n, F].

        Windows do not interact in an eval-mode forward, so one backward pass over a batch
        gives every window its own attribution.
        """
        x = torch.from_numpy(self.pipeline.normalise(arr)).to(self.device).requires_grad_()
        self.model.eval()
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN RNNs refuse backward in eval
            # autograd.grad, not backward(): the shared model's parameter .grad stays untouched,
            # so concurrent requests and a later fine-tune see no stray gradients.
            (grad,) = torch.autograd.grad(self.model(x).sum(), x)
        return (grad * x).abs().sum(dim=1).detach().cpu().numpy()

    def importance_shares(self, weights: np.ndarray) -> dict[str, float]:
        """Per-window attributions [n, F] -> {feature_name: share}, averaged, summing to 1."""
        mean = weights.mean(axis=0)
        mean = mean / mean.sum() if mean.sum() > 0 else mean
        return {name: float(w) for name, w in zip(self.pipeline.feature_names, mean, strict=True)}

    def feature_importance(self, windows) -> dict[str, float]:
        """Share of the forecast attributable to each feature (|gradient x input|, summed over
        time, averaged over windows, normalised to sum to 1)."""
        arr = self.pipeline.check_windows(windows)
        return self.importance_shares(self.importance_per_window(arr))

    def drift(self, windows) -> dict:
        """PSI of these windows' features against the training reference (see training.drift)."""
        feats = self.pipeline.raw_features(self.pipeline.check_windows(windows))
        return psi(feats, self.reference, self.pipeline.feature_names)

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
        model = spec.trainer_class.model_class(config)
        weights = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(weights)
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(
            model_type=state["model_type"],
            config=config,
            pipeline=pipeline,
            model=model.to(dev).eval(),
            interval_q=float(state["interval_q"]),
            reference=state["reference"],
            metadata=state["metadata"],
        )
