"""`mltrade serve`: the prediction API on Ray Serve, in the foreground (what `make run` does)."""

from __future__ import annotations

from typing import Annotated

import typer

from mltrade.options import Int, ModelName, days_back_option, whole_number


def serve(
    host: Annotated[str, typer.Option(help="Where the HTTP API listens.")] = "127.0.0.1",
    port: Int = 8000,
    model_name: ModelName = "lstm_price_forecast",
    days_back: Annotated[
        int, days_back_option("Days of the bundled sample to train on if no model is registered.")
    ] = 365,
    epochs: Annotated[
        int, typer.Option(parser=whole_number, metavar="INTEGER", help="Epochs if none registered.")
    ] = 20,
    sentiment: Annotated[
        bool,
        typer.Option(
            "--with-sentiment/--no-sentiment",
            help="Serve the news sentiment scorer too (include_sentiment, /signal); trains "
            "news_sentiment first when the registry has none.",
        ),
    ] = True,
) -> None:
    """Serve forecasts (and sentiment) over HTTP; train the default models first if missing."""
    from deployments.launcher import ServeSettings, serve_app

    serve_app(
        ServeSettings(
            host=host,
            port=port,
            model_name=model_name,
            days_back=days_back,
            epochs=epochs,
            with_sentiment=sentiment,
        )
    )
