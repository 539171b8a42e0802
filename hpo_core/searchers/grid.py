"""Grid search: every combination of categories and `num_points` values per numerical domain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace


class GridSearcher(Searcher):
    """Enumerates the grid in order (or shuffled with `shuffle=True`), then proposes nothing."""

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        num_points: int = 5,
        shuffle: bool = False,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        self.num_points = num_points
        self._grid = self.config_space.grid(num_points)
        if shuffle:
            order = self.rng.permutation(len(self._grid))
            self._grid = [self._grid[i] for i in order]
        self._next = 0

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        if self._next >= len(self._grid):
            return None
        config = self._grid[self._next]
        self._next += 1
        return dict(config)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "next": self._next}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._next = int(state["next"])
