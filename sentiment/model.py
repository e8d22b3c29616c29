"""`SentimentAnalyzer`: a transformers sequence classifier that scores financial text.

It loads from the MLflow registry (the project's own `news_sentiment` model by default), a
local directory written by `save_pretrained`, or a hub id such as `ProsusAI/finbert` when the
machine can reach the hub. Class names are read from the model's `id2label`, so any
negative/positive/neutral (or bearish/bullish/neutral) head works.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from sentiment.news import check_title
from training.cluster import pick_device

DEFAULT_MODEL_NAME = "news_sentiment"
LABELS = ("negative", "positive", "neutral")  # our head's class order (data labels 0, 1, 2)
SETTINGS_FILE = "sentiment_settings.json"
HEAD_FILE = "head.safetensors"
_URL = re.compile(r"https?://\S+")
_LABEL_WORDS = {"negative": ("neg", "bear"), "positive": ("pos", "bull"), "neutral": ("neu",)}


@contextmanager
def _no_file_bars() -> Iterator[None]:
    """Without transformers' per-file bars ("Loading weights", "Writing model shards"): local
    files of a small encoder take well under a second, and each bar added lines to every start."""
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class SavedSettings:
    """What `save` writes beside the weights (a `save_pretrained` directory may lack it)."""

    max_length: int = 64
    labels: list[str] | None = None  # None: the model's id2label


class SentimentModelError(RuntimeError):
    """The sentiment model cannot be found or loaded; the message says how to get one."""


def clean_text(text: str) -> str:
    """Drop URLs (noise that eats the token budget); the same cleaning in training and scoring."""
    return _URL.sub(" ", text).strip() or text.strip()


class MeanPoolClassifier(nn.Module):
    """A sentence encoder, mean pooling over real tokens, and a linear head.

    MiniLM-L6 (all-MiniLM-L6-v2) was trained to produce sentence meaning by mean pooling, so
    pooling the same way converges much faster than a head on the untrained [CLS] pooler.
    """

    def __init__(self, encoder: nn.Module, num_labels: int = len(LABELS), dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state  # [B, L, H]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [B, H]
        return self.head(self.dropout(pooled))  # [B, C]

    @classmethod
    def from_encoder(cls, path: str | Path, dropout: float | None = None) -> MeanPoolClassifier:
        """A new head on a pretrained encoder directory (offline); `dropout` replaces the
        encoder's and the head's dropout rates (None keeps the encoder's config)."""
        rates = (
            {}
            if dropout is None
            else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        )
        with _no_file_bars():
            encoder = AutoModel.from_pretrained(path, local_files_only=True, **rates)
        return cls(encoder, dropout=0.1 if dropout is None else dropout)

    def save(self, directory: Path) -> None:
        with _no_file_bars():
            self.encoder.save_pretrained(directory)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
            directory / HEAD_FILE,
        )

    @classmethod
    def load(cls, directory: Path) -> MeanPoolClassifier:
        model = cls.from_encoder(directory)
        model.head.load_state_dict(load_file(directory / HEAD_FILE))
        return model


def _label_order(labels: list[str]) -> np.ndarray:
    """Indices of (negative, positive, neutral) among the model's output classes."""
    names = {i: str(n).lower() for i, n in enumerate(labels)}
    order = []
    for label in LABELS:
        hits = [i for i, n in names.items() if n.startswith(_LABEL_WORDS[label])]
        if len(hits) != 1:
            raise SentimentModelError(
                f"model labels {names} do not name one {label} class; a 3-class "
                "negative/positive/neutral head is needed"
            )
        order.append(hits[0])
    return np.array(order)


