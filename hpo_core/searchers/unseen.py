"""Searchers that never propose a config twice.

`UnseenSearcher` remembers every config it proposed or saw started (by the digest of its
`ConfigSpace.config_key`, kept in its state: `hpo_core.searchers.seen_configs`), and gives its
subclasses two ways to a new proposal: the first unseen of their ranked candidates, or a random
config not seen yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import is_
from typing import Any

from hpo_core.searchers.base import Searcher
from hpo_core.searchers.seen_configs import SeenConfigs, config_digest
from hpo_core.space import ConfigSpace


class UnseenSearcher(Searcher):
    """A searcher whose proposals are new configs.

    Proposals (`suggest`) and started trials (`on_trial_start`) are remembered; subclasses
    remember more with `_remember` (e.g. the configs they get results for).
    """

    #: random draws tried before the space is taken as exhausted
    max_retries: int = 100

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        self._seen = SeenConfigs()
        self._last_key: tuple[Mapping[str, Any], str] | None = None

    def _key(self, config: Mapping[str, Any]) -> str:
        """`config_digest(config)`; the config just checked and then proposed (the same object:
        configs are not changed in place once drawn), or a copy of it (the trial's config, with
        the same value objects), is encoded once."""
        last = self._last_key
        if last is not None and (last[0] is config or _same_values(last[0], config)):
            return last[1]
        key = config_digest(self.config_space, config)
        self._last_key = (config, key)
        return key

    def _remember(self, config: Mapping[str, Any]) -> None:
        self._seen.add(self._key(config))

    def _is_seen(self, config: Mapping[str, Any]) -> bool:
        return self._key(config) in self._seen

    def suggest(self, trial_id: int) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None:
            self._remember(config)
        return config

    def on_trial_start(self, trial_id: int, config: Mapping[str, Any]) -> None:
        self._remember(config)

    def _first_unseen(self, candidates: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
        """The first candidate not seen yet (candidates are drawn lazily, in order), else a
        random config not seen yet."""
        for config in candidates:
            if not self._is_seen(config):
                return config
        return self._random_config()

    def _random_config(self) -> dict[str, Any] | None:
        """A random config not seen yet; None if `max_retries` draws found none (the space
        looks exhausted)."""
        for _ in range(self.max_retries):
            config = self.config_space.sample(self.rng)
            if not self._is_seen(config):
                return config
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "seen": self._seen.to_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._seen = SeenConfigs.from_state(state.get("seen", []))


def _same_values(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether `b` holds the very same value objects as `a` under the same names (a copy)."""
    return a.keys() == b.keys() and all(map(is_, a.values(), map(b.__getitem__, a)))
