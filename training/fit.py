"""Fit a forecaster on candles in this process: prepare the data, run the shared trainer, finish.

No MLflow logging here beyond the trainer's per-epoch metrics, so walk-forward windows and the
training entry points can call it and log as they need. Tune trials and Ray Train workers run
the same trainer loop and the same finish (see training.tune, training.distributed).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from training.config import ModelConfig
from training.loaders import FitResult, prepare_data
from training.models import get_model_spec, model_type_of

__all__ = ["FitResult", "fit_forecaster"]


def fit_forecaster(
    frames: Mapping[str, pd.DataFrame], config: ModelConfig, show_progress: bool = True
) -> FitResult:
    """Train, calibrate and test a forecaster on chronologically split candles.

    Args:
        frames: validated candles per symbol; the first symbol is forecast (as many symbols as
            the config's num_assets).
        config: the model's config (its class says the model type), e.g.
            LSTMModelConfig(epochs=20, hidden_units=32).
        show_progress: show the epoch progress bar.
    """
    data = prepare_data(frames, config)
    trainer = get_model_spec(model_type_of(config)).trainer_class(
        config, show_progress=show_progress
    )
    trainer.train(*data.batches())
    return data.fit_result(trainer)
