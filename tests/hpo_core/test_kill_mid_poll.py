"""A kill whose signal handler runs after a backend took a report off its queue, before that
report was journaled (the Dask backend: `poll()` between `SimpleQueue.get` and `_on_message`):
the report must still be in the store after the resume. Likewise a kill while a trial
launches (the backend must record it, else drain() and close() miss it) and a second kill
while the first one's shutdown journals the trials' last reports (`hpo_core.interrupts`)."""

from __future__ import annotations

import collections
import os
import queue
import signal
import threading
import time

import pytest

from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import EventKind, Trial, TrialEvent
from hpo_core.tuner import Tuner

SPACE = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}}
EPOCHS = 4


class Terminated(BaseException):
    """What the CLI's SIGTERM handler raises."""


class QueuedReports(TrialBackend):
    """Trials that checkpoint each epoch, then report it; the reports wait in a queue that
    `poll()` takes them from one by one (as the Dask and local backends do). `checkpoints`
    outlives the tuner (the trials' folders): a resumed trial goes on after its last saved
    epoch. `drain()` hands over what is still queued, like a real backend's."""

    clock_kind = ClockKind.WALL

    def __init__(self, checkpoints: dict[int, int], sigterm_at_report: int | None = None):
        self.checkpoints = checkpoints
        self.sigterm_at_report = sigterm_at_report
        self.queue: collections.deque[TrialEvent] = collections.deque()
        self.running: dict[int, dict] = {}
        self.t = 0.0
        self.taken = 0

    def start(self, trial: Trial) -> None:
        self.running[trial.trial_id] = trial.config

    resume = start

    def stop(self, trial_id: int) -> None:
        self.running.pop(trial_id, None)

    pause = stop

    def _train(self) -> None:
        for tid, config in list(self.running.items()):
            epoch = self.checkpoints.get(tid, 0) + 1
            self.checkpoints[tid] = epoch  # saved, then reported
            self.t += 1.0
            loss = (config["x"] - 0.3) ** 2 + 1.0 / epoch
            self.queue.append(TrialEvent(EventKind.RESULT, tid, self.t,
                                         {"epoch": epoch, "loss": loss}))
            if epoch >= EPOCHS:
                del self.running[tid]
                self.queue.append(TrialEvent(EventKind.COMPLETED, tid, self.t))

    def poll(self) -> list[TrialEvent]:
        if not self.queue:
            self._train()
        events = []
        while self.queue:
            event = self.queue.popleft()  # taken: no longer queued, not returned yet
            if event.kind == EventKind.RESULT:
                self.taken += 1
                if self.taken == self.sigterm_at_report:
                    os.kill(os.getpid(), signal.SIGTERM)  # the kill lands here
            events.append(event)
        return events

    def drain(self) -> list[TrialEvent]:
        events = list(self.queue)
        self.queue.clear()
        return events

    def now(self) -> float:
        return self.t

    def close(self) -> None:
        pass


@pytest.fixture
def sigterm_raises():
    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("sigterm_raises")
@pytest.mark.parametrize("at_report", [1, 5, 9, 14])
def test_a_report_taken_by_the_poll_a_kill_cuts_short_is_not_lost(tmp_path, at_report):
    checkpoints: dict[int, int] = {}
    criterion = StoppingCriterion(max_trials_started=6)

    def tuner(backend: QueuedReports) -> Tuner:
        return Tuner(build_scheduler("random", SPACE, "loss", "min", 0), backend, criterion,
                     n_workers=3, store=ExperimentStore(tmp_path, "killed"),
                     checkpoint_interval=1e9)

    with pytest.raises(Terminated):
        tuner(QueuedReports(checkpoints, sigterm_at_report=at_report)).run()
    tuner(QueuedReports(checkpoints)).run()
    frame = load_experiment(tmp_path / "killed").results
    for tid, rows in frame.groupby("trial_id"):
        # every epoch a trial checkpointed was reported once: none missing after the resume
        assert sorted(rows["epoch"]) == list(range(1, EPOCHS + 1)), (tid, list(rows["epoch"]))


class WaitingPoll(QueuedReports):
    """A poll that waits long for its next events (as SageMaker's paced polls do), unless
    `wake()` ends the wait."""

    def __init__(self, checkpoints: dict[int, int]):
        super().__init__(checkpoints)
        self.woken: queue.SimpleQueue[None] = queue.SimpleQueue()

    def poll(self) -> list[TrialEvent]:
        if self.taken >= 2:  # two reports in: from now on the poll waits
            try:
                self.woken.get(timeout=60)
            except queue.Empty:
                pass
            return []
        events = super().poll()
        self.taken += len(events)
        return events

    def wake(self) -> None:
        self.woken.put(None)


@pytest.mark.usefixtures("sigterm_raises")
def test_a_kill_wakes_the_poll_it_is_held_in(tmp_path):
    store = ExperimentStore(tmp_path, "woken")
    tuner = Tuner(build_scheduler("random", SPACE, "loss", "min", 0), WaitingPoll({}),
                  StoppingCriterion(max_trials_started=6), n_workers=2, store=store)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
    started = time.monotonic()
    with pytest.raises(Terminated):
        tuner.run()
    assert time.monotonic() - started < 10  # not the poll's 60 s


