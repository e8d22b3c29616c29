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
TITLES = ["Bitcoin ETF approved by the SEC", "Exchange hacked, withdrawals halted",
          "Bitcoin trades flat ahead of the Fed"]


def quality() -> tuple[list[dict], object]:
    """Held-out metrics of the registered model and the majority-class baseline."""
    import mlflow

    from sentiment.model import SentimentAnalyzer
    from sentiment.train import (
        SentimentTrainSettings,
        classification_metrics,
        ensure_default_model,
        evaluate,
        load_headlines,
        split_headlines,
    )
    from training.registry import resolve_version

    version = ensure_default_model()
    mv = resolve_version("news_sentiment", version)
    run = mlflow.get_run(mv.run_id)
    params = run.data.params
    settings = SentimentTrainSettings()
    train, test = split_headlines(load_headlines(settings.data_path),
                                  float(params.get("test_fraction", settings.test_fraction)),
                                  int(params.get("seed", settings.seed)))
    analyzer = SentimentAnalyzer.from_registry("news_sentiment", version)
    start = time.perf_counter()
    metrics = evaluate(analyzer, test)
    eval_s = time.perf_counter() - start
    truth = test["label"].to_numpy()
    baseline = classification_metrics(np.full(len(test), train["label"].mode().iloc[0]), truth)
    name = (f"news_sentiment v{version} (max_length {params.get('max_length')}, "
            f"{params.get('epochs')} epoch, {params.get('n_train')} train)")
    train_s = run.data.metrics.get("train_seconds", float("nan"))
    rows = [_quality_row(name, metrics, train_s, eval_s),
            _quality_row("majority class (always neutral)", baseline, 0.0, 0.0)]
    return rows, analyzer


def _quality_row(name: str, metrics: dict, train_s: float, eval_s: float) -> dict:
    return {"model": name, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "f1 neg/pos/neu": "/".join(f"{metrics[f'f1_{k}']:.3f}"
                                       for k in ("negative", "positive", "neutral")),
            "train_s": train_s, "n_test": int(metrics["n"]), "eval_s": eval_s}


def throughput(analyzer, batch_sizes=(1, 8, 32, 128), n: int = 512) -> list[dict]:
    """Headlines/s of `analyzer.probabilities` on real crypto titles, per batch size."""
    from sentiment.samples import NEWS_FILE

    titles = pd.read_csv(NEWS_FILE)["title"].drop_duplicates().head(n).tolist()
    analyzer.probabilities(titles[:32])  # warm up
    rows = []
    for size in batch_sizes:
        analyzer.batch_size = size
        start = time.perf_counter()
        analyzer.probabilities(titles)
        wall = time.perf_counter() - start
        rows.append({"batch size": size, "headlines": len(titles),
                     "headlines/s": len(titles) / wall, "ms per headline": 1000 * wall / n})
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stage_models(tmp: Path, analyzer) -> str:
    """A throwaway store with a small LSTM and a copy of the sentiment model."""
    import mlflow

    from sentiment.train import log_analyzer
    from training.train import TrainSettings, train_model

    uri = f"sqlite:///{tmp}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    train_model(TrainSettings(days_back=120, overrides={"epochs": 1}, model_name="bench_lstm",
                              experiment_name="bench"))
    mlflow.set_experiment("bench")
    with mlflow.start_run():
        log_analyzer(analyzer, "news_sentiment")
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
    """Sequential p50/p99 and concurrent throughput of the three endpoints on one app."""
    import ray
    from ray import serve
    from ray.serve._private.api import serve_start

    from deployments.app import AppArgs, build_app
    from training.data import load_data

    bars = load_data("BTC/USDT", data_path="sample", days_back=None)
    values = bars.to_numpy()
    starts = np.random.default_rng(0).integers(0, len(values) - 60, requests)
    windows = [[values[s : s + 60].tolist()] for s in starts]
    cases = {
        "predict": ("/api/v1/ml/predict", {}),
        "predict + include_sentiment (3 headlines)": (
            "/api/v1/ml/predict", {"include_sentiment": True, "headlines": TITLES}),
        "signal (3 headlines)": ("/api/v1/ml/signal", {"headlines": TITLES}),
    }
    bodies = {name: [json.dumps({"symbol": "BTC/USDT", "sequences": w, **extra}).encode()
                     for w in windows] for name, (_, extra) in cases.items()}
    with tempfile.TemporaryDirectory() as tmp:
        uri = stage_models(Path(tmp), analyzer)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        port = free_port()
        try:
            serve_start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build_app(AppArgs(model_name="bench_lstm", tracking_uri=uri,
                                        with_sentiment=True, max_replicas=1)),
                      name="bench", route_prefix="/")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for name, (path, _) in cases.items():  # warm up every path
                post(conn, path, bodies[name][0])
            seq = {name: [] for name in cases}
            for i in range(requests):  # interleaved
                for name, (path, _) in cases.items():
                    seq[name].append(post(conn, path, bodies[name][i]))
            conc = {name: concurrent(port, path, bodies[name], clients)
                    for name, (path, _) in cases.items()}
        finally:
            serve.shutdown()
            ray.shutdown()
    return [{"endpoint": name, "p50 ms": np.percentile(seq[name], 50),
             "p99 ms": np.percentile(seq[name], 99), f"req/s ({clients} clients)": conc[name]}
            for name in cases]


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
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=100, help="per endpoint, sequential")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from training.tracking import setup_tracking

    setup_tracking()
    rows, analyzer = quality()
    print("## held-out quality\n\n" + table(rows) + "\n", flush=True)
    print(f"## scoring throughput ({torch.get_num_threads()} torch threads)\n\n"
          + table(throughput(analyzer)) + "\n", flush=True)
    analyzer.batch_size = 64
    print("## HTTP latency, one Serve app, same run\n\n"
          + table(api_latency(analyzer, args.requests, args.clients)))


if __name__ == "__main__":
    main()
