"""MLflow tracking as a tuner callback (no Prefect): redaction, batching, resume reconciliation."""

from __future__ import annotations

import json
import queue
import re
import textwrap
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from flows.experiment import build_tuner
from flows.tracking import MlflowTracker
from hpo_core.secrets import MASK as REDACTED
from hpo_core.spec import ExperimentSpec
from hpo_core.store import CONFIG_PREFIX, load_experiment
from hpo_core.trial_value import format_value


def simulated_spec(root: Path, name: str, trials: int) -> ExperimentSpec:
    return ExperimentSpec.from_dict({
        "name": name, "metric": "Train/val_cross_entropy", "scheduler": "random",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                            "max_fidelity": 6},
        "stop": {"max_trials_completed": trials}, "n_workers": 3, "seed": 3,
        "results_root": str(root / "experiments"),
    })


def local_spec(root: Path, name: str, script: Path, trials: int) -> ExperimentSpec:
    """Random search over x in [0, 1], `trials` trials of `script` on the local backend."""
    return ExperimentSpec.from_dict({
        "name": name, "metric": "loss", "scheduler": "random",
        "config_space": {"x": {"type": "uniform", "lower": 0, "upper": 1}},
        "backend": "local", "backend_options": {"entry_point": str(script), "gpus": None},
        "stop": {"max_trials_started": trials}, "n_workers": 2,
        "results_root": str(root / "experiments"),
    })


def children_by_trial(client: Any, experiment_id: str, parent: str) -> dict[int, Any]:
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                              max_results=1000)
    by_trial = {int(r.data.tags["tunesmith.trial_id"]): r for r in runs}
    assert len(by_trial) == len(runs), "one child run per trial"
    return by_trial


def assert_mirrors_store(client: Any, runs: dict[int, Any], store: Path) -> None:
    experiment = load_experiment(store)
    assert sorted(runs) == sorted(int(t) for t in experiment.state["trials"])
    for tid, run in runs.items():
        rows = experiment.results[experiment.results["trial_id"] == tid]
        history = client.get_metric_history(run.info.run_id, "Train/val_cross_entropy")
        assert [(m.step, m.value) for m in history] == list(
            zip(rows["epoch"].astype(int), rows["Train/val_cross_entropy"], strict=True))
        assert run.data.tags["tunesmith.num_reports"] == str(len(rows))


