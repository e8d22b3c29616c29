"""Request metrics (Ray Serve metrics, exported in Prometheus format by each node's metrics
agent) and the one structured log line written per request."""

from __future__ import annotations

import json
import logging

from ray.serve import metrics

# "ray.serve" is the logger Serve routes to the replica log files, tagged with request ids.
log = logging.getLogger("ray.serve")

LATENCY_BUCKETS_MS = [1, 2, 4, 6, 8, 10, 15, 20, 30, 50, 75, 100, 200, 500, 1000, 5000]


class RequestMetrics:
    """Counters and a latency histogram for the HTTP ingress, tagged by endpoint and status."""

    def __init__(self) -> None:
        self.requests = metrics.Counter(
            "mltrade_api_requests",
            description="HTTP requests to the prediction API by endpoint and status code.",
            tag_keys=("endpoint", "status"),
        )
        self.errors = metrics.Counter(
            "mltrade_api_errors",
            description="Requests answered with an error, by endpoint and error kind.",
            tag_keys=("endpoint", "error"),
        )
        self.latency = metrics.Histogram(
            "mltrade_api_latency_ms",
            description="Time spent in the ingress per request, milliseconds.",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("endpoint",),
        )

    def record(self, endpoint: str, status: int, latency_ms: float, error: str | None) -> None:
        self.requests.inc(1, {"endpoint": endpoint, "status": str(status)})
        self.latency.observe(latency_ms, {"endpoint": endpoint})
        if error is not None:
            self.errors.inc(1, {"endpoint": endpoint, "error": error})


class ModelMetrics:
    """What the model replicas see: batch sizes, compute time and the drift of live inputs."""

    def __init__(self) -> None:
        self.batch_size = metrics.Histogram(
            "mltrade_model_batch_size",
            description="Requests per model batch.",
            boundaries=[1, 2, 4, 8, 16, 32, 64],
            tag_keys=(),
        )
        self.compute = metrics.Histogram(
            "mltrade_model_compute_ms",
            description="Forecast, importance and drift time per batch, milliseconds.",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("model", "version"),
        )
        self.drift = metrics.Gauge(
            "mltrade_prediction_drift_psi",
            description="PSI of the latest request's features against the training reference.",
            tag_keys=("model", "version"),
        )


def log_request(**fields) -> None:
    """One JSON object per request: endpoint, status, model, version, latency, error."""
    log.info(json.dumps(fields, separators=(",", ":"), default=str))
