"""Seen configs: digests of config keys, in arrival order; older states (config keys) load."""

from __future__ import annotations

import json

import numpy as np

from hpo_core.searchers.random import RandomSearcher
from hpo_core.searchers.seen_configs import SeenConfigs, config_digest
from hpo_core.space import ConfigSpace, choice, loguniform, randint, uniform

SPACE = ConfigSpace({"lr": loguniform(1e-4, 1e-1), "dropout": uniform(0.0, 1.0),
                     "layers": randint(1, 4), "act": choice(["relu", "tanh"])})


def test_digests_tell_configs_apart_and_keep_their_order():
    rng = np.random.default_rng(0)
    configs = [SPACE.sample(rng) for _ in range(2000)]
    seen = SeenConfigs()
    for config in configs:
        seen.add(config_digest(SPACE, config))
    state = seen.to_state()
    assert len(state) == len(seen) == 2000
    assert state == [config_digest(SPACE, c) for c in configs]  # arrival order, not sorted
    assert all(len(d) == 24 for d in state)  # not the config's JSON
    assert config_digest(SPACE, dict(configs[7])) in seen  # a copy: the same values
    assert config_digest(SPACE, {**configs[7], "layers": 5}) not in seen
    again = SeenConfigs.from_state(json.loads(json.dumps(state)))
    assert again.to_state() == state


def test_a_state_written_with_config_keys_loads_as_digests():
    """Searchers' states used to list `config_key`s: those configs stay seen."""
    space = ConfigSpace({"a": choice(["x", "y"]), "b": randint(1, 3)})
    old_keys = [space.config_key({"a": "x", "b": b}) for b in (1, 2, 3)]
    searcher = RandomSearcher(space, seed=0)
    searcher.load_state_dict({**searcher.state_dict(), "seen": old_keys})
    configs = [searcher.suggest(i) for i in range(4)]
    assert sorted(c["b"] for c in configs[:3]) == [1, 2, 3]
    assert all(c["a"] == "y" for c in configs[:3])  # the "x" ones were seen before
    assert configs[3] is None  # the space is exhausted
