"""PASHA: promotion ASHA with a maximum resource that grows only when needed (Bohdal et al., 2023).

Trials are promoted as in promotion ASHA, but only up to the current top rung, which starts at
the second rung level. Each time a trial reaches the current top rung, the rankings of the trials
in the top two rungs are compared: if some pair is ordered differently at the two levels by more
than epsilon at both (a "soft ranking" that ignores noise-sized differences), the ranking has not
settled yet, and the top rung moves one level up (trials paused at the old top become
promotable). With epsilon left to `None`, it is estimated from the data as the
`epsilon_quantile` of the changes between consecutive reports of the same trial between the two
top levels (the typical noise of a learning curve there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.schedulers.asha_promotion import PromotionASHA
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace
from hpo_core.trial import Decision, Trial, TrialResult

MAX_DELTAS = 2000  # changes kept per level band for the epsilon estimate


def has_inversion(lower: np.ndarray, upper: np.ndarray, epsilon: float) -> bool:
    """Whether some pair is ordered one way at the lower level and the other way at the upper
    level, by more than `epsilon` at both."""
    below = (lower[:, None] + epsilon) < lower[None, :]  # i clearly better than j at the lower level
    above = (upper[None, :] + epsilon) < upper[:, None]  # j clearly better than i at the upper level
    return bool((below & above).any())


class PASHA(PromotionASHA):
    """Progressive ASHA (single bracket); see `ASHA` for the fidelity options.

    Args:
        epsilon: noise tolerance of the ranking comparison (None: estimated).
        epsilon_quantile: quantile of consecutive-report changes used as the estimate.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        fidelity: FidelityOptions,
        epsilon: float | None = None,
        epsilon_quantile: float = 0.9,
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        super().__init__(config_space, metric, mode, seed, fidelity=fidelity, brackets=1,
                         searcher=searcher, searcher_options=searcher_options,
                         points_to_evaluate=points_to_evaluate)
        if epsilon is not None and not epsilon >= 0:
            raise ValueError(f"epsilon: must be >= 0 or None, got {epsilon}")
        if not 0 <= epsilon_quantile <= 1:
            raise ValueError(f"epsilon_quantile: must be in [0, 1], got {epsilon_quantile}")
        self.epsilon = epsilon
        self.epsilon_quantile = float(epsilon_quantile)
        self.top_rung = min(1, len(self.levels[0]) - 1)
        self._last: dict[int, tuple[float, float]] = {}  # trial -> (resource, value)
        self._deltas: list[list[float]] = [[] for _ in self.levels[0]]  # per level band

    @property
    def max_resource(self) -> float:
        """The current maximum resource (the level of the current top rung)."""
        return self.levels[0][self.top_rung]

    def _band(self, resource: float) -> int:
        """Index j of the level band (levels[j-1], levels[j]] containing `resource`."""
        return int(np.searchsorted(self.levels[0], resource, side="left"))

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        value = self.objective(result.metrics)
        resource = result.metrics.get(self.resource_attr)
        if value is not None and isinstance(resource, int | float):
            previous = self._last.get(trial.trial_id)
            if previous is not None and resource > previous[0]:
                band = self._deltas[min(self._band(float(resource)), len(self._deltas) - 1)]
                band.append(abs(value - previous[1]))
                del band[:-MAX_DELTAS]
            self._last[trial.trial_id] = (float(resource), value)
        return super().on_trial_result(trial, result)

    def current_epsilon(self) -> float:
        """The tolerance used for the comparison at the current top rung."""
        if self.epsilon is not None:
            return self.epsilon
        deltas = self._deltas[self.top_rung]
        return float(np.quantile(deltas, self.epsilon_quantile)) if deltas else 0.0

    def rankings_disagree(self) -> bool:
        """Whether the top two rungs order their common trials differently (beyond epsilon)."""
        upper = self.rungs[0][self.top_rung].values
        lower = self.rungs[0][self.top_rung - 1].values
        common = [t for t in upper if t in lower]
        if len(common) < 2:
            return False
        return has_inversion(np.array([lower[t] for t in common]),
                             np.array([upper[t] for t in common]), self.current_epsilon())

    def _on_rung(self, trial: Trial, bracket: int, rung: int) -> Decision:
        if rung == self.top_rung and self.top_rung < len(self.levels[0]) - 1 \
                and self.rankings_disagree():
            self.top_rung += 1
        return super()._on_rung(trial, bracket, rung)

    def _promotion_candidates(self, bracket: int, rung: int) -> list[int]:
        if rung >= self.top_rung:
            return []
        return super()._promotion_candidates(bracket, rung)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "top_rung": self.top_rung,
                "last": [[t, r, v] for t, (r, v) in self._last.items()], "deltas": self._deltas}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.top_rung = int(state["top_rung"])
        self._last = {int(t): (float(r), float(v)) for t, r, v in state["last"]}
        self._deltas = [list(map(float, d)) for d in state["deltas"]]
