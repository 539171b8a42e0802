"""The tuner loop: workers, stopping, callbacks, failures, resume."""

from __future__ import annotations

import gc
import heapq
import io
import json
import math
import threading

import pytest

from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.registry import build_scheduler
from hpo_core.schedulers.base import Scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import (
    Decision,
    EventKind,
    Trial,
    TrialEvent,
    TrialResult,
    TrialStatus,
    TrialSuggestion,
)
from hpo_core.trial_value import format_value
from hpo_core.tuner import TooManyFailuresError, Tuner, TunerCallback

SPACE = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}}


class CurveBackend(TrialBackend):
    """Simulated clock; trial reports loss = (x - 0.3)^2 + 1/epoch once per time unit.

    `fail_if(config)` makes a trial fail at its first epoch; `nan_if(config)` reports NaN."""

    clock_kind = ClockKind.SIMULATED

    def __init__(self, epochs=5, fail_if=None, nan_if=None, crash_after_polls=None):
        self.epochs = epochs
        self.t = 0.0
        self.heap: list = []
        self.generation: dict[int, int] = {}
        self.position: dict[int, int] = {}
        self.fail_if = fail_if or (lambda c: False)
        self.nan_if = nan_if or (lambda c: False)
        self.crash_after_polls = crash_after_polls
        self.polls = 0
        self.max_running = 0
        self.running: set[int] = set()
        self.closed = False
        self.configs: dict[int, dict] = {}

    def _push(self, trial_id):
        epoch = self.position[trial_id] + 1
        heapq.heappush(self.heap, (self.t + 1.0, trial_id, self.generation[trial_id], epoch))

    def start(self, trial: Trial):
        self.configs[trial.trial_id] = trial.config
        self.generation[trial.trial_id] = self.generation.get(trial.trial_id, 0) + 1
        last = (trial.last_result or {}).get("epoch", 0)
        self.position[trial.trial_id] = int(last)
        self.running.add(trial.trial_id)
        self.max_running = max(self.max_running, len(self.running))
        self._push(trial.trial_id)

    resume = start

    def _end(self, trial_id):
        self.generation[trial_id] += 1
        self.running.discard(trial_id)

    pause = stop = _end

    def poll(self):
        self.polls += 1
        if self.crash_after_polls is not None and self.polls > self.crash_after_polls:
            raise KeyboardInterrupt("simulated kill")
        while self.heap:
            t, tid, gen, epoch = heapq.heappop(self.heap)
            if gen != self.generation[tid]:
                continue
            self.t = t
            config = self.configs[tid]
            if self.fail_if(config):
                self.running.discard(tid)
                return [TrialEvent(EventKind.FAILED, tid, t, reason="boom: exit code 1")]
            loss = math.nan if self.nan_if(config) else (config["x"] - 0.3) ** 2 + 1.0 / epoch
            events = [TrialEvent(EventKind.RESULT, tid, t, {"epoch": epoch, "loss": loss})]
            self.position[tid] = epoch
            if epoch >= self.epochs:
                self.running.discard(tid)
                events.append(TrialEvent(EventKind.COMPLETED, tid, t))
            else:
                self._push(tid)
            return events
        return []

    def now(self):
        return self.t

    def close(self):
        self.closed = True


class Recorder(TunerCallback):
    def __init__(self):
        self.calls: list[tuple] = []

    def on_tuning_start(self, tuner):
        self.calls.append(("start",))

    def on_trial_start(self, trial):
        self.calls.append(("trial_start", trial.trial_id))

    def on_trial_result(self, trial, result, decision):
        self.calls.append(("result", trial.trial_id, result.metrics["epoch"], decision))

    def on_trial_complete(self, trial):
        self.calls.append(("complete", trial.trial_id, trial.status))

    def on_trial_error(self, trial):
        self.calls.append(("error", trial.trial_id, trial.failure_reason))

    def on_tuning_end(self, tuner):
        self.calls.append(("end",))


def random_scheduler(seed=0, mode="min"):
    return build_scheduler("random", SPACE, "loss", mode, seed)


