"""Load benchmark of the prediction API against the no-op compositions it is built on.

Starts a local Ray instance, registers a default-architecture LSTM (sequence_length 60) in a
throwaway MLflow store and deploys, in the same Serve instance, the prediction app and its
floors:
  - two-hop no-op: a FastAPI ingress deployment parses the same JSON body into a float64 array
    and hands it by value to a second deployment that answers {"n": rows} (the layout of the
    app: ingress -> model deployment, with no model work),
  - one-hop no-op: the same ingress answers {"n": rows} itself.
Then it measures with real HTTP on keep-alive connections:
  - sequential latency (p50, p99) of one 60-bar sequence per request,
  - throughput and latency with 16 concurrent clients,
  - the in-process time of the model work alone (check + forecast + importance + drift,
    1 thread).
Rounds alternate the order of the targets so drifts in machine load hit all of them.

    .venv/bin/python bench/bench_serving.py [--requests 400] [--seconds 8] [--rounds 2]
        [--tree DIR]

`--tree` measures the app of another checkout (bench_revisions.py uses it for before/after).
"""

# No `from __future__ import annotations`: FastAPI must see the floor routes' real annotations.
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
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ROOT = Path(__file__).resolve().parent.parent
SHARED_BTC = ROOT.parent / "shared" / "data" / "ohlcv" / "binance_1h" / "BTCUSDT_1h.csv"
MODEL_NAME = "bench_lstm"
CLIENTS = 16
TARGETS = {
    "two-hop no-op": "/floor/two-hop",
    "one-hop no-op": "/floor/one-hop",
    "/predict": "/api/v1/ml/predict",
}
SEQ_TARGET, RPS_TARGET = 1.2, 0.95  # /predict vs the two-hop no-op (issue 11)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_model(tmp: Path) -> None:
    """A default-size LSTM (hidden 64, 2 layers, 60 bars) trained briefly in a store of its own
    (unless the store already holds it)."""
    import mlflow

    from training.experiment import train_model
    from training.models import build_config
    from training.specs import DataSpec, TrainSettings

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    if mlflow.get_experiment_by_name("bench") is not None:
        return
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
        forecaster.analyze_many([w])  # the model replica's call: one check, forward, backward
        out.append((time.perf_counter() - start) * 1000)
    return out[20:]


def floor_app(options: dict):
    """The no-op floors: one FastAPI ingress deployment with the two-hop and one-hop routes,
    bound to a second deployment that answers {"n": rows} for the array it is handed."""
    from ray import serve

    api = FastAPI()

    class FloorModel:
        async def __call__(self, arr: np.ndarray) -> dict:
            return {"n": len(arr)}

    @serve.ingress(api)
    class FloorIngress:
        def __init__(self, model) -> None:
            self.model = model.options(_by_reference=False)  # by value, as the app's handle

        @api.post("/two-hop")
        async def two_hop(self, request: Request) -> JSONResponse:
            arr = np.asarray((await request.json())["sequences"], dtype=np.float64)
            return JSONResponse(await self.model.remote(arr))

        @api.post("/one-hop")
        async def one_hop(self, request: Request) -> JSONResponse:
            arr = np.asarray((await request.json())["sequences"], dtype=np.float64)
            return JSONResponse({"n": len(arr)})

    model = serve.deployment(FloorModel, name="FloorModel", **options["model"])
    ingress = serve.deployment(FloorIngress, name="FloorIngress", **options["ingress"])
    return ingress.bind(model.bind())


