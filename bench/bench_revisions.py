"""Before/after: training throughput and serving latency of two git revisions, rounds interleaved.

Checks the base revision out into a temporary worktree and, round by round, alternating which
goes first, runs each revision's own benchmark code in a fresh process with that tree first on
PYTHONPATH (same virtualenv):
  - training: samples/s of the in-process trainer (bench_ray_train.plain_throughput, default
    LSTM, 365 days of the bundled BTC/USDT candles),
  - serving: bench_serving.py with one round (its /predict and no-op rows, and their ratio).

    .venv/bin/python bench/bench_revisions.py --base HEAD~5 [--rounds 2] [--skip-serving]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_SNIPPET = """
import sys, numpy as np, torch
sys.path.insert(0, "bench")
torch.set_num_threads(1)
from bench_ray_train import MODEL, plain_throughput
from training.data import load_data
frames = {"BTC/USDT": load_data("BTC/USDT", data_path="sample", days_back=365)}
rates, wall = plain_throughput(frames, {**MODEL, "epochs": %d, "patience": %d})
print("RATE", float(np.median(rates)), "WALL", wall)
"""
ROW = re.compile(r"^\| (no-op|/predict) \|([^|]+)\|([^|]+)\|([^|]+)\|")


def run(tree: Path, args: list[str], timeout: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        raise RuntimeError(
            f"{args[:2]} in {tree} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return done.stdout


def training_rate(tree: Path, epochs: int) -> float:
    out = run(tree, ["-c", TRAIN_SNIPPET % (epochs, epochs)], 1800)
    return float(out.split("RATE")[1].split()[0])


def serving_rows(tree: Path) -> dict[str, tuple[float, float, float]]:
    """{target: (sequential p50 ms, sequential p99 ms, 16-client req/s)}"""
    out = run(tree, ["bench/bench_serving.py", "--rounds", "1"], 1800)
    rows = {}
    for line in out.splitlines():
        match = ROW.match(line.strip())
        if match:
            rows[match[1]] = tuple(float(match[i]) for i in (2, 3, 4))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--base", required=True, help="the 'before' revision")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--skip-serving", action="store_true")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench_base_")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True
    )
    trees = {"before": base, "after": ROOT}
    rates = {k: [] for k in trees}
    serving = {k: [] for k in trees}
    try:
        for r in range(args.rounds):
            order = list(trees) if r % 2 == 0 else list(reversed(trees))
            for name in order:
                rates[name].append(training_rate(trees[name], args.epochs))
                if not args.skip_serving:
                    serving[name].append(serving_rows(trees[name]))
                print(f"round {r + 1} {name} done", file=sys.stderr, flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT)

    load = os.getloadavg()
    print(
        f"\nbefore = {args.base}, after = working tree; {args.rounds} interleaved rounds; "
        f"{os.cpu_count()} CPUs; load average now {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n"
    )
    print("| measure | before | after | after / before |")
    print("|---|---|---|---|")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"| training samples/s (LSTM, 1 thread, median) | {med['before']:.0f} | "
        f"{med['after']:.0f} | {med['after'] / med['before']:.2f} |"
    )
    if not args.skip_serving:
        for label, target, col in (
            ("/predict sequential p50 ms", "/predict", 0),
            ("/predict sequential p99 ms", "/predict", 1),
            ("/predict 16 clients req/s", "/predict", 2),
            ("no-op sequential p50 ms", "no-op", 0),
            ("no-op 16 clients req/s", "no-op", 2),
        ):
            vals = {k: statistics.median(row[target][col] for row in v) for k, v in serving.items()}
            print(
                f"| {label} | {vals['before']:.1f} | {vals['after']:.1f} | "
                f"{vals['after'] / vals['before']:.2f} |"
            )
        for k, v in serving.items():
            ratio = statistics.median(row["/predict"][0] / row["no-op"][0] for row in v)
            print(f"\n{k}: /predict p50 / no-op p50 = {ratio:.2f}", end="")
        print()


if __name__ == "__main__":
    main()