def test_keeps_n_workers_busy_and_stops_on_completed_trials():
    backend = CurveBackend()
    tuner = Tuner(random_scheduler(), backend, StoppingCriterion(max_trials_completed=10),
                  n_workers=3)
    result = tuner.run()
    assert result.reason.startswith("max_trials_completed")
    assert backend.max_running == 3
    completed = [t for t in tuner.trials.values() if t.status == TrialStatus.COMPLETED]
    assert len(completed) >= 10
    assert backend.closed
    assert not any(t.status == TrialStatus.RUNNING for t in tuner.trials.values())
    best = min(tuner.trials.values(), key=lambda t: t.last_result["loss"])
    assert result.best_trial_id == best.trial_id
    assert result.best_value == pytest.approx(best.last_result["loss"])


@pytest.mark.parametrize(
    "criterion, check",
    [
        (StoppingCriterion(max_time=7.5), lambda tuner: tuner.status.time >= 7.5),
        (StoppingCriterion(max_results=13), lambda tuner: tuner.status.num_results == 13),
        (StoppingCriterion(max_trials_started=5),
         lambda tuner: len(tuner.trials) == 5
         and all(t.status == TrialStatus.COMPLETED for t in tuner.trials.values())),
        (StoppingCriterion(metric_threshold=0.25),
         lambda tuner: tuner.status.best_value <= 0.25),
    ],
)
def test_stopping_criteria(criterion, check):
    tuner = Tuner(random_scheduler(), CurveBackend(), criterion, n_workers=2)
    result = tuner.run()
    assert check(tuner)
    # the reason names the criterion that ended the experiment
    name = next(k for k in criterion.to_dict())
    assert result.reason.startswith(name), result.reason


def test_max_cost_sums_the_last_cost_of_each_trial():
    class CostBackend(CurveBackend):
        def poll(self):
            events = super().poll()
            for e in events:
                if e.kind == EventKind.RESULT:
                    e.metrics["cost"] = 0.5 * e.metrics["epoch"]  # cumulative per trial
            return events

    tuner = Tuner(random_scheduler(), CostBackend(), StoppingCriterion(max_cost=6.0), n_workers=2)
    result = tuner.run()
    assert result.reason.startswith("max_cost")
    assert 6.0 <= tuner.status.total_cost < 8.0


def test_callbacks_see_the_life_of_each_trial_and_a_broken_one_is_ignored():
    class Broken(TunerCallback):
        def on_trial_result(self, trial, result, decision):
            raise RuntimeError("callback bug")

    recorder = Recorder()
    tuner = Tuner(random_scheduler(), CurveBackend(epochs=2), StoppingCriterion(max_trials_started=2),
                  n_workers=1, callbacks=[Broken(), recorder])
    tuner.run()
    assert recorder.calls == [
        ("start",),
        ("trial_start", 0), ("result", 0, 1, Decision.CONTINUE), ("result", 0, 2, Decision.CONTINUE),
        ("complete", 0, TrialStatus.COMPLETED),
        ("trial_start", 1), ("result", 1, 1, Decision.CONTINUE), ("result", 1, 2, Decision.CONTINUE),
        ("complete", 1, TrialStatus.COMPLETED),
        ("end",),
    ]


def test_failed_trials_are_recorded_and_the_experiment_goes_on():
    backend = CurveBackend(fail_if=lambda c: c["x"] > 0.7)
    recorder = Recorder()
    tuner = Tuner(random_scheduler(seed=3), backend, StoppingCriterion(max_trials_completed=8),
                  n_workers=2, callbacks=[recorder])
    tuner.run()
    failed = [t for t in tuner.trials.values() if t.status == TrialStatus.FAILED]
    assert failed, "seed 3 should draw some x > 0.7"
    assert all(t.failure_reason == "boom: exit code 1" for t in failed)
    assert ("error", failed[0].trial_id, "boom: exit code 1") in recorder.calls
    assert tuner.status.num_trials_completed >= 8


def test_max_failures_ends_the_experiment_with_a_clear_message():
    tuner = Tuner(random_scheduler(), CurveBackend(fail_if=lambda c: True),
                  StoppingCriterion(max_trials_completed=5), n_workers=2, max_failures=3)
    with pytest.raises(TooManyFailuresError, match=r"3 trials failed \(max_failures=3\).*boom"):
        tuner.run()


def test_a_non_finite_metric_fails_the_trial():
    tuner = Tuner(random_scheduler(), CurveBackend(nan_if=lambda c: c["x"] < 0.5),
                  StoppingCriterion(max_trials_started=6), n_workers=2)
    tuner.run()
    statuses = {t.trial_id: t.status for t in tuner.trials.values()}
    for trial in tuner.trials.values():
        if trial.config["x"] < 0.5:
            assert statuses[trial.trial_id] == TrialStatus.FAILED
            assert "non-finite loss" in trial.failure_reason
        else:
            assert statuses[trial.trial_id] == TrialStatus.COMPLETED


