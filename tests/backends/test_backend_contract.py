"""The backend contract: every TrialBackend passes these checks.

Each backend runs the same program (a script; for function trials, a Python function), driven by the config `{"lr": float, "epochs": int}`: it
reports `epoch` = 1..epochs with `loss = loss_of(config, epoch)` (the curve of
`sagemaker_fake`), saving a checkpoint each epoch, then completes. A config with lr > 1
diverges: it fails at epoch 2. The simulated backend replays a table of that program's curves
without the diverging config (and `surrogate=None`), so such a trial fails there at once.

To check a new backend, add a harness for it to `make` (and its name to `BACKENDS`). The file is
not named test_contract.py: pytest would clash with tests/hpo_core/schedulers/test_contract.py
(the test folders are not packages).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pytest
from sagemaker_fake import FakeSageMaker, client, fresh_account, loss_of, serve_moto

from backends.blackbox import blackbox_from_dataframe
from backends.functions import FunctionBackend
from backends.local import LocalBackend
from backends.sagemaker import FINAL_STATUSES, SageMakerBackend
from backends.simulated import SimulatedBackend
from hpo_core.backend import ClockKind, Fidelity, TrialBackend
from hpo_core.space import ConfigSpace
from hpo_core.trial import EventKind, Trial, TrialEvent

BACKENDS = ["simulated", "local", "function", "sagemaker", "dask", "dask-function"]
LRS = (0.001, 0.01, 0.1)
EPOCHS = (3, 4)
DIVERGING_LR = 10.0
TIMEOUT = 20.0  # seconds a `collect` may take before the test fails
BUCKET = "tunesmith-contract-bucket"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3-cpu-py311"

# The program as a local training script (the same curve as `loss_of`).
PROGRAM = """\
import math, sys, time
from hpo_core.report import get_config, load_checkpoint, report, save_checkpoint
config = get_config()
done = (load_checkpoint() or {"epoch": 0})["epoch"]
for epoch in range(done + 1, config["epochs"] + 1):
    time.sleep(0.1)
    if config["lr"] > 1 and epoch == 2:
        sys.exit("diverged: the loss is nan")
    save_checkpoint({"epoch": epoch})
    report(epoch=epoch, loss=round((math.log10(config["lr"]) + 2.0) ** 2 + 1.0 / epoch, 6))
"""

# The program as a Python function, run in the function backend's workers.
FUNCTION = """\
import math, time
from hpo_core.report import load_checkpoint, report, save_checkpoint


def program(config):
    done = (load_checkpoint() or {"epoch": 0})["epoch"]
    for epoch in range(done + 1, config["epochs"] + 1):
        time.sleep(0.1)
        if config["lr"] > 1 and epoch == 2:
            raise FloatingPointError("diverged: the loss is nan")
        save_checkpoint({"epoch": epoch})
        report(epoch=epoch, loss=round((math.log10(config["lr"]) + 2.0) ** 2 + 1.0 / epoch, 6))
