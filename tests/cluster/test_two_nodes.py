"""On a two-node cluster (see conftest.py): walk-forward windows and Serve replicas land on both
nodes (Ray Train workers, in a job shipped with `ray job submit --working-dir .`: test_jobs.py).
One cluster for all of it; tiny models, one or two epochs."""

from __future__ import annotations

from dataclasses import replace

import httpx
import mlflow
import numpy as np
import pytest
from ray import serve
from ray.util.state import list_actors

from backtest import BacktraderEngine, MLBacktraderStrategy, WalkForwardAnalyzer
from tests.procs import free_ports
from training.data import load_data
from training.models.lstm import LSTMModelConfig

from .conftest import TwoNodes

TINY = LSTMModelConfig(epochs=1, sequence_length=16, hidden_units=8, num_layers=1)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bars():
    return load_data("BTC/USDT", data_path="sample", days_back=40)


def test_walk_forward_windows_run_on_both_nodes_as_on_one(two_nodes: TwoNodes, bars, tmp_path):
    analyzer = WalkForwardAnalyzer(
        train_period_days=10,
        test_period_days=3,
        step_days=3,
        engine=BacktraderEngine(commission=0.0, slippage=0.0, allow_short=True),
        experiment_name="cluster_walk_forward",
        show_progress=False,
    )
    data = bars.iloc[: 16 * 24]  # two windows: they train at once, one per node
    on_cluster = analyzer.analyze(data, MLBacktraderStrategy, TINY, {"position_size": 0.5})
    client = mlflow.MlflowClient()
    nodes = {client.get_run(r["run_id"]).data.tags["ray_node_id"] for r in on_cluster.windows}
    assert nodes == two_nodes.node_ids
    one_node = replace(analyzer, parallel=False).analyze(
        data, MLBacktraderStrategy, TINY, {"position_size": 0.5}
    )
    skip = ("run_id", "model_uri", "seconds")
    for a, b in zip(on_cluster.windows, one_node.windows, strict=True):
        assert {k: v for k, v in a.items() if k not in skip} == {
            k: v for k, v in b.items() if k not in skip
        }
    assert sum(r["test"]["num_trades"] for r in on_cluster.windows) > 0


@pytest.fixture(scope="module")
def model_name(two_nodes: TwoNodes) -> str:
    from training.experiment import train_model
    from training.specs import DataSpec, TrainSettings

    name = "cluster_lstm"
    train_model(
        TrainSettings(
            data=DataSpec(days_back=30),
            config=TINY,
            model_name=name,
            experiment_name="cluster_serving",
        )
    )
    return name


def test_serve_replicas_spread_over_both_nodes(two_nodes: TwoNodes, model_name, bars):
    from deployments.app import AppArgs, build_app

    (port,) = free_ports(1)
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        args = AppArgs(
            model_name=model_name,
            tracking_uri=two_nodes.tracking_uri,
            with_sentiment=False,
            model_num_cpus=0.25,
            ingress_num_cpus=0.1,
            min_replicas=2,
            max_replicas=2,
            max_replicas_per_node=1,
        )
        serve.run(build_app(args), name="cluster", route_prefix="/")
        replicas = list_actors(
            address=two_nodes.dashboard,
            filters=[
                ("class_name", "=", "ServeReplica:cluster:ModelDeployment"),
                ("state", "=", "ALIVE"),
            ],
        )
        assert {r["node_id"] for r in replicas} == two_nodes.node_ids
        window = bars[["open", "high", "low", "close", "volume"]].to_numpy()[-16:].tolist()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            for _ in range(4):  # through the head's proxy, whichever replica answers
                r = http.post("/api/v1/ml/predict", json={"sequences": [window]})
                assert r.status_code == 200, r.text
                assert np.isfinite(r.json()["predictions"]).all()
    finally:
        serve.shutdown()