class TwoObjectives(CurveBackend):
    """Also reports `size` = x, inf for x < 0.5."""

    def poll(self):
        events = super().poll()
        for event in events:
            if event.kind == EventKind.RESULT:
                x = self.configs[event.trial_id]["x"]
                event.metrics["size"] = math.inf if x < 0.5 else x
        return events


@pytest.mark.parametrize("method", ["moasha", "mo_rea"])
def test_a_non_finite_value_of_any_objective_fails_the_trial(method):
    """Before, only the first objective was checked: a NaN or inf second one made MO-ASHA
    continue the trial to max_t and left it out of MO-REA's population, unflagged."""
    options = {"max_t": 5} if method == "moasha" else {}
    scheduler = build_scheduler(method, SPACE, ["loss", "size"], ["min", "min"], seed=0,
                                options=options)
    tuner = Tuner(scheduler, TwoObjectives(), StoppingCriterion(max_trials_started=8),
                  n_workers=2, max_failures=None)
    tuner.run()
    for trial in tuner.trials.values():
        if trial.config["x"] < 0.5:
            assert trial.status == TrialStatus.FAILED, trial
            assert trial.failure_reason == "reported a non-finite size: inf"
        else:
            assert trial.status != TrialStatus.FAILED


def test_mode_max_tracks_the_largest_value():
    class Values(TunerCallback):
        def __init__(self):
            self.seen = []

        def on_trial_result(self, trial, result, decision):
            self.seen.append((result.metrics["loss"], trial.trial_id))

    values = Values()
    tuner = Tuner(random_scheduler(mode="max"), CurveBackend(), StoppingCriterion(max_results=20),
                  n_workers=2, callbacks=[values])
    result = tuner.run()
    assert (result.best_value, result.best_trial_id) == max(values.seen)


def test_an_exhausted_scheduler_ends_the_experiment():
    space = {"x": {"type": "choice", "categories": [0.1, 0.3, 0.9]}}
    scheduler = build_scheduler("grid", space, "loss", "min", 0)
    tuner = Tuner(scheduler, CurveBackend(epochs=2), StoppingCriterion(max_time=1e9), n_workers=2)
    result = tuner.run()
    assert "nothing to start" in result.reason
    assert sorted(t.config["x"] for t in tuner.trials.values()) == [0.1, 0.3, 0.9]