def deployment_options(args) -> dict:
    """The floors get the resources, request limits and logging of the app's deployments."""
    from deployments.app import QUIET
    from deployments.ingress import PredictionAPI
    from deployments.model import ModelDeployment

    return {
        "ingress": {
            "max_ongoing_requests": PredictionAPI.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": args.ingress_num_cpus},
            "logging_config": QUIET,
        },
        "model": {
            "max_ongoing_requests": ModelDeployment.max_ongoing_requests,
            "ray_actor_options": {"num_cpus": args.model_num_cpus},
            "logging_config": QUIET,
        },
    }


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="sequential requests per round")
    parser.add_argument("--seconds", type=float, default=8.0, help="concurrent phase per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose app is measured")
    parser.add_argument(
        "--store", type=Path, help="MLflow store directory to reuse (default: a new temp one)"
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the whole Ray instance (e.g. a RAY_SERVE_* flag); repeatable",
    )
    args = parser.parse_args()
    tree = str(args.tree.resolve())
    sys.path.insert(0, tree)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (tree, os.environ.get("PYTHONPATH")) if p
    )  # Ray's workers import the app from it

    import ray
    from ray import serve

    from deployments.app import AppArgs, build_app

    load_start = load()
    tmp = args.store.resolve() if args.store else Path(tempfile.mkdtemp(prefix="bench_serving_"))
    tmp.mkdir(parents=True, exist_ok=True)
    register_model(tmp)
    bodies = request_bodies(args.requests)
    model_ms = model_alone(bodies)

    os.environ.update(item.split("=", 1) for item in args.env)  # before Ray starts: all inherit
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp / "ray"),
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app_args = AppArgs(
        model_name=MODEL_NAME, api_key_env="MLTRADE_BENCH_NO_KEY", with_sentiment=False
    )
    serve.run(build_app(app_args), name="api", route_prefix="/")
    serve.run(floor_app(deployment_options(app_args)), name="floor", route_prefix="/floor")

    seq: dict[str, list[float]] = {name: [] for name in TARGETS}
    conc: dict[str, list] = {name: [0, 0.0, []] for name in TARGETS}
    names = list(TARGETS)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            seq[name] += sequential(port, TARGETS[name], bodies)
        for name in order:
            n, wall, lat = concurrent(port, TARGETS[name], bodies, args.seconds)
            conc[name][0] += n
            conc[name][1] += wall
            conc[name][2] += lat
    replicas = {
        f"{app}/{name}": sum(dep.replica_states.values())
        for app, status in serve.status().applications.items()
        for name, dep in status.deployments.items()
    }
    # Each app deleted, then Ray stopped: serve.shutdown() would end by killing its own
    # controller, which Ray logs as a failed graceful_shutdown task.
    for app in serve.status().applications:
        serve.delete(app)
    ray.shutdown()

    rows = {}
    for name in TARGETS:
        n, wall, lat = conc[name]
        rows[name] = (pct(seq[name], 50), pct(seq[name], 99), n / wall, pct(lat, 50), pct(lat, 99))
    print(
        f"\nServing benchmark: one 60-bar BTC/USDT sequence per request, {os.cpu_count()} CPUs, "
        f"{args.rounds} rounds x ({args.requests} sequential + {args.seconds:.0f} s with "
        f"{CLIENTS} clients) per target; load average {load_start} at the start, {load()} at "
        f"the end{'; ' + ' '.join(args.env) if args.env else ''}\n"
    )
    print(
        f"| endpoint | sequential p50 ms | sequential p99 ms | {CLIENTS} clients req/s "
        f"| {CLIENTS} clients p50 ms | {CLIENTS} clients p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, (p50, p99, rps, cp50, cp99) in rows.items():
        print(f"| {name} | {p50:.2f} | {p99:.2f} | {rps:.0f} | {cp50:.2f} | {cp99:.2f} |")
    api = rows["/predict"]
    for floor in ("two-hop no-op", "one-hop no-op"):
        base = rows[floor]
        goals = (
            (f" (target <= {SEQ_TARGET}x)", f" (target >= {RPS_TARGET}x)")
            if floor.startswith("two")
            else ("", "")
        )
        print(
            f"| /predict / {floor} | {api[0] / base[0]:.2f}x{goals[0]} | "
            f"{api[1] / base[1]:.2f}x | {api[2] / base[2]:.2f}x{goals[1]} | "
            f"{api[3] / base[3]:.2f}x | {api[4] / base[4]:.2f}x |"
        )
    model_p50 = pct(model_ms, 50)
    print(
        f"\nModel alone, in process (check + forecast + importance + drift, 1 thread): "
        f"p50 {model_p50:.2f} ms, p99 {pct(model_ms, 99):.2f} ms"
    )
    # The two-hop floor does no model work; this ratio leaves the model's own work out of what
    # /predict is charged for, so it shows what the app adds around it.
    with_model = rows["two-hop no-op"][0] + model_p50
    print(
        f"Sequential p50, /predict against the two-hop no-op plus the model alone "
        f"({with_model:.2f} ms): {api[0] / with_model:.2f}x"
    )
    print(f"Replicas at the end: {replicas}")


if __name__ == "__main__":
    main()
