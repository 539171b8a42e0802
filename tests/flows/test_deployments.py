"""Deployments: prefect.yaml points at real flows, and a deployed flow runs on a real server."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PREFECT = Path(sys.executable).with_name("prefect")


def test_prefect_yaml_deployments_name_real_flows_and_valid_parameters() -> None:
    config = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in config["deployments"]}
    assert {"experiment", "lcbench-asha", "nightly", "ci"} <= set(deployments)
    assert deployments["nightly"]["schedules"][0]["cron"] == "0 2 * * *"
    for deployment in deployments.values():
        path, _, name = deployment["entrypoint"].partition(":")
        spec = importlib.util.spec_from_file_location(f"entry_{name}", REPO / path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        flow = getattr(module, name)
        parameters = deployment.get("parameters") or {}
        if deployment["name"] == "experiment":  # the generic one: the spec is required
            assert "spec" not in parameters
            with pytest.raises(Exception, match="spec"):
                flow.validate_parameters({})
            parameters = {"spec": "examples/digits-asha.yaml"}
        flow.validate_parameters(parameters)
        assert deployment["work_pool"]["name"] == "tunesmith"
    spec_path = deployments["lcbench-asha"]["parameters"]["spec"]
    from hpo_core.spec import ExperimentSpec

    assert ExperimentSpec.from_file(REPO / spec_path).name == "lcbench-asha"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process ended with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`prefect server start` on a free loopback port; the environment that points at it."""
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PREFECT_WORKER_QUERY_SECONDS": "1"}
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", 120, server)
        yield env
    finally:
        stop(server)


def test_served_smoke_deployment_runs_when_triggered(prefect_server: dict[str, str],
                                                      tmp_path: Path) -> None:
    env = prefect_server
    serve_code = ("from flows.smoke import smoke; "
                  "smoke.serve(name='ci', parameters={'trials': 12})")
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen([sys.executable, "-c", serve_code], env=env, cwd=REPO,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(f"{env['PREFECT_API_URL']}/deployments/name/smoke/ci", 120, serve)
        run = subprocess.run(
            [str(PREFECT), "deployment", "run", "smoke/ci", "--watch", "--watch-timeout", "240"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "Completed" in run.stdout
        flow_run_id = next(line.split()[-1] for line in run.stdout.splitlines()
                           if "UUID:" in line)
        with urllib.request.urlopen(
                f"{env['PREFECT_API_URL']}/flow_runs/{flow_run_id}", timeout=10) as response:
            flow_run = json.loads(response.read())
        assert flow_run["state"]["type"] == "COMPLETED"
        assert flow_run["parameters"] == {"trials": 12}
    finally:
        stop(serve)


def _api(env: dict[str, str], path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        f"{env['PREFECT_API_URL']}{path}", method="POST" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_until(condition: Any, timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(f"{what}; {log.name}:\n{log.read_text()[-4000:]}")


def _prefect(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    done = subprocess.run([str(PREFECT), "--no-prompt", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """End a process started in its own session and everything it started (a worker ignores
    its first SIGTERM; its flow-run subprocesses are in its group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


@pytest.mark.slow
def test_deployed_schedule_creates_runs_and_a_worker_completes_one(
        prefect_server: dict[str, str], tmp_path: Path) -> None:
    """`prefect server start` (scheduler service on, as users run it) + `prefect deploy --all`:
    the server creates the nightly cron runs (what SQLAlchemy 2.1 broke: the scheduler's bulk
    insert fails), and a process worker runs the generic `tune/experiment` deployment with an
    inline spec to Completed, its run named after the experiment, its state message the best."""
    env = prefect_server
    _prefect(env, "work-pool", "create", "tunesmith", "--type", "process")
    _prefect(env, "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    nightly = _api(env, "/deployments/name/retune/nightly")

    def scheduled() -> list[dict[str, Any]]:
        return _api(env, "/flow_runs/filter", {
            "deployments": {"id": {"any_": [nightly["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})

    runs = _wait_until(scheduled, 90, "no scheduled run of retune/nightly",
                       tmp_path / "server.log")
    for run in runs:
        start = run["next_scheduled_start_time"] or run["expected_start_time"]
        assert "T02:00:00" in start, start  # 02:00 UTC, the cron of deployments/prefect.yaml

    with open(tmp_path / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [str(PREFECT), "worker", "start", "--pool", "tunesmith", "--limit", "1"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # the generic deployment, with an inline spec; the run is named after the experiment
        spec = {"name": "deployed-asha", "metric": "Train/val_cross_entropy",
                "scheduler": "asha", "stop": {"max_trials_completed": 8},
                "backend_options": {"blackbox": "lcbench",
                                    "task": "blood-transfusion-service-center",
                                    "max_fidelity": 9},
                "results_root": str(tmp_path / "experiments")}
        params = {"spec": spec, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
        out = _prefect(env, "deployment", "run", "tune/experiment", "--params",
                       json.dumps(params))
        flow_run_id = next(line.split()[-1] for line in out.splitlines() if "UUID:" in line)

        def final_state() -> dict[str, Any] | None:
            state = _api(env, f"/flow_runs/{flow_run_id}")["state"]
            return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED") else None

        state = _wait_until(final_state, 240, "the worker did not finish the run",
                            tmp_path / "worker.log")
        assert state["type"] == "COMPLETED", state
        assert state["message"].startswith("best Train/val_cross_entropy = "), state
        flow_run = _api(env, f"/flow_runs/{flow_run_id}")
        assert flow_run["name"].startswith("deployed-asha-"), flow_run["name"]
        assert (tmp_path / "experiments" / "deployed-asha" / "results.parquet").exists()
    finally:
        _stop_group(worker)
