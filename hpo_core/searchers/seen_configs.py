"""The configs a searcher has proposed or seen started, as short digests in arrival order.

A searcher that never proposes a config twice keeps every config it met, and its state keeps
them too, so a snapshot of an experiment with many trials writes them all again. They are kept
as 96-bit digests of `ConfigSpace.config_key` (24 characters, not the config's JSON) in arrival
order (a snapshot lists them without sorting). Two distinct configs share a digest with
probability about n^2 / 2^97; the later one would then be skipped as seen, so a config is never
proposed twice either way. States written before digests (config keys) load as digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from hpo_core.space import ConfigSpace

DIGEST_BYTES = 12


def config_digest(space: ConfigSpace, config: Mapping[str, Any]) -> str:
    """The digest of `space.config_key(config)`: equal for configs with the same values."""
    return _digest(space.config_key(config))


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=DIGEST_BYTES).hexdigest()


class SeenConfigs:
    """A set of `config_digest`s that remembers their order."""

    def __init__(self) -> None:
        self._digests: dict[str, None] = {}

    def add(self, digest: str) -> None:
        self._digests[digest] = None

    def __contains__(self, digest: object) -> bool:
        return digest in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    def to_state(self) -> list[str]:
        """The digests in arrival order (JSON-ready)."""
        return list(self._digests)

    @classmethod
    def from_state(cls, entries: Iterable[str]) -> SeenConfigs:
        """From `to_state()`, or from an older state's config keys (JSON objects)."""
        seen = cls()
        for entry in entries:
            seen.add(_digest(entry) if entry.startswith("{") else entry)
        return seen
