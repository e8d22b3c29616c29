"""Train a forecaster, log the run to MLflow and register the model.

python -m training.train --model-type lstm --symbol BTC/USDT --data-path sample --epochs 20
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from training.bundle import Forecaster
from training.data import SAMPLE, load_data
from training.evaluation import plot_losses, plot_predictions
from training.fit import FitResult, fit_forecaster
from training.models import MODEL_TYPES
from training.tracking import setup_tracking, use_experiment

__all__ = ["TrainSettings", "load_data", "log_forecaster", "main", "train_model"]

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """What to train on and where to record it; model knobs go in `overrides`."""

    model_type: str = "lstm"
    model_name: str = "lstm_price_forecast"
    symbols: tuple[str, ...] = ("BTC/USDT",)
    interval: str = "1h"
    days_back: int | None = 365
    data_path: str | None = SAMPLE
    exchange: str = "binance"
    experiment_name: str = "lstm_forecasting"
    overrides: dict = field(default_factory=dict)
    num_workers: int = 0
    register: bool = True


def log_forecaster(
    forecaster: Forecaster, registered_model_name: str | None = None
) -> mlflow.models.model.ModelInfo:
    """Log the forecaster as a models-from-code pyfunc in the active run (and register it)."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = forecaster.save(Path(tmp) / "bundle")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(Path(__file__).parent)],
            registered_model_name=registered_model_name,
            pip_requirements=[],  # runs in the project environment; see constraints.txt
        )


def log_fit(result: FitResult, settings: TrainSettings) -> None:
    """Parameters, test metrics, data provenance and plots of a finished fit."""
    meta = result.forecaster.metadata
    params = {
        **result.forecaster.config.to_dict(),
        "model_type": settings.model_type,
        "symbols": ",".join(settings.symbols),
        "interval": settings.interval,
        "days_back": settings.days_back,
        "data_source": settings.data_path or settings.exchange,
        "num_workers": settings.num_workers,
    }
    # `mlflow run` has already logged the raw entry-point parameters (e.g. symbols=""); a param
    # cannot change, so a resolved value that differs goes to a `resolved.` tag instead.
    logged = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in logged})
    mlflow.set_tags(
        {f"resolved.{k}": v for k, v in params.items() if k in logged and logged[k] != str(v)}
    )
    mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
    mlflow.log_metrics(
        {"best_epoch": result.history["best_epoch"][0], "interval_q": result.forecaster.interval_q}
    )
    mlflow.set_tags(
        {
            "data_start": meta["data_start"],
            "data_end": meta["data_end"],
            "data_sha256": meta["data_sha256"],
        }
    )
    mlflow.log_dict(meta, "data_metadata.json")
    import matplotlib.pyplot as plt  # plot_* already selected the Agg backend

    test = result.splits["test"]
    for fig, name in (
        (plot_losses(result.history), "loss_curves.png"),
        (
            plot_predictions(test.target_time, test.next_close, result.test_forecast),
            "predictions.png",
        ),
    ):
        mlflow.log_figure(fig, name)
        plt.close(fig)


def train_model(settings: TrainSettings) -> dict:
    """Load data, fit, log everything to one MLflow run and register the model.

    Returns:
        run_id, model_uri, registered version (or None) and the test metrics.
    """
    setup_tracking()
    frames = {
        s: load_data(
            s, settings.interval, settings.days_back, settings.data_path, settings.exchange
        )
        for s in settings.symbols
    }
    use_experiment(settings.experiment_name)
    with mlflow.start_run() as run:
        if settings.num_workers > 0:
            from training.distributed import fit_forecaster_distributed

            result = fit_forecaster_distributed(
                frames, settings.model_type, settings.overrides, settings.num_workers
            )
        else:
            result = fit_forecaster(frames, settings.model_type, settings.overrides)
        log_fit(result, settings)
        info = log_forecaster(result.forecaster, settings.model_name if settings.register else None)
    version = None if info.registered_model_version is None else str(info.registered_model_version)
    log.info(
        "run %s: test %s; registered %s v%s",
        run.info.run_id,
        result.metrics,
        settings.model_name,
        version,
    )
    return {
        "run_id": run.info.run_id,
        "model_uri": f"runs:/{run.info.run_id}/model",
        "version": version,
        "metrics": result.metrics,
    }


def parse_overrides(pairs: list[str]) -> dict:
    """`key=value` strings -> dict, values as int, float or str."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param needs key=value, got {pair!r}")
        for cast in (int, float):
            try:
                out[key] = cast(raw)
                break
            except ValueError:
                continue
        else:
            out[key] = raw
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-type", default="lstm", choices=sorted(MODEL_TYPES))
    p.add_argument("--model-name", default="lstm_price_forecast", help="registered model name")
    p.add_argument("--symbol", default="BTC/USDT", help="the symbol to forecast")
    p.add_argument(
        "--symbols", default="", help="comma-separated symbols for cnn_lstm, the forecast one first"
    )
    p.add_argument(
        "--data-path",
        default=SAMPLE,
        help="CSV/Parquet file, 'sample' (bundled candles) or '' (live via ccxt)",
    )
    p.add_argument("--interval", default="1h")
    p.add_argument("--days-back", type=int, default=365, help="0 keeps all candles")
    p.add_argument("--exchange", default="binance", help="ccxt exchange id for live data")
    p.add_argument("--experiment-name", default="lstm_forecasting")
    p.add_argument("--sequence-length", type=int, default=60)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--confidence", type=float, default=0.9, help="prediction interval coverage")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other model config value, e.g. --param hidden_size=128",
    )
    p.add_argument(
        "--num-workers", type=int, default=0, help="Ray Train workers; 0 trains in this process"
    )
    p.add_argument("--no-register", action="store_true", help="log the model without registering")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (also the MLproject `train` entry)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    symbols = tuple(s.strip() for s in args.symbols.split(",") if s.strip()) or (args.symbol,)
    overrides = {
        "sequence_length": args.sequence_length,
        "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "batch_size": args.batch_size,
        "confidence": args.confidence,
        "seed": args.seed,
        **parse_overrides(args.param),
    }
    settings = TrainSettings(
        model_type=args.model_type,
        model_name=args.model_name,
        symbols=symbols,
        interval=args.interval,
        days_back=args.days_back or None,
        data_path=args.data_path or None,
        exchange=args.exchange,
        experiment_name=args.experiment_name,
        overrides=overrides,
        num_workers=args.num_workers,
        register=not args.no_register,
    )
    result = train_model(settings)
    print(
        f"run_id={result['run_id']} model_uri={result['model_uri']} "
        f"registered={args.model_name} version={result['version']}"
    )
    for key, value in result["metrics"].items():
        print(f"  test_{key}: {value:.6g}")
    return result


if __name__ == "__main__":
    main()
