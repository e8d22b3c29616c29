"""News sentiment benchmark, one run, three tables:

1. quality of the registered `news_sentiment` model on the held-out split of the bundled MIT
   financial headlines (accuracy, macro-F1, per-class F1) next to the majority-class baseline,
   with the training cost recorded in its MLflow run;
2. scoring throughput (headlines/s) at several batch sizes on real crypto headlines;
3. HTTP latency of /api/v1/ml/predict, /predict with include_sentiment, and /api/v1/ml/signal
   on one Serve app, requests alternating between the three so machine load hits all alike.

The model is read from the project's registry (MLFLOW_TRACKING_URI or ./mlflow.db) and trained
there with the fast settings if missing (as `make run` does). The API part copies it into a
throwaway store next to a small LSTM.

    .venv/bin/python bench/bench_sentiment.py [--requests 100] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TITLES = [
    "Bitcoin ETF approved by the SEC",
    "Exchange hacked, withdrawals halted",
    "Bitcoin trades flat ahead of the Fed",
]


def quality() -> tuple[list[dict], object]:
    """Held-out metrics of the registered model and the majority-class baseline."""
    import mlflow

    from sentiment.finetune import (
        FAST_SETTINGS,
        SentimentTrainSettings,
        classification_metrics,
        evaluate,
        load_headlines,
        split_headlines,
        train_sentiment,
    )
    from training.registry import resolve_version
    from training.tracking import ensure_registered, load_model

    version = ensure_registered("news_sentiment", lambda: train_sentiment(FAST_SETTINGS))
    mv = resolve_version("news_sentiment", version)
    run = mlflow.get_run(mv.run_id)
    params = run.data.params
    settings = SentimentTrainSettings()
    train, test = split_headlines(
        load_headlines(settings.data_path),
        float(params.get("test_fraction", settings.test_fraction)),
        int(params.get("seed", settings.seed)),
    )
    analyzer, _ = load_model("news_sentiment", version)
    start = time.perf_counter()
    metrics = evaluate(analyzer, test)
    eval_s = time.perf_counter() - start
    truth = test["label"].to_numpy()
    baseline = classification_metrics(np.full(len(test), train["label"].mode().iloc[0]), truth)
    name = (
        f"news_sentiment v{version} (max_length {params.get('max_length')}, "
        f"{params.get('epochs')} epoch, {params.get('n_train')} train)"
    )
    train_s = run.data.metrics.get("train_seconds", float("nan"))
    rows = [
        _quality_row(name, metrics, train_s, eval_s),
        _quality_row("majority class (always neutral)", baseline, 0.0, 0.0),
    ]
    return rows, analyzer


def _quality_row(name: str, metrics: dict, train_s: float, eval_s: float) -> dict:
    return {
        "model": name,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "f1 neg/pos/neu": "/".join(
            f"{metrics[f'f1_{k}']:.3f}" for k in ("negative", "positive", "neutral")
        ),
        "train_s": train_s,
        "n_test": int(metrics["n"]),
        "eval_s": eval_s,
    }


def throughput(analyzer, batch_sizes=(1, 8, 32, 128), n: int = 512, rounds: int = 3) -> list[dict]:
    """Headlines/s of `analyzer.probabilities` on real crypto titles per batch size; rounds
    alternate between sizes and the median is reported, so load spikes hit all sizes alike."""
    from sentiment.samples import NEWS_FILE

    titles = pd.read_csv(NEWS_FILE)["title"].drop_duplicates().head(n).tolist()
    analyzer.probabilities(titles[:32])  # warm up
    walls = {size: [] for size in batch_sizes}
    for _ in range(rounds):
        for size in batch_sizes:
            analyzer.batch_size = size
            start = time.perf_counter()
            analyzer.probabilities(titles)
            walls[size].append(time.perf_counter() - start)
    return [
        {
            "batch size": size,
            "headlines": len(titles),
            "headlines/s": len(titles) / float(np.median(w)),
            "ms per headline": 1000 * float(np.median(w)) / len(titles),
        }
        for size, w in walls.items()
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_models(tmp: Path, analyzer) -> str:
    """A throwaway store with a small LSTM and a copy of the sentiment model."""
    import mlflow

    from training.experiment import train_model
    from training.models import build_config
    from training.specs import DataSpec, TrainSettings
    from training.tracking import log_model

    uri = f"sqlite:///{tmp}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    train_model(
        TrainSettings(
            data=DataSpec(days_back=120),
            config=build_config("lstm", {"epochs": 1}),
            model_name="bench_lstm",
            experiment_name="bench",
        )
    )
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        log_model(analyzer, "news_sentiment")
    return uri


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    start = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path} answered {resp.status}: {payload[:300]!r}")
    return (time.perf_counter() - start) * 1000


def api_latency(analyzer, requests: int, clients: int) -> list[dict]:
    """Sequential p50/p99 and concurrent throughput of the endpoints on one app."""
    import ray
    from ray import serve
    from ray.serve._private.api import serve_start

    from deployments.app import AppArgs, build_app
    from sentiment.samples import NEWS_FILE
    from training.data import load_data

    bars = load_data("BTC/USDT", data_path="sample", days_back=None)
    values = bars.to_numpy()
    starts = np.random.default_rng(0).integers(0, len(values) - 60, requests)
    windows = [[values[s : s + 60].tolist()] for s in starts]
    # Fresh headlines for every request (the scorer caches scores of repeated ones), except in
    # the last case, which repeats the same three to show the cache.
    unique = pd.read_csv(NEWS_FILE)["title"].drop_duplicates().tolist()
    if len(unique) < 18 * requests:  # 3 cases x 2 phases x 3 headlines
        raise SystemExit(
            f"--requests {requests} needs {18 * requests} distinct headlines; "
            f"the sample has {len(unique)}"
        )
    titles = iter(unique)
    cases = {
        "predict": ("/api/v1/ml/predict", False, None),
        "predict + include_sentiment (3 new headlines)": ("/api/v1/ml/predict", True, None),
        "signal (3 new headlines)": ("/api/v1/ml/signal", False, None),
        "signal (3 repeated headlines, cached)": ("/api/v1/ml/signal", False, TITLES),
    }

    def body(window, path, include, fixed) -> bytes:
        extra = (
            {}
            if path.endswith("predict") and not include
            else {"headlines": fixed or [next(titles) for _ in range(3)]}
        )
        return json.dumps(
            {
                "symbol": "BTC/USDT",
                "sequences": window,
                **extra,
                **({"include_sentiment": True} if include else {}),
            }
        ).encode()

    # separate bodies for the sequential and the concurrent phase: no headline is seen twice
    bodies = {name: [body(w, *case) for w in windows] for name, case in cases.items()}
    bodies_conc = {name: [body(w, *case) for w in windows] for name, case in cases.items()}
    with tempfile.TemporaryDirectory() as tmp:
        uri = stage_models(Path(tmp), analyzer)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        port = free_port()
        try:
            serve_start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(
                build_app(
                    AppArgs(
                        model_name="bench_lstm",
                        tracking_uri=uri,
                        with_sentiment=True,
                        max_replicas=1,
                    )
                ),
                name="bench",
                route_prefix="/",
            )
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            warm = json.dumps(
                {"symbol": "BTC/USDT", "sequences": windows[0], "headlines": ["warm-up headline"]}
            ).encode()
            post(conn, "/api/v1/ml/signal", warm)
            seq = {name: [] for name in cases}
            for i in range(requests):  # interleaved
                for name, (path, *_) in cases.items():
                    seq[name].append(post(conn, path, bodies[name][i]))
            conc = {
                name: concurrent(port, path, bodies_conc[name], clients)
                for name, (path, *_) in cases.items()
            }
        finally:
            # Each app deleted, then Ray stopped: serve.shutdown() would end by killing its own
            # controller, which Ray logs as a failed graceful_shutdown task.
            for app in serve.status().applications:
                serve.delete(app)
            ray.shutdown()
    return [
        {
            "endpoint": name,
            "p50 ms": np.percentile(seq[name], 50),
            "p99 ms": np.percentile(seq[name], 99),
            f"req/s ({clients} clients)": conc[name],
        }
        for name in cases
    ]


def concurrent(port: int, path: str, bodies: list[bytes], clients: int) -> float:
    """Requests per second with `clients` keep-alive connections sending all bodies."""
    chunks = [bodies[i::clients] for i in range(clients)]

    def worker(chunk):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for body in chunk:
            post(conn, path, body)

    threads = [threading.Thread(target=worker, args=(c,)) for c in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(bodies) / (time.perf_counter() - start)


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=100, help="per endpoint, sequential")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from training.tracking import setup_tracking

    setup_tracking()
    rows, analyzer = quality()
    print("## held-out quality\n\n" + table(rows) + "\n", flush=True)
    print(
        f"## scoring throughput ({torch.get_num_threads()} torch threads)\n\n"
        + table(throughput(analyzer))
        + "\n",
        flush=True,
    )
    analyzer.batch_size = 64
    print(
        "## HTTP latency, one Serve app, same run\n\n"
        + table(api_latency(analyzer, args.requests, args.clients))
    )


if __name__ == "__main__":
    main()