def test_resume_reconciles_child_runs_with_the_store(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(simulated_spec(tmp_path, "reconcile", 8), tracking_uri=uri)
    build_tuner(tracker.spec, [tracker]).run()
    assert tracker.close() and tracker.error is None
    client = MlflowClient(uri)
    eid, parent = tracker.experiment_id, tracker.parent_run_id
    runs = children_by_trial(client, eid, parent)
    # what a crash can leave behind: a trial not written, one written halfway, an orphan
    client.delete_run(runs[2].info.run_id)
    client.delete_tag(runs[4].info.run_id, "tunesmith.num_reports")
    client.create_run(eid, tags={"mlflow.parentRunId": parent, "tunesmith.trial_id": "99",
                                 "tunesmith.num_reports": "1"})

    resumed = MlflowTracker(simulated_spec(tmp_path, "reconcile", 12), tracking_uri=uri)
    tuner = build_tuner(resumed.spec, [resumed])
    tuner.run()
    assert resumed.close() and resumed.error is None
    assert resumed.parent_run_id == parent
    runs = children_by_trial(client, eid, parent)
    assert 99 not in runs and len(runs) == len(tuner.trials) >= 12
    assert_mirrors_store(client, runs, tuner.store.path)
    run = client.get_run(parent)
    assert run.info.status == "FINISHED" and run.data.metrics["num_trials"] == len(tuner.trials)


def test_a_large_simulated_experiment_gives_its_best_trials_child_runs(tmp_path: Path) -> None:
    """Past `child_runs` trials, a simulated experiment's child runs are its best trials; the
    parent's trials.csv lists every trial with its child run id (empty for the others)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(simulated_spec(tmp_path, "best-only", 10), tracking_uri=uri,
                            child_runs=3)
    tuner = build_tuner(tracker.spec, [tracker])
    tuner.run()
    assert tracker.close() and tracker.error is None
    client = MlflowClient(uri)
    runs = children_by_trial(client, tracker.experiment_id, tracker.parent_run_id)
    experiment = load_experiment(tuner.store.path)
    values = experiment.trial_values()
    best_three = sorted(values, key=lambda t: (values[t].value, t))[:3]
    assert sorted(runs) == sorted(best_three) and len(tuner.trials) > 3
    for tid, run in runs.items():
        rows = experiment.results[experiment.results["trial_id"] == tid]
        history = client.get_metric_history(run.info.run_id, "Train/val_cross_entropy")
        assert [(m.step, m.value) for m in history] == list(
            zip(rows["epoch"].astype(int), rows["Train/val_cross_entropy"], strict=True))
        assert run.data.metrics["best_Train/val_cross_entropy"] == values[tid].value
    table = pd.read_csv(client.download_artifacts(tracker.parent_run_id, "trials.csv",
                                                  str(tmp_path)), keep_default_na=False)
    assert sorted(table["trial_id"]) == sorted(tuner.trials)
    run_ids = dict(zip(table["trial_id"], table["mlflow_run_id"], strict=True))
    assert run_ids == {t: runs[t].info.run_id if t in runs else "" for t in tuner.trials}
    assert {c for c in table.columns if c.startswith(CONFIG_PREFIX)} == \
        {CONFIG_PREFIX + k for k in tuner.trials[0].config}
    note = client.get_run(tracker.parent_run_id).data.tags["mlflow.note.content"]
    assert f"the best, 3 of {len(tuner.trials)} trials" in note


def test_a_multi_objective_simulated_experiment_gives_its_pareto_front_child_runs(
        tmp_path: Path) -> None:
    """With several metrics the child runs are the trials on the Pareto front first (before:
    the best by the first metric only, and front trials ranked lower by it had none)."""
    from mlflow import MlflowClient

    metrics = ["Train/val_cross_entropy", "Train/val_accuracy"]
    spec = ExperimentSpec.from_dict({
        **simulated_spec(tmp_path, "front", 40).to_dict(), "metric": metrics,
        "mode": ["min", "max"], "scheduler": "mo_rea",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                            "max_fidelity": 6, "objectives": metrics}})
    tracker = MlflowTracker(spec, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                            child_runs=2)
    tuner = build_tuner(tracker.spec, [tracker])
    tuner.run()
    assert tracker.close() and tracker.error is None
    runs = children_by_trial(MlflowClient(tracker.tracking_uri), tracker.experiment_id,
                             tracker.parent_run_id)
    reports = load_experiment(tuner.store.path).pareto_front()
    front = set(reports["trial_id"])
    assert len(front) >= 2 and front <= set(runs)
    assert len(runs) == max(len(front), 2)
    # the parent run's note lists the front's reports, as `tunesmith show` does
    note = MlflowClient(tracker.tracking_uri).get_run(tracker.parent_run_id) \
        .data.tags["mlflow.note.content"]
    assert (f"Pareto front of {metrics[0]} (min), {metrics[1]} (max): {len(reports)} reports of "
            f"{len(front)} trials.") in note
    listed = [line.split(" | ") for line in note.splitlines()
              if re.match(r"\| \d+ \| ", line)]
    assert [(int(r[0][2:]), r[1], r[2], r[3].rstrip(" |")) for r in listed] == [
        (t, format_value(a), format_value(b), format_value(e)) for t, a, b, e in
        reports[["trial_id", *metrics, "epoch"]].itertuples(index=False)]


def test_a_segment_over_mlflows_batch_limits_reads_back_whole(tmp_path: Path) -> None:
    """A segment larger than MLflow's batch limits (150 params, 1500 points) is split into
    several `log_batch` calls and reads back complete (NaN included)."""
    from mlflow import MlflowClient

    from flows._mlflow_writer import STOP, MlflowWriter, Segment, WriterSettings

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {f"p{i:03d}": i for i in range(150)}
    reports = [({"epoch": e, "a": e / 2, "b": float(e), "c": -e, "nan": float("nan")}, 1000 + e)
               for e in range(1, 301)]
    settings = WriterSettings(uri, "batches", "batches", "batches",
                              (tmp_path / "mlartifacts").as_uri(), {}, {"k": "v"}, "{}", None,
                              "epoch")
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = MlflowWriter(settings, records, lambda message: None)
    records.put(Segment(0, config, "completed", reports, 0, 1000, 2000))
    records.put(STOP)
    writer.run()
    assert writer.error is None
    client = MlflowClient(uri)
    run = client.get_run(writer._children[0][0])
    assert run.data.params == {k: str(v) for k, v in config.items()}
    assert run.data.tags["tunesmith.status"] == "completed"
    assert run.data.tags["tunesmith.num_reports"] == "300"
    assert run.info.status == "FINISHED" and run.info.end_time == 2000
    assert run.data.metrics["a"] == 150.0 and run.data.metrics["c"] == -300.0
    for key, value in (("a", lambda e: e / 2), ("b", float), ("c", lambda e: float(-e))):
        history = [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run.info.run_id, key)]
        assert sorted(history) == [(e, value(e), 1000 + e) for e in range(1, 301)]
    nan = client.get_metric_history(run.info.run_id, "nan")
    assert len(nan) == 300 and all(m.value != m.value for m in nan)


def test_a_failed_trials_child_run_gets_no_best_value(tmp_path: Path) -> None:
    """Sorting the child runs by best_<metric> gives the leaderboard: a trial that failed after
    reporting the lowest loss is not ranked (the views never name it best)."""
    from mlflow import MlflowClient

    from flows._mlflow_writer import STOP, MlflowWriter, Segment, WriterSettings
    from hpo_core.trial_value import TrialValue

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = WriterSettings(uri, "ranked", "ranked", "ranked",
                              (tmp_path / "mlartifacts").as_uri(), {}, {}, "{}", None, "epoch",
                              metric="loss")
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    writer = MlflowWriter(settings, records, lambda message: None)
    for tid, status, loss in ((0, "completed", 0.5), (1, "failed", 0.1)):
        records.put(Segment(tid, {"x": tid}, status, [({"epoch": 1, "loss": loss}, 1000)], 0,
                            1000, 2000, best=TrialValue(loss, 1)))
    records.put(STOP)
    writer.run()
    assert writer.error is None
    client = MlflowClient(uri)
    completed, failed = (client.get_run(writer._children[t][0]) for t in (0, 1))
    assert completed.data.metrics["best_loss"] == 0.5
    assert "best_loss" not in failed.data.metrics and failed.data.metrics["loss"] == 0.1
    assert failed.info.status == "FAILED"


def test_credentials_never_reach_mlflow(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        from hpo_core.report import get_config, report
        config = get_config()
        report(epoch=1, loss=float(config["x"]))
    """))
    spec = ExperimentSpec.from_dict({
        "name": "secrets", "metric": "loss", "scheduler": "random",
        "config_space": {"x": {"type": "uniform", "lower": 0, "upper": 1}, "api_token": "tk-123"},
        "backend": "local",
        "backend_options": {"entry_point": str(script), "gpus": None,
                            "env": {"HF_TOKEN": "hf-456", "DB": "mysql://me:pw-789@db/x"}},
        "stop": {"max_trials_started": 2}, "n_workers": 2,
        "results_root": str(tmp_path / "experiments"),
    })
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(spec, tracking_uri=uri)
    build_tuner(spec, [tracker]).run()
    assert tracker.close() and tracker.error is None
    client = MlflowClient(uri)
    runs = client.search_runs([tracker.experiment_id])
    assert len(runs) == 3
    parent = client.get_run(tracker.parent_run_id)
    env = json.loads(parent.data.params["backend_options"])["env"]
    assert env["HF_TOKEN"] == REDACTED
    assert env["DB"] == f"mysql://me:{REDACTED}@db/x"
    spec_json = (Path(client.download_artifacts(tracker.parent_run_id, "spec.json",
                                                str(tmp_path)))).read_text()
    everything = spec_json + json.dumps([(r.data.params, r.data.tags) for r in runs])
    for secret in ("tk-123", "hf-456", "pw-789"):
        assert secret not in everything
    assert all(r.data.params["api_token"] == REDACTED for r in runs if r.info.run_id != parent.info.run_id)
    trials = Path(client.download_artifacts(tracker.parent_run_id, "trials.csv",
                                            str(tmp_path))).read_text()
    assert trials.count(REDACTED) == 2 and "tk-123" not in trials  # one row per trial


