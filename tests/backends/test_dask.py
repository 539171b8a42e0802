"""The dask backend on a real cluster: `dask scheduler` and `dask worker` processes on 127.0.0.1
(`dask_cluster.py`), workers with different GPU resources and a fake nvidia-smi each.

The session cluster (`dask_cluster`: w1 with 2 GPUs, w2 with 1) serves the tests that leave it
as it was; the fault tests get a cluster of their own, whose workers they kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trial_helpers
from dask_cluster import Cluster, free_port, start_cluster

from hpo_core.report import CONFIG_ENV
from hpo_core.trial import EventKind, Trial, TrialEvent

pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

# A trial: `epochs` epochs of `sleep` seconds from its checkpoint on; each epoch appends
# "worker cuda epoch start end" to log.txt in its trial folder, then reports.
SCRIPT = textwrap.dedent("""
    import os, signal, time
    from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint

    config = get_config()
    folder = os.path.dirname(os.environ["TUNESMITH_CONFIG"])
    done = (load_checkpoint() or {"epoch": 0})["epoch"]
    for epoch in range(done + 1, int(config["epochs"]) + 1):
        start = time.time()
        time.sleep(float(config.get("sleep", 0.05)))
        # the checkpoint and the log line of an epoch together: a pause's SIGTERM between the
        # two would leave an epoch checkpointed but not logged (the log is what tests read)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        save_checkpoint({"epoch": epoch})
        with open(os.path.join(folder, "log.txt"), "a") as log:
            print(os.environ["TUNESMITH_DASK_WORKER"], os.environ["CUDA_VISIBLE_DEVICES"] or "-",
                  epoch, start, time.time(), file=log)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        report(epoch=epoch, loss=(float(config["x"]) - 0.3) ** 2 + 1.0 / epoch)
""")


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


@pytest.fixture(scope="module")
def faults_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two CPU-only workers with one thread each (two trials run on two workers)."""
    cluster = start_cluster(Path(tmp_path_factory.mktemp("dask-faults")), {"c1": 0, "c2": 0},
                            nthreads=1)
    yield cluster
    cluster.stop()


def make_backend(address: str, entry_point: Any, root: Path, **options: Any) -> Any:
    from backends.dask import DaskBackend

    backend = DaskBackend(entry_point, address=address, poll_interval=0.02,
                          stop_grace_period=2.0, **options)
    backend.set_trial_root(root)
    return backend


def collect(backend: Any, until: Any, timeout: float = 30.0) -> list[TrialEvent]:
    """`trial_helpers.collect`, waiting longer (segments go through a scheduler)."""
    return trial_helpers.collect(backend, until, timeout)


def epochs(events: list[TrialEvent], trial_id: int) -> list[int]:
    return [e.metrics["epoch"] for e in events
            if e.trial_id == trial_id and e.kind == EventKind.RESULT]


def ended(events: list[TrialEvent], trial_id: int) -> TrialEvent | None:
    return next((e for e in events if e.trial_id == trial_id
                 and e.kind in (EventKind.COMPLETED, EventKind.FAILED)), None)


