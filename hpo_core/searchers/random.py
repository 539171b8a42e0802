"""Random search: configs drawn independently from the config space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace


class RandomSearcher(Searcher):
    """Draws configs at random, skipping ones already proposed (up to `max_retries` draws)."""

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        max_retries: int = 100,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        self.max_retries = max_retries
        self._seen: set[str] = set()

    def suggest(self, trial_id: int) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None:
            self._seen.add(self.config_space.config_key(config))
        return config

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        for _ in range(self.max_retries):
            config = self.config_space.sample(self.rng)
            if self.config_space.config_key(config) not in self._seen:
                return config
        return None  # the space looks exhausted

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": sorted(self._seen)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._seen = set(state.get("seen", []))