class PausingScheduler(Scheduler):
    """Pauses every trial at epoch 2 and resumes paused trials before starting new ones."""

    def __init__(self):
        super().__init__(SPACE, "loss", "min", 0)
        self.paused: list[int] = []
        self.resumed: set[int] = set()

    def suggest(self, trial_id):
        if self.paused:
            tid = self.paused.pop(0)
            self.resumed.add(tid)
            return TrialSuggestion.resume(tid)
        return TrialSuggestion.start(self.config_space.sample(self.rng))

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        if result.metrics["epoch"] == 2 and trial.trial_id not in self.resumed:
            self.paused.append(trial.trial_id)
            return Decision.PAUSE
        return Decision.CONTINUE

    def state_dict(self):
        return {**super().state_dict(), "paused": self.paused, "resumed": sorted(self.resumed)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.paused = list(state["paused"])
        self.resumed = set(state["resumed"])


def test_pause_and_resume_continue_from_the_paused_epoch():
    tuner = Tuner(PausingScheduler(), CurveBackend(epochs=4), StoppingCriterion(max_trials_started=3),
                  n_workers=1)
    tuner.run()
    for trial in tuner.trials.values():
        assert trial.status == TrialStatus.COMPLETED
        assert trial.num_results == 4  # epochs 1, 2, then 3, 4 after the resume: none repeated


def test_state_is_json_and_a_killed_experiment_resumes_without_losing_trials(tmp_path):
    store = ExperimentStore(tmp_path, "resume-me")
    criterion = StoppingCriterion(max_trials_completed=12)
    first = Tuner(random_scheduler(seed=7), CurveBackend(crash_after_polls=25), criterion,
                  n_workers=3, store=store, checkpoint_interval=0.0)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    saved = json.loads((store.path / "state.json").read_text())
    done_before = {int(k) for k, t in saved["trials"].items() if t["status"] == "completed"}
    assert done_before, "some trials should have finished before the kill"
    rows_before = load_experiment(store.path).results

    second = Tuner(random_scheduler(seed=7), CurveBackend(), criterion, n_workers=3,
                   store=ExperimentStore(tmp_path, "resume-me"))
    result = second.run()
    assert result.reason.startswith("max_trials_completed")
    frame = load_experiment(store.path).results
    for trial_id in done_before:
        epochs = frame[frame.trial_id == trial_id]["epoch"].tolist()
        assert epochs == [1, 2, 3, 4, 5], f"trial {trial_id} lost or re-ran reports: {epochs}"
        assert second.trials[trial_id].status == TrialStatus.COMPLETED
    assert len(frame) >= len(rows_before)
    # no (trial, epoch) pair is reported twice, also for trials running at the kill
    assert not frame.duplicated(subset=["trial_id", "epoch"]).any()
    assert second.status.time > saved["time"]


def test_every_journaled_report_survives_a_kill_and_the_resume(tmp_path):
    """A wall-clock backend killed between snapshots: the rows after the last snapshot are in
    the journal; a reader sees them at once, and the resume keeps them (not re-expected)."""
    class WallBackend(CurveBackend):
        clock_kind = ClockKind.WALL

    store = ExperimentStore(tmp_path, "journaled")
    criterion = StoppingCriterion(max_trials_completed=10)
    first = Tuner(random_scheduler(seed=2), WallBackend(crash_after_polls=23), criterion,
                  n_workers=2, store=store, checkpoint_interval=1e9)
    # a SIGKILL after the store wrote its pending snapshot (in one process, an abandoned
    # writer thread would go on writing; a killed process has none)
    first._shutdown = lambda finished: first.store.close()
    with pytest.raises(KeyboardInterrupt):
        first.run()
    seen = [(r["trial_id"], r["epoch"], r["loss"]) for r in store.rows()]
    killed = load_experiment(store.path).results  # before any resume: the journal is read
    assert list(zip(killed.trial_id, killed.epoch, killed.loss, strict=True)) == seen
    assert killed["config_x"].notna().all()
    done_before = {int(k) for k, t in load_experiment(store.path).state["trials"].items()
                   if t["status"] == "completed"}
    assert done_before

    second = Tuner(random_scheduler(seed=2), WallBackend(), criterion, n_workers=2,
                   store=ExperimentStore(tmp_path, "journaled"), checkpoint_interval=1e9)
    second.run()
    frame = load_experiment(store.path).results
    after = set(zip(frame.trial_id, frame.epoch, frame.loss, strict=True))
    assert set(seen) <= after, "a journaled report was lost"
    for trial_id in done_before:
        assert frame[frame.trial_id == trial_id]["epoch"].tolist() == [1, 2, 3, 4, 5]
    assert not frame.duplicated(subset=["trial_id", "epoch"]).any()
    assert len(list((store.path / "journal").iterdir())) <= 1, "covered segments are removed"


def test_a_journal_written_with_the_old_sixth_event_entry_is_read_and_replayed(tmp_path):
    """Journals written before 2026-11-30 carry a sixth (unused) entry per backend event."""
    class WallBackend(CurveBackend):
        clock_kind = ClockKind.WALL

    store = ExperimentStore(tmp_path, "old-journal")
    criterion = StoppingCriterion(max_trials_completed=6)
    first = Tuner(random_scheduler(seed=3), WallBackend(crash_after_polls=15), criterion,
                  n_workers=2, store=store, checkpoint_interval=1e9)
    first._shutdown = lambda finished: first.store.close()  # a SIGKILL (see above)
    with pytest.raises(KeyboardInterrupt):
        first.run()
    seen = {(r["trial_id"], r["epoch"]) for r in store.rows()}
    for segment in (store.path / "journal").iterdir():
        records = [json.loads(line) for line in segment.read_text().splitlines()]
        for record in records:
            for event in record.get("b", []):
                event.append(None)
        segment.write_text("".join(json.dumps(r) + "\n" for r in records))
    killed = load_experiment(store.path).results
    assert set(zip(killed.trial_id, killed.epoch, strict=True)) == seen
    Tuner(random_scheduler(seed=3), WallBackend(), criterion, n_workers=2,
          store=ExperimentStore(tmp_path, "old-journal"), checkpoint_interval=1e9).run()
    frame = load_experiment(store.path).results
    assert seen <= set(zip(frame.trial_id, frame.epoch, strict=True))


@pytest.mark.parametrize("interruption", [KeyboardInterrupt(), RuntimeError("a scheduler's bug")])
def test_a_kill_while_a_report_is_handled_loses_nothing(tmp_path, interruption):
    """Ctrl-C, or an error, in the middle of handling a report (counted, not yet recorded): no
    snapshot is taken of that state; the resume replays the journal, so the report is kept."""
    class WallBackend(CurveBackend):
        clock_kind = ClockKind.WALL

    criterion = StoppingCriterion(max_trials_completed=6)
    scheduler = random_scheduler(seed=5)
    decide = scheduler.on_trial_result
    calls = []

    def cut_short(trial, result):
        calls.append(result)
        if len(calls) == 9:
            raise interruption
        return decide(trial, result)

    scheduler.on_trial_result = cut_short
    first = Tuner(scheduler, WallBackend(), criterion, n_workers=2,
                  store=ExperimentStore(tmp_path, "cut"), checkpoint_interval=1e9)
    with pytest.raises(type(interruption)):
        first.run()
    cut = (calls[-1].trial_id, calls[-1].metrics["epoch"])
    Tuner(random_scheduler(seed=5), WallBackend(), criterion, n_workers=2,
          store=ExperimentStore(tmp_path, "cut"), checkpoint_interval=1e9).run()
    frame = load_experiment(tmp_path / "cut").results
    assert cut in set(zip(frame.trial_id, frame.epoch, strict=True))
    for trial_id, rows in frame.groupby("trial_id"):
        assert rows["epoch"].tolist() == list(range(1, len(rows) + 1)), trial_id


def test_reports_a_relaunched_trial_repeats_are_dropped_also_after_a_second_kill(tmp_path):
    """Checkpoints two epochs behind the reports: a trial relaunched after a kill reports
    epochs the journal holds; they are dropped, live and again when a second kill's journal
    is replayed, so no (trial, epoch) is ever recorded twice."""
    class LaggingBackend(CurveBackend):
        clock_kind = ClockKind.WALL

        def resume(self, trial):
            super().start(trial)
            self.position[trial.trial_id] = max(0, self.position[trial.trial_id] - 2)
            self.heap = [e for e in self.heap if e[1] != trial.trial_id]
            self._push(trial.trial_id)

    criterion = StoppingCriterion(max_trials_completed=8)
    for crash_after in (14, 9, None):
        tuner = Tuner(random_scheduler(seed=4), LaggingBackend(crash_after_polls=crash_after),
                      criterion, n_workers=3, store=ExperimentStore(tmp_path, "lagging"),
                      checkpoint_interval=1e9)
        if crash_after is None:
            tuner.run()
            break
        tuner._shutdown = lambda finished, t=tuner: t.store.close()  # a SIGKILL (see above)
        with pytest.raises(KeyboardInterrupt):
            tuner.run()
        frame = load_experiment(tmp_path / "lagging").results
        assert not frame.duplicated(subset=["trial_id", "epoch"]).any()
    frame = load_experiment(tmp_path / "lagging").results
    assert not frame.duplicated(subset=["trial_id", "epoch"]).any()
    for trial_id, rows in frame.groupby("trial_id"):
        assert rows["epoch"].tolist() == list(range(1, len(rows) + 1)), trial_id


def test_a_run_freezes_the_objects_before_it_and_unfreezes_them_after():
    frozen = []

    class Watch(TunerCallback):
        def on_trial_result(self, trial, result, decision):
            frozen.append(gc.get_freeze_count())

        def on_tuning_end(self, tuner):  # after the final snapshot: still frozen
            frozen.append(gc.get_freeze_count())

    Tuner(random_scheduler(), CurveBackend(epochs=2), StoppingCriterion(max_trials_started=2),
          n_workers=1, callbacks=[Watch()]).run()
    assert len(frozen) == 5 and min(frozen) > 0
    assert gc.get_freeze_count() == 0


def test_secrets_in_what_a_trial_reports_are_masked_before_the_journal_and_the_store(
        tmp_path, monkeypatch):
    """A trial that echoes a resolved secret in a report or its failure: the journal, state.json
    and results.parquet hold `[redacted]`, never the value."""
    from hpo_core import secrets

    secret = "S3cret-Value-4821"
    monkeypatch.setattr(secrets, "_known", {secret})

    class Echoing(CurveBackend):
        def poll(self):
            events = super().poll()
            for e in events:
                if e.kind == EventKind.RESULT and e.trial_id == 0:
                    e.metrics.update(note=f"using {secret}", nested={"t": [secret, 1]})
                elif e.kind == EventKind.RESULT:
                    return [TrialEvent(EventKind.FAILED, e.trial_id, e.time,
                                       reason=f"auth {secret} refused")]
            return events

    journaled: list[bytes] = []

    class ReadJournal(TunerCallback):
        def on_trial_complete(self, trial):
            journaled.extend(p.read_bytes() for p in (store.path / "journal").glob("*.jsonl"))

    store = ExperimentStore(tmp_path, "echo")
    tuner = Tuner(random_scheduler(), Echoing(epochs=2), StoppingCriterion(max_trials_started=2),
                  n_workers=1, store=store, callbacks=[ReadJournal()])
    tuner.run()
    assert journaled and any(b"[redacted]" in text for text in journaled)
    stored = [p.read_bytes() for p in store.path.rglob("*") if p.is_file()]
    for text in journaled + stored:
        assert secret.encode() not in text
    rows = load_experiment(store.path).results
    assert set(rows["note"].dropna()) == {"using [redacted]"}
    assert tuner.trials[1].failure_reason == "auth [redacted] refused"


class ConstrainedBackend(CurveBackend):
    """Also reports `constraint` (x - 0.5, feasible below 0.5), with the last epoch only."""

    def poll(self):
        events = super().poll()
        for event in events:
            if event.kind == EventKind.RESULT and event.metrics["epoch"] == self.epochs:
                event.metrics["constraint"] = self.configs[event.trial_id]["x"] - 0.5
        return events


@pytest.mark.parametrize("method, options, option", [
    ("cbo", {"constraint_attr": "constrain"}, "constraint_attr"),
    ("bo", {"cost_attr": "cost"}, "cost_attr"),
])
def test_a_constraint_or_cost_no_trial_reports_ends_the_experiment(method, options, option):
    """The method reads a metric besides the objective: none reported, it would run as if it
    were not set (before: unconstrained, or not cost-aware, without a word)."""
    scheduler = build_scheduler(method, SPACE, "loss", "min", seed=0, options=options)
    tuner = Tuner(scheduler, ConstrainedBackend(epochs=3), StoppingCriterion(max_results=60),
                  n_workers=2)
    with pytest.raises(ValueError, match=rf"^spec\.scheduler_options\.{option}: no trial reports "
                                         rf"'{options[option]}'"):
        tuner.run()
    assert tuner.status.num_trials_completed == 2  # two trials ran to their end first


def test_a_constraint_no_trial_reports_is_an_error_again_on_resume_and_at_the_limit(tmp_path):
    """Resuming does not make trials report it (before: the resume ran unconstrained without
    a word), and a stop limit reached as the second trial finishes does not skip the check."""
    def tuner(stop):
        scheduler = build_scheduler("cbo", SPACE, "loss", "min", seed=0,
                                    options={"constraint_attr": "nope"})
        return Tuner(scheduler, ConstrainedBackend(epochs=3), stop, n_workers=2,
                     store=ExperimentStore(tmp_path, "cbo"))

    message = r"^spec\.scheduler_options\.constraint_attr: no trial reports 'nope'"
    with pytest.raises(ValueError, match=message):
        tuner(StoppingCriterion(max_trials_completed=2)).run()
    with pytest.raises(ValueError, match=message + r".*carrying \['epoch', 'loss', 'constraint'\]"):
        tuner(StoppingCriterion(max_trials_completed=8)).run()


def test_a_constraint_reported_with_the_last_report_only_is_fine():
    scheduler = build_scheduler("cbo", SPACE, "loss", "min", seed=0)
    tuner = Tuner(scheduler, ConstrainedBackend(epochs=3), StoppingCriterion(max_results=30),
                  n_workers=2)
    assert tuner.run().best_value is not None
    assert scheduler.side_metrics() == {"constraint": "constraint_attr"}
    ehvi = build_scheduler("ehvi", SPACE, ["loss", "size"], ["min", "min"], seed=0,
                           options={"constraint_attr": "c"})
    assert ehvi.side_metrics() == {"c": "constraint_attr"}


@pytest.mark.parametrize("clock", [ClockKind.SIMULATED, ClockKind.WALL])
def test_a_simulation_writes_its_snapshots_itself_a_wall_clock_run_in_the_background(
        tmp_path, monkeypatch, clock):
    """A simulated run never waits for a trial, and a writer thread would contend with it for
    the interpreter lock; a real run must not wait on the disk."""
    threads = set()
    write = ExperimentStore._write_snapshot

    def spy(self, job, writer):
        threads.add(threading.current_thread())
        write(self, job, writer)
    monkeypatch.setattr(ExperimentStore, "_write_snapshot", spy)
    backend = CurveBackend()
    backend.clock_kind = clock
    Tuner(random_scheduler(), backend, StoppingCriterion(max_trials_completed=6), n_workers=2,
          store=ExperimentStore(tmp_path, "where"), checkpoint_interval=0.0).run()
    assert threads
    assert (threads == {threading.current_thread()}) is (clock is ClockKind.SIMULATED)


class FeasibleAboveBackend(CurveBackend):
    """Reports `constraint` = 0.35 - x with every report: the loss's optimum (x = 0.3) is
    infeasible, the best feasible configs are just above x = 0.35."""

    def poll(self):
        events = super().poll()
        for event in events:
            if event.kind == EventKind.RESULT:
                event.metrics["constraint"] = 0.35 - self.configs[event.trial_id]["x"]
        return events


def test_the_best_trial_of_a_constrained_experiment_is_its_best_feasible_one_in_every_view(
        tmp_path):
    """Before, the tuner, the store's views and the live status named the best loss, though
    its trial violated the constraint the method searched under."""
    from flows.status import StatusView

    scheduler = build_scheduler("cbo", SPACE, "loss", "min", seed=0)  # constraint_attr
    stream = io.StringIO()
    tuner = Tuner(scheduler, FeasibleAboveBackend(epochs=2),
                  StoppingCriterion(max_trials_completed=14), n_workers=2,
                  store=ExperimentStore(tmp_path, "constrained"),
                  callbacks=[StatusView(stream=stream)])
    result = tuner.run()
    experiment = load_experiment(tmp_path / "constrained")
    rows = experiment.results
    feasible, infeasible = rows[rows["constraint"] <= 0], rows[rows["constraint"] > 0]
    assert infeasible["loss"].min() < feasible["loss"].min(), "no infeasible trial was better"
    best = feasible.loc[feasible["loss"].idxmin()]
    assert (result.best_trial_id, result.best_value) == (best["trial_id"], best["loss"])
    assert (experiment.best_trial_id(), experiment.best_value()) == (best["trial_id"],
                                                                     best["loss"])
    assert experiment.trajectory()["best"].min() == best["loss"]
    assert experiment.best_row()["constraint"] <= 0
    values = experiment.trials().set_index("trial_id")["loss"]
    assert values[infeasible["trial_id"].unique()].isna().all()  # x < 0.35: never feasible
    final = stream.getvalue().split("== Status (final) ==")[1].splitlines()
    assert final[2].startswith(f"best loss (min): {format_value(best['loss'])} "
                               f"(trial {best['trial_id']},")


def test_a_kill_that_comes_while_a_snapshot_is_taken_waits_until_it_is_whole(tmp_path,
                                                                            monkeypatch):
    """A Ctrl-C during a snapshot (a simulation writes its own) is raised once the snapshot
    is whole, and the run's end is journaled. Before, one that came as the journal switched
    segments left none open: the end record was lost, and a SIGKILLed `compare`'s run did
    not know it had been interrupted."""
    import _thread
    import signal

    from hpo_core.store.journal import Journal

    opened: list[int] = []
    open_segment = Journal.open

    def open_with_a_ctrl_c(self, segment):
        opened.append(segment)
        if len(opened) == 3:  # the loop's first snapshot (after begin and the opening one)
            _thread.interrupt_main(signal.SIGINT)
        open_segment(self, segment)
    monkeypatch.setattr(Journal, "open", open_with_a_ctrl_c)
    store = ExperimentStore(tmp_path, "cut")
    tuner = Tuner(random_scheduler(), CurveBackend(), StoppingCriterion(max_trials_completed=500),
                  n_workers=2, store=store, checkpoint_interval=0.0)
    with pytest.raises(KeyboardInterrupt):
        tuner.run()
    assert len(opened) == 3
    experiment = load_experiment(store.path)
    assert experiment.state["store"]["segment"] == opened[2]  # the snapshot was written
    assert experiment.last_exit == ("KeyboardInterrupt", False)
