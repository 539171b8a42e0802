"""The digits example end to end: scikit-learn trials tuned by ASHA (promotion) on the local
backend through the `tune` flow; paused trials resume from their checkpoints."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

from hpo_core.store import load_experiment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def launcher():
    spec = importlib.util.spec_from_file_location("launch_digits", EXAMPLES / "launch_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def small_spec(tmp_path: Path, name: str):
    """Two trials paused at epoch 1, the better one promoted to epoch 2 (three launches of a
    script that imports scikit-learn: seconds each)."""
    overrides = argparse.Namespace(name=name, max_trials=2, results_root=str(tmp_path / "exp"),
                                   workers=2)
    spec = launcher().load_spec(EXAMPLES / "digits-asha.yaml", overrides)
    spec.scheduler_options = {**spec.scheduler_options, "max_t": 2, "reduction_factor": 2}
    spec.config_space = {**spec.config_space, "epochs": 2, "lr": 0.01}
    return spec


def test_launcher_resolves_the_entry_point_and_caps_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the spec's relative entry point is not found from here
    overrides = argparse.Namespace(name=None, max_trials=None, results_root=None, workers=None)
    spec = launcher().load_spec(EXAMPLES / "digits-asha.yaml", overrides)
    assert spec.backend_options["entry_point"] == str(EXAMPLES / "train_digits.py")
    assert spec.scheduler == "asha_promotion" and spec.backend == "local"
    assert 1 <= spec.n_workers <= 2


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")
def test_digits_asha_through_the_tune_flow(tmp_path, prefect_harness):
    from flows.tune import tune

    spec = small_spec(tmp_path, "digits-flow")
    outcome = tune(spec, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = load_experiment(Path(outcome["store_path"]))
    frame = experiment.results
    assert outcome["counts"]["trials"] == 2 and outcome["counts"]["failed"] == 0
    assert outcome["best_value"] < 0.5  # log loss of a useful classifier (chance: 2.3)
    assert frame["val_accuracy"].max() > 0.85
    assert (frame["epoch"] == 1).sum() == 2  # both paused at the first rung
    statuses = {int(k): v["status"] for k, v in experiment.state["trials"].items()}
    assert sorted(statuses.values()) in (["completed", "paused"], ["paused", "stopped"])
    promoted = next(tid for tid, status in statuses.items() if status != "paused")
    epochs = frame[frame["trial_id"] == promoted]["epoch"].tolist()
    assert epochs == [1, 2] or epochs == [1]  # [1]: epoch 2 was saved just as the pause came
    trial_dir = Path(outcome["store_path"]) / "trials" / str(promoted)
    assert (trial_dir / "checkpoint" / "model.pkl").exists()
    stdout = (trial_dir / "stdout").read_text()
    assert stdout.count('"epoch": 1,') == 1  # the resumed run did not start over
    # the results are in MLflow too: a parent run and one child run per trial, with its metrics
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    assert all("val_accuracy" in r.data.metrics for r in children)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("sklearn") is None,
                    reason="needs torch and scikit-learn")
def test_torch_digits_asha_resumes_from_torch_checkpoints(tmp_path):
    """The PyTorch example (on a GPU where there is one): the promoted trial continues from its
    torch checkpoint. A fast script may train past the rung before the pause arrives, so the
    resumed run starts at epoch 2 or later."""
    import re

    from flows.experiment import build_tuner

    overrides = argparse.Namespace(name="digits-torch", max_trials=2,
                                   results_root=str(tmp_path / "exp"), workers=2)
    spec = launcher().load_spec(EXAMPLES / "digits-torch-asha.yaml", overrides)
    spec.scheduler_options = {**spec.scheduler_options, "max_t": 2, "reduction_factor": 2}
    spec.config_space = {**spec.config_space, "epochs": 2, "lr": 0.01}
    tuner = build_tuner(spec)
    tuner.run()
    frame = load_experiment(spec.experiment_path).results
    assert all(t.status.value in ("completed", "paused", "stopped")
               for t in tuner.trials.values())
    assert frame["val_accuracy"].max() > 0.7
    runs = {tid: re.findall(r"training on (\S+) .* from epoch (\d+)",
                            (spec.experiment_path / "trials" / str(tid) / "stdout").read_text())
            for tid in tuner.trials}
    print(runs)
    promoted = [tid for tid, starts in runs.items() if len(starts) == 2]
    assert len(promoted) == 1, runs
    assert [int(epoch) for _, epoch in runs[promoted[0]]][0] == 1
    assert int(runs[promoted[0]][1][1]) >= 2  # resumed from its checkpoint, not from scratch
    for _, rows in frame.groupby("trial_id"):
        epochs = rows["epoch"].tolist()
        assert epochs[0] == 1 and epochs == sorted(set(epochs))  # no epoch reported twice
