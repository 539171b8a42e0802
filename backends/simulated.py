"""The simulated backend: replays a blackbox's learning curves on a simulated clock.

A trial started at time t reports fidelity f at t + elapsed(f), where elapsed(f) is the
blackbox's cumulative time column; each report is
`{fidelity_name: f, <every objective>..., time_attr: elapsed(f)}`. After its last fidelity a
trial COMPLETES (at the time of its last report). `poll()` pops one event per call, in time
order (ties in the order they were scheduled), so the tuner applies its decisions in time
order; it never sleeps, and scheduler compute time never leaks into simulated time.

Pausing keeps the trial's progress like a checkpoint: resumed at time r from fidelity f, its
next report comes at r + elapsed(f') - elapsed(f). The resume point is read from
`trial.last_result[fidelity_name]`, so a fresh backend after a crash resumes correctly. A trial
with `checkpoint_from` (PBT) continues from the source trial's last reported fidelity, along
its own config's curve.

Configs off the table get the curve of their nearest tabulated config (see
`backends.blackbox.surrogate`); with `surrogate=None` such a trial fails. A model blackbox
(`backends.blackbox.yahpo.YahpoBlackbox`) predicts the curve of any config instead.
Deterministic: the same seed and the same decisions give the same events. The seed picks, per
trial, which of the table's seeds is replayed (nothing is added to the tabulated values).

Delays (seconds on the simulated clock, all 0 by default), like a real backend's overheads:

* `start_delay`: a new trial's first report comes that much later (process start, data load);
* `resume_delay`: a resumed trial's next report comes that much later (loading its checkpoint);
* `stop_delay` / `pause_delay`: a stopped / paused trial holds its worker that much longer
  (shutting down, saving its checkpoint). The next trial started or resumed on the freed worker
  (the earliest such worker first) begins only when it is free.

So with one worker, a trial stopped at t is followed by a trial whose first report comes at
t + stop_delay + start_delay + elapsed(first fidelity).

Diverged curves: where a curve has a time but its objective is NaN (or infinite), the report
carries that value, and the tuner fails the trial with the reason
`reported a non-finite <metric>: nan`, the same rule as for a real trial that reports NaN (so
`max_failures` counts it alike). A NaN *time* marks fidelities a curve does not reach: the trial
completes after its last reached fidelity.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

import numpy as np

from backends.blackbox.blackbox import Blackbox, BlackboxError
from backends.blackbox.surrogate import CurveSurrogate, NearestNeighbourSurrogate, TableLookup
from backends.blackbox.yahpo import YahpoBlackbox
from hpo_core.backend import ClockKind, Fidelity, TrialBackend
from hpo_core.space import ConfigSpace
from hpo_core.trial import EventKind, Trial, TrialEvent

SURROGATES = ("nearest", None)


class _Curve:
    """One curve prepared for replay: the reported rows, their fidelities and elapsed times."""

    __slots__ = ("values", "fidelities", "times")

    def __init__(self, values: np.ndarray, fidelities: list[Any], times: list[float]):
        self.values = values
        self.fidelities = fidelities
        self.times = times


class _Run:
    """A trial in flight: its curve (and the config it came from), the clock value of its
    elapsed-time zero, its next row."""

    __slots__ = ("trial_id", "curve", "base", "pos", "failure", "config")

    def __init__(self, trial_id: int, curve: _Curve | None, base: float, pos: int,
                 failure: str | None = None, config: dict[str, Any] | None = None):
        self.trial_id = trial_id
        self.curve = curve
        self.base = base
        self.pos = pos
        self.failure = failure
        self.config = config


class SimulatedBackend(TrialBackend):
    """Runs trials by looking their results up in a blackbox.

    Args:
        blackbox: the tabulated benchmark, or a model blackbox (YAHPO) that predicts curves.
        seed: picks the table seed replayed for each trial (tables with several seeds).
        objectives: the objectives to report (default: all; the time objective always).
        max_fidelity: report fidelities up to this value only (the trial completes there).
        surrogate: for tables: "nearest" (configs off the table get their nearest neighbour's
            curve) or None (they fail). Model blackboxes predict every config's curve.
        k: neighbours averaged by the nearest-neighbour surrogate.
        start_delay, stop_delay, pause_delay, resume_delay: simulated seconds (see the module
            doc).
    """

    clock_kind = ClockKind.SIMULATED
    restores_running_trials = True

    def __init__(
        self,
        blackbox: Blackbox | YahpoBlackbox,
        seed: int = 0,
        objectives: Sequence[str] | None = None,
        max_fidelity: float | None = None,
        surrogate: str | None = "nearest",
        k: int = 1,
        start_delay: float = 0.0,
        stop_delay: float = 0.0,
        pause_delay: float = 0.0,
        resume_delay: float = 0.0,
    ):
        super().__init__()
        if surrogate not in SURROGATES:
            raise BlackboxError(f"surrogate: must be one of {SURROGATES}, got {surrogate!r}")
        self.start_delay = _delay("start_delay", start_delay)
        self.stop_delay = _delay("stop_delay", stop_delay)
        self.pause_delay = _delay("pause_delay", pause_delay)
        self.resume_delay = _delay("resume_delay", resume_delay)
        self.blackbox = blackbox
        self.seed = int(seed)
        names = list(objectives) if objectives is not None else list(blackbox.objective_names)
        unknown = [n for n in names if n not in blackbox.objective_names]
        if unknown:
            raise BlackboxError(
                f"objectives: {unknown} are not objectives of {blackbox.name!r}; it has "
                f"{blackbox.objective_names}"
            )
        if blackbox.time_attr not in names:
            names.append(blackbox.time_attr)
        self._names = names
        self._columns = [blackbox.objective_index(n) for n in names]
        self._time_column = names.index(blackbox.time_attr)
        fidelities = blackbox.fidelity_values
        if max_fidelity is not None:
            if isinstance(max_fidelity, bool) or not isinstance(max_fidelity, int | float):
                raise BlackboxError(f"max_fidelity: must be a number, got {max_fidelity!r}")
            if max_fidelity < fidelities[0]:
                raise BlackboxError(
                    f"max_fidelity: {max_fidelity!r} is below the first {blackbox.fidelity_name} "
                    f"{fidelities[0]}"
                )
            fidelities = fidelities[fidelities <= max_fidelity]
        self._num_fidelities = len(fidelities)
        self.fidelity_name = blackbox.fidelity_name
        self.fidelity_values: list[Any] = fidelities.tolist()
        self.surrogate: CurveSurrogate
        if isinstance(blackbox, CurveSurrogate):
            self.surrogate = blackbox
        elif surrogate == "nearest":
            self.surrogate = NearestNeighbourSurrogate(blackbox, k)
        else:
            self.surrogate = TableLookup(blackbox)
        self._clock = 0.0
        self._busy: list[float] = []  # heap: when each stopping/pausing worker is free again
        self._seq = 0
        self._heap: list[tuple[float, int, _Run]] = []
        self._runs: dict[int, _Run] = {}
        self._progress: dict[int, Any] = {}  # trial -> last fidelity it reported
        self._curves: dict[Any, _Curve] = {}

    @property
    def max_fidelity(self) -> Any:
        return self.fidelity_values[-1]

    @property
    def reported_names(self) -> list[str]:
        """What every report carries: the fidelity, then the objectives simulated."""
        return [self.fidelity_name, *self._names]

    def config_space(self) -> ConfigSpace:
        """The blackbox's config space."""
        return self.blackbox.config_space

    def fidelity(self) -> Fidelity:
        """The blackbox's fidelity, up to `max_fidelity`."""
        return Fidelity(self.fidelity_name, list(self.fidelity_values))

    # -- the TrialBackend contract -------------------------------------------------------------
    def start(self, trial: Trial) -> None:
        done = None
        if trial.checkpoint_from is not None:
            done = self._progress.get(trial.checkpoint_from)
        self._launch(trial, done, self.start_delay)

    def resume(self, trial: Trial) -> None:
        done = (trial.last_result or {}).get(self.fidelity_name)
        if done is None and trial.checkpoint_from is not None:
            done = self._progress.get(trial.checkpoint_from)
        self._launch(trial, done, self.resume_delay)

    def pause(self, trial_id: int) -> None:
        self._end(trial_id, self.pause_delay)  # its pending event is skipped when it comes up

    def stop(self, trial_id: int) -> None:
        self._end(trial_id, self.stop_delay)

    def poll(self) -> list[TrialEvent]:
        heap, runs = self._heap, self._runs
        while heap:
            time, _, run = heapq.heappop(heap)
            trial_id = run.trial_id
            if runs.get(trial_id) is not run:
                continue  # stopped or paused since this event was scheduled
            self._clock = time
            curve = run.curve
            if run.failure is not None or curve is None:
                del runs[trial_id]
                return [TrialEvent(EventKind.FAILED, trial_id, time, reason=run.failure)]
            pos = run.pos
            if pos < len(curve.times):
                fidelity = curve.fidelities[pos]
                metrics = {self.fidelity_name: fidelity}
                metrics.update(zip(self._names, curve.values[pos].tolist(), strict=True))
                self._progress[trial_id] = fidelity
                run.pos = pos = pos + 1
                self._push(run.base + curve.times[pos] if pos < len(curve.times) else time, run)
                return [TrialEvent(EventKind.RESULT, trial_id, time, metrics)]
            del runs[trial_id]
            return [TrialEvent(EventKind.COMPLETED, trial_id, time)]
        return []

    def max_n_workers(self) -> int:
        """Simulated trials cost an event each: thousands at once are fine."""
        return 4096

    def now(self) -> float:
        return self._clock

    def close(self) -> None:
        self._runs.clear()
        self._heap.clear()
        self._busy.clear()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the clock, the pending events (each running
        trial's config, time zero and next row), the workers still stopping or pausing, and
        each trial's last reported fidelity (what a checkpoint would hold)."""
        pending = [[time, seq, run.trial_id, run.base, run.pos, run.failure, run.config]
                   for time, seq, run in self._heap if self._runs.get(run.trial_id) is run]
        return {"clock": self._clock, "seq": self._seq, "busy": sorted(self._busy),
                "pending": sorted(pending, key=lambda p: (p[0], p[1])),
                "progress": {str(k): v for k, v in self._progress.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; a state without pending events (an older one) restores the
        progress only, and the tuner resumes the running trials."""
        self._progress = {int(k): v for k, v in state.get("progress", {}).items()}
        if "pending" not in state:
            return
        self._clock = float(state["clock"])
        self._seq = int(state["seq"])
        self._busy = [float(t) for t in state.get("busy", [])]
        heapq.heapify(self._busy)
        self._heap, self._runs = [], {}
        for time, seq, trial_id, base, pos, failure, config in state["pending"]:
            curve = None if failure is not None else self._curve(Trial(int(trial_id), config))
            run = _Run(int(trial_id), curve, float(base), int(pos), failure, config)
            self._runs[run.trial_id] = run
            self._heap.append((float(time), int(seq), run))
        heapq.heapify(self._heap)

    # -- internals -----------------------------------------------------------------------------
    def _push(self, time: float, run: _Run) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, run))

    def _table_seed(self, trial_id: int) -> int:
        num_seeds = self.blackbox.num_seeds
        if num_seeds == 1:
            return 0
        return random.Random(self.seed * 1_000_003 + trial_id).randrange(num_seeds)

    def _curve(self, trial: Trial) -> _Curve:
        seed = self._table_seed(trial.trial_id)
        key = self.surrogate.key(trial.config, seed)
        curve = self._curves.get(key)
        if curve is None:
            full = self.surrogate.curve(trial.config, seed)
            values = full[: self._num_fidelities][:, self._columns]
            times = values[:, self._time_column].tolist()
            if any(map(math.isnan, times)):  # a curve that stops early: its reported rows
                valid = [not math.isnan(t) for t in times]
                values = values[valid]
                times = [t for t, ok in zip(times, valid, strict=True) if ok]
                fidelities = [f for f, ok in zip(self.fidelity_values, valid, strict=True) if ok]
            else:
                fidelities = self.fidelity_values  # shared: curves only read it
            curve = _Curve(values, fidelities, times)
            self._curves[key] = curve
        return curve

    def _end(self, trial_id: int, delay: float) -> None:
        if self._runs.pop(trial_id, None) is not None and delay > 0:
            heapq.heappush(self._busy, self._clock + delay)

    def _launch(self, trial: Trial, done: Any, delay: float) -> None:
        now = self._clock
        if self._busy:  # the worker this trial takes is still stopping or pausing a trial
            now = max(now, heapq.heappop(self._busy))
        now += delay
        try:
            curve = self._curve(trial)
        except (BlackboxError, KeyError, TypeError, ValueError) as err:
            run = _Run(trial.trial_id, None, now, 0, failure=f"simulated backend: {err}",
                       config=trial.config)
            self._runs[trial.trial_id] = run
            self._push(self._clock, run)
            return
        pos = 0 if done is None else bisect_right(curve.fidelities, done)
        base = now - (curve.times[pos - 1] if pos > 0 else 0.0)
        run = _Run(trial.trial_id, curve, base, pos, config=trial.config)
        self._runs[trial.trial_id] = run
        self._push(max(now, base + curve.times[pos]) if pos < len(curve.times) else now, run)


def _delay(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value >= 0):
        raise BlackboxError(f"{name}: must be a number of seconds >= 0, got {value!r}")
    return float(value)
