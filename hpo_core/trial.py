"""Trials and the messages exchanged between tuner, scheduler and backend."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class TrialStatus(str, Enum):
    """Life cycle of a trial. PAUSED trials may be resumed; STOPPED, COMPLETED and FAILED ones are
    over."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"


#: the statuses a trial never leaves
ENDED_STATUSES = frozenset((TrialStatus.STOPPED, TrialStatus.COMPLETED, TrialStatus.FAILED))


def trial_counts(statuses: Iterable[TrialStatus | str], num_results: int,
                 ended: bool = False) -> dict[str, int]:
    """The counts every view prints: trials, finished (completed + stopped: what
    `max_trials_completed` counts), completed (ran to the end), stopped (early, by the
    scheduler or at the experiment's end), paused, running, interrupted, failed, and reports.

    `ended`: no process runs the experiment any more (it ended, or was interrupted). A trial
    still marked running then counts as interrupted: its process ended with the experiment's,
    and a resume relaunches it."""
    counts = Counter(TrialStatus(s).value for s in statuses)
    out = {"trials": sum(counts.values()),
           "finished": counts["completed"] + counts["stopped"]}
    out.update((s.value, counts[s.value]) for s in (
        TrialStatus.COMPLETED, TrialStatus.STOPPED, TrialStatus.PAUSED, TrialStatus.RUNNING))
    out["interrupted"] = out["running"] if ended else 0
    out["running"] -= out["interrupted"]
    out["failed"] = counts["failed"]
    out["results"] = int(num_results)
    return out


def status_text(status: TrialStatus | str, ended: bool) -> str:
    """A trial's status as the views show it (`ended`: as in `trial_counts`, a trial still
    marked running is `interrupted`)."""
    value = status.value if isinstance(status, TrialStatus) else str(status)
    return "interrupted" if ended and value == TrialStatus.RUNNING.value else value


def counts_text(counts: Mapping[str, int]) -> str:
    """`303 trials: 12 completed, 291 stopped early, 1 failed` (zero counts left out)."""
    labels = {"completed": "completed", "stopped": "stopped early", "paused": "paused",
              "running": "running", "interrupted": "interrupted", "failed": "failed"}
    parts = [f"{counts[k]} {label}" for k, label in labels.items() if counts.get(k)]
    trials = counts.get("trials", 0)
    return f"{trials} trial{'s' if trials != 1 else ''}" + (f": {', '.join(parts)}" if parts else "")


class Decision(str, Enum):
    """What a scheduler wants done with a running trial after one of its results."""

    CONTINUE = "continue"
    PAUSE = "pause"
    STOP = "stop"


@dataclass
class Trial:
    """One configuration under evaluation, with what is known about it so far."""

    trial_id: int
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    start_time: float = 0.0
    end_time: float | None = None
    last_result: dict[str, Any] | None = None
    num_results: int = 0
    failure_reason: str | None = None
    checkpoint_from: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "config": self.config,
            "status": self.status.value,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "last_result": self.last_result,
            "num_results": self.num_results,
            "failure_reason": self.failure_reason,
            "checkpoint_from": self.checkpoint_from,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trial:
        return cls(
            trial_id=int(data["trial_id"]),
            config=dict(data["config"]),
            status=TrialStatus(data["status"]),
            start_time=float(data.get("start_time", 0.0)),
            end_time=data.get("end_time"),
            last_result=data.get("last_result"),
            num_results=int(data.get("num_results", 0)),
            failure_reason=data.get("failure_reason"),
            checkpoint_from=data.get("checkpoint_from"),
        )


@dataclass
class TrialResult:
    """One report of a trial: its metrics at a point in (backend) time."""

    trial_id: int
    metrics: dict[str, Any]
    time: float


@dataclass
class TrialSuggestion:
    """A scheduler's answer to `suggest()`: start a new config, or resume a paused trial.

    `checkpoint_from` asks the backend to seed the new trial's checkpoint with a copy of another
    trial's checkpoint (PBT's exploit step).
    """

    config: dict[str, Any] | None = None
    resume_trial_id: int | None = None
    checkpoint_from: int | None = None

    @classmethod
    def start(cls, config: dict[str, Any], checkpoint_from: int | None = None) -> TrialSuggestion:
        return cls(config=config, checkpoint_from=checkpoint_from)

    @classmethod
    def resume(cls, trial_id: int, config: dict[str, Any] | None = None) -> TrialSuggestion:
        return cls(config=config, resume_trial_id=trial_id)

    @property
    def is_resume(self) -> bool:
        return self.resume_trial_id is not None


class EventKind(str, Enum):
    """What a backend can tell the tuner about a trial."""

    RESULT = "result"  # a new report (metrics)
    COMPLETED = "completed"  # the trial's script ended normally
    FAILED = "failed"  # the trial crashed, hung, reported garbage, ... (reason given)


@dataclass
class TrialEvent:
    """One thing that happened to a trial, stamped with the backend's clock."""

    kind: EventKind
    trial_id: int
    time: float
    metrics: dict[str, Any] | None = None
    reason: str | None = None
