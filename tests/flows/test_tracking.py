"""MLflow tracking as a tuner callback (no Prefect): redaction, batching, resume reconciliation."""

from __future__ import annotations

import json
import queue
import textwrap
from pathlib import Path
from typing import Any

import pytest

from flows.experiment import build_tuner
from flows.tracking import MlflowTracker
from hpo_core.secrets import MASK as REDACTED
from hpo_core.spec import ExperimentSpec
from hpo_core.store import load_experiment


def simulated_spec(root: Path, name: str, trials: int) -> ExperimentSpec:
    return ExperimentSpec.from_dict({
        "name": name, "metric": "Train/val_cross_entropy", "scheduler": "random",
        "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center",
                            "max_fidelity": 6},
        "stop": {"max_trials_completed": trials}, "n_workers": 3, "seed": 3,
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


def test_bulk_and_log_batch_paths_write_the_same_runs(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment larger than MLflow's batch limits (150 params, 1500 points) written through
    the bulk path and through `log_batch` reads back the same."""
    from mlflow import MlflowClient

    import flows._mlflow_writer as writer_module
    from flows._mlflow_writer import STOP, MlflowWriter, Segment, WriterSettings

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {f"p{i:03d}": i for i in range(150)}
    reports = [({"epoch": e, "a": e / 2, "b": float(e), "c": -e, "nan": float("nan")}, 1000 + e)
               for e in range(1, 301)]

    def write(name: str) -> tuple[MlflowWriter, str]:
        settings = WriterSettings(uri, name, name, name, (tmp_path / "mlartifacts").as_uri(), {},
                                  {"k": "v"}, "{}", None, "epoch")
        records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        writer = MlflowWriter(settings, records, lambda message: None)
        records.put(Segment(0, config, "completed", reports, 0, 1000, 2000))
        records.put(STOP)
        writer.run()
        assert writer.error is None
        return writer, writer._children[0][0]

    bulk, bulk_run = write("bulk")
    monkeypatch.setattr(writer_module, "bulk_store", lambda client: None)
    plain, plain_run = write("plain")
    assert bulk._bulk is not None and plain._bulk is None
    client = MlflowClient(uri)
    one, two = client.get_run(bulk_run), client.get_run(plain_run)
    assert one.data.params == two.data.params == {k: str(v) for k, v in config.items()}
    assert {k: v for k, v in one.data.tags.items() if k != "mlflow.parentRunId"} == \
        {k: v for k, v in two.data.tags.items() if k != "mlflow.parentRunId"}
    assert one.info.status == two.info.status == "FINISHED"
    assert str(sorted(one.data.metrics.items())) == str(sorted(two.data.metrics.items()))
    for key in ("a", "b", "c", "nan"):
        h1 = [(m.step, m.value, m.timestamp) for m in client.get_metric_history(bulk_run, key)]
        h2 = [(m.step, m.value, m.timestamp) for m in client.get_metric_history(plain_run, key)]
        assert len(h1) == 300 and str(h1) == str(h2)


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
    run = MlflowClient(uri).get_run(tracker.parent_run_id)
    assert run.info.status == status
    assert run.data.tags["tunesmith.end_reason"].startswith(
        f"interrupted by {type(interruption).__name__}")