class KilledAtLaunch(QueuedReports):
    """A kill that lands while `start()` launched a trial and has not recorded it yet."""

    def __init__(self, checkpoints: dict[int, int], sigterm_at_start: int):
        super().__init__(checkpoints)
        self.sigterm_at_start = sigterm_at_start
        self.ended: set[int] = set()

    def start(self, trial: Trial) -> None:
        if trial.trial_id == self.sigterm_at_start:
            os.kill(os.getpid(), signal.SIGTERM)  # launched; recorded next
        super().start(trial)

    resume = start

    def drain(self) -> list[TrialEvent]:
        self.ended = set(self.running)  # what the drain knows to end
        return super().drain()


@pytest.mark.usefixtures("sigterm_raises")
def test_a_kill_while_a_trial_launches_waits_until_the_backend_recorded_it(tmp_path):
    backend = KilledAtLaunch({}, sigterm_at_start=4)
    tuner = Tuner(build_scheduler("random", SPACE, "loss", "min", 0), backend,
                  StoppingCriterion(max_trials_started=8), n_workers=3,
                  store=ExperimentStore(tmp_path, "launch"))
    with pytest.raises(Terminated):
        tuner.run()
    assert 4 in backend.ended  # else it would run on, unknown to drain() and close()


class KilledTwice(QueuedReports):
    """A second kill (Ctrl-C twice) while `drain()` hands over the trials' last reports."""

    def drain(self) -> list[TrialEvent]:
        self._train()  # the trials report once more as they are ended
        os.kill(os.getpid(), signal.SIGTERM)
        return super().drain()


@pytest.mark.usefixtures("sigterm_raises")
def test_a_second_kill_waits_until_the_last_reports_are_journaled(tmp_path):
    checkpoints: dict[int, int] = {}

    def tuner(backend: QueuedReports) -> Tuner:
        return Tuner(build_scheduler("random", SPACE, "loss", "min", 0), backend,
                     StoppingCriterion(max_trials_started=6), n_workers=3,
                     store=ExperimentStore(tmp_path, "twice"), checkpoint_interval=1e9)

    with pytest.raises(Terminated):
        tuner(KilledTwice(checkpoints, sigterm_at_report=2)).run()
    tuner(QueuedReports(checkpoints)).run()
    frame = load_experiment(tmp_path / "twice").results
    for tid, rows in frame.groupby("trial_id"):
        assert sorted(rows["epoch"]) == list(range(1, EPOCHS + 1)), (tid, list(rows["epoch"]))


def test_every_report_of_a_poll_an_error_cut_short_stays_in_the_views(tmp_path):
    """An error while the tuner handles the second of a poll's reports: both were journaled,
    and the views show both (before: the first one's decision read as the whole batch's, and
    hid the second until a resume replayed it)."""
    scheduler = build_scheduler("random", SPACE, "loss", "min", 0)
    results = scheduler.on_trial_result

    def fail_at_the_second(trial, result):
        if scheduler.seen >= 1:
            raise RuntimeError("a scheduler's bug")
        scheduler.seen += 1
        return results(trial, result)

    scheduler.seen = 0  # type: ignore[attr-defined]
    scheduler.on_trial_result = fail_at_the_second  # type: ignore[method-assign]
    tuner = Tuner(scheduler, QueuedReports({}), StoppingCriterion(max_trials_started=2),
                  n_workers=2, store=ExperimentStore(tmp_path, "cut"))
    with pytest.raises(RuntimeError, match="a scheduler's bug"):
        tuner.run()
    frame = load_experiment(tmp_path / "cut").results
    assert sorted(frame["trial_id"]) == [0, 1]  # the first poll: one report of each trial


class ReportsAsEnded(QueuedReports):
    """The trials report once more as `drain()` ends them (a real backend's last reports)."""

    def drain(self) -> list[TrialEvent]:
        self._train()
        return super().drain()


@pytest.mark.usefixtures("sigterm_raises")
def test_the_last_reports_a_kill_hands_over_are_counted_and_shown(tmp_path):
    """What `drain()` hands over after a kill is journaled and also counted and passed to the
    callbacks (as received, undecided): the final status printed matches what the store then
    shows (before: it missed them, and could name another best trial)."""
    from hpo_core.tuner import TunerCallback

    class Reports(TunerCallback):
        def __init__(self):
            self.seen: list[tuple[int, int]] = []

        def on_trial_result(self, trial, result, decision):
            self.seen.append((trial.trial_id, result.metrics["epoch"]))

    reports = Reports()
    tuner = Tuner(build_scheduler("random", SPACE, "loss", "min", 0),
                  ReportsAsEnded({}, sigterm_at_report=4), StoppingCriterion(max_trials_started=6),
                  n_workers=3, store=ExperimentStore(tmp_path, "shown"), callbacks=[reports],
                  checkpoint_interval=1e9)
    with pytest.raises(Terminated):
        tuner.run()
    frame = load_experiment(tmp_path / "shown").results
    assert sorted(reports.seen) == sorted(zip(frame["trial_id"], frame["epoch"], strict=True))
    assert tuner.status.num_results == len(frame)
    for tid, rows in frame.groupby("trial_id"):
        assert tuner.trials[tid].num_results == len(rows)
        assert tuner.trials[tid].last_result["epoch"] == rows["epoch"].max()
    best = frame.loc[frame["loss"].idxmin()]
    assert (tuner.best_trial_id, tuner.result().best_value) == (best["trial_id"], best["loss"])