"""


class ProgramSageMaker(FakeSageMaker):
    """FakeSageMaker whose jobs of a config with lr > 1 fail at epoch 2."""

    def create_training_job(self, **params: Any) -> Any:
        response = super().create_training_job(**params)
        job = self.jobs[params["TrainingJobName"]]
        if job.config["lr"] > 1:
            self.fail[job.trial_id] = (2, "AlgorithmError: diverged: the loss is nan")
        return response


@dataclass
class Harness:
    """A backend under test, and what still runs of its trials (empty once it is closed)."""

    backend: TrialBackend
    leftovers: Callable[[], list[str]]


def config(lr: float = 0.01, epochs: int = 3) -> dict[str, Any]:
    return {"lr": lr, "epochs": epochs}


def simulated_harness() -> Harness:
    rows = [{"lr": lr, "epochs": n, "epoch": e, "loss": loss_of({"lr": lr}, e),
             "elapsed": e * (1.0 + lr)}
            for lr in LRS for n in EPOCHS for e in range(1, n + 1)]
    blackbox = blackbox_from_dataframe(pd.DataFrame(rows), ["lr", "epochs"], "epoch", ["loss"],
                                       "elapsed")
    backend = SimulatedBackend(blackbox, surrogate=None)
    return Harness(backend, lambda: [f"still scheduled: {e}" for e in backend.poll()])


def local_harness(tmp_path: Path, poll_interval: float) -> Harness:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    backend = LocalBackend(str(script), gpus=None, poll_interval=poll_interval,
                           stop_grace_period=2.0)
    backend.set_trial_root(tmp_path / "trials")

    def leftovers() -> list[str]:
        left = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if str(script) in proc.cmdline():
                    left.append(f"pid {proc.pid} ({proc.status()})")
            except psutil.NoSuchProcess:
                pass
        return left

    return Harness(backend, leftovers)


def function_harness(tmp_path: Path, poll_interval: float) -> Harness:
    module = tmp_path / "program_fn.py"
    module.write_text(FUNCTION)
    backend = FunctionBackend(f"{module}:program", gpus=None, poll_interval=poll_interval)
    backend.set_trial_root(tmp_path / "trials")

    def leftovers() -> list[str]:
        left = []
        for proc in psutil.Process().children(recursive=True):
            try:
                if "backends.function_worker" in proc.cmdline():
                    left.append(f"pid {proc.pid} ({proc.status()})")
            except psutil.NoSuchProcess:
                pass
        return left

    return Harness(backend, leftovers)


def sagemaker_harness(url: str, tmp_path: Path, poll_interval: float) -> Harness:
    fresh_account(url, BUCKET)
    fake = ProgramSageMaker(url)
    clients = {"sagemaker": fake, "s3": client("s3", url), "logs": client("logs", url),
               "sts": client("sts", url), "iam": client("iam", url)}
    backend = SageMakerBackend(role="TunesmithSageMakerRole", bucket=BUCKET, image_uri=IMAGE,
                               clients=clients, experiment="contract",
                               poll_interval=poll_interval, retry_base_delay=0.001,
                               close_timeout=10.0)
    backend.set_trial_root(tmp_path / "trials")
    return Harness(backend, lambda: [f"{job.name} is {job.status}" for job in fake.jobs.values()
                                     if job.status not in FINAL_STATUSES])


def dask_harness(cluster: Any, tmp_path: Path, poll_interval: float, function: bool) -> Harness:
    from backends.dask import DaskBackend

    if function:
        module = tmp_path / "program_fn.py"
        module.write_text(FUNCTION)
        entry_point, marker = f"{module}:program", "backends.function_worker"
    else:
        script = tmp_path / "program.py"
        script.write_text(PROGRAM)
        entry_point = marker = str(script)
    backend = DaskBackend(entry_point, address=cluster.address, poll_interval=poll_interval,
                          stop_grace_period=2.0)
    backend.set_trial_root(tmp_path / "trials")

    def leftovers() -> list[str]:  # trial processes under the cluster's worker processes
        left = []
        for worker in cluster.workers.values():
            try:
                children = psutil.Process(worker.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for proc in children:
                try:
                    if marker in proc.cmdline():
                        left.append(f"pid {proc.pid} ({proc.status()})")
                except psutil.NoSuchProcess:
                    pass
        return left

    return Harness(backend, leftovers)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    yield from serve_moto()


@pytest.fixture(params=BACKENDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Builds the backend named by the parameter (once per test); closes it afterwards."""
    made: list[Harness] = []

    def factory(poll_interval: float = 0.005) -> Harness:
        assert not made, "one backend per test (the SageMaker one resets the moto account)"
        if request.param == "simulated":
            harness = simulated_harness()
        elif request.param == "local":
            harness = local_harness(tmp_path, poll_interval)
        elif request.param == "function":
            harness = function_harness(tmp_path, poll_interval)
        elif request.param.startswith("dask"):
            harness = dask_harness(request.getfixturevalue("dask_cluster"), tmp_path,
                                   poll_interval, request.param == "dask-function")
        else:
            harness = sagemaker_harness(request.getfixturevalue("moto_url"), tmp_path,
                                        poll_interval)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        harness.backend.close()


