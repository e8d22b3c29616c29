"""Manage registered models: promote a run's model to an alias, roll an alias back, list.

    python -m training.deploy --action promote --model-uri runs:/<run_id>/model \
        --model-name lstm_price_forecast --stage production
    python -m training.deploy --action rollback --model-name lstm_price_forecast
    python -m training.deploy --action list
"""

from __future__ import annotations

import argparse
import json

from training.registry import ModelNotFoundError, list_models, promote, rollback
from training.tracking import setup_tracking


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m training.deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--action", choices=("promote", "rollback", "list"), default="list")
    p.add_argument("--model-uri", default="", help="runs:/<run_id>/model or models:/<name>/<v>")
    p.add_argument("--model-name", default="", help="registered model name")
    p.add_argument(
        "--stage",
        default="production",
        help="the alias to move (MLflow aliases replace the deprecated stages)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (also the MLproject `deploy` entry)."""
    args = build_parser().parse_args(argv)
    setup_tracking()
    try:
        if args.action == "promote":
            if not args.model_uri or not args.model_name:
                raise SystemExit("promote needs --model-uri and --model-name")
            mv = promote(args.model_uri, args.model_name, args.stage)
            print(f"{args.model_name}@{args.stage} -> version {mv.version} (run {mv.run_id})")
        elif args.action == "rollback":
            if not args.model_name:
                raise SystemExit("rollback needs --model-name")
            mv = rollback(args.model_name, args.stage)
            print(f"{args.model_name}@{args.stage} rolled back to version {mv.version}")
        else:
            print(json.dumps(list_models(args.model_name or None), indent=2, default=str))
    except ModelNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
