"""When an experiment ends: limits on time, trial counts, the metric and cost, OR-combined."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class TuningStatus:
    """What the tuner knows at one moment; the input of a stopping criterion."""

    time: float = 0.0
    num_trials_started: int = 0
    num_trials_completed: int = 0
    num_trials_failed: int = 0
    num_trials_running: int = 0
    num_results: int = 0
    best_value: float | None = None
    total_cost: float = 0.0


@dataclass
class StoppingCriterion:
    """Stop as soon as any limit that is set is reached.

    Args:
        max_time: seconds on the backend's clock (wall time, or simulated time).
        max_trials_started: no new trial starts after this many (paused ones may still resume).
        max_trials_completed: trials that ran to completion or were stopped by the scheduler.
        max_results: reports received in total.
        metric_threshold: stop once the best value reaches it (at most it for mode "min", at
            least it for "max").
        max_cost: the sum over trials of their last reported `cost_attr` value.
        cost_attr: the reported metric that carries a trial's cost so far.
    """

    max_time: float | None = None
    max_trials_started: int | None = None
    max_trials_completed: int | None = None
    max_results: int | None = None
    metric_threshold: float | None = None
    max_cost: float | None = None
    cost_attr: str = "cost"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "cost_attr":
                if not isinstance(value, str) or not value:
                    raise ValueError(f"stop.cost_attr: must be a non-empty string, got {value!r}")
                continue
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or \
                    not math.isfinite(value):
                raise ValueError(f"stop.{f.name}: must be a finite number, got {value!r}")
            if f.name != "metric_threshold" and value <= 0:
                raise ValueError(f"stop.{f.name}: must be positive, got {value!r}")

    @property
    def is_unbounded(self) -> bool:
        return all(
            getattr(self, name) is None
            for name in ("max_time", "max_trials_started", "max_trials_completed", "max_results",
                         "metric_threshold", "max_cost")
        )

    def should_stop(self, status: TuningStatus, mode: str = "min") -> str | None:
        """The reason to stop now, or None to go on."""
        if self.max_time is not None and status.time >= self.max_time:
            return f"max_time {self.max_time:g}s reached"
        if (
            self.max_trials_completed is not None
            and status.num_trials_completed >= self.max_trials_completed
        ):
            return f"max_trials_completed {self.max_trials_completed} reached"
        if self.max_results is not None and status.num_results >= self.max_results:
            return f"max_results {self.max_results} reached"
        if self.metric_threshold is not None and status.best_value is not None:
            reached = (
                status.best_value <= self.metric_threshold
                if mode == "min"
                else status.best_value >= self.metric_threshold
            )
            if reached:
                return f"metric_threshold {self.metric_threshold:g} reached"
        if self.max_cost is not None and status.total_cost >= self.max_cost:
            return f"max_cost {self.max_cost:g} reached"
        return None

    def may_start_trial(self, status: TuningStatus) -> bool:
        return self.max_trials_started is None or status.num_trials_started < self.max_trials_started

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StoppingCriterion:
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"stop: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)
