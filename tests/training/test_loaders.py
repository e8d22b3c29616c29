"""The programmatic path (candles -> loaders -> trainer -> servable forecaster) and the
forecaster's one-pass analysis."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from training.bundle import Forecaster
from training.data import load_data
from training.features import WindowShapeError, sliding_windows
from training.fit import fit_forecaster
from training.loaders import FitResult, prepare_data
from training.models.cnn_lstm import CNNLSTMConfig, CNNLSTMTrainer
from training.models.lstm import LSTMModelConfig, LSTMTrainer


@pytest.fixture(scope="module")
def guide_run():
    """The guide's example on the bundled sample, two epochs."""
    df = load_data("BTC/USDT", interval="1h", days_back=30, data_path="sample")
    config = LSTMModelConfig(sequence_length=60, input_features=5, hidden_units=50, epochs=2)
    data = prepare_data(df, config, symbol="BTC/USDT")
    train_loader, val_loader = data.loaders()
    trainer = LSTMTrainer(config, show_progress=False)
    history = trainer.train(train_loader, val_loader)
    return df, data, trainer, history, data.finish(trainer)


def test_the_guide_path_makes_a_calibrated_tested_forecaster(guide_run, tmp_path):
    df, data, trainer, history, forecaster = guide_run
    train_loader, val_loader = data.loaders()
    assert isinstance(train_loader, DataLoader) and isinstance(val_loader, DataLoader)
    x, y = next(iter(train_loader))
    assert x.shape == (data.config.batch_size, 59, 5) and y.shape == (data.config.batch_size,)
    assert len(history["val_loss"]) == 2
    assert forecaster.pipeline.feature_set == "ohlcv" and forecaster.symbols == ("BTC/USDT",)
    assert forecaster.interval_q > 0 and "test_metrics" in forecaster.metadata
    assert 0 < forecaster.metadata["test_metrics"]["interval_coverage"] <= 1
    loaded = Forecaster.load(forecaster.save(tmp_path / "bundle"), device="cpu")
    windows = sliding_windows(df.to_numpy(), 60)[-10:]
    pd.testing.assert_frame_equal(loaded.predict(windows), forecaster.predict(windows))
    assert loaded.config == data.config and loaded.pipeline.feature_set == "ohlcv"


def test_fit_result_is_typed_and_frozen(guide_run):
    _, data, trainer, history, _ = guide_run
    result = data.fit_result(trainer, extra="fact")
    assert isinstance(result, FitResult) and result.history == history
    assert set(result.splits) == {"train", "val", "cal", "test"}
    assert result.forecaster.metadata["extra"] == "fact"
    with pytest.raises(AttributeError):
        result.metrics = {}


def test_the_data_and_the_trainer_must_agree(guide_run):
    df = guide_run[0]
    with pytest.raises(ValueError, match=r"takes 2 symbol\(s\) \(num_assets\), got 1"):
        prepare_data(df, CNNLSTMConfig(sequence_length=24))
    with pytest.raises(ValueError, match="input_features=6 matches no feature set"):
        prepare_data(df, LSTMModelConfig(input_features=6))
    with pytest.raises(ValueError, match=r"lack column\(s\) \['volume'\]"):
        prepare_data(df.drop(columns="volume"), LSTMModelConfig(sequence_length=24))
    data = guide_run[1]
    other = LSTMTrainer(LSTMModelConfig(sequence_length=32, input_features=5), show_progress=False)
    with pytest.raises(ValueError, match="sequence_length=32 differs"):
        data.finish(other)


def test_several_symbols_make_a_cnn_lstm_forecaster():
    frames = {s: load_data(s, days_back=30, data_path="sample") for s in ("BTC/USDT", "ETH/USDT")}
    config = CNNLSTMConfig(
        sequence_length=24, num_assets=2, input_features=5, cnn_filters=4, lstm_hidden_units=8
    )
    data = prepare_data(frames, config)
    trainer = CNNLSTMTrainer(config.__class__(**{**config.to_dict(), "epochs": 1}), False)
    trainer.train(*data.loaders())
    forecaster = data.finish(trainer)
    assert forecaster.pipeline.num_features == 10 and forecaster.symbols == tuple(frames)


def test_analyze_checks_once_and_matches_the_separate_calls(guide_run):
    df, _, _, _, forecaster = guide_run
    windows = sliding_windows(df.to_numpy(), 60)[-40:]
    analysis = forecaster.analyze(windows)
    assert len(analysis) == 40 and analysis.importance.shape == (40, 5)
    assert analysis.drift.shape == (40, 5)
    pd.testing.assert_frame_equal(analysis.predictions(), forecaster.predict(windows), rtol=1e-6)
    shares = forecaster.feature_importance(windows)
    assert analysis.feature_importance == pytest.approx(shares, rel=1e-5)
    assert analysis.drift_report == forecaster.drift(windows)
    part = analysis[10:20]
    assert part.drift_report == forecaster.drift(windows[10:20])
    np.testing.assert_allclose(
        part.forecast["prediction"], forecaster.forecast(windows[10:20])["prediction"], rtol=1e-6
    )
    with torch.no_grad():  # a caller under no_grad still gets importances
        assert np.isfinite(forecaster.analyze(windows[:2]).importance).all()


def test_analyze_many_isolates_a_bad_request(guide_run):
    df, _, _, _, forecaster = guide_run
    windows = sliding_windows(df.to_numpy(), 60)[-6:]
    results = forecaster.analyze_many([windows[:2], np.ones((1, 10, 5)), windows[2:]])
    assert isinstance(results[1], WindowShapeError)
    assert len(results[0]) == 2 and len(results[2]) == 4
    np.testing.assert_allclose(
        results[2].forecast["prediction"], forecaster.forecast(windows[2:])["prediction"]
    )


def test_a_bundle_saved_with_the_old_names_still_loads(tmp_path):
    """Bundles of earlier versions: hidden_size/input_size in the config, no feature_set."""
    import json

    df = load_data("BTC/USDT", days_back=30, data_path="sample")
    config = LSTMModelConfig(sequence_length=24, hidden_units=8, epochs=1)
    result = fit_forecaster({"BTC/USDT": df}, config, show_progress=False)
    directory = result.forecaster.save(tmp_path / "bundle")
    state = json.loads((directory / "bundle.json").read_text())
    state["config"]["hidden_size"] = state["config"].pop("hidden_units")
    state["config"]["input_size"] = state["config"].pop("input_features")
    del state["pipeline"]["feature_set"]
    (directory / "bundle.json").write_text(json.dumps(state))
    loaded = Forecaster.load(directory, device="cpu")
    assert loaded.config == config and loaded.pipeline.feature_set == "candle"
    windows = sliding_windows(df.to_numpy(), 24)[-5:]
    pd.testing.assert_frame_equal(loaded.predict(windows), result.forecaster.predict(windows))


def test_the_forecaster_offers_real_windows_as_input_example(guide_run):
    forecaster = guide_run[4]
    example = forecaster.input_example()
    assert example.shape == (2, 60, 5)
    assert len(forecaster.predict(example)) == 2


def test_the_guide_path_ends_in_a_registered_servable_model(guide_run, tracking):
    import mlflow

    from training.tracking import log_model

    df, _, _, _, forecaster = guide_run
    info = log_model(forecaster, registered_name="lstm_price_forecast")
    assert str(info.registered_model_version) == "1"
    pyfunc = mlflow.pyfunc.load_model("models:/lstm_price_forecast/latest")
    windows = sliding_windows(df.to_numpy(), 60)[-3:]
    pd.testing.assert_frame_equal(pyfunc.predict(windows), forecaster.predict(windows))