def trial_processes(root: Path) -> list[psutil.Process]:
    """Trial processes (on any worker of this machine) whose config lies under `root`."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(CONFIG_ENV, "").startswith(str(root)):
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def wait_gone(root: Path, timeout: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while (left := trial_processes(root)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def log_lines(root: Path, trial_id: int) -> list[list[str]]:
    path = root / str(trial_id) / "log.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


# -- bad input: one clear error before anything runs ------------------------------------------------
def test_an_unreachable_scheduler_is_one_error(script: Path) -> None:
    from backends.dask import DaskBackend

    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"^backend_options.address: cannot reach the Dask "
                                         r"scheduler at tcp://127.0.0.1:\d+"):
        DaskBackend(str(script), address=address, connect_timeout=1.0)
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("address, message", [
    ("http://127.0.0.1:8786", "unknown address scheme 'http'"),
    ("scheduler-host", "missing port number"),
])
def test_an_address_dask_cannot_use_is_one_error_at_once(address: str, message: str,
                                                         script: Path) -> None:
    """Checked before a client is made: a half-made Client took 2 x 10 s to go, then printed
    a traceback at exit."""
    import subprocess
    import sys

    code = ("from backends.dask import DaskBackend\n"
            "try:\n"
            f"    DaskBackend({str(script)!r}, address={address!r}, connect_timeout=5.0)\n"
            "except ValueError as err:\n"
            "    print(err)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parents[2])
    assert time.monotonic() - started < 8
    assert done.stdout.startswith("backend_options.address: ") and message in done.stdout
    assert "Traceback" not in done.stderr, done.stderr


def test_the_cli_says_one_error_line_for_an_unreachable_scheduler(tmp_path: Path, script: Path,
                                                                  capsys: Any) -> None:
    from flows.cli import main

    spec = {"name": "unreachable", "metric": "loss", "config_space": {"x": 0.1, "epochs": 1},
            "backend": "dask", "results_root": str(tmp_path / "experiments"),
            "stop": {"max_trials_started": 1},
            "backend_options": {"address": f"tcp://127.0.0.1:{free_port()}",
                                "entry_point": str(script), "connect_timeout": 1.0}}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert main(["run", str(path), "--no-flow"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "backend_options.address: cannot reach the Dask scheduler" in err[0]
    assert not (tmp_path / "experiments" / "unreachable" / "trials").exists()


def test_more_gpus_than_any_worker_has_is_one_error(dask_cluster: Cluster, script: Path) -> None:
    from backends.dask import DaskBackend

    with pytest.raises(ValueError, match=r"backend_options.gpus_per_trial: 3 is more than any "
                                         r"worker has \(GPUs per worker: .*'w1': 2"):
        DaskBackend(str(script), address=dask_cluster.address, gpus_per_trial=3)


@pytest.mark.parametrize("entry_point", ["/nowhere/project/train.py --epochs 3",
                                         "/nowhere/project/train.py:objective"])
def test_an_entry_point_is_looked_for_on_the_workers_not_on_the_tuners_host(
        faults_cluster: Cluster, entry_point: str) -> None:
    from backends.dask import DaskBackend

    # the tuner's host need not have the code (submitted from a laptop): the workers must
    with pytest.raises(ValueError, match=r"^backend_options.entry_point: no file "
                                         r"'/nowhere/project/train.py' on any worker of the "
                                         r"Dask cluster \(it must be at the same path"):
        DaskBackend(entry_point, address=faults_cluster.address)


def test_gpus_on_a_cluster_without_gpus_is_one_error(faults_cluster: Cluster,
                                                     script: Path) -> None:
    from backends.dask import DaskBackend

    with pytest.raises(ValueError, match="backend_options.gpus_per_trial: 1 GPUs asked, but no "
                                         "worker .* advertises GPUs"):
        DaskBackend(str(script), address=faults_cluster.address, gpus_per_trial=1)


# -- GPUs ----------------------------------------------------------------------------------------
def test_a_worker_that_advertises_gpus_it_does_not_have_fails_the_trial_saying_so(
        tmp_path: Path, script: Path) -> None:
    """`--resources GPU=1` on a worker without GPUs (or whose nvidia-smi is not on its PATH):
    its trials fail with one line saying so (before: they ran with every GPU visible, shared)."""
    cluster = start_cluster(tmp_path / "cluster", {}, nthreads=1)
    try:
        cluster.add_worker("g0", gpus=1, nthreads=1, nvidia_smi=False)
        backend = make_backend(cluster.address, str(script), tmp_path / "trials",
                               gpus_per_trial=1)
        try:
            backend.start(Trial(0, {"x": 0.1, "epochs": 1}))
            events = collect(backend, lambda ev: ended(ev, 0) is not None)
        finally:
            backend.close()
    finally:
        cluster.stop()
    failed = ended(events, 0)
    assert failed.kind == EventKind.FAILED and "this worker finds no GPU" in failed.reason


def test_trials_get_distinct_gpus_of_their_worker(dask_cluster: Cluster, script: Path,
                                                  tmp_path: Path) -> None:
    root = tmp_path / "trials"
    backend = make_backend(dask_cluster.address, str(script), root, gpus_per_trial=1)
    try:
        assert backend.default_n_workers() == 3  # w1: 2 GPUs, w2: 1
        for tid in range(5):
            backend.start(Trial(tid, {"x": 0.1, "epochs": 2, "sleep": 0.4}))
        events = collect(backend, lambda ev: all(ended(ev, t) for t in range(5)), timeout=60)
    finally:
        backend.close()
    assert all(ended(events, t).kind == EventKind.COMPLETED for t in range(5))
    runs = []  # (worker, device, start, end) of each trial
    for tid in range(5):
        lines = log_lines(root, tid)
        assert len({(w, d) for w, d, *_ in lines}) == 1, lines
        runs.append((lines[0][0], lines[0][1], float(lines[0][3]), float(lines[-1][4])))
    assert {(w, d) for w, d, _, _ in runs} <= {("w1", "0"), ("w1", "1"), ("w2", "0")}
    for i, a in enumerate(runs):
        for b in runs[i + 1:]:
            overlap = a[2] < b[3] and b[2] < a[3]
            assert not (overlap and a[:2] == b[:2]), f"two trials shared a GPU: {a} {b}"
    at_once = max(sum(1 for r in runs if r[2] <= t < r[3]) for _, _, t, _ in runs)
    assert at_once <= 3


def test_a_segments_end_reaches_the_tuner_as_an_event_without_fetching_its_result(
        dask_cluster: Cluster, script: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """How a segment ended comes after its reports on the event stream, so the tuner never
    fetches a task's result from its worker (a round trip per trial)."""
    import distributed

    def fetched(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the tuner fetched a Dask task's result")

    failing = tmp_path / "fail.py"
    failing.write_text("from hpo_core.report import report\nreport(epoch=1, loss=1.0)\n"
                       "raise SystemExit(3)\n")
    monkeypatch.setattr(distributed.Future, "result", fetched)
    backend = make_backend(dask_cluster.address, str(script), tmp_path / "trials")
    failing_backend = make_backend(dask_cluster.address, str(failing), tmp_path / "failing")
    try:
        backend.start(Trial(0, {"x": 0.1, "epochs": 3, "sleep": 0.01}))
        failing_backend.start(Trial(0, {"x": 0.1}))
        events = collect(backend, lambda ev: ended(ev, 0) is not None)
        failed = collect(failing_backend, lambda ev: ended(ev, 0) is not None)
    finally:
        backend.close()
        failing_backend.close()
    assert epochs(events, 0) == [1, 2, 3] and ended(events, 0).kind == EventKind.COMPLETED
    assert epochs(failed, 0) == [1] and ended(failed, 0).kind == EventKind.FAILED
    assert "3" in (ended(failed, 0).reason or ""), ended(failed, 0).reason


# Fast epochs, each checkpointed, logged and reported with SIGTERM blocked: a trial ends before
# an epoch's checkpoint or after its report was written (a SIGKILL may still come while it waits
# for the report's acknowledgment).
FAST_EPOCHS = textwrap.dedent("""
    import os, signal, time
    from hpo_core.report import load_checkpoint, report, save_checkpoint

    log = os.path.join(os.path.dirname(os.environ["TUNESMITH_CONFIG"]), "log.txt")
    done = (load_checkpoint() or {"epoch": 0})["epoch"]
    for epoch in range(done + 1, 100000):
        time.sleep(0.002)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        save_checkpoint({"epoch": epoch})
        with open(log, "a") as f:
            print("-", "-", epoch, file=f)
        report(epoch=epoch, loss=1.0 / epoch)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
""")


def test_drain_hands_over_the_reports_that_no_poll_returned_and_ends_the_trials(
        dask_cluster: Cluster, tmp_path: Path) -> None:
    """A killed tuner journals what `drain()` returns: every report its trials made that no
    poll returned (taken by a poll the kill cut short, queued here, on their way, or made
    just before the workers ended the trials), not the trials' ends; the trials end. So each
    epoch a trial checkpointed is reported: its resume misses none."""
    root = tmp_path / "trials"
    script = tmp_path / "fast.py"
    script.write_text(FAST_EPOCHS)
    backend = make_backend(dask_cluster.address, str(script), root)

    def killed(events: list[TrialEvent]) -> None:
        raise KeyboardInterrupt

    try:
        for tid in (0, 1):
            backend.start(Trial(tid, {}))
        polled = collect(backend, lambda ev: all(len(epochs(ev, t)) >= 2 for t in (0, 1)))
        time.sleep(0.4)  # the trials go on reporting; no poll takes their reports
        backend._finish_ends = killed  # a poll takes them, and the kill comes before it returns
        with pytest.raises(KeyboardInterrupt):
            backend.poll()
        del backend._finish_ends
        time.sleep(0.3)  # more reports, queued
        drained = backend.drain()
        assert wait_gone(root) == []
    finally:
        backend.close()
    assert drained and {e.kind for e in drained} == {EventKind.RESULT}, drained
    for tid in (0, 1):
        reported = epochs(polled + drained, tid)
        logged = [int(epoch) for _, _, epoch, *_ in log_lines(root, tid)]
        assert len(epochs(drained, tid)) >= 2
        assert reported == logged == list(range(1, len(logged) + 1)), (reported[-3:], logged[-3:])


@pytest.mark.parametrize("pausing", [True, False])
def test_a_trial_waits_at_its_report_for_the_tuner_when_the_scheduler_may_pause(
        dask_cluster: Cluster, script: Path, tmp_path: Path, pausing: bool) -> None:
    """`set_pausing(True)` (a promotion method): a trial waits at each report until the tuner
    has acted on it, so one paused at its first report stops there and resumes after it.
    Otherwise its worker lets it go on at once (no round trip per report)."""
    root = tmp_path / "trials"
    backend = make_backend(dask_cluster.address, str(script), root)
    backend.set_pausing(pausing)
    config = {"x": 0.1, "epochs": 200, "sleep": 0.002}
    try:
        backend.start(Trial(0, config))
        events = collect(backend, lambda ev: epochs(ev, 0))
        time.sleep(0.5)  # the tuner deciding slowly
        ran = [int(epoch) for _, _, epoch, *_ in log_lines(root, 0)]
        backend.pause(0)
        time.sleep(0.3)
        events += backend.poll()
        if pausing:
            backend.resume(Trial(0, config, num_results=len(epochs(events, 0))))
            resumed = collect(backend, lambda ev: len(epochs(ev, 0)) >= 3)
    finally:
        backend.close()
    if not pausing:
        assert len(ran) > 10, ran  # it went on while the tuner decided
        return
    assert ran == [1] and epochs(events, 0) == [1], (ran, epochs(events, 0))
    assert epochs(resumed, 0)[:3] == [2, 3, 4], epochs(resumed, 0)


FUNCTION_EPOCHS = textwrap.dedent("""
    from hpo_core.report import load_checkpoint, report, save_checkpoint

    def epochs(config):
        first = (load_checkpoint() or {"epoch": 0})["epoch"] + 1
        for epoch in range(first, config["epochs"] + 1):
            save_checkpoint({"epoch": epoch})
            report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch, start=first)
""")


def test_function_trials_pause_exactly_under_asha_promotion(dask_cluster: Cluster,
                                                            tmp_path: Path) -> None:
    """Python function trials on the workers, epochs with no sleep, through the tuner: every
    paused trial stopped at its rung's report, and each resumed segment starts right after
    the trial's last reported epoch (the tuner acknowledges every report)."""
    from hpo_core.registry import build_scheduler
    from hpo_core.stopping import StoppingCriterion
    from hpo_core.store import ExperimentStore, load_experiment
    from hpo_core.tuner import Tuner

    module = tmp_path / "fn_epochs.py"
    module.write_text(FUNCTION_EPOCHS)
    space = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 9}
    scheduler = build_scheduler("asha_promotion", space, "loss", "min", seed=1,
                                options={"max_t": 9, "grace_period": 1, "reduction_factor": 3})
    store = ExperimentStore(tmp_path / "exp", "fn-promotion")
    Tuner(scheduler, make_backend(dask_cluster.address, f"{module}:epochs", tmp_path / "unused"),
          StoppingCriterion(max_trials_started=9), n_workers=3, store=store).run()
    frame = load_experiment(store.path).results
    assert trial_helpers.resumed_exactly(frame) >= 3 and frame["epoch"].max() == 9


