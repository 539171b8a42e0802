"""UnseenSearcher: a searcher never proposes a config it proposed or saw started."""

from __future__ import annotations

import json

import pytest

from hpo_core.searchers.unseen import UnseenSearcher
from hpo_core.space import ConfigSpace, choice

SPACE = ConfigSpace({"a": choice([1, 2, 3]), "b": choice(["x", "y"])})  # 6 configs


class Ranked(UnseenSearcher):
    """Proposes the first unseen of a fixed ranking."""

    ranking = [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 3, "b": "x"}]

    def _suggest(self, trial_id):
        return self._first_unseen(iter(self.ranking))


def test_ranked_candidates_then_random_ones_then_none():
    searcher = Ranked(SPACE, seed=0, points_to_evaluate=[{"a": 2, "b": "x"}])
    searcher.on_trial_start(0, {"a": 1, "b": "x"})  # started elsewhere: seen too
    proposals = [searcher.suggest(i) for i in range(6)]
    assert proposals[:2] == [{"a": 2, "b": "x"}, {"a": 3, "b": "x"}]
    assert proposals[2:5] and None not in proposals[2:5]
    assert all(p["b"] == "y" for p in proposals[2:5])  # the x-column was taken
    assert proposals[5] is None  # every config seen: the space is exhausted


def test_seen_configs_survive_a_state_round_trip():
    searcher = Ranked(SPACE, seed=0)
    first = [searcher.suggest(i) for i in range(3)]
    state = json.loads(json.dumps(searcher.state_dict()))
    again = Ranked(SPACE, seed=1)
    again.load_state_dict(state)
    rest = [again.suggest(i) for i in range(3, 6)]
    assert not any(p in first for p in rest)
    assert again.suggest(6) is None


@pytest.mark.parametrize("name", ["random", "gp", "kde", "bore", "rea"])
def test_the_registered_searchers_share_it(name):
    from hpo_core.searchers.registry import SEARCHERS

    assert issubclass(SEARCHERS[name].load(), UnseenSearcher)
