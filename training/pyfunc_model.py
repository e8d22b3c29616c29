"""MLflow models-from-code entry: the registered pyfunc wraps a Forecaster bundle.

MLflow executes this file at load time; weights come from a state dict loaded with
weights_only=True, so loading a model never unpickles arbitrary objects.
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel

from training.bundle import Forecaster


class ForecastModel(PythonModel):
    """Pyfunc predict: raw OHLCV windows -> prediction, predicted_return, lower, upper."""

    def load_context(self, context) -> None:
        self.forecaster = Forecaster.load(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None):
        """Forecast raw windows [n, T, 5] (or [n, T, A, 5] for multi-asset models)."""
        if hasattr(model_input, "to_numpy"):
            model_input = model_input.to_numpy().tolist()
        return self.forecaster.predict(model_input)

    def feature_importance(self, windows) -> dict[str, float]:
        """Per-feature importance for a batch of windows, named by feature."""
        return self.forecaster.feature_importance(windows)


mlflow.models.set_model(ForecastModel())
