"""Backtest a registered model, or run a walk-forward analysis, from the command line.

python -m backtest.run backtest --model-name lstm_price_forecast --symbol BTC/USDT --days-back 90
python -m backtest.run walk-forward --symbol BTC/USDT --days-back 0 --train-days 180 --epochs 5
"""

from __future__ import annotations

import argparse
import json
import logging

import mlflow

from backtest.engine import BacktraderEngine
from backtest.report import log_backtest, select_experiment
from backtest.strategies import MLBacktraderStrategy
from backtest.walk_forward import WalkForwardAnalyzer
from training.data import SAMPLE, load_data
from training.models import MODEL_TYPES
from training.train import parse_overrides

log = logging.getLogger(__name__)


def _add_common(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--symbol", default="BTC/USDT")
    data.add_argument(
        "--data-path", default=SAMPLE, help="CSV/Parquet file, 'sample' or '' (live via ccxt)"
    )
    data.add_argument("--interval", default="1h")
    data.add_argument("--days-back", type=int, default=90, help="0 keeps all candles")
    data.add_argument("--exchange", default="binance")
    costs = p.add_argument_group("engine")
    costs.add_argument("--initial-cash", type=float, default=10_000.0)
    costs.add_argument("--commission", type=float, default=0.001, help="fraction per fill")
    costs.add_argument("--slippage", type=float, default=0.0005, help="fraction per fill")
    costs.add_argument("--allow-short", action="store_true", help="allow short positions")
    strat = p.add_argument_group("strategy")
    strat.add_argument(
        "--entry-threshold", type=float, default=0.0, help="predicted return above round-trip cost"
    )
    strat.add_argument("--exit-threshold", type=float, default=0.0)
    strat.add_argument(
        "--min-confidence", type=float, default=0.0, help="share of the interval agreeing, 0..1"
    )
    strat.add_argument("--position-size", type=float, default=0.95, help="fraction of equity")
    strat.add_argument("--scale-by-confidence", action="store_true")
    p.add_argument("--experiment-name", default=None)
    p.add_argument("--output-dir", default="reports", help="where PNG reports are written")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m backtest.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    bt_cmd = sub.add_parser("backtest", help="backtest a registered model")
    bt_cmd.add_argument("--model-name", default="lstm_price_forecast")
    bt_cmd.add_argument("--model-version", default="latest", help="number, alias or 'latest'")
    _add_common(bt_cmd)
    wf = sub.add_parser("walk-forward", help="retrain per window and test out of sample on Ray")
    single_asset = sorted(name for name, spec in MODEL_TYPES.items() if not spec.multi_asset)
    wf.add_argument("--model-type", default="lstm", choices=single_asset)
    wf.add_argument("--train-days", type=float, default=180)
    wf.add_argument("--test-days", type=float, default=30)
    wf.add_argument("--step-days", type=float, default=30)
    wf.add_argument("--sequence-length", type=int, default=48)
    wf.add_argument("--epochs", type=int, default=10)
    wf.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="other model config values, e.g. --param hidden_size=32",
    )
    wf.add_argument("--num-cpus-per-task", type=float, default=1.0)
    wf.add_argument("--num-gpus-per-task", type=float, default=0.0)
    wf.add_argument("--sequential", action="store_true", help="run windows one after another")
    _add_common(wf)
    wf.set_defaults(days_back=0)  # every candle: windows need months of data
    return parser


def _strategy_params(args) -> dict:
    return {
        "entry_threshold": args.entry_threshold,
        "exit_threshold": args.exit_threshold,
        "min_confidence": args.min_confidence,
        "position_size": args.position_size,
        "scale_by_confidence": args.scale_by_confidence,
    }


def run_backtest_command(args) -> dict:
    """Backtest a registered model and log the run, its metrics and equity chart."""
    from training.registry import resolve_version
    from training.tracking import setup_tracking

    setup_tracking()
    candles = load_data(
        args.symbol, args.interval, args.days_back or None, args.data_path or None, args.exchange
    )
    version = resolve_version(args.model_name, args.model_version)  # fail before any work
    engine = BacktraderEngine(
        args.initial_cash, args.commission, args.slippage, args.allow_short, args.interval
    )
    params = {
        "model_name": args.model_name,
        "model_version": str(version.version),
        **_strategy_params(args),
    }
    result = engine.run_backtest(candles, MLBacktraderStrategy, params)
    select_experiment(args.experiment_name or "backtest")
    with mlflow.start_run(run_name=f"backtest_{args.model_name}_v{version.version}") as run:
        # Prefixed so they never clash with the params `mlflow run` logs for the entry.
        mlflow.log_params(
            {
                **{f"strategy_{k}": v for k, v in params.items()},
                "model_run_id": version.run_id,
                "data_symbol": args.symbol,
                "data_interval": args.interval,
                "data_bars": len(candles),
                "data_start": str(candles.index[0]),
                "data_end": str(candles.index[-1]),
                **{f"engine_{k}": v for k, v in result.settings.items()},
            }
        )
        path = log_backtest(result, output_dir=args.output_dir)
    summary = {"run_id": run.info.run_id, "report": str(path), **result.summary()}
    print(json.dumps(summary, indent=1, default=str))
    return summary


def run_walk_forward_command(args) -> dict:
    """Walk-forward analysis with the MLBacktraderStrategy; prints the summary."""
    candles = load_data(
        args.symbol, args.interval, args.days_back or None, args.data_path or None, args.exchange
    )
    analyzer = WalkForwardAnalyzer(
        train_period_days=args.train_days,
        test_period_days=args.test_days,
        step_days=args.step_days,
        engine=BacktraderEngine(
            args.initial_cash, args.commission, args.slippage, args.allow_short, args.interval
        ),
        num_cpus_per_task=args.num_cpus_per_task,
        num_gpus_per_task=args.num_gpus_per_task,
        parallel=not args.sequential,
        experiment_name=args.experiment_name or "walk_forward",
        output_dir=args.output_dir,
    )
    model_config = {
        "model_type": args.model_type,
        "sequence_length": args.sequence_length,
        "epochs": args.epochs,
        **parse_overrides(args.param),
    }
    result = analyzer.analyze(
        candles,
        MLBacktraderStrategy,
        model_config=model_config,
        strategy_params=_strategy_params(args),
        symbol=args.symbol,
    )
    out = {"run_id": result.run_id, "report": str(result.report_path), **result.summary}
    print(json.dumps(out, indent=1, default=str))
    return out


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (also the MLproject `backtest` and `walk_forward` entries)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    if args.command == "backtest":
        return run_backtest_command(args)
    return run_walk_forward_command(args)


if __name__ == "__main__":
    main()
