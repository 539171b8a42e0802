"""Random search: configs drawn independently from the config space."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.searchers.unseen import UnseenSearcher
from hpo_core.space import ConfigSpace


class RandomSearcher(UnseenSearcher):
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

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        return self._random_config()
