"""What persisting one trial end costs as an experiment grows: 100, 1,000, 10,000, 20,000 trials.

The real tuner and the real experiment store (journal, snapshots, results.parquet, state.json
in a temporary folder) with random search over two hyperparameters; the backend is a fake that
ends each trial at once with one report, so almost all the time left is the tuner's and the
store's. Measured on the tuner's thread: journaling the trial's start and its poll, buffering
its row, deciding on and building snapshots (state_dict + JSON), averaged over the trial ends
in (N/2, N]. The fake backend is a simulation, so its snapshots (results.parquet, state.json,
fsyncs) are written on the tuner's thread and counted there; that part is also shown on its
own (a real run's writer thread does it and the tuner does not wait). Target: at most 1 ms per
trial end and flat; the last line is `store_cost_growth=<cost at 20,000 / cost at 100>` (target
at most 2).

    .venv/bin/python benchmarks/store_scale.py
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

from hpo_core.backend import ClockKind, TrialBackend
from hpo_core.registry import build_scheduler
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore
from hpo_core.trial import EventKind, Trial, TrialEvent
from hpo_core.tuner import Tuner

MARKS = (100, 1_000, 10_000, 20_000)
SPACE = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0},
         "y": {"type": "loguniform", "lower": 1e-4, "upper": 1.0}}


class InstantBackend(TrialBackend):
    """Each trial reports once and completes in the same poll, one trial per poll."""

    clock_kind = ClockKind.SIMULATED  # no trial folders: only the store's own files are written

    def __init__(self) -> None:
        self.clock = 0.0
        self.queue: list[Trial] = []

    def start(self, trial: Trial) -> None:
        self.queue.append(trial)

    resume = start

    def pause(self, trial_id: int) -> None: ...
    def stop(self, trial_id: int) -> None: ...

    def poll(self) -> list[TrialEvent]:
        if not self.queue:
            return []
        trial = self.queue.pop(0)
        self.clock += 1.0
        loss = (trial.config["x"] - 0.3) ** 2 + trial.config["y"]
        return [TrialEvent(EventKind.RESULT, trial.trial_id, self.clock, {"epoch": 1, "loss": loss}),
                TrialEvent(EventKind.COMPLETED, trial.trial_id, self.clock)]

    def now(self) -> float:
        return self.clock

    def close(self) -> None: ...


class TimedStore(ExperimentStore):
    """The real store, with the time of its calls on the tuner's thread and on its writer."""

    def __init__(self, root: str, name: str):
        super().__init__(root, name)
        self.tuner_ns = 0
        self.writer_ns = 0

    def _timed(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            return method(*args, **kwargs)
        finally:
            self.tuner_ns += time.perf_counter_ns() - start

    def journal_start(self, trial: Trial) -> None:
        self._timed(super().journal_start, trial)

    def journal_events(self, events: Any, time_offset: float) -> None:
        self._timed(super().journal_events, events, time_offset)

    def record(self, row: dict[str, Any], index: int | None = None) -> None:
        self._timed(super().record, row, index)

    def snapshot_due(self) -> bool:
        return self._timed(super().snapshot_due)

    def _write_snapshot(self, job: Any, writer: Any) -> None:
        start = time.perf_counter_ns()
        try:
            super()._write_snapshot(job, writer)
        finally:
            self.writer_ns += time.perf_counter_ns() - start


class TimedTuner(Tuner):
    """Counts building a snapshot (state_dict, JSON) as the store's cost; samples at marks."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.samples: dict[int, tuple[int, int]] = {}

    @property
    def timed(self) -> TimedStore:
        assert isinstance(self.store, TimedStore)
        return self.store

    def _snapshot(self, store: ExperimentStore) -> None:
        self.timed._timed(super()._snapshot, store)

    def _finish(self, trial: Trial, status: Any, time: float) -> None:
        super()._finish(trial, status, time)
        done = self.status.num_trials_completed
        if done in MARKS or done * 2 in MARKS:
            self.samples[done] = (self.timed.tuner_ns, self.timed.writer_ns)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="store-scale-") as root:
        store = TimedStore(root, "scale")
        scheduler = build_scheduler("random", SPACE, "loss", "min", 0)
        tuner = TimedTuner(scheduler, InstantBackend(), StoppingCriterion(
            max_trials_completed=MARKS[-1]), n_workers=4, store=store)
        start = time.perf_counter()
        tuner.run()
        wall = time.perf_counter() - start
        samples = tuner.samples
    print(f"{MARKS[-1]} trial ends in {wall:.1f} s (tuner, random search, store, fake backend)")
    print(f"{'trials':>7}  {'store ms per trial end':>22}  {'of which writing':>16}")
    costs = {}
    for mark in MARKS:
        (tuner_a, writer_a), (tuner_b, writer_b) = samples[mark // 2], samples[mark]
        ends = mark - mark // 2
        costs[mark] = (tuner_b - tuner_a) / ends / 1e6
        print(f"{mark:>7}  {costs[mark]:>22.4f}  {(writer_b - writer_a) / ends / 1e6:>16.4f}")
    print(f"store_cost_growth={costs[MARKS[-1]] / costs[MARKS[0]]:.2f}")


if __name__ == "__main__":
    main()
