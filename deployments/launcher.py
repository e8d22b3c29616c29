"""Serve the prediction API in the foreground: what `make run` and `mltrade serve` do.

`serve_app(ServeSettings())` makes sure the forecaster (and, by default, the news sentiment
model) is registered, training what is missing on the bundled data and saying how long that
takes, starts Ray Serve, writes a sample request from real candles, prints how to call it and
serves until Ctrl-C (or SIGTERM), then shuts Serve and Ray down.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shlex
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deployments.settings import API_KEY_ENV, DEFAULT_MODEL_NAME
from training.data import PROJECT_ROOT, SAMPLE, load_data
from training.registry import ModelNotFoundError, resolve_version
from training.tracking import ensure_registered, load_model, setup_tracking

SENTIMENT_MODEL_NAME = "news_sentiment"  # sentiment.model's default; importing it loads torch

log = logging.getLogger(__name__)
SAMPLE_REQUEST = PROJECT_ROOT / "artifacts" / "sample_request.json"
APP_NAME = "mltrade"
# Measured on a quiet 2-core laptop CPU (README: ~35 s and ~50 s): one LSTM epoch over a year of
# hourly bars on one torch thread, one fine-tuning step of MiniLM-L6 on 32 headlines on two, and
# what each run adds (loading, evaluation, logging, registering). A busy machine takes longer.
LSTM_EPOCH_S_PER_YEAR = 1.75
SENTIMENT_STEP_S_2_CORES = 0.2
RUN_OVERHEAD_S = 15.0


@dataclass(frozen=True)
class ServeSettings:
    """What `serve_app` serves and where.

    Attributes:
        host, port: where the HTTP API listens.
        model_name: the registered forecaster served by default (trained if missing).
        days_back: days of the bundled BTC/USDT sample to train on when it is missing.
        epochs: training epochs when it is missing.
        with_sentiment: also serve the news sentiment scorer (include_sentiment, /signal),
            training the `news_sentiment` model first when the registry has none.
        request_file: where the sample request body is written.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = DEFAULT_MODEL_NAME
    days_back: int = 365
    epochs: int = 20
    with_sentiment: bool = True
    request_file: Path = SAMPLE_REQUEST


def _about(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(10, round(seconds, -1)):.0f} seconds"
    return f"about {math.ceil(seconds / 60)} minutes"


def train_forecaster(name: str, days_back: int, epochs: int) -> None:
    """Train an LSTM on the bundled BTC/USDT sample and register it as `name` (the epoch
    progress bar shows while it trains)."""
    import torch

    from training.cluster import pick_device
    from training.experiment import train_model
    from training.models.lstm import LSTMModelConfig
    from training.specs import DataSpec, TrainSettings

    threads = torch.get_num_threads()
    # A small LSTM trains fastest on one CPU thread: more threads mostly wait on each other,
    # and on a busy machine oversubscription makes an epoch ten times slower.
    if pick_device().type == "cpu":
        torch.set_num_threads(1)
    try:
        train_model(
            TrainSettings(
                data=DataSpec(days_back=days_back, source=SAMPLE),
                config=LSTMModelConfig(epochs=epochs),
                model_name=name,
            )
        )
    finally:
        torch.set_num_threads(threads)  # the sentiment fine-tune that may follow uses them all


def forecaster_plan(days_back: int, epochs: int) -> str:
    """What `train_forecaster` does and about how long it takes, for the log."""
    seconds = RUN_OVERHEAD_S + LSTM_EPOCH_S_PER_YEAR * epochs * days_back / 365
    return (
        f"an LSTM on {days_back} days of the bundled BTC/USDT sample, {epochs} epoch(s), "
        f"{_about(seconds)} on a quiet laptop CPU; a progress bar follows"
    )


def sentiment_plan() -> str:
    """What fine-tuning the default sentiment model (sentiment.finetune.FAST_SETTINGS) does
    and about how long it takes, for the log."""
    import pandas as pd
    import torch

    from sentiment.finetune import FAST_SETTINGS as fast

    headlines = len(pd.read_csv(fast.data_path, usecols=["label"]))
    steps = math.ceil(headlines * (1 - fast.test_fraction) / fast.batch_size) * fast.epochs
    cores = max(1, min(torch.get_num_threads(), 8))
    seconds = RUN_OVERHEAD_S + steps * SENTIMENT_STEP_S_2_CORES * 2 / cores
    return (
        f"the sentiment scorer needs it: fine-tuning MiniLM-L6 on the {headlines} bundled "
        f"headlines of {Path(fast.data_path).name}, {fast.epochs:g} epoch(s) = {steps:.0f} "
        f"steps, {_about(seconds)} on {cores} quiet CPU cores, progress every 50 steps; serve "
        "with --no-sentiment to skip it"
    )


