"""Real trials (local subprocesses) as Prefect tasks: names, states, retries of launch errors."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from hpo_core.store import load_experiment

pytestmark = pytest.mark.usefixtures("prefect_harness")

SCRIPT = textwrap.dedent("""
    import sys, time
    from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint

    config = get_config()
    x = float(config["x"])
    if x > 0.9:
        print("diverged", file=sys.stderr)
        sys.exit(3)
    start = (load_checkpoint() or {"epoch": 0})["epoch"]
    for epoch in range(start + 1, int(config["epochs"]) + 1):
        time.sleep(0.05)
        save_checkpoint({"epoch": epoch})
        report(epoch=epoch, loss=(x - 0.3) ** 2 + 1.0 / epoch)
""")


def local_spec(tmp_path: Path, name: str, scheduler: str, options: dict[str, Any],
               stop: dict[str, Any], points: list[float]) -> dict[str, Any]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    return {
        "name": name,
        "metric": "loss",
        "mode": "min",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 3},
        "scheduler": scheduler,
        "scheduler_options": {**options, "points_to_evaluate": [{"x": x} for x in points]},
        "backend": "local",
        "backend_options": {"entry_point": str(script), "gpus": None,
                            "env": {"OMP_NUM_THREADS": "1"}},
        "stop": stop,
        "n_workers": 2,
        "seed": 0,
        "results_root": str(tmp_path / "experiments"),
    }


def task_runs(flow_run_id: str | UUID) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=runs)


def artifact_text(client: Any, run_id: str, path: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return Path(client.download_artifacts(run_id, path, folder)).read_text()


def test_each_trial_segment_is_a_prefect_task(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from flows.tune import tune

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = local_spec(tmp_path, "local-promotion", "asha_promotion",
                      {"grace_period": 1, "reduction_factor": 3, "max_t": 3},
                      {"max_trials_started": 5}, points=[0.95, 0.3, 0.6, 0.1, 0.8])
    outcome = tune(spec, tracking_uri=uri)

    runs = task_runs(outcome["flow_run_id"])
    by_name = {r.name: r for r in runs}
    failed = [r for r in runs if r.name.startswith("trial-0 ")]
    assert len(failed) == 1 and failed[0].state.is_failed()
    assert failed[0].run_count == 1  # a trial that fails on its own is not retried
    for tid in range(1, 5):
        assert any(name.startswith(f"trial-{tid} ") and "x=" in name for name in by_name)
    resumed = [r for r in runs if " resume " in r.name]
    assert resumed and all(r.state.is_completed() for r in resumed)

    experiment = load_experiment(Path(outcome["store_path"]))
    statuses = {int(k): v["status"] for k, v in experiment.state["trials"].items()}
    assert statuses[0] == "failed" and outcome["counts"]["failed"] == 1
    best = experiment.results[experiment.results["trial_id"] == outcome["best_trial_id"]]
    # Paused at epoch 1, promoted, resumed from its checkpoint (not from scratch: no epoch
    # twice) and trained to max_t. On a loaded machine the script may checkpoint epochs past
    # 1 before the pause's SIGTERM reaches it: their late reports are dropped (the trial was
    # paused) and the resumed segment starts after them, so [1, 3] or even [1] are right too.
    best_id = outcome["best_trial_id"]
    epochs = best["epoch"].tolist()
    assert epochs[0] == 1 and epochs == sorted(set(epochs)), epochs
    assert any(r.name.startswith(f"trial-{best_id} resume ") for r in resumed)
    checkpoint = Path(outcome["store_path"]) / "trials" / str(best_id) / "checkpoint"
    assert json.loads((checkpoint / "checkpoint.json").read_text())["epoch"] == 3
    assert outcome["best_config"]["x"] == pytest.approx(0.3)

    client = MlflowClient(uri)
    children = client.search_runs([outcome["mlflow_experiment_id"]],
                                  "tags.`tunesmith.trial_id` = '0'")
    assert children[0].info.status == "FAILED"
    assert "exit" in children[0].data.tags["tunesmith.failure_reason"].lower() or \
        "3" in children[0].data.tags["tunesmith.failure_reason"]
    # its output is attached to its run: the reason it failed is one click away
    assert "diverged" in artifact_text(client, children[0].info.run_id, "logs/stderr.txt")


def test_launch_errors_are_retried_and_then_fail_the_trial(tmp_path: Path) -> None:
    from prefect import flow
    from prefect.runtime import flow_run

    from backends.local import LocalBackend
    from flows._prefect_backend import PrefectTrialBackend
    from flows.experiment import build_tuner
    from hpo_core.spec import ExperimentSpec

    class FlakyLaunches(LocalBackend):
        """A local backend whose first launches of some trials raise, like a throttled API."""

        def __init__(self, failures: dict[int, int], **options: Any):
            super().__init__(**options)
            self.failures = failures

        def start(self, trial: Any) -> None:
            if self.failures.get(trial.trial_id, 0) > 0:
                self.failures[trial.trial_id] -= 1
                raise OSError(f"launch of trial {trial.trial_id} throttled")
            super().start(trial)

    spec = ExperimentSpec.from_dict(local_spec(
        tmp_path, "local-flaky", "random", {}, {"max_trials_started": 3}, points=[0.1, 0.3, 0.5]))

    @flow
    def run_flaky() -> tuple[str, dict[str, Any]]:
        inner = FlakyLaunches({0: 1, 2: 5}, **spec.backend_options)
        backend = PrefectTrialBackend(inner, retries=2, retry_delay_seconds=0)
        tuner = build_tuner(spec, [], backend)
        tuner.run()
        return str(flow_run.id), {tid: t.to_dict() for tid, t in tuner.trials.items()}

    run_id, trials = run_flaky()
    runs = {r.name.split()[0]: r for r in task_runs(run_id)}
    assert runs["trial-0"].state.is_completed() and runs["trial-0"].run_count == 2
    assert runs["trial-1"].state.is_completed() and runs["trial-1"].run_count == 1
    assert runs["trial-2"].state.is_failed() and runs["trial-2"].run_count == 3
    assert [trials[i]["status"] for i in range(3)] == ["completed", "completed", "failed"]
    assert "infrastructure error" in trials[2]["failure_reason"]
    assert "throttled" in trials[2]["failure_reason"]
    assert json.loads(json.dumps(trials[0]["last_result"]))["epoch"] == 3


def test_a_launch_does_not_wait_out_the_poll_interval(tmp_path: Path) -> None:
    """The tuner's poll holds the backend while it waits; a segment task's launch wakes it."""
    import time

    from prefect import flow

    from backends.local import LocalBackend
    from flows._prefect_backend import PrefectTrialBackend
    from flows.experiment import build_tuner
    from hpo_core.spec import ExperimentSpec

    spec = ExperimentSpec.from_dict({**local_spec(
        tmp_path, "local-wake", "random", {}, {"max_trials_started": 3}, points=[0.1, 0.3]),
        "n_workers": 1})  # one at a time: no other trial's reports end the poll's wait

    @flow
    def run_slow_polls() -> float:
        backend = PrefectTrialBackend(LocalBackend(**spec.backend_options, poll_interval=30.0))
        tuner = build_tuner(spec, [], backend)
        started = time.monotonic()
        tuner.run()
        assert all(t.status.value == "completed" for t in tuner.trials.values())
        return time.monotonic() - started

    assert run_slow_polls() < 15.0  # without the wake-up, each launch waited up to 30 s


def test_drain_hands_over_the_reports_of_the_trials_it_ends(tmp_path: Path) -> None:
    """What a killed tuner records last: the wrapper passes on the real backend's drain()."""
    import time

    from prefect import flow

    from backends.local import LocalBackend
    from flows._prefect_backend import PrefectTrialBackend
    from hpo_core.trial import Trial

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    stdout = tmp_path / "trials" / "0" / "stdout"

    @flow
    def drained() -> tuple[list[tuple[str, int, Any]], Any]:
        backend = PrefectTrialBackend(LocalBackend(str(script), gpus=None))
        backend.set_trial_root(tmp_path / "trials")
        backend.start(Trial(0, {"x": 0.2, "epochs": 3}))
        deadline = time.monotonic() + 60
        while "[tunesmith]" not in (stdout.read_text() if stdout.exists() else ""):
            assert time.monotonic() < deadline, "the trial never reported"
            time.sleep(0.05)
        time.sleep(0.2)  # its reader queues the report it just wrote to the file
        events = backend.drain()  # no poll ran: the trial waits at its first report
        backend.close()
        state = backend._segments[0].future.state  # type: ignore[union-attr]
        return ([(e.kind.value, e.trial_id, (e.metrics or {}).get("epoch")) for e in events],
                state)

    events, state = drained()
    assert events == [("result", 0, 1)]
    # the task of a segment the interruption cut short: Cancelled, not "stopped early", with
    # the report the drain handed over
    assert state.is_cancelled()
    assert state.message.startswith("trial 0 interrupted; last report: epoch=1 ")


