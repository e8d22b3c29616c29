"""The one feature pipeline: raw OHLCV windows -> normalised features, shared by training,
serving, backtests and walk-forward. It is fit on the training split only and saved in the model.

Two feature sets, chosen by the model config's input_features: "candle" (7 per asset per bar:
returns and the candle's shape, the default) and "ohlcv" (5: open, high, low and close as log
ratios to the window's last close, and standardised volume).

Every feature of a window is computed from that window's bars alone, so a window's features
never depend on bars after its last one (no look-ahead by construction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BAR_FEATURES = (
    "log_return",  # log(close_t / close_{t-1})
    "range",  # log(high / low)
    "body",  # log(close / open)
    "upper_wick",  # log(high / max(open, close))
    "lower_wick",  # log(min(open, close) / low)
    "volume_z",  # log1p(volume) standardised within the window
    "close_vs_mean",  # log(close / mean close of the window)
)
OHLCV_FEATURES = (
    "open",  # log(open / the window's last close)
    "high",  # log(high / the window's last close)
    "low",  # log(low / the window's last close)
    "close",  # log(close / the window's last close)
    "volume_z",  # log1p(volume) standardised within the window
)
# name -> features per asset per bar; a config's input_features picks the set of that width
FEATURE_SETS: dict[str, tuple[str, ...]] = {"candle": BAR_FEATURES, "ohlcv": OHLCV_FEATURES}
DEFAULT_FEATURE_SET = "candle"
VOL_HALFLIFE_BARS = 12.0
_PARKINSON = 1.0 / (4.0 * np.log(2.0))


class WindowShapeError(ValueError):
    """Raised when input windows do not have the shape or values the model was trained on."""


def feature_set_for(input_features: int) -> str:
    """The feature set with `input_features` features per asset per bar.

    Raises:
        ValueError: no set has that width; the message lists the sets and their widths.
    """
    for name, names in FEATURE_SETS.items():
        if len(names) == input_features:
            return name
    sets = ", ".join(f"{len(v)} ({k!r})" for k, v in FEATURE_SETS.items())
    raise ValueError(
        f"input_features={input_features} matches no feature set: the pipeline makes {sets} "
        "features per asset per bar; set input_features to one of those"
    )


@dataclass
class FeaturePipeline:
    """Turns raw windows [n, T, 5] (or [n, T, A, 5] for several assets) into model inputs.

    Attributes:
        sequence_length: raw bars per window (T); the model sees T - 1 feature rows.
        symbols: the assets of a window in order; the first is the one forecast.
        feature_set: a key of FEATURE_SETS: "candle" (7 bar-shape features) or "ohlcv" (5:
            prices relative to the window's last close, and volume).
        mean, std: per-feature normalisation fitted on the training split.
    """

    sequence_length: int
    symbols: tuple[str, ...] = ("asset",)
    feature_set: str = DEFAULT_FEATURE_SET
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    feature_names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.sequence_length < 3:
            raise ValueError(f"sequence_length must be at least 3, got {self.sequence_length}")
        self.symbols = tuple(self.symbols)
        if self.feature_set not in FEATURE_SETS:
            raise ValueError(
                f"unknown feature set {self.feature_set!r}; choose one of {sorted(FEATURE_SETS)}"
            )
        names = FEATURE_SETS[self.feature_set]
        if len(self.symbols) == 1:
            self.feature_names = names
        else:
            self.feature_names = tuple(f"{s}:{f}" for s in self.symbols for f in names)

    @property
    def num_assets(self) -> int:
        return len(self.symbols)

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def check_windows(self, windows) -> np.ndarray:
        """Validate raw windows and return them as float64 [n, T, A, 5].

        Raises:
            WindowShapeError: wrong nesting or shape, non-numeric values, NaN/inf, non-positive
                prices, high below low or negative volume; the message names the window and bar.
        """
        try:
            arr = np.asarray(windows, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise WindowShapeError(
                f"windows must be numeric nested lists or arrays ({exc})"
            ) from exc
        t, a = self.sequence_length, self.num_assets
        if a == 1 and arr.ndim == 3 and arr.shape[1:] == (t, 5):
            arr = arr[:, :, None, :]
        if arr.ndim != 4 or arr.shape[1:] != (t, a, 5):
            want = f"[n, {t}, 5]" if a == 1 else f"[n, {t}, {a}, 5]"
            assets = f" x {a} assets {list(self.symbols)}" if a > 1 else ""
            raise WindowShapeError(
                f"windows must have shape {want} (n windows of {t} bars{assets} x open, high, "
                f"low, close, volume); got {list(arr.shape)}"
            )
        if arr.shape[0] == 0:
            raise WindowShapeError("no windows given")
        problems = [
            (~np.isfinite(arr).all(axis=-1), "NaN or inf value"),
            ((arr[..., :4] <= 0).any(axis=-1), "non-positive price"),
            (arr[..., 1] < arr[..., 2], "high below low"),
            (arr[..., 4] < 0, "negative volume"),
        ]
        for mask, what in problems:
            if mask.any():
                w, t, a = np.argwhere(mask)[0]
                where = f"window {w}, bar {t}" + (
                    f", asset {self.symbols[a]}" if self.num_assets > 1 else ""
                )
                raise WindowShapeError(f"{what} at {where} ({int(mask.sum())} bad bars in total)")
        return arr

    def raw_features(self, arr: np.ndarray) -> np.ndarray:
        """Unnormalised features [n, T-1, A*F] from checked windows [n, T, A, 5]; each from its
        own window's bars only. The first bar only serves as the previous bar of the second."""
        o, h, lo, c, v = (arr[..., i] for i in range(5))  # each [n, T, A]
        logv = np.log1p(v)
        vol_z = (logv - logv.mean(axis=1, keepdims=True)) / (logv.std(axis=1, keepdims=True) + 1e-6)
        if self.feature_set == "ohlcv":
            last = c[:, -1:]  # [n, 1, A]
            columns = [np.log(o / last), np.log(h / last), np.log(lo / last), np.log(c / last)]
            feats = np.stack([*(col[:, 1:] for col in columns), vol_z[:, 1:]], axis=-1)
        else:
            top, bottom = np.maximum(o, c), np.minimum(o, c)
            feats = np.stack(
                [
                    np.log(c[:, 1:] / c[:, :-1]),
                    np.log(h / lo)[:, 1:],
                    np.log(c / o)[:, 1:],
                    np.log(h / top)[:, 1:],
                    np.log(bottom / lo)[:, 1:],
                    vol_z[:, 1:],
                    np.log(c / c.mean(axis=1, keepdims=True))[:, 1:],
                ],
                axis=-1,
            )  # [n, T-1, A, F]
        return feats.reshape(feats.shape[0], feats.shape[1], -1)

    def fit(self, windows) -> FeaturePipeline:
        """Fit the normalisation on training windows only."""
        feats = self.raw_features(self.check_windows(windows)).reshape(-1, self.num_features)
        self.mean = feats.mean(axis=0)
        self.std = feats.std(axis=0) + 1e-8
        return self

    def transform(self, windows) -> np.ndarray:
        """Normalised float32 model inputs [n, T-1, F] for raw windows."""
        return self.normalise(self.check_windows(windows))

    def normalise(self, arr: np.ndarray) -> np.ndarray:
        """Normalised float32 model inputs [n, T-1, F] for windows already checked."""
        return self.scale(self.raw_features(arr))

    def scale(self, features: np.ndarray) -> np.ndarray:
        """Normalised float32 model inputs from raw features [n, T-1, F]."""
        if self.mean is None or self.std is None:
            raise RuntimeError("FeaturePipeline used before fit")
        return ((features - self.mean) / self.std).astype(np.float32)

    @staticmethod
    def volatility(arr: np.ndarray) -> np.ndarray:
        """Per-window volatility of the forecast asset's next log return, [n].

        An exponentially weighted blend of close-to-close and Parkinson (high-low) variance,
        so interval widths follow the volatility regime the window is in.
        """
        o, h, lo, c = (arr[:, :, 0, i] for i in range(4))
        r2 = np.log(c[:, 1:] / c[:, :-1]) ** 2
        p2 = _PARKINSON * np.log(h / lo)[:, 1:] ** 2
        ages = np.arange(r2.shape[1])[::-1]
        weights = 0.5 ** (ages / VOL_HALFLIFE_BARS)
        weights /= weights.sum()
        var = 0.5 * (r2 @ weights + p2 @ weights)
        return np.sqrt(var + 1e-12)

    def to_dict(self) -> dict:
        """JSON-able state saved inside the model bundle."""
        return {
            "sequence_length": self.sequence_length,
            "symbols": list(self.symbols),
            "feature_set": self.feature_set,
            "feature_names": list(self.feature_names),
            "mean": None if self.mean is None else self.mean.tolist(),
            "std": None if self.std is None else self.std.tolist(),
        }

    @classmethod
    def from_dict(cls, state: dict) -> FeaturePipeline:
        """Rebuild a fitted pipeline; refuses a bundle whose feature names or order differ.
        Bundles saved before feature sets existed hold "candle" features."""
        pipe = cls(
            sequence_length=int(state["sequence_length"]),
            symbols=tuple(state["symbols"]),
            feature_set=state["feature_set"] if "feature_set" in state else DEFAULT_FEATURE_SET,
        )
        if tuple(state["feature_names"]) != pipe.feature_names:
            raise ValueError(
                f"model bundle features {state['feature_names']} do not match this code's "
                f"pipeline {list(pipe.feature_names)}; retrain the model with this version"
            )
        pipe.mean = np.asarray(state["mean"], dtype=np.float64)
        pipe.std = np.asarray(state["std"], dtype=np.float64)
        return pipe


def sliding_windows(values: np.ndarray, sequence_length: int) -> np.ndarray:
    """All windows of `sequence_length` consecutive bars, as a view: [N - T + 1, T, ...]."""
    if len(values) < sequence_length:
        raise ValueError(f"{len(values)} bars is fewer than one window of {sequence_length}")
    view = np.lib.stride_tricks.sliding_window_view(values, sequence_length, axis=0)
    return np.moveaxis(view, -1, 1)