# -- helpers ---------------------------------------------------------------------------------------
def collect(backend: TrialBackend, until: Callable[[list[TrialEvent]], bool],
            timeout: float = TIMEOUT) -> list[TrialEvent]:
    """Poll until `until(events)` holds; checks that `now()` never decreases and that no event
    is stamped after it. All events seen."""
    events: list[TrialEvent] = []
    deadline = time.monotonic() + timeout
    last_now = backend.now()
    while not until(events):
        assert time.monotonic() < deadline, f"timed out; events so far: {events}"
        batch = backend.poll()
        now = backend.now()
        assert now >= last_now, f"now() went back from {last_now} to {now}"
        assert all(e.time <= now for e in batch), f"events after now()={now}: {batch}"
        last_now = now
        events += batch
    return events


def settle(backend: TrialBackend, seconds: float = 0.3) -> list[TrialEvent]:
    """What the backend reports over the next `seconds` of polling."""
    end = time.monotonic() + seconds
    return collect(backend, lambda _: time.monotonic() >= end)


def sequence(events: list[TrialEvent], trial_id: int) -> list[int | str]:
    """A trial's events in order: the epoch of each report, the kind of the others."""
    return [e.metrics["epoch"] if e.kind == EventKind.RESULT and e.metrics else e.kind.value
            for e in events if e.trial_id == trial_id]


def ended(*trial_ids: int) -> Callable[[list[TrialEvent]], bool]:
    final = (EventKind.COMPLETED, EventKind.FAILED)
    return lambda events: {e.trial_id for e in events if e.kind in final} >= set(trial_ids)


def reported(trial_id: int, epoch: int) -> Callable[[list[TrialEvent]], bool]:
    return lambda events: epoch in sequence(events, trial_id)


def check_losses(events: list[TrialEvent], trial: Trial) -> None:
    for e in events:
        if e.trial_id == trial.trial_id and e.kind == EventKind.RESULT:
            expected = loss_of(trial.config, e.metrics["epoch"])
            assert e.metrics["loss"] == pytest.approx(expected, rel=1e-6), e


# -- the contract ----------------------------------------------------------------------------------
def test_a_trial_reports_each_epoch_in_order_then_completes_once(make):
    backend = make().backend
    trial = Trial(0, config(0.01, 3))
    backend.start(trial)
    events = collect(backend, ended(0))
    events += settle(backend)
    assert sequence(events, 0) == [1, 2, 3, "completed"]
    check_losses(events, trial)
    times = [e.time for e in events]
    assert times == sorted(times), times
    assert 0 <= times[0] and times[-1] <= backend.now()


def test_trials_at_once_each_get_their_own_sequence(make):
    backend = make().backend
    trials = [Trial(0, config(0.001, 3)), Trial(1, config(0.01, 4)), Trial(2, config(0.1, 3))]
    for trial in trials:
        backend.start(trial)
    events = collect(backend, ended(0, 1, 2))
    events += settle(backend)
    for trial in trials:
        assert sequence(events, trial.trial_id) == \
            [*range(1, trial.config["epochs"] + 1), "completed"], trial
        check_losses(events, trial)


def test_a_stopped_trial_reports_nothing_more_and_others_go_on(make):
    backend = make().backend
    backend.start(Trial(0, config(0.001, 4)))  # the faster one, where time is simulated
    backend.start(Trial(1, config(0.1, 4)))
    before = collect(backend, reported(0, 1))
    backend.stop(0)
    after = collect(backend, ended(1))
    after += settle(backend)
    assert sequence(after, 0) == [], "events of trial 0 after stop()"
    assert sequence(before + after, 1) == [1, 2, 3, 4, "completed"]


