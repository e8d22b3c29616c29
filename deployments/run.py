"""`make run`: make sure a model is registered, serve the prediction API in the foreground.

    python -m deployments.run [--port 8000] [--model-name lstm_price_forecast]

Trains and registers the default model on the bundled BTC/USDT sample when the registry has no
model of that name (about a minute on a laptop), starts Ray Serve on 127.0.0.1, writes a sample
request from real candles and prints a curl that posts it. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import time

from deployments.settings import API_KEY_ENV, DEFAULT_MODEL_NAME
from training.data import PROJECT_ROOT, SAMPLE, load_data
from training.registry import ModelNotFoundError, resolve_version
from training.tracking import setup_tracking

log = logging.getLogger("deployments.run")
SAMPLE_REQUEST = PROJECT_ROOT / "artifacts" / "sample_request.json"


def ensure_model(name: str, days_back: int, epochs: int) -> int:
    """The latest registered version of `name`, training and registering one if there is none."""
    try:
        return int(resolve_version(name, "latest").version)
    except ModelNotFoundError:
        pass
    import torch

    from training.train import TrainSettings, train_model

    # A small LSTM trains fastest on one CPU thread: more threads mostly wait on each other,
    # and on a busy machine oversubscription makes an epoch ten times slower.
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    log.info(
        "no registered model %r: training one on %d days of the bundled BTC/USDT sample "
        "(%d epochs)",
        name,
        days_back,
        epochs,
    )
    start = time.perf_counter()
    result = train_model(
        TrainSettings(
            model_name=name, days_back=days_back, data_path=SAMPLE, overrides={"epochs": epochs}
        )
    )
    log.info(
        "registered %s v%s in %.0f s; test %s",
        name,
        result["version"],
        time.perf_counter() - start,
        result["metrics"],
    )
    return int(result["version"])


def write_sample_request(sequence_length: int) -> None:
    """The latest `sequence_length` bundled BTC/USDT bars as a ready-to-post request body."""
    bars = load_data("BTC/USDT", days_back=30, data_path=SAMPLE)
    window = bars[["open", "high", "low", "close", "volume"]].to_numpy()[-sequence_length:]
    SAMPLE_REQUEST.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE_REQUEST.write_text(
        json.dumps(
            {"symbol": "BTC/USDT", "sequences": [window.tolist()], "model_version": "latest"}
        )
    )


def curl_command(host: str, port: int) -> str:
    auth = f' -H "Authorization: Bearer ${API_KEY_ENV}"' if os.environ.get(API_KEY_ENV) else ""
    return (
        f"curl -s -X POST http://{host}:{port}/api/v1/ml/predict "
        f"-H 'Content-Type: application/json'{auth} "
        f"-d @{shlex.quote(os.path.relpath(SAMPLE_REQUEST))}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--days-back", type=int, default=365, help="training data if none")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs if none")
    parser.add_argument(
        "--with-sentiment", action="store_true", help="also deploy the news sentiment scorer"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    uri = setup_tracking()
    version = ensure_model(args.model_name, args.days_back, args.epochs)
    if args.with_sentiment:  # the scorer replica loads news_sentiment: train it first if missing
        from sentiment.train import ensure_default_model

        ensure_default_model()

    import ray
    from ray import serve

    from deployments.app import AppArgs, build_app
    from training.registry import load_forecaster

    forecaster, _ = load_forecaster(args.model_name, version)
    write_sample_request(forecaster.sequence_length)
    ray.init()
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(
        build_app(
            AppArgs(
                model_name=args.model_name, tracking_uri=uri, with_sentiment=args.with_sentiment
            )
        ),
        name="mltrade",
        route_prefix="/",
    )
    print(f"\nServing {args.model_name} (latest: v{version}) from {uri}")
    print(f"  docs:    http://{args.host}:{args.port}/docs")
    print(f"  health:  curl -s http://{args.host}:{args.port}/api/v1/health")
    print(f"  predict: {curl_command(args.host, args.port)}\n")
    print("Ctrl-C to stop.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
