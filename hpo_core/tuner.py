"""The tuner: an asynchronous loop between a scheduler and a backend.

It keeps `n_workers` trials in flight, hands every report to the scheduler and carries out its
decisions, and ends when the stopping criterion says so. Time comes only from `backend.now()`,
so the same loop serves wall-clock and simulated backends.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from hpo_core import interrupts
from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.frozen_heap import frozen_heap
from hpo_core.schedulers.base import Scheduler
from hpo_core.secrets import mask_event, mask_text, one_line
from hpo_core.stopping import StoppingCriterion, TuningStatus
from hpo_core.store.files import ROW_COLUMNS
from hpo_core.store.journal import StoreError
from hpo_core.trial import (
    ENDED_STATUSES,
    Decision,
    EventKind,
    Trial,
    TrialEvent,
    TrialResult,
    TrialStatus,
)
from hpo_core.trial_value import is_feasible

if TYPE_CHECKING:
    from hpo_core.store.store import ExperimentStore

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class TunerCallback:
    """Hooks into the tuner's life; override what you need. Exceptions are logged, not raised."""

    def on_tuning_start(self, tuner: Tuner) -> None: ...

    def on_trial_start(self, trial: Trial) -> None:
        """A new trial started (or a paused one resumed: `trial.num_results > 0`)."""

    def on_trial_result(self, trial: Trial, result: TrialResult, decision: Decision) -> None: ...

    def on_trial_complete(self, trial: Trial) -> None:
        """The trial ended: COMPLETED by itself, STOPPED by the scheduler or at the end, PAUSED."""

    def on_trial_error(self, trial: Trial) -> None: ...

    def on_tuning_end(self, tuner: Tuner) -> None: ...


class TooManyFailuresError(RuntimeError):
    """More trials failed than `max_failures` allows."""


class MetricNotReportedError(ValueError):
    """No trial reports a metric the scheduler optimizes (a typo in `spec.metric`, or a
    training script that reports under another name)."""


#: a metric no report has carried is an error once this many trials reported this many times
#: each (or once a trial ended without it): the first reports of the first trials
METRIC_CHECK_TRIALS, METRIC_CHECK_REPORTS = 2, 2


class ReplayMismatchError(ValueError):
    """A backend that restores exactly produced other events than the journal on resume."""


@dataclass
class TuningResult:
    """How tuning ended."""

    reason: str
    status: TuningStatus
    best_trial_id: int | None
    best_config: dict[str, Any] | None
    best_value: float | None


