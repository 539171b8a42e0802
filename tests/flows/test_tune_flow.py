"""The `tune` flow on the simulated backend, under a Prefect test server, with MLflow on SQLite."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from hpo_core.store import load_experiment
from hpo_core.trial_value import format_value

pytestmark = pytest.mark.usefixtures("prefect_harness")


def lcbench_spec(root: Path, name: str, trials: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "metric": "Train/val_cross_entropy",
        "mode": "min",
        "scheduler": "asha",
        "scheduler_options": {"reduction_factor": 3},
        "backend": "simulated",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
        "stop": {"max_trials_completed": trials},
        "n_workers": 2,
        "seed": 1,
        "results_root": str(root / "experiments"),
        **extra,
    }


def mlflow_runs(uri: str, experiment: str) -> tuple[Any, list[Any], Any]:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("tunesmith.role") == "parent"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, [r.data.tags for r in parents]
    return client, children, parents[0]


def prefect_records(flow_run_id: str) -> tuple[list[Any], list[Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        return client.read_artifacts(flow_run_filter=runs), \
            client.read_task_runs(flow_run_filter=runs)


def test_tune_flow_mirrors_every_trial_into_mlflow_and_prefect(tmp_path: Path) -> None:
    from flows.tune import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = lcbench_spec(tmp_path, "flow-asha", trials=12,
                        backend_options={"blackbox": "lcbench",
                                         "task": "blood-transfusion-service-center"})
    outcome = tune(spec, tracking_uri=uri)

    experiment = load_experiment(Path(outcome["store_path"]))
    trials = experiment.trials()
    assert outcome["counts"]["trials"] == len(trials) >= 12
    assert outcome["best_value"] == pytest.approx(experiment.best_value())
    assert outcome["best_config"] == experiment.best_config()
    assert outcome["mlflow_error"] is None
    assert outcome["mlflow_ui_command"] == ("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui "
                                            f"--workers 1 --backend-store-uri {uri}")

    client, children, parent = mlflow_runs(uri, "flow-asha")
    # the parent: a handful of spec fields as params (issue 15: no flattened spec fields
    # beside the hyperparameters), tags, best value, artifacts
    assert parent.info.run_id == outcome["mlflow_parent_run_id"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["scheduler"] == "asha"
    assert json.loads(parent.data.params["backend_options"])["task"] == \
        "blood-transfusion-service-center"
    assert json.loads(parent.data.params["stop"]) == {"max_trials_completed": 12}
    assert len(parent.data.params) <= 10
    assert parent.data.tags["prefect.flow_run_id"] == outcome["flow_run_id"]
    assert parent.data.tags["backend"] == "simulated"
    # as the params show them (they were JSON strings: '"Train/val_cross_entropy"')
    assert (parent.data.tags["metric"], parent.data.tags["mode"]) == (
        "Train/val_cross_entropy", "min")
    assert json.loads(parent.data.tags["tunesmith.best_config"]) == outcome["best_config"]
    assert parent.data.metrics["best_Train/val_cross_entropy"] == pytest.approx(
        outcome["best_value"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec.json", "results.parquet", "trajectory.png", "learning_curves.png"} <= artifacts

    # one child per trial: config params, per-step metrics, parent link, status tag
    by_trial = {int(r.data.tags["tunesmith.trial_id"]): r for r in children}
    assert len(children) == len(by_trial) == len(trials)
    results = experiment.results
    for _, row in trials.iterrows():
        run = by_trial[int(row["trial_id"])]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["tunesmith.status"] == row["status"]
        config = json.loads(json.dumps(experiment.state["trials"][str(row["trial_id"])]["config"]))
        assert run.data.params == {k: str(v) for k, v in config.items()}
        reports = results[results["trial_id"] == row["trial_id"]]
        history = client.get_metric_history(run.info.run_id, "Train/val_cross_entropy")
        assert [m.step for m in history] == [int(e) for e in reports["epoch"]]
        assert [m.value for m in history] == pytest.approx(
            reports["Train/val_cross_entropy"].tolist())

    # Prefect: one task for the whole simulation, and the artifacts
    prefect_artifacts, task_runs = prefect_records(outcome["flow_run_id"])
    assert [t.name for t in task_runs] == ["simulate"]
    by_key = {a.key: a for a in prefect_artifacts}
    assert float(by_key["flow-asha-progress"].data) == 100.0
    table = by_key["flow-asha-leaderboard"].data
    rows = json.loads(table) if isinstance(table, str) else table
    assert rows[0]["trial_id"] == outcome["best_trial_id"]
    # the tables show 4 significant digits
    assert rows[0]["Train/val_cross_entropy"] == pytest.approx(outcome["best_value"], rel=1e-3)
    summary = by_key["flow-asha-summary"].data
    assert f"`{format_value(outcome['best_value'])}`" in summary
    assert outcome["mlflow_run_url"] in summary
    assert "data:image/png;base64," in summary


def test_tune_resumes_the_experiment_and_its_parent_run(tmp_path: Path) -> None:
    from flows.tune import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tune(lcbench_spec(tmp_path, "flow-resume", trials=6), tracking_uri=uri)
    before = load_experiment(Path(first["store_path"])).results
    second = tune(lcbench_spec(tmp_path, "flow-resume", trials=14), tracking_uri=uri)

    assert second["resumed"] and not first["resumed"]
    assert second["mlflow_parent_run_id"] == first["mlflow_parent_run_id"]
    after = load_experiment(Path(second["store_path"])).results
    assert after.iloc[: len(before)][["trial_id", "epoch"]].equals(before[["trial_id", "epoch"]])
    assert not after.duplicated(subset=["trial_id", "epoch"]).any()
    assert second["counts"]["finished"] >= 14

    _, children, parent = mlflow_runs(uri, "flow-resume")
    trial_ids = [int(r.data.tags["tunesmith.trial_id"]) for r in children]
    assert sorted(trial_ids) == sorted(after["trial_id"].unique().tolist())
    assert parent.data.tags["prefect.flow_run_id"] == second["flow_run_id"]
    assert parent.data.metrics["num_trials_finished"] == second["counts"]["finished"]


def test_unreachable_mlflow_warns_and_the_experiment_completes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from flows.tune import tune

    with caplog.at_level(logging.WARNING, logger="flows.tracking"):
        outcome = tune(lcbench_spec(tmp_path, "flow-offline", trials=8),
                       tracking_uri="http://127.0.0.1:1")
    assert outcome["mlflow_error"] and "127.0.0.1:1" in outcome["mlflow_error"]
    assert outcome["mlflow_parent_run_id"] is None
    assert any("without MLflow" in r.getMessage() for r in caplog.records)
    experiment = load_experiment(Path(outcome["store_path"]))
    assert len(experiment.trials()) == outcome["counts"]["trials"] >= 8
    assert experiment.best_value() == pytest.approx(outcome["best_value"])


def test_invalid_spec_fails_naming_the_field(tmp_path: Path) -> None:
    from flows.tune import tune

    with pytest.raises(ValueError, match="scheduler"):
        tune.with_options(retries=0)(lcbench_spec(tmp_path, "flow-bad", 4, scheduler="nope"),
                                     track=False)