@pytest.mark.parametrize(("interruption", "status"), [
    (KeyboardInterrupt(), "KILLED"),  # Ctrl-C, or Prefect's TerminationSignal on SIGTERM
    (RuntimeError("scheduler bug"), "FAILED"),
])
def test_an_interrupted_experiment_ends_its_parent_run_killed_or_failed(
        tmp_path: Path, interruption: BaseException, status: str) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(simulated_spec(tmp_path, "interrupted", 20), tracking_uri=uri)
    tuner = build_tuner(tracker.spec, [tracker])
    seen = []

    def interrupt(*_: Any) -> None:
        seen.append(1)
        if len(seen) == 5:
            raise interruption

    tuner.scheduler.on_trial_add = interrupt  # type: ignore[method-assign]
    with pytest.raises(type(interruption)):
        tuner.run()
    assert tracker.close() and tracker.error is None
    client = MlflowClient(uri)
    run = client.get_run(tracker.parent_run_id)
    assert run.info.status == status
    assert run.data.tags["tunesmith.end_reason"].startswith(
        f"interrupted by {type(interruption).__name__}")
    # cut short while starting a trial: no snapshot of that state, yet the parent run's
    # results.parquet has every report, those journaled after the last snapshot included
    stored = load_experiment(tuner.store.path).results
    logged = pd.read_parquet(client.download_artifacts(tracker.parent_run_id, "results.parquet",
                                                       str(tmp_path)))
    assert len(stored) > 0 and len(logged) == len(stored)
    assert sorted(zip(logged.trial_id, logged.epoch, strict=True)) == sorted(
        zip(stored.trial_id, stored.epoch, strict=True))


