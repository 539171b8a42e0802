"""The Searcher contract: propose configs, learn from their objective values.

Searchers always *minimize*: schedulers turn the user's metric into a value to minimize (see
`Scheduler.objective`) before handing it over, so `mode` is handled in one place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.space import ConfigSpace, as_config_space


class Searcher(ABC):
    """Proposes configurations; model-based searchers also learn from observed values.

    Args:
        config_space: the space to search.
        seed: seed of the searcher's random generator (same seed, same proposals).
        points_to_evaluate: configs proposed first, in order, before the searcher's own.

    A searcher with `uses_intermediate_results = True` gets every report through `on_result`
    (multi-fidelity models); the others get each trial's final value only.
    """

    uses_intermediate_results: bool = False

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        self.config_space = as_config_space(config_space)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._points_to_evaluate: list[dict[str, Any]] = []
        for i, point in enumerate(points_to_evaluate or []):
            # the space's fixed values hold for every config (a point's own value for a fixed
            # name, e.g. a warm start's masked copy of a secret, is not used)
            config = {**self.config_space.cast(dict(point)), **self.config_space.fixed}
            if any(n not in config for n in self.config_space.names
                   if self.config_space.is_active(n, config)):
                # partially given points are completed at random
                config = self.config_space.complete(config, self.rng)
            try:
                self.config_space.validate(config)
            except ValueError as err:
                raise ValueError(f"points_to_evaluate[{i}]: {err}") from err
            self._points_to_evaluate.append(config)

    def suggest(self, trial_id: int) -> dict[str, Any] | None:
        """A config for trial `trial_id`, or None when the searcher has nothing left to propose."""
        if self._points_to_evaluate:
            return self._points_to_evaluate.pop(0)
        return self._suggest(trial_id)

    @abstractmethod
    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        """The searcher's own proposal (after `points_to_evaluate` are used up)."""

    def side_metrics(self) -> dict[str, str]:
        """Reported metrics it reads besides the objective (a constraint, a cost), each with
        the option that names it; the tuner ends an experiment whose trials never report one."""
        return {}

    def on_trial_start(self, trial_id: int, config: Mapping[str, Any]) -> None:
        """Trial `trial_id` started with `config` (pending: model-based searchers may fantasize)."""

    def on_result(
        self,
        trial_id: int,
        config: Mapping[str, Any],
        value: float,
        resource: float | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> None:
        """Observed `value` (to minimize) of `config`, at `resource` for multi-fidelity use.

        `metrics` is the whole report, for searchers that model more than the objective
        (constraints, cost); schedulers pass it when they have it.
        """

    def on_trial_end(self, trial_id: int) -> None:
        """Trial `trial_id` is over or paused: it is no longer pending."""

    def on_error(self, trial_id: int) -> None:
        """Trial `trial_id` failed: forget it as pending."""
        self.on_trial_end(trial_id)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the searcher is (JSON-serializable)."""
        return {
            "rng": self.rng.bit_generator.state,
            "points_to_evaluate": list(self._points_to_evaluate),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._points_to_evaluate = list(state.get("points_to_evaluate", []))
