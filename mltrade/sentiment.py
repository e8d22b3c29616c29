"""`mltrade sentiment {train,score}`: fine-tune and register the news sentiment model; score
headlines with a registered one."""

from __future__ import annotations

from typing import Annotated

import typer

from mltrade.base import Command, new_app
from mltrade.options import ExperimentName, Int, Json, ModelName, ModelVersion, emit, whole_number

app = new_app(help="Fine-tune the news sentiment model; score headlines with it.")

DEFAULT_NAME = "news_sentiment"  # sentiment.model.DEFAULT_MODEL_NAME (--help stays fast)
Count = Annotated[int, typer.Option(parser=whole_number, metavar="INTEGER")]


@app.command("train", cls=Command)
def train(
    data_path: Annotated[
        str, typer.Option("--data-path", help="CSV with text,label columns (default: bundled).")
    ] = "",
    base_model: Annotated[
        str, typer.Option(help="A transformers directory (default: the bundled MiniLM-L6).")
    ] = "",
    max_length: Annotated[
        int, typer.Option(parser=whole_number, metavar="INTEGER", help="Tokens per headline.")
    ] = 32,
    epochs: float = 2.0,
    batch_size: Int = 32,
    learning_rate: Annotated[float, typer.Option(help="Encoder learning rate.")] = 2e-4,
    head_learning_rate: float = 1e-3,
    dropout: float = 0.0,
    test_fraction: float = 0.15,
    limit: Annotated[
        int,
        typer.Option(parser=whole_number, metavar="INTEGER", help="Train on at most N (0: all)."),
    ] = 0,
    eval_limit: Annotated[
        int,
        typer.Option(
            parser=whole_number, metavar="INTEGER", help="Evaluate on at most N (0: all)."
        ),
    ] = 0,
    seed: Int = 42,
    model_name: ModelName = DEFAULT_NAME,
    experiment_name: ExperimentName = "news_sentiment",
    no_register: Annotated[
        bool, typer.Option("--no-register", help="Log the model without registering it.")
    ] = False,
    json_out: Json = False,
):
    """Fine-tune MiniLM-L6 on the financial headlines, evaluate, log and register the model."""
    from sentiment.finetune import SentimentTrainSettings, train_sentiment

    defaults = SentimentTrainSettings()
    settings = SentimentTrainSettings(
        data_path=data_path or defaults.data_path,
        base_model=base_model,
        max_length=max_length,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        head_learning_rate=head_learning_rate,
        dropout=dropout,
        test_fraction=test_fraction,
        limit=limit or None,
        eval_limit=eval_limit or None,
        seed=seed,
        model_name=model_name,
        experiment_name=experiment_name,
        register=not no_register,
    )
    result = train_sentiment(settings)
    emit(
        result,
        json_out,
        [
            f"run_id={result.run_id} model_uri={result.model_uri} "
            f"registered={model_name if settings.register else None} "
            f"version={result.version} train_seconds={result.train_seconds:.0f}",
            *(f"  test_{k}: {v:.4g}" for k, v in result.metrics.items()),
        ],
    )
    return result


@app.command("score", cls=Command)
def score(
    texts: Annotated[list[str], typer.Argument(help="Headlines to score.")],
    model_name: ModelName = DEFAULT_NAME,
    model_version: ModelVersion = "latest",
    json_out: Json = False,
) -> list[dict]:
    """Score headlines: label, score in [-1, 1] (P(positive) - P(negative)), confidence."""
    from training.tracking import load_model, setup_tracking

    setup_tracking()
    analyzer, _ = load_model(model_name, model_version)
    rows = [{"text": t, **r} for t, r in zip(texts, analyzer.analyze(texts), strict=True)]
    emit(
        rows,
        json_out,
        [f"{r['label']:>8} {r['score']:+.3f} {r['confidence']:.2f}  {r['text']}" for r in rows],
    )
    return rows
