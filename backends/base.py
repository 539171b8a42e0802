"""The TrialBackend contract: run trials, report what happens to them, keep the clock.

A backend is driven by `hpo_core.tuner.Tuner`. `start`, `pause`, `resume` and `stop` return at
once; what happens later reaches the tuner through `poll()` as `TrialEvent`s stamped with
`now()`. A real backend's `poll()` waits up to its poll interval for something to happen; a
simulated backend's `poll()` advances its clock to the next event and never sleeps.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from hpo_core.trial import Trial, TrialEvent


class TrialBackend(ABC):
    """Base of every backend (local subprocesses, SageMaker jobs, simulation)."""

    #: True for backends on a simulated clock (the flow runs them inside one Prefect task).
    is_simulated: bool = False
    #: True when `load_state_dict` restores the running trials exactly (clock and pending
    #: events): a resumed experiment then continues as if never interrupted. Otherwise the
    #: tuner relaunches the running trials from their checkpoints.
    restores_running_trials: bool = False

    def __init__(self) -> None:
        self.trial_root: Path | None = None

    def set_trial_root(self, path: Path) -> None:
        """Folder under which trial `i` keeps its files in `path / str(i)` (set by the tuner)."""
        self.trial_root = Path(path)

    def trial_dir(self, trial_id: int) -> Path:
        if self.trial_root is None:
            raise RuntimeError("the tuner has not set the trial root of this backend")
        path = self.trial_root / str(int(trial_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_dir(self, trial_id: int) -> Path:
        """Where trial `trial_id` keeps its checkpoint. The folder is not created here: it
        exists only once a checkpoint is copied in (PBT) or the trial saves one, so a script
        may read an existing folder as "resume from here" (as Syne Tune's examples do)."""
        return self.trial_dir(trial_id) / "checkpoint"

    @abstractmethod
    def start(self, trial: Trial) -> None:
        """Start a new trial; if `trial.checkpoint_from` is set, seed its checkpoint from that
        trial's checkpoint first (PBT)."""

    @abstractmethod
    def pause(self, trial_id: int) -> None:
        """Stop the trial but keep its checkpoint, so `resume` can continue it."""

    @abstractmethod
    def resume(self, trial: Trial) -> None:
        """Continue a paused trial from its checkpoint (with `trial.config`, possibly changed)."""

    @abstractmethod
    def stop(self, trial_id: int) -> None:
        """End the trial for good."""

    @abstractmethod
    def poll(self) -> list[TrialEvent]:
        """Events since the last call (reports, completions, failures), in time order."""

    @abstractmethod
    def now(self) -> float:
        """Seconds since the backend started, on its clock (wall or simulated)."""

    def wake(self) -> None:
        """Make a `poll()` waiting in another thread return early (safe from any thread).

        Wrappers that start trials from other threads call it, so a launch never waits out a
        poll interval. Backends whose `poll()` never waits need not override it.
        """

    def close(self) -> None:
        """Release everything; running trials are ended."""

    def max_n_workers(self) -> int:
        """The most trials this backend can run at once (a spec asking for more is refused)."""
        return 256

    def state_dict(self) -> dict[str, Any]:
        """State needed to continue after a crash (JSON-serializable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
