"""Settings every model shares: training knobs live here, layer sizes in each model's config."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ModelConfig:
    """Training settings common to every model type.

    Attributes:
        input_size: features per time step (set from the feature pipeline).
        sequence_length: raw bars per window; the network sees sequence_length - 1 steps.
        confidence: coverage of the calibrated prediction interval.
    """

    input_size: int = 7
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Build from a dict, refusing keys this config does not have."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; known: {sorted(known)}")
        return cls(**values)
