"""MLflow models-from-code entry: the registered pyfunc wraps a Forecaster bundle.

MLflow executes this file at load time; weights come from a state dict loaded with
weights_only=True, so loading a model never unpickles arbitrary objects.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from training.bundle import Forecaster


class ForecastModel(PythonModel):
    """Pyfunc predict: raw OHLCV windows -> prediction, predicted_return, lower, upper."""

    def load_context(self, context) -> None:
        self.model = Forecaster.load(context.artifacts["model_dir"])

    @property
    def forecaster(self) -> Forecaster:
        """The Forecaster inside (training.tracking.load_model returns it)."""
        return self.model

    # The ndarray hint tells MLflow not to infer an input schema; nested lists pass through
    # unchanged and are checked by the feature pipeline with errors that name the window and bar.
    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        """Forecast raw windows [n, T, 5] (or [n, T, A, 5] for multi-asset models)."""
        return self.model.predict(model_input)

    def feature_importance(self, windows) -> dict[str, float]:
        """Per-feature importance for a batch of windows, named by feature."""
        return self.model.feature_importance(windows)


mlflow.models.set_model(ForecastModel())
