"""The Scheduler contract: which configs to start, which running trials to stop, pause, resume.

Modelled on Optuna's small samplers/pruners bases and Syne Tune's TrialScheduler. The tuner calls

* `suggest(trial_id)` when a worker is free: start a new config, resume a paused trial, or None;
* `on_trial_add(trial)` once a new trial from a suggestion was started;
* `on_trial_result(trial, result)` for each report: CONTINUE, PAUSE or STOP the trial;
* `on_trial_complete(trial, result)` when its script ended by itself;
* `on_trial_error(trial)` when it failed.

`state_dict()` / `load_state_dict()` make an experiment resumable from `state.json`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace, as_config_space
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion

MODES = ("min", "max")


def _as_list(value: str | Sequence[str], field: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(v, str) and v for v in items):
        raise ValueError(f"{field}: must be a non-empty string or list of strings, got {value!r}")
    return items


class Scheduler(ABC):
    """Base of every HPO method.

    Args:
        config_space: the space to search.
        metric: the reported metric to optimize (a list for multi-objective schedulers).
        mode: "min" or "max" (one per metric for a list).
        seed: seed for everything random in the scheduler and its searcher.

    Multi-fidelity schedulers set `resource_attr` (the reported resource, e.g. "epoch") and
    `max_t` (its last level): a trial they stop there is done, not stopped early.
    """

    resource_attr: str | None = None
    max_t: float | None = None
    #: True for methods that may PAUSE a trial and resume it later: the tuner then asks the
    #: backend to hold each report until it has acted on it (`TrialBackend.set_pausing`)
    may_pause: bool = False

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
    ):
        self.config_space = as_config_space(config_space)
        self.metrics = _as_list(metric, "metric")
        modes = [mode] * len(self.metrics) if isinstance(mode, str) else list(mode)
        if len(modes) != len(self.metrics):
            raise ValueError(f"mode: {len(modes)} modes given for {len(self.metrics)} metrics")
        for m in modes:
            if m not in MODES:
                raise ValueError(f"mode: must be 'min' or 'max', got {m!r}")
        self.modes = modes
        self._signs = [1.0 if m == "min" else -1.0 for m in modes]
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    @property
    def metric(self) -> str:
        return self.metrics[0]

    @property
    def mode(self) -> str:
        return self.modes[0]

    def objective(self, metrics: Mapping[str, Any]) -> float | None:
        """The first metric turned into a value to minimize; None if missing or not finite."""
        value = metrics.get(self.metrics[0])
        if value is None or isinstance(value, bool):
            return None
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return self._signs[0] * value if math.isfinite(value) else None

    def objectives(self, metrics: Mapping[str, Any]) -> np.ndarray | None:
        """All metrics turned into values to minimize; None if any is missing or not finite."""
        values = self.objective_values(metrics)
        return None if values is None else np.array(values)

    def objective_values(self, metrics: Mapping[str, Any]) -> list[float] | None:
        """`objectives(metrics)` as a plain list (no numpy: cheap enough for every report)."""
        values = []
        for name, sign in zip(self.metrics, self._signs, strict=True):
            try:
                value = float(metrics[name])
            except (KeyError, TypeError, ValueError):
                return None
            if not math.isfinite(value):
                return None
            values.append(sign * value)
        return values

    def reached_max_t(self, metrics: Mapping[str, Any]) -> bool:
        """Whether a report is at (or past) `max_t`: a STOP there completes the trial."""
        if self.max_t is None or self.resource_attr is None:
            return False
        level = metrics.get(self.resource_attr)
        try:
            return level is not None and not isinstance(level, bool) and \
                float(level) >= float(self.max_t)
        except (TypeError, ValueError):
            return False

    @abstractmethod
    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        """Start a new config (as trial `trial_id`), resume a paused trial, or None for now."""

    def side_metrics(self) -> dict[str, str]:
        """Reported metrics it (or its searcher) reads besides the objectives (a constraint, a
        cost), each with the option that names it."""
        searcher = getattr(self, "searcher", None)
        return searcher.side_metrics() if isinstance(searcher, Searcher) else {}

    @property
    def constraint(self) -> str | None:
        """The reported metric that must be <= 0 for a report to be feasible (its
        `constraint_attr`), if it has one: only feasible reports can be the best."""
        return next((name for name, option in self.side_metrics().items()
                     if option == "constraint_attr"), None)

    def on_trial_add(self, trial: Trial) -> None:
        """A trial from `suggest()` was started by the backend."""

    @abstractmethod
    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        """A running trial reported; decide whether it continues, pauses or stops."""

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        """The trial's script ended by itself; `result` is its last report (None if none)."""

    def on_trial_error(self, trial: Trial) -> None:
        """The trial failed (crash, hang, invalid metric)."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state; `load_state_dict` on a fresh instance continues from it."""
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
