"""Random search: no config twice, the seen set (kept as digests of config keys) survives a
state round trip, and points_to_evaluate count as seen."""

from __future__ import annotations

from hpo_core.searchers.random import RandomSearcher
from hpo_core.searchers.seen_configs import config_digest
from hpo_core.space import ConfigSpace, choice, randint


def test_a_small_space_is_exhausted_without_repeats_and_the_state_round_trips():
    space = ConfigSpace({"a": choice(["x", "y"]), "b": randint(1, 3), "c": 7})
    searcher = RandomSearcher(space, seed=0, points_to_evaluate=[{"a": "y", "b": 2}])
    configs = [searcher.suggest(i) for i in range(3)]
    assert configs[0] == {"a": "y", "b": 2, "c": 7}
    again = RandomSearcher(space, seed=1)
    again.load_state_dict(searcher.state_dict())
    configs += [again.suggest(i) for i in range(3, 7)]
    assert configs[-1] is None  # 6 configs in the space
    keys = [config_digest(space, c) for c in configs[:-1]]
    assert len(set(keys)) == 6 and again._seen.to_state() == keys  # in arrival order


def test_a_point_to_evaluate_keeps_the_spaces_fixed_values():
    # a warm start read back from MLflow holds a secret's mask: the spec's value is used
    space = ConfigSpace({"a": choice(["x", "y"]), "api_key": "the-real-key"})
    searcher = RandomSearcher(space, seed=0,
                              points_to_evaluate=[{"a": "y", "api_key": "[redacted]"}])
    assert searcher.suggest(0) == {"a": "y", "api_key": "the-real-key"}