class Tuner:
    """Runs an experiment.

    Args:
        scheduler: the HPO method.
        backend: runs the trials; its clock is the experiment's clock.
        stop_criterion: when to end (at least one limit, or a scheduler that runs dry).
        n_workers: trials in flight at once.
        callbacks: tuner callbacks (MLflow tracking, progress, Prefect artifacts, ...).
        max_failures: end the experiment (TooManyFailuresError) once this many trials failed.
        store: the experiment store; with one, state is saved and an existing state resumed.
        checkpoint_interval: wall seconds between snapshots of the state, as long as a
            snapshot stays cheap for the events since the last one (see
            `ExperimentStore.snapshot_due`); every event is journaled anyway.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        backend: TrialBackend,
        stop_criterion: StoppingCriterion,
        n_workers: int = 4,
        callbacks: Iterable[TunerCallback] = (),
        max_failures: int | None = None,
        store: ExperimentStore | None = None,
        checkpoint_interval: float = 5.0,
    ):
        if n_workers < 1:
            raise ValueError(f"n_workers: must be at least 1, got {n_workers}")
        self.scheduler = scheduler
        self.backend = backend
        self.stop_criterion = stop_criterion
        self.n_workers = n_workers
        self.callbacks = list(callbacks)
        self.max_failures = max_failures
        self.store = store
        self.checkpoint_interval = checkpoint_interval
        self.trials: dict[int, Trial] = {}
        self.status = TuningStatus()
        self.best_trial_id: int | None = None
        self._best_min: float = math.inf  # best objective value, minimized
        self._trial_best: dict[int, float] = {}  # each trial's best objective value, minimized
        self._running: set[int] = set()
        self._ended_entries: dict[int, tuple[str, dict[str, Any]]] = {}  # `_trials_state`
        self._costs: dict[int, float] = {}
        self._next_trial_id = 0
        self._time_offset = 0.0
        #: the backend's state restores its running trials exactly (a simulation)
        self._exact_backend = backend.restores_running_trials
        self._exact = self._exact_backend  # and the state was written by such a backend
        backend.set_pausing(scheduler.may_pause)
        #: the store, once it is loaded and its journal open for this session
        self._open: ExperimentStore | None = None
        self._event_index: int | None = None  # place of the event handled in its poll
        # between two events (at the top of a round, or waiting in the backend's poll()):
        # the state holds everything journaled, so an interruption may snapshot it
        self._between_events = False
        self._replay_batches: list[dict[str, Any]] | None = None
        self._replay_starts: dict[int, list[Any]] = {}
        self._snapshot_n_workers: int | None = None
        self._replay_live: TrialBackend | None = None  # the real backend, while replaying
        self._muted = False  # callbacks are not called while replaying
        #: trials relaunched after a crash -> last reported resource: earlier ones are dropped
        self._reported_upto: dict[int, float] = {}
        self._metric = scheduler.metric
        self._sign = 1.0 if scheduler.mode == "min" else -1.0
        self._constraint = scheduler.constraint  # only feasible reports can be the best
        self._missing_metrics = set(scheduler.metrics)  # not in any report yet
        #: a constraint or cost the scheduler reads that no report carried yet -> its option
        self._missing_side = scheduler.side_metrics()
        #: max_cost is set and no trial reported its cost yet (checked once a trial finished)
        self._cost_unchecked = self.stop_criterion.max_cost is not None
        self._keys_reported: dict[str, None] = {}  # keys of the reports so far, in order
        self.end_reason: str | None = None
        #: what interrupted `run()`: an error (Exception) or a kill (KeyboardInterrupt, a
        #: termination signal, a cancellation); None while running or after a normal end
        self.interruption: BaseException | None = None

    # -- public --------------------------------------------------------------------------------
    def run(self) -> TuningResult:
        """Run (or resume, if the store holds a state) until the stopping criterion holds.

        With a store: the experiment's lock is taken first (ExperimentLockedError if another
        live process owns it); then the last snapshot is restored and the journal after it
        replayed, so the tuner is where the last session left it, every journaled report
        included."""
        if self.store is not None:
            self.store.lock()
        finished = False
        # a kill's exception waits until what a poll took is journaled (`_poll`)
        with interrupts.guard(), frozen_heap():  # collections walk the run's objects only
            try:
                if self.store is not None:
                    self._open_store(self.store)
                self._emit("on_tuning_start", self)
                self._resume_interrupted()
                self.end_reason = self.end_reason or self._loop()
                finished = True
            except BaseException as err:
                self.interruption = err
                raise
            finally:
                self._shutdown(finished)
        return self.result()

    def _open_store(self, store: ExperimentStore) -> None:
        self.backend.set_context(store.trial_context())
        state = store.load_state()
        if state is not None:
            self._restore(state)
            if self._missing_side:  # checked again: a resume does not give trials the metric
                for row in store.rows():
                    self._keys_reported.update(dict.fromkeys(k for k in row
                                                             if k not in ROW_COLUMNS))
                for name in self._missing_side.keys() & self._keys_reported.keys():
                    del self._missing_side[name]
        records = store.replay_records()
        if records:
            self._replay(records)
        if not self._exact:
            self._running.clear()  # their processes are gone: `_resume_interrupted` relaunches
        store.snapshot_interval = self.checkpoint_interval
        store.begin(self.n_workers, background=self.backend.clock_kind is ClockKind.WALL)
        self._open = store
        self._snapshot(store)  # a consistent point: what was replayed needs no replay again

    def result(self) -> TuningResult:
        best = self.trials.get(self.best_trial_id) if self.best_trial_id is not None else None
        return TuningResult(
            reason=self.end_reason or _interrupted(self.interruption),
            status=self.status,
            best_trial_id=self.best_trial_id,
            best_config=dict(best.config) if best else None,
            best_value=self._sign * self._best_min if best else None,
        )

    def now(self) -> float:
        """The experiment's clock: the backend's time plus the time of earlier sessions."""
        return self._time_offset + self.backend.now()

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "metric": self.scheduler.metrics if len(self.scheduler.metrics) > 1 else self._metric,
            "mode": self.scheduler.modes if len(self.scheduler.modes) > 1 else self.scheduler.mode,
            "resource_attr": self.scheduler.resource_attr,
            "constraint": self._constraint,
            "time": self.now(),
            "time_offset": self._time_offset,
            "n_workers": self.n_workers,
            "exact": self._exact_backend,
            "next_trial_id": self._next_trial_id,
            "num_results": self.status.num_results,
            "num_failures": self.status.num_trials_failed,
            "best_trial_id": self.best_trial_id,
            "best_value": None if self.best_trial_id is None else self._best_min,
            "trial_best": {str(k): v for k, v in self._trial_best.items()},
            "costs": {str(k): v for k, v in self._costs.items()},
            "end_reason": self.end_reason,
            "trials": self._trials_state(),
            "scheduler": self.scheduler.state_dict(),
            "backend": self.backend.state_dict(),
        }

    def _trials_state(self) -> dict[str, Any]:
        """Each trial's `to_dict()` by id; a trial that ended (stopped, completed, failed) never
        changes again, so its entry is made once (snapshots of long experiments)."""
        entries, ended = {}, self._ended_entries
        for tid, trial in self.trials.items():
            entry = ended.get(tid)
            if entry is None:
                entry = (str(tid), trial.to_dict())
                if trial.status in ENDED_STATUSES:
                    ended[tid] = entry
            entries[entry[0]] = entry[1]
        return entries

    def save(self) -> None:
        """Snapshot the state into the store and wait until it is written."""
        if self._open is not None:
            self._open.snapshot(self.state_dict(), self.trials, wait=True)

    def _snapshot(self, store: ExperimentStore) -> None:
        """Hand a snapshot to the store's writer (a real run's thread: the tuner does not
        wait; a simulation writes it now)."""
        store.snapshot(self.state_dict(), self.trials)

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> str:
        while True:
            reason = self._step()
            if reason:
                return reason

    def _step(self) -> str | None:
        """One round: check the stopping criterion, fill the workers, handle one poll."""
        self._between_events = True
        self._update_status()
        replaying = self._replay_batches is not None  # the journal shows the run went on
        if self._missing_side and not replaying:  # before a limit can end the run unchecked
            self._check_side_metrics()
        reason = None if replaying else self.stop_criterion.should_stop(self.status,
                                                                         self.scheduler.mode)
        if reason:
            return reason
        if not replaying and self.max_failures is not None and \
                self.status.num_trials_failed >= self.max_failures:
            self.end_reason = (f"too many failures: {self.status.num_trials_failed} trials "
                               f"failed (max_failures={self.max_failures})")
            raise TooManyFailuresError(
                f"{self.end_reason}; last failure: {one_line(self._last_failure())}"
            )
        if self._cost_unchecked and not replaying:
            self._check_cost()
        self._between_events = False
        self._fill_workers()
        if not self._running and not replaying:
            if not self.stop_criterion.may_start_trial(self.status):
                return f"max_trials_started {self.stop_criterion.max_trials_started} reached"
            return "no trial running and the scheduler has nothing to start"
        events = self._poll()
        for index, event in enumerate(events):
            self._event_index = index
            self._handle(event)
        self._event_index = None
        if self._open is not None and self._open.snapshot_due():
            with interrupts.held():  # a kill waits until the snapshot is whole (a simulation
                self._snapshot(self._open)  # writes it here)
        return None

    def _poll(self) -> list[TrialEvent]:
        """The backend's next events, journaled before anything acts on them; while
        replaying, the journal's next batch (checked against a backend that restores exactly)."""
        if self._replay_batches is not None:
            return self._replay_poll(self._replay_batches)
        self._between_events = True  # a signal usually comes while poll() waits
        # A kill (its signal handler's exception) is held until the events poll() took are
        # journaled: raised in between, it would lose them (drain() cannot return events a
        # cut-short poll took off its queue but had not recorded yet); the signal wakes a
        # waiting poll. Raised after a non-empty batch, the state is not saved: the resume
        # replays that batch.
        with interrupts.held(wake=self.backend.wake):
            events = self.backend.poll()
            self._between_events = False
            events = self._journaled(events)
            self._between_events = not events
        return events

    def _journaled(self, events: list[TrialEvent]) -> list[TrialEvent]:
        """`events` less the reports an earlier session already had, journaled."""
        if self._reported_upto:
            events = [e for e in events if not self._already_reported(e)]
        for event in events:  # before the journal, the store or any view sees them
            mask_event(event)
        if events and self._open is not None:
            self._open.journal_events(events, self._time_offset)
        return events

    def _journal_in_flight(self) -> None:
        """After a kill: the backend ends the trials and hands over what they reported that no
        poll returned (`drain()`); journaled, so the resume replays it, and a trial resumed
        from a checkpoint it saved just before its last report does not miss that report."""
        if self._replay_batches is None:
            events = self.backend.drain()
            self._journaled(events)
            for event in events:  # counted and shown as received; decided on the resume
                trial = self.trials.get(event.trial_id)
                if event.kind == EventKind.RESULT and trial is not None and \
                        trial.status == TrialStatus.RUNNING:
                    metrics = dict(event.metrics or {})
                    value = metrics.get(self._metric)
                    self._count(trial, metrics, value if _is_finite_number(value) else None)
                    self._emit("on_trial_result", trial, TrialResult(
                        trial.trial_id, metrics, self._time_offset + event.time),
                        Decision.CONTINUE)

    def _fill_workers(self) -> None:
        while len(self._running) < self.n_workers:
            suggestion = self.scheduler.suggest(self._next_trial_id)
            if suggestion is None:
                return
            if suggestion.resume_trial_id is not None:
                trial = self.trials[suggestion.resume_trial_id]
                if trial.status != TrialStatus.PAUSED:
                    raise RuntimeError(
                        f"scheduler asked to resume trial {trial.trial_id}, which is {trial.status}"
                    )
                if suggestion.config is not None:
                    trial.config = dict(suggestion.config)
                trial.status = TrialStatus.RUNNING
                self._running.add(trial.trial_id)
                with interrupts.held():  # a kill waits until the backend recorded the launch
                    self.backend.resume(trial)
                self._emit("on_trial_start", trial)
                continue
            self._update_status()
            if not self.stop_criterion.may_start_trial(self.status):
                return
            self._start_new(suggestion.config or {}, suggestion.checkpoint_from)

    def _start_new(self, config: dict[str, Any], checkpoint_from: int | None) -> None:
        journaled = self._replay_starts.pop(self._next_trial_id, None)
        if journaled is not None:  # the trial as it was started before the replay
            config, checkpoint_from = journaled[1], journaled[2]
        self.scheduler.config_space.validate(config)
        trial = Trial(
            trial_id=self._next_trial_id,
            config=dict(config),
            status=TrialStatus.RUNNING,
            start_time=self.now(),
            checkpoint_from=checkpoint_from,
        )
        self._next_trial_id += 1
        self.trials[trial.trial_id] = trial
        self._running.add(trial.trial_id)
        self.status.num_trials_started += 1
        if self.store is not None and self.backend.clock_kind is ClockKind.WALL:
            self.store.write_trial_config(trial)
        if self._open is not None:
            self._open.journal_start(trial)
        # a kill waits until the backend recorded what it launched (raised in between, the
        # launch would run on unknown to `drain()` and `close()`)
        with interrupts.held():
            self.backend.start(trial)
        self.scheduler.on_trial_add(trial)
        self._emit("on_trial_start", trial)

    def _handle(self, event: TrialEvent) -> None:
        trial = self.trials.get(event.trial_id)
        if trial is None or trial.status != TrialStatus.RUNNING:
            return  # a late event of a trial that was stopped or paused meanwhile
        if event.kind == EventKind.RESULT:
            self._on_result(trial, event)
        elif event.kind == EventKind.COMPLETED:
            final_cost = (event.metrics or {}).get(self.stop_criterion.cost_attr)
            if final_cost is not None and _is_finite_number(final_cost):
                self._costs[trial.trial_id] = float(final_cost)  # e.g. a job's billed cost
            if self._missing_metrics and trial.num_results:
                self._check_metrics(trial, {}, ended=True)
            self._finish(trial, TrialStatus.COMPLETED, event.time)
            last = TrialResult(trial.trial_id, trial.last_result, event.time) \
                if trial.last_result is not None else None
            self.scheduler.on_trial_complete(trial, last)
            self._emit("on_trial_complete", trial)
        elif event.kind == EventKind.FAILED:
            self._fail(trial, event.reason or "unknown failure", event.time)

    def _on_result(self, trial: Trial, event: TrialEvent) -> None:
        metrics = dict(event.metrics or {})
        if self._missing_metrics:
            self._check_metrics(trial, metrics)
        if self._missing_side:
            self._keys_reported.update(dict.fromkeys(metrics))
            for name in self._missing_side.keys() & metrics.keys():
                del self._missing_side[name]
        for name in self.scheduler.metrics:  # a NaN or inf in any objective fails the trial
            value = metrics.get(name)
            if value is not None and not _is_finite_number(value):
                self._fail(trial, f"reported a non-finite {name}: {value!r}", event.time)
                self.backend.stop(trial.trial_id)
                return
        value = metrics.get(self._metric)
        result = TrialResult(trial.trial_id, metrics, self._time_offset + event.time)
        self._count(trial, metrics, value)
        decision = (
            self.scheduler.on_trial_result(trial, result) if value is not None else Decision.CONTINUE
        )
        # a STOP at max_t ends a trial that ran its course: COMPLETED, not stopped early
        done = decision == Decision.STOP and self.scheduler.reached_max_t(metrics)
        if decision == Decision.STOP:
            trial.status = TrialStatus.COMPLETED if done else TrialStatus.STOPPED
        elif decision == Decision.PAUSE:
            trial.status = TrialStatus.PAUSED
        if self.store is not None:
            # the store's own columns win over metrics of the same name (backends avoid them)
            self.store.record(
                {**metrics, "trial_id": trial.trial_id, "time": result.time,
                 "status": trial.status.value, "decision": decision.value}, self._event_index
            )
        self._emit("on_trial_result", trial, result, decision)
        if decision == Decision.STOP:
            self.backend.stop(trial.trial_id)
            self._finish(trial, trial.status, event.time)
            self._emit("on_trial_complete", trial)
        elif decision == Decision.PAUSE:
            self.backend.pause(trial.trial_id)
            self._finish(trial, TrialStatus.PAUSED, event.time)
            self._emit("on_trial_complete", trial)

    def _count(self, trial: Trial, metrics: dict[str, Any], value: Any) -> None:
        """A report's place in the trial, the counts, the best values and the costs."""
        trial.last_result = metrics
        trial.num_results += 1
        self.status.num_results += 1
        if value is not None and is_feasible(metrics, self._constraint):
            objective = self._sign * float(value)
            previous = self._trial_best.get(trial.trial_id, math.inf)
            self._trial_best[trial.trial_id] = min(previous, objective)
            if objective < self._best_min:
                self._best_min = objective
                self.best_trial_id = trial.trial_id
        cost = metrics.get(self.stop_criterion.cost_attr)
        if cost is not None and _is_finite_number(cost):
            self._costs[trial.trial_id] = float(cost)

    def _check_metrics(self, trial: Trial, metrics: Mapping[str, Any], ended: bool = False) -> None:
        """Fail fast on a metric no trial reports (see `MetricNotReportedError`): once
        `METRIC_CHECK_TRIALS` trials (fewer with fewer workers) reported
        `METRIC_CHECK_REPORTS` times each without it, or a trial ended without it."""
        self._missing_metrics -= metrics.keys()
        self._keys_reported.update(dict.fromkeys(metrics))
        if not self._missing_metrics:
            return
        counts = {t.trial_id: t.num_results + (t is trial and not ended)
                  for t in self.trials.values()}
        reporting = sorted(tid for tid, n in counts.items() if n >= METRIC_CHECK_REPORTS)
        if not ended and len(reporting) < min(METRIC_CHECK_TRIALS, self.n_workers):
            return
        keys = list(self._keys_reported)
        text = []
        for metric in sorted(self._missing_metrics):
            close = difflib.get_close_matches(metric, keys, 1)
            text.append(repr(metric) + (f" (did you mean {close[0]!r}?)" if close else ""))
        trials = ", ".join(map(str, reporting or [trial.trial_id]))
        raise MetricNotReportedError(
            f"spec.metric: no trial reports {', '.join(text)}; the reports of trial(s) "
            f"{trials} carry {keys}")

    def _check_cost(self) -> None:
        """Fail fast when `max_cost` can never be reached: a trial finished and no trial has
        reported `cost_attr` (else the experiment would run without end)."""
        if self._costs:
            self._cost_unchecked = False
            return
        if not self.status.num_trials_completed:
            return
        finished = [t for t in self.trials.values()
                    if t.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED)]
        attr = self.stop_criterion.cost_attr
        keys = list(self._keys_reported)
        close = difflib.get_close_matches(attr, keys, 1)
        raise MetricNotReportedError(
            f"spec.stop.cost_attr: max_cost sums the trials' {attr!r}, and no trial reports it"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; trial {finished[0].trial_id} finished with reports carrying {keys}")

    def _check_side_metrics(self) -> None:
        """Fail fast on a constraint or cost the scheduler reads (`Scheduler.side_metrics`)
        that no trial reports: once `METRIC_CHECK_TRIALS` trials (fewer with fewer workers)
        finished with reports (a trial may report it with its last report only). Else the
        method would run as if it were not set (unconstrained, not cost-aware)."""
        finished = [t.trial_id for t in self.trials.values() if t.num_results and
                    t.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED)]
        if len(finished) < min(METRIC_CHECK_TRIALS, self.n_workers):
            return
        metric, option = min(self._missing_side.items(), key=lambda item: item[1])
        keys = list(self._keys_reported)
        close = difflib.get_close_matches(metric, keys, 1)
        raise MetricNotReportedError(
            f"spec.scheduler_options.{option}: no trial reports {metric!r}"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; trial(s) {', '.join(map(str, finished[:METRIC_CHECK_TRIALS]))} finished "
            f"with reports carrying {keys}")

    def _finish(self, trial: Trial, status: TrialStatus, time: float) -> None:
        trial.status = status
        trial.end_time = self._time_offset + time
        self._running.discard(trial.trial_id)
        if status in (TrialStatus.COMPLETED, TrialStatus.STOPPED):
            self.status.num_trials_completed += 1

    def _fail(self, trial: Trial, reason: str, time: float) -> None:
        trial.failure_reason = mask_text(reason)
        logger.warning("trial %s failed: %s", trial.trial_id, one_line(trial.failure_reason))
        if self._trial_best.pop(trial.trial_id, None) is not None \
                and self.best_trial_id == trial.trial_id:
            self._new_best()  # a failed trial is never the best
        self.status.num_trials_failed += 1
        self._finish(trial, TrialStatus.FAILED, time)
        self.scheduler.on_trial_error(trial)
        self._emit("on_trial_error", trial)

    def _new_best(self) -> None:
        """The best of the trials that did not fail."""
        if not self._trial_best:
            self.best_trial_id, self._best_min = None, math.inf
            return
        self.best_trial_id = min(self._trial_best, key=self._trial_best.__getitem__)
        self._best_min = self._trial_best[self.best_trial_id]

    def _update_status(self) -> None:
        s = self.status
        s.time = self.now()
        s.num_trials_running = len(self._running)
        s.best_value = None if self.best_trial_id is None else self._sign * self._best_min
        s.total_cost = sum(self._costs.values())

    def _last_failure(self) -> str:
        failed = [t for t in self.trials.values() if t.status == TrialStatus.FAILED]
        return f"trial {failed[-1].trial_id}: {failed[-1].failure_reason}" if failed else "none"

    # -- resume and shutdown ---------------------------------------------------------------
    def _restore(self, state: Mapping[str, Any]) -> None:
        self.trials = {int(k): Trial.from_dict(v) for k, v in state["trials"].items()}
        self._ended_entries = {}
        self._next_trial_id = int(state["next_trial_id"])
        self.status.num_results = int(state.get("num_results", 0))
        self.status.num_trials_failed = int(state.get("num_failures", 0))
        self.status.num_trials_started = len(self.trials)
        self.status.num_trials_completed = sum(
            t.status in (TrialStatus.COMPLETED, TrialStatus.STOPPED) for t in self.trials.values()
        )
        self.best_trial_id = state.get("best_trial_id")
        if self.best_trial_id is not None or self.status.num_results:
            self._missing_metrics = set()  # checked in the session that made the reports
        if state.get("best_value") is not None:
            self._best_min = float(state["best_value"])
        self._costs = {int(k): float(v) for k, v in state.get("costs", {}).items()}
        self._trial_best = {int(k): float(v) for k, v in state.get("trial_best", {}).items()}
        self.scheduler.load_state_dict(state["scheduler"])
        if "backend" in state:
            self.backend.load_state_dict(state["backend"])
        self._exact = self._exact_backend and bool(state.get("exact"))
        if self._exact:  # the backend runs the snapshot's running trials on its own clock
            self._time_offset = float(state.get("time_offset", 0.0))
        else:  # this session's clock starts again at 0
            self._time_offset = float(state["time"]) - self.backend.now()
        self._running = {tid for tid, t in self.trials.items() if t.status == TrialStatus.RUNNING}
        self._snapshot_n_workers = state.get("n_workers")
        logger.info("resuming experiment: %d trials, t=%.1fs", len(self.trials), self.now())

    def _replay(self, records: list[dict[str, Any]]) -> None:
        """Bring the tuner to where the journal ends: run the loop on the journaled polls.

        A backend that restores exactly (a simulation) runs along and must produce the same
        events; any other backend is set aside (nothing is launched) and its running trials
        are relaunched from their checkpoints afterwards (`_resume_interrupted`). Callbacks
        are not called: the tracker reconciles with the store at `on_tuning_start`."""
        self._replay_batches = [r for r in records if "b" in r or "n" in r]
        self._replay_starts = {r["s"][0]: r["s"] for r in records if "s" in r}
        polls = [r["b"] for r in self._replay_batches if "b" in r]
        logger.info("replaying %d journaled polls", len(polls))
        configured = self.n_workers  # each session ran with its own n_workers (`n` records)
        self.n_workers = int(self._snapshot_n_workers or configured)
        self._replay_session_records()
        if not self._exact:
            last = max([self.now(), *(e[2] for b in polls for e in b)])
            self._replay_live, self.backend = self.backend, _ReplayBackend(self.now())
            self._time_offset = 0.0
        self._muted = True
        try:
            while self._replay_batches:
                self._step()
        finally:
            self._muted = False
            self._replay_batches = None
            self._replay_starts = {}
            self.n_workers = configured
            if self._replay_live is not None:
                self.backend, self._replay_live = self._replay_live, None
                self._time_offset = last - self.backend.now()

    def _replay_session_records(self) -> None:
        """Apply the `n` records (a session began, with n_workers) that come next in the
        replay. (Reports that session dropped as repeats were never journaled.)"""
        queue = self._replay_batches
        while queue and "n" in queue[0]:
            self.n_workers = int(queue.pop(0)["n"])

    def _replay_poll(self, queue: list[dict[str, Any]]) -> list[TrialEvent]:
        batch = queue.pop(0)["b"]
        self._replay_session_records()
        events = [TrialEvent(EventKind(kind), tid, time - self._time_offset, metrics=metrics,
                             reason=reason)
                  for kind, tid, time, metrics, reason, *_ in batch]
        if isinstance(self.backend, _ReplayBackend):
            self.backend.clock = max([self.backend.clock, *(e.time for e in events)])
            return events
        live = self.backend.poll()
        if [_event_key(e) for e in live] != [_event_key(e) for e in events]:
            raise ReplayMismatchError(
                "resume: the simulated experiment does not replay as journaled (were its "
                "backend_options or the benchmark changed?); restore them, or start a new "
                f"experiment. Journaled {batch[:1]}, simulated {[_event_key(e) for e in live][:1]}")
        return live

    def _resume_interrupted(self) -> None:
        """Trials that were running when the last session died continue from their checkpoint;
        the reports they repeat (a checkpoint older than their last journaled report) are
        dropped."""
        for trial in self.trials.values():
            if trial.status == TrialStatus.RUNNING and trial.trial_id not in self._running:
                self._running.add(trial.trial_id)
                with interrupts.held():  # as in `_start_new`
                    if trial.num_results == 0 and trial.checkpoint_from is None:
                        self.backend.start(trial)
                    else:
                        self._mark_relaunched(trial)
                        self.backend.resume(trial)
                self._emit("on_trial_start", trial)

    @property
    def _resource_attr(self) -> str:
        """What counts a trial's progress: the scheduler's resource, else `epoch`."""
        return self.scheduler.resource_attr or "epoch"

    def _mark_relaunched(self, trial: Trial) -> None:
        """Its reports up to its last journaled resource (epoch) are repeats from now on."""
        done = (trial.last_result or {}).get(self._resource_attr)
        if _is_finite_number(done):
            self._reported_upto[trial.trial_id] = float(done)

    def _already_reported(self, event: TrialEvent) -> bool:
        """Whether a relaunched trial repeats a report the journal holds: then it is dropped
        before it is journaled (the trial's first new report ends the check)."""
        upto = self._reported_upto.get(event.trial_id)
        if upto is None or event.kind != EventKind.RESULT:
            return False
        resource = (event.metrics or {}).get(self._resource_attr)
        if _is_finite_number(resource) and float(resource) <= upto:
            logger.info("trial %s: dropping a repeated report (%s)", event.trial_id, resource)
            return True
        del self._reported_upto[event.trial_id]
        return False

    def _shutdown(self, finished: bool) -> None:
        try:
            # a second kill (Ctrl-C twice) waits until the store has the state and the trials'
            # last reports, then is raised (ending the trials, `backend.close()`, it need not)
            with interrupts.held():
                try:
                    self._record_end(finished)
                finally:
                    if self.store is not None:
                        self.store.close()
        finally:
            self._open = None
            self.backend.close()
            self._emit("on_tuning_end", self)

    def _record_end(self, finished: bool) -> None:
        """The trials still running stopped (a normal end), the last snapshot, and after an
        interruption the trials' last reports and what interrupted the run, journaled."""
        if finished:
            for trial_id in sorted(self._running):
                trial = self.trials[trial_id]
                self.backend.stop(trial_id)
                self._finish(trial, TrialStatus.STOPPED, self.backend.now())
                self._emit("on_trial_complete", trial)
        # Interrupted (a kill: Ctrl-C, a signal, a cancellation; or an error), the state is
        # saved only if the interruption found it between two events (waiting in a poll, or
        # at the top of a round: too many failures); in the middle of handling an event or
        # starting trials (a scheduler's bug, a metric no trial reports, ...) it is not, and
        # the resume replays the journal from the last snapshot, as after a SIGKILL. After a
        # kill the trials' last reports are journaled.
        killed = not finished and not isinstance(self.interruption, Exception)
        if self._event_index is not None and self._open is not None:
            # cut short while handling a poll's events: the decisions made so far would read
            # as the batch's and hide its later reports from the views
            self._open.discard_decisions()
        self._update_status()
        if self._open is not None and (finished or self._between_events):
            try:
                self.save()
            except StoreError as err:
                if self.interruption is None:
                    raise
                logger.debug("final snapshot: %s", err)  # the error that ended the run
                # is raised: the user sees one line
        if killed and self._open is not None:
            try:
                self._journal_in_flight()
            except StoreError as err:  # the error that ended the run is raised
                logger.debug("reports after the interruption: %s", err)
            except Exception:  # the kill is what the caller hears of; those reports are lost
                logger.warning("could not journal the trials' last reports", exc_info=True)
        if not finished and self._open is not None:
            self._journal_exit()

    def _journal_exit(self) -> None:
        """Journal what interrupted the run (the views say why it did not end)."""
        err = self.interruption
        if err is None or self._open is None:
            return
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
        try:
            self._open.journal_exit(one_line(text), isinstance(err, Exception))
        except StoreError as store_err:  # the error that ended the run is raised
            logger.debug("why the run ended: %s", store_err)

    def _emit(self, hook: str, *args: Any) -> None:
        if self._muted:
            return
        for callback in self.callbacks:
            try:
                getattr(callback, hook)(*args)
            except Exception:  # a broken callback must not end the experiment
                logger.exception("callback %s.%s failed", type(callback).__name__, hook)


class _ReplayBackend(TrialBackend):
    """Stands in for a real backend while the journal is replayed: launches nothing; its
    clock is the time of the last replayed poll."""

    def __init__(self, clock: float):
        self.clock = clock

    def start(self, trial: Trial) -> None: ...
    def pause(self, trial_id: int) -> None: ...
    def resume(self, trial: Trial) -> None: ...
    def stop(self, trial_id: int) -> None: ...
    def poll(self) -> list[TrialEvent]: return []
    def now(self) -> float: return self.clock
    def close(self) -> None: ...


def _event_key(event: TrialEvent) -> tuple[Any, ...]:
    return (event.kind.value, event.trial_id, event.time, event.metrics, event.reason)


def _interrupted(err: BaseException | None) -> str:
    if err is None:
        return "interrupted"
    return f"interrupted by {type(err).__name__}" + (f": {err}" if str(err) else "")


def _is_finite_number(value: Any) -> TypeGuard[float]:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
