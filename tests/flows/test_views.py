"""One truth in every view: the CLI (run, list, show), the store's analysis, the Prefect
artifacts and MLflow name the same best trial with the same value, and the same counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from hpo_core.store import load_experiment
from hpo_core.trial_value import format_value

pytestmark = pytest.mark.usefixtures("prefect_harness")

METRIC = "Train/val_cross_entropy"


def _spec(root: Path) -> dict[str, Any]:
    return {
        "name": "views-asha", "metric": METRIC, "mode": "min", "scheduler": "asha",
        "scheduler_options": {"reduction_factor": 3},
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                            "max_fidelity": 9},
        "stop": {"max_trials_completed": 30}, "n_workers": 3, "seed": 3,
        "results_root": str(root),
    }


def test_best_trial_value_and_counts_agree_across_cli_artifacts_and_mlflow(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.tune import tune

    root, uri = tmp_path / "exp", f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = tune(_spec(root), tracking_uri=uri)
    best_id, best = outcome["best_trial_id"], outcome["best_value"]
    experiment = load_experiment(root / "views-asha")
    trials = experiment.trials().set_index("trial_id")
    # each trial's value is its best report, not its last one: the best trial was stopped
    # after a worse report, so a ranking by the last value would not put it first
    assert experiment.best_trial_id() == best_id and experiment.best_value() == best
    assert trials.at[best_id, METRIC] == best
    last = experiment.results.groupby("trial_id")[METRIC].last()
    assert (last > trials[METRIC].loc[last.index]).any()
    # ran to max_t vs stopped early: distinct states
    statuses = set(trials["status"])
    assert {"completed", "stopped"} <= statuses, statuses
    assert all(experiment.results[experiment.results["trial_id"] == t]["epoch"].max() == 9
               for t in trials.index[trials["status"] == "completed"])
    counts = outcome["counts"]
    assert counts["trials"] == len(trials) == experiment.num_trials()
    assert counts["completed"] == (trials["status"] == "completed").sum()
    assert counts["stopped"] == (trials["status"] == "stopped").sum()

    # the CLI
    capsys.readouterr()
    assert main(["show", "views-asha", "--results-root", str(root), "--top", "3"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert f"{counts['trials']} trials: {counts['completed']} completed" in shown[0]
    first = shown[3].split()
    assert first[:3] == [str(best_id), trials.at[best_id, "status"], format_value(best)]
    assert main(["list", "--results-root", str(root)]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:5] == ["views-asha", str(counts["trials"]), format_value(best), "yes",
                       str(best_id)]

    # the Prefect artifacts
    with get_client(sync_client=True) as client:
        board = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["views-asha-leaderboard"])))[0]
        summary = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["views-asha-summary"])))[0]
    table = json.loads(board.data) if isinstance(board.data, str) else board.data
    assert table[0]["trial_id"] == best_id and table[0][METRIC] == float(format_value(best))
    assert table[0]["at epoch"] == trials.at[best_id, "best_step"]
    assert f"`{format_value(best)}` (trial {best_id}, its best report at epoch" in summary.data
    assert f"{counts['trials']} trials: {counts['completed']} completed" in summary.data

    # MLflow: the parent, and the children sorted by their best_<metric>
    mlflow = MlflowClient(uri)
    exp = mlflow.get_experiment_by_name("views-asha")
    runs = mlflow.search_runs([exp.experiment_id], max_results=1000,
                              order_by=[f"metrics.`best_{METRIC}` ASC"])
    parent = next(r for r in runs if r.data.tags.get("tunesmith.role") == "parent")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert parent.data.metrics[f"best_{METRIC}"] == best
    assert parent.data.tags["tunesmith.best_trial_id"] == str(best_id)
    assert parent.data.metrics["num_trials"] == counts["trials"] == len(children)
    assert children[0].data.tags["tunesmith.trial_id"] == str(best_id)
    assert children[0].data.metrics[f"best_{METRIC}"] == best
    assert children[0].data.tags["tunesmith.best_step"] == format_value(trials.at[best_id, "best_step"])
    history = mlflow.get_metric_history(children[0].info.run_id, f"best_{METRIC}")
    assert history[-1].step == trials.at[best_id, "best_step"]
    assert {r.data.tags["tunesmith.status"] for r in children} == statuses