EPOCHS = """\
import time
from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint
config = get_config()
first = (load_checkpoint() or {"epoch": 0})["epoch"] + 1
for epoch in range(first, 7):
    time.sleep(0.05)
    save_checkpoint({"epoch": epoch})
    report(epoch=epoch, loss=float(config["x"]) + 1 / epoch)
"""


@pytest.mark.slow
def test_trials_running_at_an_interruption_end_their_child_runs_killed_with_every_report(
        tmp_path: Path) -> None:
    """Ctrl-C while trials run: each running trial's child run gets every report the store has
    (those since its last flush, and those the backend handed over as it ended the trials) and
    ends KILLED; the resume continues the same runs (before: left RUNNING, points missing, and
    trials that had not flushed yet had no child run at all)."""
    from mlflow import MlflowClient

    from backends.local import LocalBackend
    from hpo_core.trial import EventKind

    script = tmp_path / "epochs.py"
    script.write_text(EPOCHS)
    spec = local_spec(tmp_path, "killed", script, 4)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    class KilledWhilePolling(LocalBackend):
        reports = 0

        def poll(self):
            if self.reports >= 3:
                time.sleep(0.2)  # the trials report meanwhile: drained, without callbacks
                raise KeyboardInterrupt
            events = super().poll()
            self.reports += sum(e.kind == EventKind.RESULT for e in events)
            return events

    def mirrored(client: Any, tracker: MlflowTracker) -> dict[int, Any]:
        stored = load_experiment(tmp_path / "experiments" / "killed")
        runs = children_by_trial(client, client.get_run(tracker.parent_run_id).info.experiment_id,
                                 tracker.parent_run_id)
        assert sorted(runs) == sorted(int(t) for t in stored.state["trials"])
        for tid, run in runs.items():
            rows = stored.results[stored.results["trial_id"] == tid]
            history = client.get_metric_history(run.info.run_id, "loss")
            assert sorted((m.step, m.value) for m in history) == list(
                zip(rows["epoch"].astype(int), rows["loss"], strict=True)), tid
        return runs

    tracker = MlflowTracker(spec, tracking_uri=uri)
    tuner = build_tuner(spec, [tracker], backend=KilledWhilePolling(str(script), gpus=None))
    with pytest.raises(KeyboardInterrupt):
        tuner.run()
    assert tracker.close() and tracker.error is None
    client = MlflowClient(uri)
    running = {t.trial_id for t in tuner.trials.values() if t.status.value == "running"}
    assert running
    runs = mirrored(client, tracker)
    for tid in running:
        assert runs[tid].info.status == "KILLED"
        assert runs[tid].data.tags["tunesmith.status"] == "interrupted"
    table = pd.read_csv(client.download_artifacts(tracker.parent_run_id, "trials.csv",
                                                  str(tmp_path)))
    statuses = dict(zip(table["trial_id"], table["status"], strict=True))
    assert {statuses[tid] for tid in running} == {"interrupted"}  # no process runs them

    tracker = MlflowTracker(spec, tracking_uri=uri)
    build_tuner(spec, [tracker]).run()  # resumed
    assert tracker.close() and tracker.error is None
    runs = mirrored(client, tracker)
    assert {r.info.status for r in runs.values()} == {"FINISHED"} and len(runs) == 4


