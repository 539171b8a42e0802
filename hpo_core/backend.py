"""The TrialBackend contract: run trials, report what happens to them, keep the clock.

A backend is driven by `hpo_core.tuner.Tuner`. `start`, `pause`, `resume` and `stop` return at
once; what happens later reaches the tuner through `poll()` as `TrialEvent`s stamped with
`now()`. A real backend's `poll()` waits up to its poll interval for something to happen; a
simulated backend's `poll()` advances its clock to the next event and never sleeps.

What a backend offers beyond that is declared here, with a default, and overridden where a
backend differs; nothing is probed at run time:

- `clock_kind`: a wall clock, or a simulated one (the flow then runs the whole experiment in
  one Prefect task, and trials have no folders of their own);
- `restores_running_trials`: its state restores running trials exactly (see below);
- `default_n_workers()` and `max_n_workers()`: trials to run at once by default, and at most;
- `config_space()` and `fidelity()`: what the backend implies when a spec leaves them out (a
  simulated blackbox's config space and fidelities);
- `set_context(context)`: where the experiment's trials keep their files (`TrialContext`,
  handed over by the tuner from the experiment store before anything starts);
- `state_dict()` / `load_state_dict()`: state kept across a crash;
- `distributed` and `trial_worker(trial_id)`: trials run on a cluster's workers, and on which;
- `drain()`: a killed tuner's last poll (its trials ended, their last reports returned);
- `set_pausing(pausing)`: whether the scheduler may pause trials (the tuner says so).
"""

from __future__ import annotations

import enum
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_core.space import ConfigSpace
from hpo_core.trial import Trial, TrialEvent

#: the trial folder's checkpoint subfolder (created only once a checkpoint exists)
CHECKPOINT_FOLDER = "checkpoint"


def poll_interval_seconds(value: Any) -> float:
    """A backend's `poll_interval`: a finite number of seconds > 0 (0 would make the tuner's
    loop spin on empty polls, a whole core busy); else ValueError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not 0 < value < math.inf:
        raise ValueError(f"backend_options.poll_interval: must be a number of seconds > 0 "
                         f"(0 would keep a core busy polling), got {value!r}")
    return float(value)


class ClockKind(enum.Enum):
    """Where a backend's time comes from."""

    WALL = "wall"
    SIMULATED = "simulated"


class BackendLostError(RuntimeError):
    """What runs the trials is gone (a cluster's scheduler): the experiment stops, and its store
    resumes it once that is back."""


