"""What the MLflow UI shows, read through a real `mlflow server`'s REST API: the experiment
opens on its runs view, the parent run carries a note with the best trial and the Prefect
flow run, and its artifacts (spec, results, trajectory and learning-curve plots)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpo_core.trial_value import format_value

MLFLOW = Path(sys.executable).with_name("mlflow")
METRIC = "Train/val_cross_entropy"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """`mlflow server` on a free loopback port with the settings the README gives `mlflow ui`
    (one worker, no job-execution workers); its URL."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(tmp_path / "mlflow.log", "wb") as log:
        server = subprocess.Popen(
            [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
             "--artifacts-destination", str(tmp_path / "artifacts")],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _get(url: str, path: str, **query: Any) -> Any:
    with urllib.request.urlopen(f"{url}{path}?{urllib.parse.urlencode(query)}", timeout=20) as r:
        return json.loads(r.read())


def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_mlflow_ui_data_through_the_rest_api(mlflow_server: str, tmp_path: Path) -> None:
    from flows.tune import tune

    spec = {"name": "rest-asha", "metric": METRIC, "scheduler": "asha",
            "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                                "max_fidelity": 9},
            "stop": {"max_trials_completed": 10}, "n_workers": 2, "seed": 0,
            "results_root": str(tmp_path / "exp")}
    outcome = tune(spec, tracking_uri=mlflow_server)
    assert outcome["mlflow_error"] is None

    experiment = _get(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name",
                      experiment_name="rest-asha")["experiment"]
    tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
    assert tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs

    runs = _post(mlflow_server, "/api/2.0/mlflow/runs/search", {
        "experiment_ids": [experiment["experiment_id"]], "max_results": 100,
        "order_by": [f"metrics.`best_{METRIC}` ASC"]})["runs"]
    parent = next(r for r in runs if r["info"]["run_id"] == outcome["mlflow_parent_run_id"])
    children = [r for r in runs if r is not parent]
    run_tags = {t["key"]: t["value"] for t in parent["data"]["tags"]}
    note = run_tags["mlflow.note.content"]
    best = children[0]
    best_tags = {t["key"]: t["value"] for t in best["data"]["tags"]}
    assert best_tags["tunesmith.trial_id"] == str(outcome["best_trial_id"])
    assert f"Best {METRIC}: **{format_value(outcome['best_value'])}**, [trial " \
           f"{outcome['best_trial_id']}]({mlflow_server}/#/experiments/" \
           f"{experiment['experiment_id']}/runs/{best['info']['run_id']}" \
           "?workflowType=machine_learning)" in note
    assert f"/runs/flow-run/{outcome['flow_run_id']})" in note
    assert f"Trials: {outcome['counts']['trials']} trials: " in note
    params = {p["key"] for p in parent["data"]["params"]}
    assert "scheduler" in params and not any("." in p for p in params)  # no flattened spec

    listed = _get(mlflow_server, "/api/2.0/mlflow/artifacts/list",
                  run_id=parent["info"]["run_id"])
    assert {f["path"] for f in listed["files"]} >= {
        "spec.json", "results.parquet", "trajectory.png", "learning_curves.png"}