def test_pause_then_resume_continues_from_the_checkpoint(make):
    backend = make().backend
    trial = Trial(0, config(0.01, 4))
    backend.start(trial)
    before = collect(backend, reported(0, 2))
    results = [e for e in before if e.kind == EventKind.RESULT]
    trial.last_result, trial.num_results = results[-1].metrics, len(results)  # as the tuner does
    backend.pause(0)
    assert sequence(settle(backend), 0) == [], "events of trial 0 while paused"
    backend.resume(trial)
    after = collect(backend, ended(0))
    after += settle(backend)
    assert sequence(before, 0) == [1, 2]
    # it continues from its last checkpoint: epoch 3 where the pause came before the script
    # saved epoch 3 (always in simulation), later where a busy machine let it save more first
    *epochs, last = sequence(after, 0)
    assert last == "completed" and epochs == list(range(epochs[0] if epochs else 5, 5))
    assert all(epoch >= 3 for epoch in epochs), "the resumed trial started over"
    if backend.clock_kind is ClockKind.SIMULATED:
        assert epochs == [3, 4]
    check_losses(after, trial)


def test_a_failing_trial_fails_once_with_a_reason(make):
    backend = make().backend
    backend.start(Trial(0, config(DIVERGING_LR, 3)))
    events = collect(backend, ended(0))
    events += settle(backend)
    mine = [e for e in events if e.trial_id == 0]
    assert sequence(events, 0) in ([1, "failed"], ["failed"])  # simulated: fails at once
    assert mine[-1].reason and mine[-1].reason.strip(), mine[-1]


def test_state_dict_is_json_before_during_and_after_trials(make):
    backend = make().backend
    states = [backend.state_dict()]
    backend.start(Trial(0, config(0.01, 3)))
    backend.start(Trial(1, config(0.1, 4)))
    collect(backend, reported(0, 1))
    states.append(backend.state_dict())
    backend.pause(1)
    collect(backend, ended(0))
    states.append(backend.state_dict())
    for state in states:
        assert isinstance(state, dict)
        assert json.loads(json.dumps(state, allow_nan=False)) == state


def test_close_ends_running_trials(make):
    harness = make()
    backend = harness.backend
    backend.start(Trial(0, config(0.01, 4)))
    backend.start(Trial(1, config(0.1, 4)))
    collect(backend, reported(0, 1))
    assert harness.leftovers(), "nothing running before close(): the check below proves nothing"
    started = time.monotonic()
    backend.close()
    assert time.monotonic() - started < 10.0
    assert harness.leftovers() == []


def test_wake_ends_a_waiting_poll_early(make):
    backend = make(poll_interval=5.0).backend
    backend.wake()
    backend.poll()  # starts the poll interval (and takes the wake-up)
    timer = threading.Timer(0.2, backend.wake)
    timer.start()
    started = time.monotonic()
    assert backend.poll() == []
    elapsed = time.monotonic() - started
    timer.join()
    if backend.clock_kind is ClockKind.SIMULATED:
        assert elapsed < 0.1  # it never waits
    else:
        assert 0.15 <= elapsed < 2.5, elapsed  # waited for the wake-up, not the poll interval


def test_capabilities_are_declared_and_typed(make):
    """What a backend offers beyond the calls is declared on it (`hpo_core.backend`), typed,
    with a default: nothing is probed. A distributed backend names the worker of a trial once
    it runs there; the others name none."""
    backend = make().backend
    assert isinstance(backend.clock_kind, ClockKind)
    assert isinstance(backend.restores_running_trials, bool)
    assert isinstance(backend.distributed, bool)
    default, most = backend.default_n_workers(), backend.max_n_workers()
    assert isinstance(default, int) and isinstance(most, int) and 1 <= default <= most
    space, fidelity = backend.config_space(), backend.fidelity()
    assert space is None or isinstance(space, ConfigSpace)
    assert fidelity is None or (isinstance(fidelity, Fidelity)
                                and list(fidelity.values) == sorted(fidelity.values))
    if backend.context is not None:  # the trial-folder layout is the context's
        assert backend.checkpoint_dir(3) == backend.context.root / "3" / "checkpoint"
    assert backend.trial_worker(0) is None
    backend.start(Trial(0, config()))
    collect(backend, lambda events: any(e.trial_id == 0 for e in events))
    where = backend.trial_worker(0)
    assert (isinstance(where, str) and where) if backend.distributed else where is None