@dataclass(frozen=True)
class TrialContext:
    """Where an experiment's trials keep their files: trial `i` in `root / str(i)`, its
    checkpoint in the `checkpoint` folder inside. The one place that knows this layout.

    The experiment store makes it (`ExperimentStore.trial_context()`), naming the experiment;
    a backend used on its own gets one from `TrialBackend.set_trial_root(path)`, which names
    none (a backend that needs a name then asks for it in its options)."""

    root: Path
    experiment: str | None = None

    def __post_init__(self) -> None:
        # absolute: a trial gets its paths as they are, and may change its working directory
        object.__setattr__(self, "root", Path(self.root).absolute())

    def trial_dir(self, trial_id: int) -> Path:
        """The trial's folder, created."""
        path = self.root / str(int(trial_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def checkpoint_dir(self, trial_id: int) -> Path:
        """Where the trial keeps its checkpoint, inside its (created) folder. The checkpoint
        folder itself is not created here: it exists only once a checkpoint is copied in (PBT)
        or the trial saves one, so a script may read an existing folder as "resume from here"
        (as Syne Tune's examples do)."""
        return self.trial_dir(trial_id) / CHECKPOINT_FOLDER


@dataclass(frozen=True)
class Fidelity:
    """The resource a backend's trials report progress in, with the values they report at
    (ascending): a simulated blackbox's epochs."""

    name: str
    values: Sequence[Any]


class TrialBackend(ABC):
    """Base of every backend (local processes, function workers, Dask, SageMaker jobs,
    simulation). Subclasses implement the abstract methods and override the capabilities
    where they differ from the defaults."""

    #: the clock `now()` reads; a simulated backend's trials have no folders of their own
    clock_kind: ClockKind = ClockKind.WALL
    #: True when `load_state_dict` restores the running trials exactly (clock and pending
    #: events): a resumed experiment then continues as if never interrupted. Otherwise the
    #: tuner relaunches the running trials from their checkpoints.
    restores_running_trials: bool = False
    #: True when trials run on the workers of a cluster: `trial_worker` names each one's
    distributed: bool = False
    #: where the trials keep their files; None until `set_context`
    context: TrialContext | None = None

    # -- trials --------------------------------------------------------------------------------
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

    def drain(self) -> list[TrialEvent]:
        """The tuner is being killed: end the running trials now (as `close()` would) and
        return the events that reached the backend and no `poll()` returned, reports made
        just before the end included, but not the trials' ends (they did not fail; they are
        resumed later). The tuner journals them, for the resume to replay. Nothing is
        launched. Backends whose events are made by `poll()` itself, or that cannot end their
        trials any sooner than `close()`, need not override it (the default: none, nothing
        ended)."""
        return []

    def set_pausing(self, pausing: bool) -> None:
        """Whether the scheduler may pause trials; the tuner says so before anything starts.
        A pause is exact when a trial waits at each report until the tuner has acted on it.
        A backend for which that wait costs a round trip per report (Dask: a worker, not the
        tuner, reads the trial) makes its trials wait only when the scheduler may pause.
        Backends whose trials always wait (local processes, functions), or never can
        (SageMaker jobs), need not override it."""

    def wake(self) -> None:
        """Make a waiting `poll()` return early (safe from any thread, and reentrant: the
        tuner calls it from a signal handler, in the thread that waits in `poll()`; a
        `queue.SimpleQueue.put` is, a lock's acquire is not).

        Wrappers that start trials from other threads call it, so a launch never waits out a
        poll interval; a kill calls it, so the tuner ends without waiting out one either.
        Backends whose `poll()` never waits need not override it.
        """

    def close(self) -> None:
        """Release everything; running trials are ended."""

    # -- files ---------------------------------------------------------------------------------
    def set_context(self, context: TrialContext) -> None:
        """Where the experiment's trials keep their files (the tuner hands over the store's
        context before anything starts). Backends that must act on it (end what a killed
        session left in those folders) extend this."""
        self.context = context

    def set_trial_root(self, path: str | os.PathLike[str]) -> None:
        """`set_context` for a backend used without a store: trial `i` in `path / str(i)`."""
        self.set_context(TrialContext(Path(path)))

    @property
    def trial_root(self) -> Path | None:
        """The folder of the trial folders (None until `set_context`)."""
        return None if self.context is None else self.context.root

    def trial_dir(self, trial_id: int) -> Path:
        """The trial's folder, created."""
        return self._context().trial_dir(trial_id)

    def checkpoint_dir(self, trial_id: int) -> Path:
        """The trial's checkpoint folder (not created; see `TrialContext.checkpoint_dir`)."""
        return self._context().checkpoint_dir(trial_id)

    def _context(self) -> TrialContext:
        if self.context is None:
            raise RuntimeError("the tuner has not set the trial context of this backend")
        return self.context

    # -- capabilities --------------------------------------------------------------------------
    def default_n_workers(self) -> int:
        """Trials to run at once when the spec says `n_workers: auto` (here: one per CPU)."""
        return os.cpu_count() or 1

    def max_n_workers(self) -> int:
        """The most trials this backend can run at once (a spec asking for more is refused)."""
        return 256

    def config_space(self) -> ConfigSpace | None:
        """The config space this backend's trials take when the spec gives none (a simulated
        blackbox's); None: the spec must give one."""
        return None

    def fidelity(self) -> Fidelity | None:
        """The fidelity the trials report at, when the backend knows it in advance (a
        simulated blackbox's); multi-fidelity methods take their defaults from it."""
        return None

    def trial_worker(self, trial_id: int) -> str | None:
        """For a `distributed` backend: the worker that runs (or ran) the trial's latest
        segment, once known."""
        return None

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State needed to continue after a crash (JSON-serializable)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
