"""MLflow models-from-code entry: the registered `news_sentiment` pyfunc wraps a
`SentimentAnalyzer` saved as a transformers directory (safetensors weights, no pickles)."""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from sentiment.model import SentimentAnalyzer


class SentimentModel(PythonModel):
    """Pyfunc predict: texts -> label, score, confidence and the class probabilities."""

    def load_context(self, context) -> None:
        self.analyzer = SentimentAnalyzer.from_directory(context.artifacts["model_dir"])

    # No return annotation: MLflow's type-hint schemas cannot describe a DataFrame (it would
    # log "Failed to infer output type hint" at every training run).
    def predict(self, context, model_input: list[str], params=None):
        """Score a list of texts (or a DataFrame with a `text` column): a DataFrame."""
        if isinstance(model_input, pd.DataFrame):
            model_input = model_input["text"].tolist()
        rows = self.analyzer.analyze(list(model_input))
        return pd.DataFrame(
            [
                {
                    **{k: r[k] for k in ("label", "score", "confidence")},
                    **{f"p_{k}": v for k, v in r["probabilities"].items()},
                }
                for r in rows
            ]
        )


mlflow.models.set_model(SentimentModel())
