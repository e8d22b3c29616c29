"""Ray Train and Ray Tune against plain training, side by side in one run; prints two tables.

    .venv/bin/python bench/bench_ray_train.py [--days-back 365] [--epochs 3] [--trials 8]

1. Throughput: the same LSTM on the same real BTC/USDT candles trained by the plain in-process
   trainer, by Ray Train with 1 worker and with 2 workers, each process with `--threads` torch
   threads (default 1: a shared, oversubscribed machine punishes multi-threaded torch, which
   would measure the machine rather than Ray). Samples/s is timed around `train_epoch` in every
   case (data-parallel workers: global samples over the slowest worker's epoch time), the median
   epoch of `--repeats` interleaved rounds; wall s adds everything else (Ray Train's controller
   and worker start, checkpoints, calibration). Target: 1 worker >= 0.9x plain.
2. Sweeps: the same 8 sampled configurations (one seed) run by Ray Tune with ASHA early stopping
   and to completion (FIFO), wall time of the whole `run_sweep` (MLflow logging included).

Uses ../shared/data when present, else the bundled sample. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from training.data import load_data

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ohlcv" / "binance_1h" / "BTCUSDT_1h.csv"
MODEL = {"sequence_length": 60, "hidden_size": 64, "num_layers": 2, "batch_size": 64}


def plain_throughput(frames, overrides) -> tuple[list[float], float]:
    """Samples/s of the shared trainer's epochs in this process, and the wall time of the fit."""
    from training.loaders import prepare_data
    from training.models import build_config, get_model_spec

    start = time.perf_counter()
    config = build_config("lstm", {**overrides, "patience": overrides["epochs"]})
    data = prepare_data(frames, config)
    trainer = get_model_spec("lstm").trainer_class(config, show_progress=False)
    rates = []
    trainer.train(
        *data.batches(), callback=lambda r: rates.append(r.metrics["train_samples_per_s"])
    )
    data.finish(trainer)
    return rates, time.perf_counter() - start


def ray_throughput(frames, overrides, workers: int, threads: int, storage: str):
    """Per-epoch samples/s measured by the Ray Train workers, and the wall time of the fit."""
    from training.distributed import DistributedSettings, fit_forecaster_distributed
    from training.models import build_config

    start = time.perf_counter()
    result = fit_forecaster_distributed(
        frames,
        build_config("lstm", {**overrides, "patience": overrides["epochs"]}),
        workers,
        DistributedSettings(cpus_per_worker=threads, storage_path=storage),
    )
    rates = result.forecaster.metadata["ray_train"]["epoch_samples_per_s"]
    return rates, time.perf_counter() - start


def sweep_wall(scheduler: str, args, storage: str) -> dict:
    from training.specs import DataSpec, TuneSettings
    from training.tune import run_sweep

    settings = TuneSettings(
        data=DataSpec(
            source=str(SHARED) if SHARED.exists() else "sample", days_back=args.sweep_days
        ),
        num_samples=args.trials,
        max_concurrent_trials=2,
        epochs=args.sweep_epochs,
        grace_period=1,
        scheduler=scheduler,
        fixed={"patience": args.sweep_epochs},  # only the scheduler stops trials early
        storage_path=storage,
        experiment_name=f"bench_{scheduler}",
        model_name=f"bench_tune_{scheduler}",
        register=False,
    )
    start = time.perf_counter()
    result = run_sweep(settings)
    wall = time.perf_counter() - start
    return {
        "sweep": f"{args.trials} trials, {scheduler.upper()}",
        "trial-epochs run": sum(t.epochs for t in result.trials),
        "stopped early": sum(t.stopped_by == scheduler for t in result.trials),
        "best val loss": f"{result.best_val_loss:.5f}",
        "wall s": round(wall, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--days-back", type=int, default=365)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the three")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--sweep-days", type=int, default=120)
    p.add_argument("--sweep-epochs", type=int, default=8)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    tmp = tempfile.mkdtemp(prefix="bench_ray_")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"  # never the project store
    cpus = os.cpu_count() or 2
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
    frames = {
        "BTC/USDT": load_data(
            "BTC/USDT", "1h", args.days_back, str(SHARED) if SHARED.exists() else "sample"
        )
    }
    overrides = {**MODEL, "epochs": args.epochs, "patience": args.epochs}
    torch.set_num_threads(args.threads)
    cases = {"plain trainer (in process)": 0, "Ray Train, 1 worker": 1, "Ray Train, 2 workers": 2}
    rates = {name: [] for name in cases}
    walls = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, workers in cases.items():
            if workers:
                epoch_rates, wall = ray_throughput(frames, overrides, workers, args.threads, tmp)
            else:
                epoch_rates, wall = plain_throughput(frames, overrides)
            rates[name] += epoch_rates
            walls[name].append(wall)
    plain = float(np.median(rates["plain trainer (in process)"]))
    table = pd.DataFrame(
        [
            {
                "trainer": name,
                "processes x threads": f"{max(workers, 1)} x {args.threads}",
                "train samples/s": round(np.median(rates[name])),
                "epochs p25-p75": "{:.0f}-{:.0f}".format(*np.percentile(rates[name], [25, 75])),
                "vs plain": f"{np.median(rates[name]) / plain:.2f}x",
                "wall s (median)": round(float(np.median(walls[name])), 1),
            }
            for name, workers in cases.items()
        ]
    )
    bars = len(frames["BTC/USDT"])
    print(f"\n{bars} hourly BTC/USDT bars, LSTM {MODEL}, {args.epochs} epochs, {cpus} CPUs\n")
    print(table.to_markdown(index=False))
    sweeps = pd.DataFrame([sweep_wall(s, args, tmp) for s in ("asha", "fifo")])
    print(
        f"\nSweeps: {args.trials} trials of the lstm search space, {args.sweep_days} days, "
        f"at most {args.sweep_epochs} epochs, 2 concurrent\n"
    )
    print(sweeps.to_markdown(index=False))
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