SECRET_SCRIPT = textwrap.dedent("""
    import hashlib, os
    from hpo_core.report import get_config, report

    def digest(text):
        return hashlib.sha256(text.encode()).hexdigest()

    expected = os.environ["EXPECTED_DIGEST"]
    report(epoch=1, env_ok=float(digest(os.environ["TOKEN"]) == expected),
           config_ok=float(digest(get_config()["token"]) == expected))
    if get_config().get("echo"):  # a careless script: the value in a report and an error
        report(epoch=2, note=f"using {os.environ['TOKEN']}")
        raise RuntimeError(f"auth failed with {os.environ['TOKEN']}")
""")


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_secret_references_are_read_on_the_worker_from_its_prefect_api(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `prefect:` reference in a trial's environment or config is resolved on the worker
    that runs the trial (the Prefect API its PREFECT_API_URL names), never in the tuner:
    the value does not cross the cluster, and no worker log holds it."""
    import hashlib
    import uuid

    from prefect.blocks.system import Secret
    from prefect.settings import PREFECT_API_URL

    import flows.secret_blocks  # noqa: F401 - the tuner's resolver, which the workers import

    value = f"dask-s3cr3t-{uuid.uuid4().hex}"
    Secret(value=value).save("dask-trial-token", overwrite=True)
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))  # the workers' API
    cluster = start_cluster(tmp_path / "cluster", {"p1": 0}, nthreads=1)
    script = tmp_path / "secret.py"
    script.write_text(SECRET_SCRIPT)
    reference = {"secret": "prefect:dask-trial-token"}
    backend = make_backend(cluster.address, str(script), tmp_path / "trials",
                           env={"TOKEN": reference,
                                "EXPECTED_DIGEST": hashlib.sha256(value.encode()).hexdigest()})
    try:
        backend.start(Trial(0, {"token": reference}))
        backend.start(Trial(1, {"token": reference, "echo": True}))
        events = collect(backend, lambda ev: None not in (ended(ev, 0), ended(ev, 1)))
    finally:
        backend.close()
        cluster.stop()
    assert ended(events, 0).kind == EventKind.COMPLETED, ended(events, 0)
    report = next(e.metrics for e in events if e.kind == EventKind.RESULT)
    assert report["env_ok"] == 1.0 and report["config_ok"] == 1.0, report
    # the worker masks what the trial echoed: the tuner never knew the value to mask it
    assert value not in repr(events)
    assert {"epoch": 2, "note": "using [redacted]"} in [e.metrics for e in events]
    assert "auth failed with [redacted]" in (ended(events, 1).reason or "")
    for log in cluster.folder.glob("*.log"):
        assert value not in log.read_text(errors="replace"), log


# -- ASHA with promotions through the tune flow ----------------------------------------------------
def promotion_spec(name: str, points: list[float], tmp_path: Path, n_workers: int | str,
                   backend_options: dict[str, Any]) -> dict[str, Any]:
    """ASHA with promotions (9 epochs of 0.1 s, rungs 1, 3, 9) on the dask backend, evaluating
    `points` as the trials' x, one trial each."""
    return {
        "name": name, "metric": "loss", "mode": "min",
        "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 9,
                         "sleep": 0.1},
        "scheduler": "asha_promotion",
        "scheduler_options": {"grace_period": 1, "reduction_factor": 3, "max_t": 9,
                              "resource_attr": "epoch",
                              "points_to_evaluate": [{"x": x} for x in points]},
        "backend": "dask", "backend_options": backend_options,
        "stop": {"max_trials_started": len(points)}, "n_workers": n_workers, "seed": 0,
        "results_root": str(tmp_path / "experiments"),
    }