class SentimentAnalyzer:
    """Scores texts: label, score = P(positive) - P(negative) in [-1, 1], confidence = max P.

    Args:
        model: a MeanPoolClassifier, or a transformers sequence classification model.
        tokenizer: its tokenizer.
        labels: class name of each output (default: the model's id2label, else LABELS).
        max_length: tokens per text (longer texts are truncated).
        batch_size: texts per forward pass.
        source: where the model came from (reported in results).
    """

    def __init__(
        self,
        model,
        tokenizer,
        labels: list[str] | None = None,
        max_length: int = 64,
        batch_size: int = 64,
        source: str = "",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        if labels is None:
            labels = (
                list(LABELS)
                if isinstance(model, MeanPoolClassifier)
                else [model.config.id2label[i] for i in range(model.config.num_labels)]
            )
        self.labels = list(labels)
        self.order = _label_order(self.labels)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.source = source

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_directory(cls, path: str | Path, device: str | None = None) -> SentimentAnalyzer:
        """Load a model saved by `save`, or any `save_pretrained` classification directory,
        offline (weights are safetensors: nothing is unpickled)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise SentimentModelError(f"{path} holds no transformers model (no config.json)")
        settings = SavedSettings()
        if (path / SETTINGS_FILE).is_file():
            settings = SavedSettings(**json.loads((path / SETTINGS_FILE).read_text()))
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        if (path / HEAD_FILE).is_file():
            model = MeanPoolClassifier.load(path)
        else:
            with _no_file_bars():
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, local_files_only=True
                )
        return cls(
            model.to(pick_device(device)),
            tokenizer,
            settings.labels,
            settings.max_length,
            source=str(path),
        )

    @classmethod
    def from_registry(
        cls,
        name: str = DEFAULT_MODEL_NAME,
        version: str | int = "latest",
        device: str | None = None,
    ) -> SentimentAnalyzer:
        """Load a registered version ('latest', a number or an alias) from the MLflow registry
        the current tracking URI points at."""
        from training.tracking import load_model

        analyzer, mv = load_model(name, version)
        analyzer.model.to(pick_device(device))
        analyzer.source = f"models:/{name}/{mv.version}"
        return analyzer

    @classmethod
    def from_default(cls, device: str | None = None) -> SentimentAnalyzer:
        """The latest registered `news_sentiment`; a clear error says how to train it."""
        from training.registry import ModelNotFoundError

        try:
            return cls.from_registry(DEFAULT_MODEL_NAME, "latest", device)
        except ModelNotFoundError as exc:
            raise SentimentModelError(
                f"no {DEFAULT_MODEL_NAME!r} model in the registry ({exc}); train and register it "
                "with `python -m sentiment.train` (about 2 minutes on 2 CPU cores) or "
                "`mlflow run . -e train_sentiment --env-manager local`"
            ) from None

    @classmethod
    def from_hub(
        cls, model_id: str, device: str | None = None, max_length: int = 128
    ) -> SentimentAnalyzer:
        """Load a hub model such as `ProsusAI/finbert` (needs network access to the hub, or a
        copy in the local hub cache; HF_HUB_OFFLINE=1 allows only the cache)."""
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_id, local_files_only=offline)
            model = AutoModelForSequenceClassification.from_pretrained(
                model_id, local_files_only=offline
            )
        except OSError as exc:
            raise SentimentModelError(
                f"cannot load {model_id!r} from the hub or its local cache ({exc}); without "
                "network use SentimentAnalyzer.from_default() (the project's trained model)"
            ) from None
        return cls(
            model.to(pick_device(device)),
            tokenizer,
            max_length=max_length,
            source=f"hub:{model_id}",
        )

    def save(self, directory: str | Path) -> Path:
        """Write weights (safetensors), tokenizer and settings; `from_directory` reads them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if isinstance(self.model, MeanPoolClassifier):
            self.model.save(directory)
        else:
            with _no_file_bars():
                self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        settings = SavedSettings(self.max_length, self.labels)
        (directory / SETTINGS_FILE).write_text(json.dumps(asdict(settings)))
        return directory

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Class probabilities [n, 3] in (negative, positive, neutral) order."""
        cleaned = [clean_text(check_title(t, f"texts[{i}]")) for i, t in enumerate(texts)]
        if not cleaned:
            return np.zeros((0, 3))
        self.model.eval()
        by_length = np.argsort([len(t) for t in cleaned], kind="stable")  # less padding
        out = []
        with torch.inference_mode():
            for i in range(0, len(cleaned), self.batch_size):
                batch = [cleaned[j] for j in by_length[i : i + self.batch_size]]
                enc = self.tokenizer(
                    batch,
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                out.append(torch.softmax(logits_of(self.model, enc).float(), dim=-1).cpu())
        probs = np.empty((len(cleaned), 3))
        probs[by_length] = torch.cat(out).numpy()[:, self.order]
        return probs

    def analyze(self, texts: list[str]) -> list[dict]:
        """Per text: label, score in [-1, 1] (P(pos) - P(neg)), confidence (max probability)
        and the three probabilities.

        Raises:
            NewsInputError: a text is not a string, empty, or over MAX_TEXT_CHARS characters.
        """
        if isinstance(texts, str):
            texts = [texts]
        probs = self.probabilities(list(texts))
        return [
            {
                "label": LABELS[int(p.argmax())],
                "score": float(p[1] - p[0]),
                "confidence": float(p.max()),
                "probabilities": dict(zip(LABELS, map(float, p), strict=True)),
            }
            for p in probs
        ]


def logits_of(model, inputs) -> torch.Tensor:
    """Class logits [B, C] from either kind of model."""
    out = model(**inputs)
    return out if isinstance(out, torch.Tensor) else out.logits
