"""A tiny deterministic simulation to drive schedulers through the real Tuner.

`QuadraticBackend` runs trials on a simulated clock (a heap of events): a trial reports
`loss = sum((u - 0.3)^2) + 0.5 / epoch` (u: the config encoded in [0,1]^d) once per epoch, an
epoch taking `1 + u[0]` time units. Trials with `trial_id % 5 == 3` fail at their first epoch;
trials with `trial_id % 7 == 5` end by themselves after epoch 4. `run_simulation` runs a Tuner on it.

Test modules of this folder import it as `sched_sim` (pytest puts the folder on sys.path).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.schedulers.base import Scheduler
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.searchers.random import RandomSearcher
from hpo_core.space import ConfigSpace, choice, loguniform, randint, uniform
from hpo_core.stopping import StoppingCriterion
from hpo_core.trial import Decision, EventKind, Trial, TrialEvent, TrialResult, TrialStatus
from hpo_core.tuner import Tuner, TunerCallback, TuningResult

MAX_T = 9


def make_space() -> ConfigSpace:
    return ConfigSpace({
        "x": uniform(0.0, 1.0),
        "lr": loguniform(1e-4, 1e-1),
        "layers": randint(1, 8),
        "act": choice(["relu", "tanh", "gelu"]),
        "batch": 64,
    })


def losses(space: ConfigSpace, config: Mapping[str, Any], epoch: int) -> tuple[float, float]:
    """Two objectives to minimize, improving with the epoch."""
    u = space.encode(config)
    return (float(np.sum((u - 0.3) ** 2) + 0.5 / epoch),
            float(np.sum((u - 0.7) ** 2) + 0.5 / epoch))


def fails(trial_id: int) -> bool:
    return trial_id % 5 == 3


def last_epoch(trial_id: int, max_t: int) -> int:
    return 4 if trial_id % 7 == 5 else max_t


class QuadraticBackend(TrialBackend):
    """A simulated backend: one event per epoch, ordered by a simulated clock. Each report
    also carries `constraint` (the default `constraint_attr` of `cbo`: <= 0 is feasible),
    the first metric less 1: feasible where it is below 1 (about half the reports)."""

    clock_kind = ClockKind.SIMULATED

    def __init__(self, space: ConfigSpace, metrics: Sequence[str] = ("loss",),
                 sign: float = 1.0, max_t: int = MAX_T):
        self.space, self.metrics, self.sign, self.max_t = space, list(metrics), sign, max_t
        self.t = 0.0
        self._heap: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._gen: dict[int, int] = {}
        self._done: dict[int, int] = {}
        self._trials: dict[int, Trial] = {}

    def _schedule(self, trial_id: int, delay: float) -> None:
        self._gen[trial_id] = self._gen.get(trial_id, 0) + 1
        self._seq += 1
        heapq.heappush(self._heap, (self.t + delay, self._seq, trial_id, self._gen[trial_id]))

    def _epoch_time(self, trial_id: int) -> float:
        return 1.0 + float(self.space.encode(self._trials[trial_id].config)[0])

    def start(self, trial: Trial) -> None:
        self._trials[trial.trial_id] = trial
        source = trial.checkpoint_from
        self._done[trial.trial_id] = self._done.get(source, 0) if source is not None else 0
        self._schedule(trial.trial_id, self._epoch_time(trial.trial_id))

    def resume(self, trial: Trial) -> None:
        self._trials[trial.trial_id] = trial
        self._schedule(trial.trial_id, self._epoch_time(trial.trial_id))

    def pause(self, trial_id: int) -> None:
        self._gen[trial_id] += 1

    stop = pause

    def poll(self) -> list[TrialEvent]:
        while self._heap:
            t, _, tid, gen = heapq.heappop(self._heap)
            if gen != self._gen[tid]:
                continue
            self.t = t
            return self._step(tid)
        return []

    def _step(self, tid: int) -> list[TrialEvent]:
        limit = last_epoch(tid, self.max_t)
        if self._done[tid] >= limit:
            return [TrialEvent(EventKind.COMPLETED, tid, self.t)]
        epoch = self._done[tid] + 1
        if fails(tid):
            return [TrialEvent(EventKind.FAILED, tid, self.t, reason="simulated crash")]
        self._done[tid] = epoch
        values = losses(self.space, self._trials[tid].config, epoch)
        metrics: dict[str, Any] = {"epoch": epoch}
        metrics.update({m: self.sign * v for m, v in zip(self.metrics, values, strict=False)})
        metrics["constraint"] = float(values[0]) - 1.0
        events = [TrialEvent(EventKind.RESULT, tid, self.t, metrics=metrics)]
        if epoch >= limit:
            events.append(TrialEvent(EventKind.COMPLETED, tid, self.t))
        else:
            self._schedule(tid, self._epoch_time(tid))
        return events

    def now(self) -> float:
        return self.t

    def close(self) -> None:
        pass


class TraceCallback(TunerCallback):
    """Records what happened, as plain data (no metric values, so mirrored runs compare)."""

    def __init__(self) -> None:
        self.trace: list[tuple[Any, ...]] = []
        self.decisions: list[Any] = []

    def on_trial_start(self, trial: Trial) -> None:
        self.trace.append(("start", trial.trial_id, json.dumps(trial.config, sort_keys=True),
                           trial.num_results))

    def on_trial_result(self, trial: Trial, result: TrialResult, decision: Decision) -> None:
        self.decisions.append(decision)
        self.trace.append(("result", trial.trial_id, result.metrics["epoch"], str(decision)))

    def on_trial_complete(self, trial: Trial) -> None:
        self.trace.append(("end", trial.trial_id, trial.status.value))

    def on_trial_error(self, trial: Trial) -> None:
        self.trace.append(("error", trial.trial_id))


def run_simulation(scheduler: Scheduler, max_results: int = 45, n_workers: int = 3,
                   sign: float = 1.0) -> tuple[Tuner, TuningResult, TraceCallback]:
    """Run `scheduler` on the quadratic simulation until `max_results` reports."""
    backend = QuadraticBackend(scheduler.config_space, scheduler.metrics, sign=sign)
    trace = TraceCallback()
    tuner = Tuner(scheduler, backend, StoppingCriterion(max_results=max_results),
                  n_workers=n_workers, callbacks=[trace])
    result = tuner.run()
    return tuner, result, trace


def with_fidelity(options: Mapping[str, Any]) -> dict[str, Any]:
    """Flat scheduler options (as a spec gives them) with the fidelity ones gathered into
    `fidelity=`, for building a rung-based scheduler directly."""
    names = FidelityOptions.names()
    return {**{k: v for k, v in options.items() if k not in names},
            "fidelity": FidelityOptions(**{k: v for k, v in options.items() if k in names})}


class Driver:
    """Drives a scheduler by hand, as the tuner would, for hand-computed examples."""

    def __init__(self, scheduler: Scheduler, metric: str = "loss"):
        self.scheduler = scheduler
        self.metric = metric
        self.trials: dict[int, Trial] = {}
        self.next_id = 0

    def suggest(self) -> tuple[str, int] | None:
        """("resume", trial_id) after resuming it, ("start", trial_id) after starting it, or None."""
        suggestion = self.scheduler.suggest(self.next_id)
        if suggestion is None:
            return None
        if suggestion.is_resume:
            trial = self.trials[suggestion.resume_trial_id]
            assert trial.status == TrialStatus.PAUSED, trial
            trial.status = TrialStatus.RUNNING
            return "resume", trial.trial_id
        self.scheduler.config_space.validate(suggestion.config)
        trial = Trial(self.next_id, dict(suggestion.config), TrialStatus.RUNNING)
        self.trials[trial.trial_id] = trial
        self.next_id += 1
        self.scheduler.on_trial_add(trial)
        return "start", trial.trial_id

    def start(self) -> int:
        kind, trial_id = self.suggest()  # type: ignore[misc]
        assert kind == "start"
        return trial_id

    def report(self, trial_id: int, epoch: float, value: float) -> Decision:
        trial = self.trials[trial_id]
        assert trial.status == TrialStatus.RUNNING, trial
        metrics = {"epoch": epoch, self.metric: value}
        trial.last_result, trial.num_results = metrics, trial.num_results + 1
        decision = self.scheduler.on_trial_result(trial, TrialResult(trial_id, metrics, 0.0))
        if decision == Decision.PAUSE:
            trial.status = TrialStatus.PAUSED
        elif decision == Decision.STOP:
            trial.status = TrialStatus.STOPPED
        return decision

    def fail(self, trial_id: int) -> None:
        self.trials[trial_id].status = TrialStatus.FAILED
        self.scheduler.on_trial_error(self.trials[trial_id])

    def complete(self, trial_id: int) -> None:
        trial = self.trials[trial_id]
        trial.status = TrialStatus.COMPLETED
        last = TrialResult(trial_id, trial.last_result, 0.0) if trial.last_result else None
        self.scheduler.on_trial_complete(trial, last)


class RecordingSearcher(RandomSearcher):
    """Random search that records the calls a scheduler makes to it."""

    def __init__(self, *args: Any, intermediate: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.uses_intermediate_results = intermediate
        self.calls: list[tuple[Any, ...]] = []

    def on_trial_start(self, trial_id: int, config: Mapping[str, Any]) -> None:
        self.calls.append(("start", trial_id))

    def on_result(self, trial_id: int, config: Mapping[str, Any], value: float,
                  resource: float | None = None, metrics: Mapping[str, Any] | None = None) -> None:
        self.calls.append(("result", trial_id, value, resource))

    def on_trial_end(self, trial_id: int) -> None:
        self.calls.append(("end", trial_id))

    def on_error(self, trial_id: int) -> None:
        self.calls.append(("error", trial_id))