@pytest.mark.usefixtures("prefect_harness")
def test_asha_promotions_resume_from_checkpoints_on_any_worker(dask_cluster: Cluster,
                                                               script: Path,
                                                               tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from flows.tune import tune
    from hpo_core.store import load_experiment

    points = [0.9, 0.3, 0.6, 0.1, 0.8, 0.5, 0.7, 0.2, 0.4]
    spec = promotion_spec("dask-promotion", points, tmp_path, "auto",
                          {"address": dask_cluster.address, "entry_point": str(script),
                           "gpus_per_trial": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    outcome = tune(spec, tracking_uri=uri)

    store = Path(outcome["store_path"])
    results = load_experiment(store).results
    for tid, rows in results.groupby("trial_id"):
        reported = rows["epoch"].tolist()
        lines = log_lines(store / "trials", int(tid))
        ran = [int(e) for _, _, e, *_ in lines]
        detail = (tid, reported, lines)
        # never started over: every epoch ran once, each report is one the trial ran (a pause
        # lands between two reports; the script may finish the epoch it was in, as locally)
        assert ran == list(range(1, len(ran) + 1)), detail
        assert reported == sorted(set(reported)) and set(reported) <= set(ran), detail
    promoted = [t for t, rows in results.groupby("trial_id") if rows["epoch"].max() > 1]
    assert promoted, "no trial was promoted"
    # (which worker a promotion lands on is up to Dask: the next test forces the other one)
    # which trial wins depends on the order reports arrive in (asynchronous promotions)
    assert outcome["best_config"]["x"] in points and outcome["counts"]["failed"] == 0

    runs = task_runs(outcome["flow_run_id"])
    assert runs and all(" on worker w" in (r.state.message or "") for r in runs
                        if r.name.startswith("trial-") and r.state.is_completed())
    client = MlflowClient(uri)
    runs = client.search_runs([outcome["mlflow_experiment_id"]])
    assert len([r for r in runs if "tunesmith.trial_id" in r.data.tags]) == len(points)


def resume_on_the_other_worker(
        backend: Any, config: dict[str, Any], reports: int,
        folder: Callable[[str], Path]) -> tuple[list[TrialEvent], str, str, int]:
    """Start trial 0, pause it after `reports` reports (its processes gone from `folder(worker)`),
    fill both workers (one thread each) with trials 1 and 2, stop the one on the other worker and
    resume trial 0: it can only go there. Returns the events so far, the first and the other
    worker, and the filler still running."""
    backend.start(Trial(0, config))
    events = collect(backend, lambda ev: len(epochs(ev, 0)) >= reports
                     and backend.trial_worker(0) is not None)
    first = backend.trial_worker(0).split()[0]
    backend.pause(0)
    assert wait_gone(folder(first)) == []
    for tid in (1, 2):
        backend.start(Trial(tid, {"x": 0.5, "epochs": 400, "sleep": 0.1}))
    events += collect(backend, lambda ev: all(epochs(ev, t) and backend.trial_worker(t)
                                              for t in (1, 2)))
    on_other = next(t for t in (1, 2) if backend.trial_worker(t).split()[0] != first)
    other = backend.trial_worker(on_other).split()[0]
    backend.stop(on_other)
    backend.resume(Trial(0, config, num_results=len(epochs(events, 0))))
    return events, first, other, 3 - on_other


def test_a_paused_trial_resumes_on_another_worker_from_its_checkpoint_in_the_shared_folder(
        faults_cluster: Cluster, script: Path, tmp_path: Path) -> None:
    root = tmp_path / "trials"
    backend = make_backend(faults_cluster.address, str(script), root)
    config = {"x": 0.1, "epochs": 8, "sleep": 0.1}
    try:
        events, first, other, _ = resume_on_the_other_worker(backend, config, 2,
                                                             lambda _: root / "0")
        events += collect(backend, lambda ev: ended(ev, 0) is not None, timeout=60)
    finally:
        backend.close()
    assert ended(events, 0).kind == EventKind.COMPLETED, ended(events, 0)
    lines = log_lines(root, 0)
    ran = [int(e) for _, _, e, *_ in lines]
    workers = [w for w, *_ in lines]
    # never started over: each epoch ran once, the first ones on the first worker, the rest on
    # the other one
    assert ran == list(range(1, 9)), lines
    assert workers[0] == first and workers[-1] == other, lines
    seen = epochs(events, 0)
    assert seen == sorted(set(seen)) and seen[-1] == 8, seen
    assert wait_gone(root) == []


def task_runs(flow_run_id: Any) -> list[Any]:
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=runs)


# -- faults --------------------------------------------------------------------------------------
def running_on_both(backend: Any, events: list[TrialEvent]) -> bool:
    return all(epochs(events, t) for t in (0, 1)) and all(
        backend.trial_worker(t) for t in (0, 1))


def test_a_killed_worker_fails_its_trial_and_the_other_goes_on(faults_cluster: Cluster,
                                                               script: Path,
                                                               tmp_path: Path) -> None:
    root = tmp_path / "trials"
    backend = make_backend(faults_cluster.address, str(script), root)
    try:
        for tid in (0, 1):
            backend.start(Trial(tid, {"x": 0.1, "epochs": 40, "sleep": 0.1}))
        events = collect(backend, lambda ev: running_on_both(backend, ev))
        victim = backend.trial_worker(0).split()[0]
        assert victim != backend.trial_worker(1).split()[0]
        faults_cluster.kill_worker(victim)
        events = collect(backend, lambda ev: ended(ev, 0) is not None)
        failure = ended(events, 0)
        assert failure.kind == EventKind.FAILED
        assert f"worker {victim}" in failure.reason and "died" in failure.reason
        more = collect(backend, lambda ev: len(epochs(ev, 1)) >= 3)
        assert ended(more, 1) is None
        assert not [p for p in wait_gone(root / "0")], "trial 0 outlived its worker"
    finally:
        backend.close()
        faults_cluster.add_worker(victim, nthreads=1)
    assert wait_gone(root) == []


def test_a_requeued_trial_continues_from_its_checkpoint_on_another_worker(
        faults_cluster: Cluster, script: Path, tmp_path: Path) -> None:
    root = tmp_path / "trials"
    backend = make_backend(faults_cluster.address, str(script), root, on_worker_death="requeue")
    victim = None
    try:
        backend.start(Trial(0, {"x": 0.1, "epochs": 8, "sleep": 0.1}))
        events = collect(backend, lambda ev: len(epochs(ev, 0)) >= 2
                         and backend.trial_worker(0) is not None)
        victim = backend.trial_worker(0).split()[0]
        faults_cluster.kill_worker(victim)
        events += collect(backend, lambda ev: ended(ev, 0) is not None)
    finally:
        backend.close()
        if victim is not None:
            faults_cluster.add_worker(victim, nthreads=1)
    assert ended(events, 0).kind == EventKind.COMPLETED
    seen = epochs(events, 0)
    assert seen[-1] == 8 and seen.count(1) == 1, seen  # never started over
    workers = [w for w, *_ in log_lines(root, 0)]
    assert workers[0] == victim and workers[-1] != victim


def test_a_killed_tuner_leaves_no_trial_on_any_worker(faults_cluster: Cluster, script: Path,
                                                      tmp_path: Path) -> None:
    root = tmp_path / "trials"
    tuner = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_dask import make_backend
        from hpo_core.trial import Trial
        backend = make_backend({faults_cluster.address!r}, {str(script)!r}, __import__("pathlib").Path({str(root)!r}))
        for tid in (0, 1):
            backend.start(Trial(tid, {{"x": 0.1, "epochs": 400, "sleep": 0.1}}))
        seen = set()
        while True:
            for event in backend.poll():
                seen.add(event.trial_id)
            if seen == {{0, 1}}:
                print("running", flush=True)
                seen.add(2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", tuner], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"running\n"
        assert len(trial_processes(root)) >= 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = wait_gone(root)
        assert left == [], f"trial processes outlived the tuner: {left}"
    finally:
        proc.kill()
        proc.wait()


def test_a_silent_tuner_loses_its_lease_and_its_trials_end_on_every_worker(
        faults_cluster: Cluster, script: Path, tmp_path: Path) -> None:
    """A tuner stopped with SIGSTOP keeps its connection open (as one whose network dropped
    without a reset): the scheduler keeps its client and tasks; the workers' lease ends them."""
    from distributed import Client

    root = tmp_path / "trials"
    lease = 3.0
    tuner = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_dask import make_backend
        from hpo_core.trial import Trial
        backend = make_backend({faults_cluster.address!r}, {str(script)!r},
                               __import__("pathlib").Path({str(root)!r}), tuner_lease={lease})
        for tid in (0, 1):
            backend.start(Trial(tid, {{"x": 0.1, "epochs": 400, "sleep": 0.1}}))
        seen = set()
        while True:
            for event in backend.poll():
                seen.add(event.trial_id)
            if seen == {{0, 1}}:
                print(backend.client.id, flush=True)
                seen.add(2)
    """)
    proc = subprocess.Popen([sys.executable, "-c", tuner], stdout=subprocess.PIPE)
    try:
        client_id = proc.stdout.readline().decode().strip()
        assert client_id, "the tuner did not start its trials"
        running = trial_processes(root)
        assert {p.environ()[CONFIG_ENV] for p in running} >= {
            str(root / "0" / "config.json"), str(root / "1" / "config.json")}
        os.kill(proc.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        left = wait_gone(root, timeout=lease + 15)
        took = time.monotonic() - stopped
        assert left == [], f"trial processes outlived the silent tuner's lease: {left}"
        assert took >= lease - 0.5, f"ended after {took:.1f} s, before the lease expired"
        with Client(faults_cluster.address, set_as_default=False) as client:
            clients = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.clients))
        assert client_id in clients, "the scheduler dropped the tuner: not a silent drop"
    finally:
        proc.kill()  # SIGKILL ends a stopped process too
        proc.wait()
    assert wait_gone(root) == []


def test_a_frozen_worker_does_not_cost_the_other_workers_their_lease(
        faults_cluster: Cluster, script: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Lease renewals go to each worker on its own: one whose replies never come (SIGSTOP)
    holds up no other worker's, whose trials of a live tuner run on past the lease; closing
    does not wait for it for ever (its trial ends with the lease once it thaws)."""
    from backends import dask as dask_backend

    monkeypatch.setattr(dask_backend, "WORKER_CALL_TIMEOUT", 2.0)
    root = tmp_path / "trials"
    lease = 2.0
    backend = make_backend(faults_cluster.address, str(script), root, tuner_lease=lease)
    frozen = None
    try:
        for tid in (0, 1):
            backend.start(Trial(tid, {"x": 0.1, "epochs": 400, "sleep": 0.1}))
        events = collect(backend, lambda ev: running_on_both(backend, ev))
        frozen = faults_cluster.workers[backend.trial_worker(1).split()[0]]
        frozen.send_signal(signal.SIGSTOP)
        until = time.monotonic() + 3 * lease
        events = collect(backend, lambda _: time.monotonic() > until, timeout=6 * lease)
        late = [e for e in events if e.trial_id == 0 and e.kind == EventKind.RESULT
                and e.time > backend.now() - lease]
        assert ended(events, 0) is None and late, "trial 0 lost its lease on a healthy worker"
        closing = time.monotonic()
        backend.close()
        assert time.monotonic() - closing < 15, "close waited for the frozen worker"
        assert wait_gone(root / "0") == []
    finally:
        if frozen is not None:
            frozen.send_signal(signal.SIGCONT)
        backend.close()
    assert wait_gone(root) == []


def test_a_resumed_experiment_ends_what_its_earlier_session_still_runs(
        faults_cluster: Cluster, script: Path, tmp_path: Path) -> None:
    root = tmp_path / "trials"
    first = make_backend(faults_cluster.address, str(script), root)
    second = None
    try:
        first.start(Trial(0, {"x": 0.1, "epochs": 400, "sleep": 0.1}))
        collect(first, lambda ev: len(epochs(ev, 0)) >= 1)
        # the first session is cut off (as a tuner whose network went away); a new one opens
        second = make_backend(faults_cluster.address, str(script), root)
        assert wait_gone(root) == []
    finally:
        for backend in (first, second):
            if backend is not None:
                backend.close()


def test_two_experiments_sharing_a_trial_root_leave_each_other_alone(
        faults_cluster: Cluster, script: Path, tmp_path: Path) -> None:
    """The layout cluster.md suggests (a fixed `trial_root`) for two experiments at once: the
    second neither ends the first one's trials (as an earlier session of itself) nor writes
    into its trial folders, and each one's end leaves the other running (before: both trials
    failed 'closed')."""
    shared = str(tmp_path / "scratch" / "trials")
    first = make_backend(faults_cluster.address, str(script), tmp_path / "a" / "trials",
                         trial_root=shared)
    second = None
    try:
        first.start(Trial(0, {"x": 0.1, "epochs": 8, "sleep": 0.1}))
        events = collect(first, lambda ev: len(epochs(ev, 0)) >= 1)
        second = make_backend(faults_cluster.address, str(script), tmp_path / "b" / "trials",
                              trial_root=shared)
        second.start(Trial(0, {"x": 0.2, "epochs": 3, "sleep": 0.1}))
        other = collect(second, lambda ev: ended(ev, 0) is not None)
        second.close()
        second = None
        events += collect(first, lambda ev: ended(ev, 0) is not None)
    finally:
        for backend in (first, second):
            if backend is not None:
                backend.close()
    assert ended(events, 0).kind == EventKind.COMPLETED and epochs(events, 0) == list(
        range(1, 9))
    assert ended(other, 0).kind == EventKind.COMPLETED and epochs(other, 0) == [1, 2, 3]
    # each experiment's trials in a folder of its own under the shared root
    assert (tmp_path / "scratch" / "trials" / "a" / "0" / "config.json").is_file()
    assert (tmp_path / "scratch" / "trials" / "b" / "0" / "config.json").is_file()


def test_losing_the_scheduler_fails_the_experiment_with_a_clear_message(
        tmp_path: Path, script: Path) -> None:
    from backends.dask import ClusterLostError

    cluster = start_cluster(tmp_path / "cluster", {"l1": 0}, nthreads=1)
    root = tmp_path / "trials"
    try:
        backend = make_backend(cluster.address, str(script), root)
        backend.start(Trial(0, {"x": 0.1, "epochs": 400, "sleep": 0.1}))
        collect(backend, lambda ev: len(epochs(ev, 0)) >= 1)
        cluster.scheduler.kill()
        cluster.scheduler.wait()
        with pytest.raises(ClusterLostError, match="lost the Dask scheduler at tcp://127.0.0.1:"
                                                   r"\d+ .*resume the experiment") as lost:
            collect(backend, lambda _: False, timeout=60)
        # the CLI's one line (it was a traceback, exit 1), naming the experiment to resume
        from flows.failures import user_error

        assert f"(tunesmith resume {tmp_path.name}) once" in (user_error(lost.value) or "")
        backend.close()
        assert wait_gone(root) == [], "trials outlived the lost scheduler"
    finally:
        cluster.stop()


def test_an_experiment_cut_off_from_its_scheduler_resumes_on_a_new_cluster(
        tmp_path: Path, script: Path) -> None:
    import threading

    from backends.dask import ClusterLostError
    from flows.experiment import build_tuner
    from hpo_core.spec import ExperimentSpec
    from hpo_core.store import load_experiment

    def spec(address: str) -> ExperimentSpec:
        return ExperimentSpec.from_dict({
            "name": "cut-off", "metric": "loss", "scheduler": "random",
            "config_space": {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 30,
                             "sleep": 0.1},
            "backend": "dask", "backend_options": {"address": address, "entry_point": str(script)},
            "stop": {"max_trials_started": 2}, "n_workers": 2, "seed": 0,
            "results_root": str(tmp_path / "experiments")})

    first = start_cluster(tmp_path / "first", {"a1": 0, "a2": 0}, nthreads=1)
    try:
        tuner = build_tuner(spec(first.address))
        errors: list[BaseException] = []

        def run() -> None:
            try:
                tuner.run()
            except BaseException as err:  # noqa: BLE001 - checked below
                errors.append(err)

        thread = threading.Thread(target=run)
        thread.start()
        root = tuner.store.path / "trials"
        deadline = time.monotonic() + 30
        while min((len(log_lines(root, t)) for t in (0, 1)), default=0) < 3:
            assert time.monotonic() < deadline and thread.is_alive(), errors
            time.sleep(0.1)
        first.scheduler.kill()
        first.scheduler.wait()
        thread.join(timeout=30)
        assert len(errors) == 1 and isinstance(errors[0], ClusterLostError), errors
        tuner.backend.close()
    finally:
        first.stop()
    assert wait_gone(root) == []
    second = start_cluster(tmp_path / "second", {"b1": 0, "b2": 0}, nthreads=1)
    try:
        tuner = build_tuner(spec(second.address))
        tuner.run()
        tuner.backend.close()
    finally:
        second.stop()
    results = load_experiment(tuner.store.path).results
    for tid in (0, 1):
        ran = [int(e) for _, _, e, *_ in log_lines(root, tid)]
        # continued from its checkpoint: no epoch twice (the one it was killed in may have saved
        # its checkpoint but not its log line)
        assert ran == sorted(set(ran)) and ran[0] == 1 and ran[-1] == 30, ran
        assert results[results["trial_id"] == tid]["epoch"].max() == 30


# -- checkpoints at an s3:// URL (a real moto server), workers sharing no trial folder -----------
BUCKET = "tunesmith-checkpoints"
S3_SECRET = "moto-secret-value-5f1c"  # the workers' secret key, by reference: never logged


@pytest.fixture(scope="module")
def s3_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str]]:
    """A moto S3 server with a bucket, and two single-thread workers whose environment holds
    the secret key the spec references."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key=S3_SECRET).create_bucket(Bucket=BUCKET)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TUNESMITH_TEST_S3_SECRET", S3_SECRET)  # in the workers' environment
            patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
            cluster = start_cluster(Path(tmp_path_factory.mktemp("dask-s3")),
                                    {"s1": 0, "s2": 0}, nthreads=1)
        yield cluster, url
        cluster.stop()
    finally:
        server.stop()


def s3_options(url: str) -> dict[str, Any]:
    return {"endpoint_url": url, "key": "testing",
            "secret": {"secret": "env:TUNESMITH_TEST_S3_SECRET"}}


def test_a_paused_trial_resumes_on_another_worker_from_its_checkpoint_at_an_s3_url(
        s3_cluster: tuple[Cluster, str], script: Path, tmp_path: Path) -> None:
    import boto3

    cluster, url = s3_cluster
    # each worker keeps its trial folders apart: a checkpoint reaches the other one only via S3
    roots = {name: tmp_path / name / "trials" / "exp" for name in ("s1", "s2")}
    backend = make_backend(cluster.address, str(script), tmp_path / "exp" / "trials",
                           trial_root=str(tmp_path / "{worker}" / "trials"),
                           checkpoint_url=f"s3://{BUCKET}/runs/", checkpoint_options=s3_options(url))
    config = {"x": 0.1, "epochs": 12, "sleep": 0.15}
    try:
        events, first, other, filler = resume_on_the_other_worker(
            backend, config, 3, lambda worker: roots[worker] / "0")
        events += collect(backend, lambda ev: ended(ev, 0) is not None, timeout=60)
        assert ended(events, 0).kind == EventKind.COMPLETED, ended(events, 0)
        assert backend.trial_worker(0).split()[0] == other
        # seeded from trial 0's checkpoint at the URL (PBT): continues at its epoch 13
        backend.stop(filler)
        backend.start(Trial(3, {**config, "epochs": 14}, checkpoint_from=0))
        events += collect(backend, lambda ev: ended(ev, 3) is not None, timeout=60)
    finally:
        backend.close()
    assert wait_gone(tmp_path) == []
    before = [int(e) for _, _, e, *_ in log_lines(roots[first], 0)]
    after = [int(e) for _, _, e, *_ in log_lines(roots[other], 0)]
    assert before[:3] == [1, 2, 3] and before == list(range(1, len(before) + 1)), before
    # the resume started from the last checkpoint uploaded before a report (the paused run may
    # have saved one more, which stayed on its worker), never from scratch
    assert after and 4 <= after[0] <= before[-1] + 1, (before, after)
    assert after == list(range(after[0], 13)), after
    seen = epochs(events, 0)
    assert seen == sorted(set(seen)) and seen[-1] == 12, seen
    assert epochs(events, 3) == [13, 14] and ended(events, 3).kind == EventKind.COMPLETED
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key=S3_SECRET)
    latest = s3.get_object(Bucket=BUCKET, Key="runs/exp/0/latest")["Body"].read().decode()
    body = s3.get_object(Bucket=BUCKET, Key=f"runs/exp/0/{latest}/checkpoint.json")["Body"]
    assert json.loads(body.read()) == {"epoch": 12}
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/exp/0/")["Contents"]
    assert len({o["Key"].split("/")[3] for o in listed} - {"latest"}) <= 2  # old ones removed
    for path in [*cluster.folder.glob("*.log"), *tmp_path.rglob("*")]:
        if path.is_file():
            assert S3_SECRET not in path.read_text(errors="replace"), f"secret in {path}"


@pytest.mark.usefixtures("prefect_harness")
def test_asha_through_the_flow_resumes_trials_from_s3_on_workers_sharing_no_folder(
        s3_cluster: tuple[Cluster, str], script: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec with `checkpoint_url` through the tune flow: every promoted trial continues from
    its checkpoint at the URL (each segment's worker replaces its local copy by a download)."""
    from flows.tune import tune
    from hpo_core.store import load_experiment

    cluster, url = s3_cluster
    monkeypatch.setenv("TUNESMITH_TEST_S3_SECRET", S3_SECRET)  # the spec check looks here too
    points = [0.9, 0.3, 0.6, 0.1, 0.8, 0.5]
    spec = promotion_spec("dask-s3-promotion", points, tmp_path, 2,
                          {"address": cluster.address, "entry_point": str(script),
                           "trial_root": str(tmp_path / "{worker}" / "trials"),
                           "checkpoint_url": f"s3://{BUCKET}/flow",
                           "checkpoint_options": s3_options(url)})
    outcome = tune(spec, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert outcome["counts"]["failed"] == 0, outcome["counts"]
    results = load_experiment(Path(outcome["store_path"])).results
    for tid, rows in results.groupby("trial_id"):
        # the log lines of each worker's own folder, in the order they were written
        lines = sorted((line for name in ("s1", "s2")  # each experiment has its folder there
                        for line in log_lines(tmp_path / name / "trials" / spec["name"],
                                              int(tid))),
                       key=lambda line: float(line[3]))
        ran = [int(e) for _, _, e, *_ in lines]
        # never started over: a resumed segment continues from the checkpoint of a report
        # (uploaded before the report went on); epochs the paused run went on with after the
        # tuner's decision (its checkpoints stayed on its worker) run again
        assert ran[0] == 1 and all(b > a or b >= 2 for a, b in zip(ran, ran[1:], strict=False)), \
            f"trial {tid}: epochs {ran} on {[w for w, *_ in lines]}"
        # the tuner saw each epoch once, in order
        assert rows["epoch"].tolist() == sorted(set(rows["epoch"])), rows["epoch"].tolist()
    # (which worker a promotion lands on is up to Dask: the test above forces the other one)
    assert results.groupby("trial_id")["epoch"].max().max() > 1, "no trial was promoted"
    assert wait_gone(tmp_path) == []


def test_a_checkpoint_url_the_workers_cannot_write_is_one_error(
        s3_cluster: tuple[Cluster, str], script: Path) -> None:
    from backends.dask import DaskBackend

    cluster, url = s3_cluster
    with pytest.raises(ValueError, match=r"^backend_options.checkpoint_url: worker tcp://\S+ "
                                         r"cannot use s3://no-such-bucket/x \(could not write"):
        DaskBackend(str(script), address=cluster.address, checkpoint_url="s3://no-such-bucket/x",
                    checkpoint_options=s3_options(url))
    with pytest.raises(ValueError, match=r"^backend_options.checkpoint_url: expected a URL"):
        DaskBackend(str(script), address=cluster.address, checkpoint_url="bucket/prefix")
