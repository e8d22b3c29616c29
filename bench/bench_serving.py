"""Load benchmark of the prediction API against a no-op Serve deployment, side by side.

Starts a local Ray instance, registers a default-architecture LSTM (sequence_length 60) in a
throwaway MLflow store, deploys the prediction app and a no-op deployment that takes the same
JSON body, then measures with real HTTP on keep-alive connections:
  - sequential latency (p50, p99) of one 60-bar sequence per request,
  - throughput and latency with 16 concurrent clients,
  - the in-process time of the model work alone (forecast + importance + drift, 1 thread).
Rounds alternate between the two targets so drifts in machine load hit both.

    .venv/bin/python bench/bench_serving.py [--requests 400] [--seconds 8] [--rounds 2]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED_BTC = ROOT.parent / "shared" / "data" / "ohlcv" / "binance_1h" / "BTCUSDT_1h.csv"
MODEL_NAME = "bench_lstm"
CLIENTS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_model(tmp: Path) -> None:
    """A default-size LSTM (hidden 64, 2 layers, 60 bars) trained briefly in a temp store."""
    import mlflow

    from training.experiment import train_model
    from training.models import build_config
    from training.specs import DataSpec, TrainSettings

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    train_model(
        TrainSettings(
            data=DataSpec(days_back=120),
            config=build_config("lstm", {"epochs": 2}),
            model_name=MODEL_NAME,
            experiment_name="bench",
        )
    )


def request_bodies(n: int) -> list[bytes]:
    """n JSON bodies, each one real 60-bar BTC/USDT window (the shared copy, else the sample)."""
    from training.data import load_data

    path = str(SHARED_BTC) if SHARED_BTC.exists() else "sample"
    bars = load_data("BTC/USDT", days_back=None, data_path=path)
    values = bars[["open", "high", "low", "close", "volume"]].to_numpy()
    starts = np.random.default_rng(0).integers(0, len(values) - 60, n)
    return [
        json.dumps({"symbol": "BTC/USDT", "sequences": [values[s : s + 60].tolist()]}).encode()
        for s in starts
    ]


def post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    start = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path} answered {resp.status}: {payload[:300]!r}")
    return (time.perf_counter() - start) * 1000


def sequential(port: int, path: str, bodies: list[bytes]) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for body in bodies[:30]:  # warm the connection and the replicas
        post(conn, path, body)
    out = [post(conn, path, body) for body in bodies]
    conn.close()
    return out


def concurrent(
    port: int, path: str, bodies: list[bytes], seconds: float
) -> tuple[int, float, list[float]]:
    """CLIENTS threads, each a keep-alive connection, posting for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors: list[BaseException] = []
    go = threading.Event()
    deadline = [0.0]

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        post(conn, path, bodies[k])
        go.wait()
        i = k
        try:
            while time.perf_counter() < deadline[0]:
                latencies[k].append(post(conn, path, bodies[i % len(bodies)]))
                i += CLIENTS
        except BaseException as exc:  # noqa: BLE001 - reported after the run
            errors.append(exc)
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    start = time.perf_counter()
    deadline[0] = start + seconds
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed on {path}: {errors[0]!r}")
    flat = [x for per in latencies for x in per]
    return len(flat), wall, flat


def model_alone(bodies: list[bytes], repeats: int = 300) -> list[float]:
    """In-process time of what the model replica computes per single-sequence request."""
    import torch

    from training.registry import load_forecaster

    torch.set_num_threads(1)
    forecaster, _ = load_forecaster(MODEL_NAME, "latest")
    windows = [json.loads(b)["sequences"] for b in bodies[:repeats]]
    out = []
    for w in windows:
        start = time.perf_counter()
        arr = forecaster.pipeline.check_windows(w)
        forecaster.forecast(arr)
        forecaster.importance_per_window(arr)
        forecaster.drift(arr)
        out.append((time.perf_counter() - start) * 1000)
    return out[20:]


class NoOpDeployment:
    """Reads and parses the JSON body, answers a constant: the floor of any Serve endpoint."""

    async def __call__(self, request):
        from starlette.responses import JSONResponse

        json.loads(await request.body())
        return JSONResponse({"ok": True})


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per round")
    parser.add_argument("--seconds", type=float, default=8.0, help="concurrent phase per round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray import serve

    from deployments.app import AppArgs, build_app

    tmp = Path(tempfile.mkdtemp(prefix="bench_serving_"))
    register_model(tmp)
    bodies = request_bodies(args.requests)
    model_ms = model_alone(bodies)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(
        build_app(
            AppArgs(model_name=MODEL_NAME, api_key_env="MLTRADE_BENCH_NO_KEY", with_sentiment=False)
        ),
        name="api",
        route_prefix="/",
    )
    noop = serve.deployment(
        NoOpDeployment, name="NoOp", max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.25}
    )
    serve.run(noop.bind(), name="noop", route_prefix="/noop")
    targets = {"no-op": "/noop", "/predict": "/api/v1/ml/predict"}

    seq = {name: [] for name in targets}
    conc = {name: [0, 0.0, []] for name in targets}
    for r in range(args.rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            seq[name] += sequential(port, targets[name], bodies)
        for name in order:
            n, wall, lat = concurrent(port, targets[name], bodies, args.seconds)
            conc[name][0] += n
            conc[name][1] += wall
            conc[name][2] += lat
    serve.shutdown()
    ray.shutdown()

    rows = {}
    for name in targets:
        n, wall, lat = conc[name]
        rows[name] = (pct(seq[name], 50), pct(seq[name], 99), n / wall, pct(lat, 50), pct(lat, 99))
    print(
        f"\nServing benchmark: one 60-bar BTC/USDT sequence per request, {os.cpu_count()} CPUs, "
        f"{args.rounds} rounds x ({args.requests} sequential + {args.seconds:.0f} s with "
        f"{CLIENTS} clients)\n"
    )
    print(
        f"| endpoint | sequential p50 ms | sequential p99 ms | {CLIENTS} clients req/s "
        f"| {CLIENTS} clients p50 ms | {CLIENTS} clients p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, (p50, p99, rps, cp50, cp99) in rows.items():
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {rps:.0f} | {cp50:.2f} | {cp99:.2f} |")
    base, api = rows["no-op"], rows["/predict"]
    print(
        f"| /predict / no-op | {api[0] / base[0]:.2f}x (target <= 1.3x) | "
        f"{api[1] / base[1]:.2f}x | {api[2] / base[2]:.2f}x (target >= 0.8x) | "
        f"{api[3] / base[3]:.2f}x | {api[4] / base[4]:.2f}x |"
    )
    print(
        f"\nModel alone, in process (check + forecast + importance + drift, 1 thread): "
        f"p50 {pct(model_ms, 50):.2f} ms, p99 {pct(model_ms, 99):.2f} ms"
    )


if __name__ == "__main__":
    main()
