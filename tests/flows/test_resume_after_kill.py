"""A `tune` flow process killed with SIGKILL mid-experiment, then run again: it resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.tracking import SIMULATED_CHILD_RUNS
from hpo_core.store import load_experiment

pytestmark = pytest.mark.usefixtures("prefect_harness")

FINISHED = ("completed", "stopped")


def finished_trials(state_path: Path) -> set[str]:
    try:
        state = json.loads(state_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return set()
    return {tid for tid, t in state["trials"].items() if t["status"] in FINISHED}


def start_tune(tmp_path: Path, spec: dict, **options: float) -> subprocess.Popen:
    """The `tune` flow on `spec` in a process of its own (output in flow.log), on the session's
    Prefect API, tracking to `tmp_path/mlflow.db`."""
    from prefect.settings import PREFECT_API_URL

    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    code = ("import json, sys; from flows.tune import tune; "
            "tune(sys.argv[1], tracking_uri=sys.argv[2], **json.loads(sys.argv[3]))")
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    with open(tmp_path / "flow.log", "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code, str(spec_path), mlflow_uri(tmp_path), json.dumps(options)],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)


def cmdline(proc: Any) -> list[str]:
    """A psutil process's command line; [] for one that exited meanwhile (or a zombie)."""
    import psutil

    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def mlflow_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_killed_tune_flow_resumes_without_losing_or_rerunning_trials(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from flows.tune import tune

    spec = {
        "name": "killed", "metric": "Train/val_cross_entropy", "scheduler": "asha",
        "scheduler_options": {"reduction_factor": 3},
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_trials_completed": 20000}, "n_workers": 4, "seed": 5,
        "results_root": str(tmp_path / "experiments"),
    }
    uri = mlflow_uri(tmp_path)
    store = tmp_path / "experiments" / "killed"
    proc = start_tune(tmp_path, spec, checkpoint_interval=0.2)
    try:
        deadline = time.monotonic() + 150
        while len(finished_trials(store / "state.json")) < 30:
            assert proc.poll() is None, (tmp_path / "flow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the flow never saved its state"
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    finished = finished_trials(store / "state.json")
    # every report durable at the kill: the snapshot plus the rows journaled after it
    at_kill = load_experiment(store).results

    spec["stop"] = {"max_trials_completed": len(finished) + 15}
    outcome = tune(spec, tracking_uri=uri)

    assert outcome["resumed"] and outcome["reason"].startswith("max_trials_completed")
    final = load_experiment(store)
    assert not final.results.duplicated(subset=["trial_id", "epoch"]).any()
    for tid in finished:  # each finished trial: all its reports, once, as before the kill
        before = at_kill[at_kill["trial_id"] == int(tid)][["epoch", "Train/val_cross_entropy"]]
        after = final.results[final.results["trial_id"] == int(tid)]
        assert after[["epoch", "Train/val_cross_entropy"]].reset_index(drop=True).equals(
            before.reset_index(drop=True)), tid
        assert final.state["trials"][tid]["status"] in FINISHED
    assert outcome["counts"]["finished"] >= len(finished) + 15

    client = MlflowClient(uri)
    runs = client.search_runs([outcome["mlflow_experiment_id"]], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("tunesmith.role") == "parent"]
    children = {r.info.run_id: int(r.data.tags["tunesmith.trial_id"]) for r in runs
                if "mlflow.parentRunId" in r.data.tags}
    assert len(parents) == 1 and parents[0].info.run_id == outcome["mlflow_parent_run_id"]
    # issue 12: a simulated experiment's child runs are its best trials, at most
    # SIMULATED_CHILD_RUNS (every trial while it has no more); every trial is in the parent's
    # trials.csv, with the id of its child run where it has one
    trials = sorted(int(t) for t in final.state["trials"])
    assert len(set(children.values())) == len(children) == min(len(trials), SIMULATED_CHILD_RUNS)
    table = pd.read_csv(client.download_artifacts(parents[0].info.run_id, "trials.csv",
                                                  str(tmp_path)), keep_default_na=False)
    assert sorted(table["trial_id"]) == trials
    assert {run: tid for tid, run in zip(table["trial_id"], table["mlflow_run_id"], strict=True)
            if run} == children


def test_sigterm_ends_the_trials_and_marks_the_parent_run_killed(tmp_path: Path) -> None:
    """What a cancel from the Prefect UI does to the flow-run process: SIGTERM."""
    import psutil
    from mlflow import MlflowClient

    script = tmp_path / "slow.py"
    script.write_text(
        "import time\nfrom hpo_core.report import get_config, report\n"
        "for epoch in range(1, 100):\n    time.sleep(0.5)\n    report(epoch=epoch, loss=1 / epoch)\n")
    spec = {
        "name": "terminated", "metric": "loss", "mode": "min", "scheduler": "random",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}},
        "backend": "local", "backend_options": {"entry_point": str(script), "gpus": None},
        "stop": {"max_trials_started": 4}, "n_workers": 2,
        "results_root": str(tmp_path / "experiments"),
    }
    proc = start_tune(tmp_path, spec)
    try:
        deadline = time.monotonic() + 120
        trials: list[psutil.Process] = []
        while len(trials) < 2:
            assert proc.poll() is None, (tmp_path / "flow.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.1)
            trials = [p for p in psutil.Process(proc.pid).children(recursive=True)
                      if str(script) in " ".join(cmdline(p))]
        time.sleep(1.0)  # a report or two reach the tuner
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(trials, timeout=5)
    assert not alive, "trial processes outlived the flow"
    client = MlflowClient(mlflow_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("terminated").experiment_id],
                              "tags.`tunesmith.role` = 'parent'")
    assert [r.info.status for r in runs] == ["KILLED"], (tmp_path / "flow.log").read_text()[-3000:]
    assert runs[0].data.tags["tunesmith.end_reason"].startswith("interrupted by")
    # the flow's log says what became of it, and how to go on
    assert "experiment terminated interrupted (" in (tmp_path / "flow.log").read_text()
