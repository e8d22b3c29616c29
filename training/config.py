"""Settings every model shares: training knobs live here, layer sizes in each model's config.

Field names are the user guide's (`input_features`, `hidden_units`, `cnn_filters`, ...). Names
of earlier versions still load through `from_dict`, so saved bundles, MLflow params and
`--param hidden_size=32` keep working: see LEGACY_NAMES, the one table of them.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

# old name -> the new field it means, first match among the config's fields. input_size (the
# model's whole input width) is not here: it becomes input_features = input_size / num_assets.
LEGACY_NAMES: dict[str, tuple[str, ...]] = {
    "hidden_size": ("hidden_units", "lstm_hidden_units"),
    "conv_channels": ("cnn_filters",),
}


@dataclass(frozen=True)
class ModelConfig:
    """Training settings common to every model type.

    Attributes:
        input_features: features per asset per bar: 7 selects the pipeline's "candle" features,
            5 its "ohlcv" features (see training.features).
        sequence_length: raw bars per window; the network sees sequence_length - 1 steps.
        confidence: coverage of the calibrated prediction interval.
    """

    input_features: int = 7
    sequence_length: int = 60
    dropout: float = 0.1
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 64
    epochs: int = 100
    patience: int = 10
    grad_clip: float = 1.0
    seed: int = 42
    confidence: float = 0.9

    def __post_init__(self) -> None:
        for f in fields(self):  # 20.0 from MLproject, numpy ints from a sampler: whole numbers
            value = getattr(self, f.name)
            if f.type != "int" or (isinstance(value, int) and not isinstance(value, bool)):
                continue
            whole = isinstance(value, float) and value.is_integer()
            if isinstance(value, bool) or not (whole or isinstance(value, numbers.Integral)):
                raise ValueError(f"{f.name} must be a whole number, got {value!r}")
            object.__setattr__(self, f.name, int(value))
        if self.input_features < 1 or self.sequence_length < 3:
            raise ValueError(
                f"need input_features >= 1 and sequence_length >= 3, got {self.input_features} "
                f"and {self.sequence_length}"
            )

    @property
    def num_assets(self) -> int:
        """Assets per window; only the multi-asset CNN-LSTM has more than one."""
        return 1

    @property
    def input_size(self) -> int:
        """The model's input width per step: num_assets * input_features."""
        return self.num_assets * self.input_features

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def canonical_name(cls, key: str) -> str:
        """The field an old name means for this config (a current or unknown name unchanged)."""
        known = cls.field_names()
        return (
            next((n for n in LEGACY_NAMES[key] if n in known), key) if key in LEGACY_NAMES else key
        )

    @classmethod
    def from_dict(cls, values: Mapping) -> ModelConfig:
        """Build from a dict (a saved bundle, MLflow params, `--param`s), accepting the legacy
        names of LEGACY_NAMES and `input_size`.

        Raises:
            ValueError: a key this config does not have (listing the known ones), or an old
                and a new name that disagree.
        """
        known = cls.field_names()
        out = {k: v for k, v in values.items() if k not in LEGACY_NAMES and k != "input_size"}
        for old in (k for k in LEGACY_NAMES if k in values):
            _set_once(out, cls.canonical_name(old), values[old], old)  # unknown: reported below
        unknown = sorted(set(out) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
        if "input_size" in values:
            assets = int(out["num_assets"] if "num_assets" in out else cls().num_assets)
            size = int(values["input_size"])
            if size % assets:
                raise ValueError(f"input_size {size} is not a multiple of num_assets {assets}")
            _set_once(out, "input_features", size // assets, "input_size")
        return cls(**out)


def _set_once(out: dict, key: str, value, old: str) -> None:
    if key in out and out[key] != value:
        raise ValueError(f"{old}={value!r} (the old name) disagrees with {key}={out[key]!r}")
    out[key] = value
