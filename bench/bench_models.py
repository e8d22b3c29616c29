"""Train every model type on a real pair and print one table: speed, accuracy against naive
baselines, and interval coverage (overall and per test month).

    .venv/bin/python bench/bench_models.py [--epochs 20] [--days-back 0]

Uses ../shared/data (about 29,000 hourly Binance candles per pair) when present, else the bundled
sample. Not part of `make test`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from training.data import load_data
from training.fit import fit_forecaster
from training.models import build_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "ohlcv" / "binance_1h"
CASES = {
    "lstm": ("BTC/USDT",),
    "cnn_lstm": ("BTC/USDT", "ETH/USDT"),
    "transformer": ("BTC/USDT",),
}


def frames_for(symbols, days_back):
    out = {}
    for symbol in symbols:
        path = SHARED / f"{symbol.replace('/', '')}_1h.csv"
        out[symbol] = load_data(symbol, "1h", days_back, path if path.exists() else "sample")
    return out


def monthly_coverage(result) -> pd.Series:
    test = result.splits["test"]
    f = result.test_forecast
    covered = (test.next_close >= f["lower"]) & (test.next_close <= f["upper"])
    return pd.Series(covered, index=test.target_time).resample("MS").mean()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--days-back", type=int, default=0, help="0: all candles")
    args = p.parse_args()
    rows, months = [], {}
    for model_type, symbols in CASES.items():
        frames = frames_for(symbols, args.days_back or None)
        start = time.perf_counter()
        config = build_config(
            model_type, {"epochs": args.epochs, "patience": 5}, num_assets=len(frames)
        )
        result = fit_forecaster(frames, config, show_progress=False)
        wall = time.perf_counter() - start
        m = result.metrics
        epochs_run = len(result.history["train_loss"])
        n_train = len(result.splits["train"])
        months[model_type] = monthly_coverage(result)
        rows.append(
            {
                "model": model_type,
                "symbols": ",".join(symbols),
                "bars": len(next(iter(frames.values()))),
                "epochs": epochs_run,
                "train samples/s": round(n_train * epochs_run / wall),
                "wall s": round(wall, 1),
                "test RMSE": f"{m['rmse']:.5f}",
                "RW RMSE": f"{m['rmse_random_walk']:.5f}",
                "ratio vs RW": f"{m['rmse_ratio_vs_random_walk']:.4f}",
                "dir. acc.": f"{m['directional_accuracy']:.3f}",
                "90% coverage": f"{m['interval_coverage']:.3f}",
                "width %": f"{m['interval_mean_width_pct']:.2f}",
            }
        )
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    print("\nCoverage of the 90% interval per test month (fit on earlier data only):\n")
    cov = pd.DataFrame(months)
    cov.index = cov.index.strftime("%Y-%m")
    print(cov.round(3).to_markdown())
    print(
        f"\nmin monthly coverage {np.nanmin(cov.to_numpy()):.3f}, "
        f"max {np.nanmax(cov.to_numpy()):.3f}"
    )


if __name__ == "__main__":
    main()