def test_a_resume_with_a_changed_spec_tags_the_parent_run_with_the_current_values(
        tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = simulated_spec(tmp_path, "changed", 4)
    tracker = MlflowTracker(spec, tracking_uri=uri)
    build_tuner(spec, [tracker]).run()
    assert tracker.close() and tracker.error is None
    spec.stop = {"max_trials_completed": 8}  # raised, then run again: it resumes
    spec.max_failures = 7
    tracker = MlflowTracker(spec, tracking_uri=uri)
    build_tuner(spec, [tracker]).run()
    assert tracker.close() and tracker.error is None
    run = MlflowClient(uri).get_run(tracker.parent_run_id)
    assert run.data.params["stop"] == '{"max_trials_completed": 4}'  # immutable in MLflow
    assert run.data.tags["tunesmith.changed_params"] == "max_failures, stop"
    assert run.data.tags["tunesmith.current.stop"] == '{"max_trials_completed": 8}'
    assert run.data.tags["tunesmith.current.max_failures"] == "7"
    assert run.data.tags["tunesmith.end_reason"] == "max_trials_completed 8 reached"


def test_child_runs_filled_in_on_resume_get_their_trials_logs(tmp_path: Path) -> None:
    """Trials that ended while MLflow could not be written (here: no tracker at all) get
    their child runs on the next session, with their output files, as when written live."""
    from mlflow import MlflowClient

    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        from hpo_core.report import get_config, report
        config = get_config()
        print("training with x =", config["x"])
        report(epoch=1, loss=float(config["x"]))
    """))
    spec = local_spec(tmp_path, "filled", script, 2)
    build_tuner(spec).run()  # the trials end unseen by MLflow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(spec, tracking_uri=uri)
    build_tuner(spec, [tracker]).run()  # resumed: nothing left to run, MLflow filled in
    assert tracker.close() and tracker.error is None
    client = MlflowClient(uri)
    children = children_by_trial(client, tracker.experiment_id, tracker.parent_run_id)
    assert sorted(children) == [0, 1]
    for run in children.values():
        logs = {a.path for a in client.list_artifacts(run.info.run_id, "logs")}
        assert "logs/stdout.txt" in logs, logs


def test_a_resumed_simulated_experiment_keeps_child_runs_for_its_best_trials_only(
        tmp_path: Path) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = simulated_spec(tmp_path, "displaced", 4)
    tracker = MlflowTracker(spec, tracking_uri=uri, child_runs=3)
    build_tuner(spec, [tracker]).run()
    assert tracker.close() and tracker.error is None
    first = set(children_by_trial(MlflowClient(uri), tracker.experiment_id,
                                  tracker.parent_run_id))
    spec.stop = {"max_trials_completed": 40}  # resumed: better trials come
    tracker = MlflowTracker(spec, tracking_uri=uri, child_runs=3)
    build_tuner(spec, [tracker]).run()
    assert tracker.close() and tracker.error is None
    experiment = load_experiment(Path(spec.results_root) / "displaced")
    values = experiment.trial_values()
    best = sorted(values, key=lambda t: (values[t].value, t))[:3]
    children = children_by_trial(MlflowClient(uri), tracker.experiment_id,
                                 tracker.parent_run_id)
    assert sorted(children) == sorted(best) and first - set(best)  # some were displaced


def test_a_trials_best_for_mlflow_is_its_best_feasible_report() -> None:
    """With a constraint (feasible where <= 0) a report that violates it is never a trial's
    best: the child run's `best_<metric>` and the runs chosen for a simulated experiment."""
    from flows.tracking import _restored_best

    rows = [{"trial_id": 0, "epoch": 1, "loss": 0.2, "c": 0.1},
            {"trial_id": 0, "epoch": 2, "loss": 0.4, "c": -0.1},
            {"trial_id": 1, "epoch": 1, "loss": 0.1, "c": 0.5}]
    assert {t: (v.value, v.step) for t, v in
            _restored_best(rows, "loss", "min", "epoch", "c").items()} == {0: (0.4, 2)}
    assert {t: (v.value, v.step) for t, v in
            _restored_best(rows, "loss", "min", "epoch", None).items()} == {0: (0.2, 1),
                                                                          1: (0.1, 1)}