def test_trial_output_reaches_mlflow_with_secrets_masked(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from flows.tune import tune

    script = tmp_path / "chatty.py"
    script.write_text(textwrap.dedent("""
        from hpo_core.report import get_config, report
        config = get_config()
        print("config:", config)
        print("using key AKIAABCDEFGHIJKLMNOP and db postgresql://bob:hunter22@db/x")
        report(epoch=1, loss=config["x"])
    """))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = {**local_spec(tmp_path, "local-logs", "random", {}, {"max_trials_started": 1},
                         points=[0.5]),
            "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0},
                             "api_token": "tok-Very-Secret-123"}}
    spec["backend_options"] = {**spec["backend_options"], "entry_point": str(script)}
    outcome = tune(spec, tracking_uri=uri)
    client = MlflowClient(uri)
    child = client.search_runs([outcome["mlflow_experiment_id"]],
                               "tags.`tunesmith.trial_id` = '0'")[0]
    text = artifact_text(client, child.info.run_id, "logs/stdout.txt")
    assert "config:" in text and "[tunesmith]:" in text
    for secret in ("tok-Very-Secret-123", "AKIAABCDEFGHIJKLMNOP", "hunter22"):
        assert secret not in text
    assert text.count("[redacted]") == 3
    stdout = Path(outcome["store_path"]) / "trials" / "0" / "stdout"
    assert "tok-Very-Secret-123" in stdout.read_text()  # the store keeps the real output