def write_sample_request(
    path: Path | str, model_name: str, sequence_length: int, include_sentiment: bool
) -> Path:
    """The latest `sequence_length` bundled BTC/USDT bars as a ready-to-post request body (the
    guide's example request)."""
    path = Path(path)
    bars = load_data("BTC/USDT", days_back=30, data_path=SAMPLE)
    window = bars[["open", "high", "low", "close", "volume"]].to_numpy()[-sequence_length:]
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "symbol": "BTC/USDT",
        "sequences": [window.tolist()],
        "model_name": model_name,
        "model_version": "latest",
        "include_sentiment": include_sentiment,
    }
    path.write_text(json.dumps(body))
    return path


def curl_command(host: str, port: int, request_file: Path) -> str:
    """A curl that posts `request_file` to the predict endpoint (with the API key if set)."""
    auth = f' -H "Authorization: Bearer ${API_KEY_ENV}"' if os.environ.get(API_KEY_ENV) else ""
    return (
        f"curl -s -X POST http://{host}:{port}/api/v1/ml/predict "
        f"-H 'Content-Type: application/json'{auth} "
        f"-d @{shlex.quote(os.path.relpath(request_file))}"
    )


class Progress:
    """Log lines for the long steps of a start, each with the seconds since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, what: str, *args: object) -> None:
        log.info("[%3.0f s] " + what, time.monotonic() - self.start, *args)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the server exactly like Ctrl-C


def _stop_on_sigterm() -> None:
    """SIGTERM raises KeyboardInterrupt in the main thread (ray.init installs its own handler,
    which exits at once with status 15: this is installed again after it)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def _report_replicas(done: threading.Event, progress: Progress, every_s: float = 10.0) -> None:
    """Every `every_s` until `done`: which deployments of the app are not running yet."""
    from ray import serve

    while not done.wait(every_s):
        try:
            app = serve.status().applications.get(APP_NAME)
        except Exception:  # noqa: BLE001 - a progress line is not worth failing the start for
            continue
        if app is None:
            continue
        states = [
            f"{name} {_text(d.status)} ("
            + ", ".join(f"{n} {_text(state)}" for state, n in d.replica_states.items())
            + ")"
            for name, d in app.deployments.items()
        ]
        progress.say("waiting for replicas: %s", "; ".join(states) or _text(app.status))


def _text(status: object) -> str:
    return str(getattr(status, "value", status))


def _deploy(app, progress: Progress) -> None:
    """`serve.run` with a progress line every 10 s while the replicas start."""
    from ray import serve

    done = threading.Event()
    reporter = threading.Thread(target=_report_replicas, args=(done, progress), daemon=True)
    reporter.start()
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    finally:
        done.set()


def _stop_serving() -> None:
    """Delete the app (its replicas finish the requests they hold), then disconnect from Ray,
    which stops a Ray instance this process started along with Serve's own actors. Serve
    stays up on a cluster this process only joined (other apps may run there); `serve
    shutdown` stops it. Not `serve.shutdown()`: its controller task ends by killing the
    controller, which Ray logs as a failed task on every stop."""
    import ray
    from ray import serve

    if ray.is_initialized():
        try:
            serve.delete(APP_NAME)
        except Exception as exc:  # noqa: BLE001 - Serve may not have started; Ray goes anyway
            log.debug("no app to delete: %r", exc)
    ray.shutdown()


def serve_app(settings: ServeSettings = ServeSettings()) -> None:
    """Serve the prediction API in the foreground until Ctrl-C or SIGTERM.

    Trains the default models that the registry lacks (logging what and about how long), starts
    Ray (or joins RAY_ADDRESS) and Serve on `settings.host:settings.port`, writes
    artifacts/sample_request.json and prints a curl that posts it. Each long step logs what it
    does and the seconds since the start. Ctrl-C or SIGTERM at any point stops cleanly: the app
    is deleted and Ray stopped (exit status 0).

    Raises:
        TrackingError: MLFLOW_TRACKING_URI names a server that does not answer.
    """
    _stop_on_sigterm()
    try:
        _serve(settings, Progress())
    except KeyboardInterrupt:
        print("Stopped.", flush=True)


