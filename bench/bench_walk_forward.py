"""Walk-forward on Ray with 2 CPUs against 1 CPU, every round in a fresh process.

Two jobs on the bundled BTC/USDT sample, with `mltrade walk-forward`'s model and costs (LSTM,
sequence 48, commission 0.1 %, slippage 0.05 %):

- big: its defaults, 10 windows of 180 d train / 30 d test, 10 epochs (target >= 1.8x);
- small: 5 windows of 90 d train / 30 d test, 2 epochs (target >= 1.5x).

Each round runs one job in a new Python process that imports what the command has imported when
it starts a job (MLflow, the charts, the models), calls `ray.init(num_cpus=N)` and times
`backtest.jobs.run_walk_forward_job` (loading the last `days` of candles, the windows, logging
to MLflow): the Ray workers start cold, so their imports are in the time, as they are for a
user's first job. Rounds alternate 1 CPU and 2 CPUs (and in-process sequential with
--sequential) so outside load hits all of them alike; the load average is taken as each round
starts. One MLflow SQLite store, created before the first round, serves every round. Ray runs
workers at niceness 15 by default; the bench sets RAY_worker_niceness=0 so that they compete
with the driver and with other work at its priority.

Next to wall time, the table gives the CPU seconds of the driver process and of its Ray workers
during the job: on a busy machine wall times stretch, CPU seconds much less, and with N idle
cores a round takes about max(longest chain of windows, total CPU / N).

    .venv/bin/python bench/bench_walk_forward.py [--rounds 3] [--jobs big,small] [--sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOBS = {
    "big": {"train_days": 180, "test_days": 30, "windows": 10, "epochs": 10},
    "small": {"train_days": 90, "test_days": 30, "windows": 5, "epochs": 2},
}
TARGETS = {"big": 1.8, "small": 1.5}


def child(job: str, cpus: int) -> dict:
    """One round in this (fresh) process: cpus 0 runs the windows in process, without Ray."""
    # What `mltrade walk-forward` has imported when it starts the job (MLflow, charts, models)
    from backtest.engine import BacktraderEngine
    from backtest.jobs import run_walk_forward_job
    from backtest.settings import WalkForwardSettings
    from training.models import build_config
    from training.specs import DataSpec

    spec = JOBS[job]
    days = spec["train_days"] + spec["test_days"] * spec["windows"]
    settings = WalkForwardSettings(  # the command's defaults but the geometry and epochs
        data=DataSpec(("BTC/USDT",), "1h", days, "sample"),
        model_config=build_config("lstm", {"sequence_length": 48, "epochs": spec["epochs"]}),
        train_days=spec["train_days"],
        test_days=spec["test_days"],
        step_days=spec["test_days"],
        engine=BacktraderEngine(commission=0.001, slippage=0.0005),
        parallel=cpus > 0,
        experiment_name=f"bench_walk_forward_{job}",
        output_dir=None,
        show_progress=False,
    )
    init_s = 0.0
    if cpus:
        import ray

        began = time.perf_counter()
        for attempt in range(3):  # a raylet gets 30 s to register, too few on a loaded machine
            try:
                ray.init(
                    address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False
                )
                break
            except Exception:
                ray.shutdown()
                if attempt == 2:
                    raise
        init_s = time.perf_counter() - began
    workers_before = _workers_cpu()
    began, cpu_began = time.perf_counter(), time.process_time()
    result = run_walk_forward_job(settings)
    seconds, driver_cpu = time.perf_counter() - began, time.process_time() - cpu_began
    assert len(result.windows) == spec["windows"], len(result.windows)
    return {
        "seconds": seconds,
        "driver_cpu_s": driver_cpu,
        "workers_cpu_s": _workers_cpu() - workers_before,
        "ray_init_s": init_s,
        "window_s": statistics.fmean(w["seconds"] for w in result.windows),
        "test_returns": [round(w["test"]["total_return_pct"], 6) for w in result.windows],
    }


def _workers_cpu() -> float:
    """CPU seconds used so far by this process's Ray workers (`ray::` processes)."""
    from ray.thirdparty_files import psutil

    total = 0.0
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.name().startswith("ray::") or "default_worker.py" in " ".join(proc.cmdline()):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            continue
    return total


def run_round(job: str, cpus: int, env: dict) -> dict:
    load = os.getloadavg()[0]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", job, str(cpus)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"round {job}/{cpus} CPU failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**out, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per setting (default 3)")
    parser.add_argument("--jobs", default="big,small", help="comma-separated: big, small")
    parser.add_argument("--sequential", action="store_true", help="add in-process rounds")
    parser.add_argument("--child", nargs=2, metavar=("JOB", "CPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return

    tmp = tempfile.mkdtemp(prefix="bench_wf_")
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
        RAY_worker_niceness="0",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    # the store's tables are created once, here, not inside the first timed round
    subprocess.run(
        [sys.executable, "-c", "import mlflow; mlflow.search_experiments()"], env=env, check=True
    )
    jobs = args.jobs.split(",")
    settings = [1, 2] + ([0] if args.sequential else [])
    rounds: dict[tuple[str, int], list[dict]] = {(j, c): [] for j in jobs for c in settings}
    for r in range(args.rounds):
        for job in jobs:
            for cpus in settings if r % 2 == 0 else settings[::-1]:
                out = run_round(job, cpus, env)
                rounds[(job, cpus)].append(out)
                print(
                    f"round {r + 1} {job} {cpus or 'in-process'} CPU: {out['seconds']:.1f} s "
                    f"(load {out['load']:.1f})",
                    file=sys.stderr,
                    flush=True,
                )
    for job in jobs:
        returns = {c: rounds[(job, c)][0]["test_returns"] for c in settings}
        if len({json.dumps(v) for v in returns.values()}) != 1:
            print(f"WARNING: {job}: test returns differ between settings: {returns}")
    print(f"\n{os.cpu_count()} CPUs; {args.rounds} rounds per setting, alternating; seconds of")
    print("the job in a fresh process (cold Ray workers), median over rounds\n")
    print(
        "| job | setting | seconds per round | median s | ratio vs 1 CPU | target | "
        "mean window s | driver CPU s | workers CPU s | load average per round |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for job in jobs:
        spec = JOBS[job]
        label = (
            f"{job}: {spec['windows']} x {spec['train_days']} d / {spec['test_days']} d, "
            f"{spec['epochs']} epochs"
        )
        base = statistics.median(o["seconds"] for o in rounds[(job, 1)])
        for cpus in settings:
            outs = rounds[(job, cpus)]
            median = statistics.median(o["seconds"] for o in outs)
            ratio = base / median
            target = f">= {TARGETS[job]}x" if cpus == 2 else ""
            setting = f"Ray, {cpus} CPU" if cpus else "in process (parallel=False)"
            print(
                f"| {label} | {setting} | {_joined(outs, 'seconds')} | {median:.1f} | "
                f"{ratio:.2f}x | {target} | "
                f"{statistics.fmean(o['window_s'] for o in outs):.2f} | "
                f"{statistics.fmean(o['driver_cpu_s'] for o in outs):.1f} | "
                f"{statistics.fmean(o['workers_cpu_s'] for o in outs):.1f} | "
                f"{_joined(outs, 'load')} |"
            )


def _joined(outs: list[dict], key: str) -> str:
    return " / ".join(f"{o[key]:.1f}" for o in outs)


if __name__ == "__main__":
    main()