def test_asha_on_gpu_slots_through_the_flow(tmp_path: Path, caplog) -> None:
    """Two GPU ids, two workers: a trial paused at a rung hands its GPU to the next trial only
    once it has exited, so no GPU is ever shared; the experiment still runs to its end."""
    from flows.tune import tune

    spec = local_spec(tmp_path, "local-gpus", "asha_promotion",
                      {"grace_period": 1, "reduction_factor": 3, "max_t": 3},
                      {"max_trials_started": 6}, points=[0.3, 0.6, 0.1, 0.8, 0.5, 0.2])
    slow_exit = tmp_path / "slow_exit.py"  # takes 0.5 s to exit when paused
    slow_exit.write_text("import signal, sys, time\n"
                         "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))\n"
                         + SCRIPT)
    spec["backend_options"] = {**spec["backend_options"], "gpus": ["0", "1"],
                               "entry_point": str(slow_exit)}
    outcome = tune(spec, track=False)
    assert outcome["counts"]["trials"] == 6 and outcome["counts"]["failed"] == 0
    assert outcome["best_config"]["x"] == pytest.approx(0.3)
    assert not [r for r in caplog.records if "are shared" in r.getMessage()]
    paused = load_experiment(Path(outcome["store_path"])).state["trials"]
    assert sum(t["status"] == "paused" for t in paused.values()) >= 3  # GPUs changed hands


def test_a_segment_message_holds_the_report_polled_with_the_end(tmp_path: Path) -> None:
    """A poll can bring a trial's last reports and its end together; the task's message is
    written before the tuner applies those reports, so it must take them from the poll."""
    import time

    from prefect import flow

    from backends.local import LocalBackend
    from flows._prefect_backend import PrefectTrialBackend
    from hpo_core.trial import EventKind, Trial

    script = tmp_path / "quick.py"
    script.write_text("from hpo_core.report import report\n"
                      "for epoch in (1, 2, 3):\n    report(epoch=epoch, loss=1.0 / epoch)\n")

    @flow
    def one_trial() -> str:
        backend = PrefectTrialBackend(LocalBackend(str(script), gpus=None))
        backend.set_trial_root(tmp_path / "trials")
        trial = Trial(trial_id=0, config={})
        try:
            backend.start(trial)
            kinds: list[EventKind] = []
            deadline = time.monotonic() + 60
            while EventKind.COMPLETED not in kinds:
                assert time.monotonic() < deadline, kinds
                time.sleep(0.5)  # let the script finish: its reports and end arrive in one poll
                kinds += [event.kind for event in backend.poll()]
            # the tuner never applied the reports here: trial.last_result is still None
            segment = backend._segments[0]
            assert segment.future is not None
            segment.future.wait(timeout=30)
            return str(segment.future.state.message)
        finally:
            backend.close()

    message = one_trial()
    assert message.startswith("trial 0 completed; last report: epoch=3 loss=0.3333"), message
