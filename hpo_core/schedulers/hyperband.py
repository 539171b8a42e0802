"""Synchronous Hyperband (Li et al. 2018): successive-halving brackets of every aggressiveness.

Bracket k starts at `grace_period * eta**k`; with s halvings (of s_max in the longest bracket)
it starts `ceil((s_max + 1) / (s + 1) * eta**s)` trials, as in the paper. Brackets are opened
round-robin, k = 0, 1, ..., brackets-1, 0, ...; each one runs as in `SyncSuccessiveHalving`,
and a new bracket opens whenever the open ones have nothing to hand a free worker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.rungs import bracket_levels, rung_levels
from hpo_core.schedulers.successive_halving import SyncSuccessiveHalving, bracket_sizes
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace


class SyncHyperband(SyncSuccessiveHalving):
    """Synchronous Hyperband: successive-halving brackets opened round-robin.

    Args:
        brackets: how many bracket shapes to cycle through (default: all, down to the one that
            runs every trial to `max_t`). The other options are those of `SyncSuccessiveHalving`.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        fidelity: FidelityOptions,
        brackets: int | None = None,
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        super().__init__(config_space, metric, mode, seed, fidelity=fidelity, searcher=searcher,
                         searcher_options=searcher_options, points_to_evaluate=points_to_evaluate)
        if brackets is None:
            brackets = len(rung_levels(self.grace_period, self.reduction_factor, self.max_t))
        self.all_levels = bracket_levels(self.grace_period, self.reduction_factor, self.max_t,
                                         brackets)

    def _bracket_shape(self, index: int) -> tuple[list[float], list[int]]:
        levels = self.all_levels[index % len(self.all_levels)]
        return levels, bracket_sizes(len(levels), len(self.all_levels[0]), self.reduction_factor)