def _latest_versions(names: list[str]) -> dict[str, str | None]:
    """The latest registered version of each name, None where the registry has none."""
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = str(resolve_version(name, "latest").version)
        except ModelNotFoundError:
            found[name] = None
    return found


def _request_for(settings: ServeSettings, version: str) -> Path:
    """The sample request for the served forecaster (its sequence length decides the window)."""
    forecaster, _ = load_model(settings.model_name, version)
    return write_sample_request(
        settings.request_file,
        settings.model_name,
        forecaster.sequence_length,
        settings.with_sentiment,
    )


def warm_imports() -> None:
    """Import torch, transformers and MLflow (seconds), none of which imports Ray: this runs
    beside `ray.init`, and two threads importing Ray's modules at once can find one of them
    half-initialised (seen here: ImportError from ray._private.worker)."""
    import sentiment.model  # noqa: F401
    import training.tracking  # noqa: F401


def _look_up(settings: ServeSettings) -> tuple[dict[str, str | None], Path | None]:
    """What the registry holds, and the sample request when the forecaster is there; first
    the heavy imports the deploy needs next."""
    warm_imports()

    names = [settings.model_name] + ([SENTIMENT_MODEL_NAME] if settings.with_sentiment else [])
    found = _latest_versions(names)
    version = found[settings.model_name]
    return found, (_request_for(settings, version) if version else None)


def _serve(settings: ServeSettings, progress: Progress) -> None:
    uri = setup_tracking()
    name, days_back, epochs = settings.model_name, settings.days_back, settings.epochs

    from training.cluster import ensure_ray

    progress.say("checking the registry at %s for %s while Ray starts", uri, name)
    # Side by side: Ray's start is mostly waiting on its own processes, and the imports,
    # registry check and model load are seconds of Python.
    pool = ThreadPoolExecutor(1, thread_name_prefix="registry-check")
    lookup = pool.submit(_look_up, settings)
    pool.shutdown(wait=False)  # the one task still runs; nothing else is queued
    try:
        ensure_ray()
        _stop_on_sigterm()
        found, request_file = lookup.result()
        version = found[name] or ensure_registered(
            name,
            lambda: train_forecaster(name, days_back, epochs),
            forecaster_plan(days_back, epochs),
        )
        if settings.with_sentiment and not found[SENTIMENT_MODEL_NAME]:
            from sentiment.finetune import FAST_SETTINGS, train_sentiment

            ensure_registered(
                SENTIMENT_MODEL_NAME, lambda: train_sentiment(FAST_SETTINGS), sentiment_plan()
            )
        request_file = request_file or _request_for(settings, version)
        from ray import serve

        from deployments.app import AppArgs, build_app

        progress.say("starting Serve on %s:%d", settings.host, settings.port)
        serve.start(http_options={"host": settings.host, "port": settings.port})
        scorer = " and the sentiment scorer" if settings.with_sentiment else ""
        progress.say("deploying %s v%s%s; the replicas load the models", name, version, scorer)
        app = AppArgs(model_name=name, tracking_uri=uri, with_sentiment=settings.with_sentiment)
        _deploy(build_app(app), progress)
        progress.say("ready")
        base = f"http://{settings.host}:{settings.port}"
        sentiment = "with news sentiment" if settings.with_sentiment else "without sentiment"
        print(f"\nServing {name} (latest: v{version}) {sentiment} from {uri}")
        print(f"  docs:    {base}/docs")
        print(f"  health:  curl -s {base}/api/v1/health")
        print(f"  predict: {curl_command(settings.host, settings.port, request_file)}\n")
        print("Ctrl-C to stop.", flush=True)
        while True:  # until KeyboardInterrupt (Ctrl-C, or SIGTERM above)
            # Short sleeps, not one long wait: the kernel may hand the signal to one of Ray's
            # threads, and Python runs its handler only once the main thread wakes up.
            time.sleep(0.5)
    finally:
        progress.say("stopping: deleting the app, then Ray")
        _stop_serving()
