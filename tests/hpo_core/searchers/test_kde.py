"""The TPE / BOHB kernel-density searcher."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpo_core.models.encoding import EncodedSpace
from hpo_core.registry import build_scheduler
from hpo_core.searchers.kde import KDESearcher, _ProductKDE
from hpo_core.searchers.random import RandomSearcher
from hpo_core.space import ConfigSpace, choice, randint, uniform

SPACE = ConfigSpace({"x": uniform(0, 1), "y": uniform(0, 1)})


def feed(searcher, configs, f, resource=None, start=0):
    for i, config in enumerate(configs):
        searcher.on_result(start + i, config, f(config), resource)


def random_configs(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("n, good", [(20, 3), (5, 2), (100, 15), (4, 2)])
def test_good_bad_split_sizes_and_order(n, good):
    searcher = KDESearcher(SPACE, seed=0, min_points_in_model=4)
    feed(searcher, random_configs(SPACE, n), lambda c: c["x"])
    good_ids, bad_ids = searcher.split()
    assert (len(good_ids), len(bad_ids)) == (good, n - good)
    values = searcher._values[None]
    assert max(values[t] for t in good_ids) <= min(values[t] for t in bad_ids)


def test_proposals_come_from_the_good_region():
    def f(c):
        return (c["x"] - 0.15) ** 2 + (c["y"] - 0.8) ** 2

    searcher = KDESearcher(SPACE, seed=1, random_fraction=0.0)
    feed(searcher, random_configs(SPACE, 40), f)
    proposals = [searcher.suggest(100 + i) for i in range(20)]
    near = [f(c) < 0.05 for c in proposals]
    random_near = [f(c) < 0.05 for c in random_configs(SPACE, 20, seed=7)]
    assert np.mean(near) >= 0.6 > np.mean(random_near) + 0.3


def test_beats_random_search_on_a_quadratic():
    def f(c):
        return (c["x"] - 0.7) ** 2 + (c["y"] - 0.2) ** 2

    def best(searcher):
        values = []
        for i in range(60):
            config = searcher.suggest(i)
            values.append(f(config))
            searcher.on_result(i, config, values[-1])
        return min(values)

    kde = [best(KDESearcher(SPACE, seed=s, random_fraction=0.1)) for s in range(3)]
    rnd = [best(RandomSearcher(SPACE, seed=s)) for s in range(3)]
    assert np.median(kde) < 0.5 * np.median(rnd), (kde, rnd)


def test_categorical_preference_is_learnt():
    space = ConfigSpace({"x": uniform(0, 1), "act": choice(["relu", "tanh", "gelu"]),
                         "n": randint(1, 4)})

    def f(c):
        return (c["act"] != "gelu") + 0.1 * c["x"]

    searcher = KDESearcher(space, seed=2, random_fraction=0.0)
    feed(searcher, random_configs(space, 30), f)
    proposals = [searcher.suggest(100 + i) for i in range(20)]
    for config in proposals:
        space.validate(config)
    assert np.mean([c["act"] == "gelu" for c in proposals]) >= 0.7


def test_density_is_normalized_on_the_cube():
    space = EncodedSpace(SPACE)
    rng = np.random.default_rng(3)
    kde = _ProductKDE(rng.random((6, 2)) * 0.3, space, 1e-3, prior_weight=1.0)
    U = rng.random((200_000, 2))
    assert np.exp(kde.log_pdf(U)).mean() == pytest.approx(1.0, abs=0.02)
    samples = kde.sample(rng, 500, factor=3.0)
    assert ((samples >= 0) & (samples <= 1)).all()


def test_multi_fidelity_uses_the_highest_level_with_enough_points():
    searcher = KDESearcher(SPACE, seed=0, min_points_in_model=5, multi_fidelity=True)
    assert searcher.uses_intermediate_results
    configs = random_configs(SPACE, 20)
    feed(searcher, configs, lambda c: c["x"], resource=1)
    feed(searcher, configs[:4], lambda c: c["x"], resource=9)
    assert searcher.model_level() == 1.0
    feed(searcher, configs[4:6], lambda c: c["x"], resource=9, start=4)
    assert searcher.model_level() == 9.0
    assert len(searcher.split()[0]) + len(searcher.split()[1]) == 6


def test_random_until_min_points_and_no_repeats():
    space = ConfigSpace({"a": randint(0, 3), "b": choice(["p", "q"])})  # 8 configs
    searcher = KDESearcher(space, seed=0, min_points_in_model=3)
    seen = []
    for i in range(9):
        config = searcher.suggest(i)
        if config is None:
            break
        seen.append(space.config_key(config))
        searcher.on_result(i, config, float(config["a"]))
    assert len(seen) == 8 == len(set(seen))


def test_state_round_trip_gives_the_same_next_proposal():
    searcher = KDESearcher(SPACE, seed=4, multi_fidelity=True)
    configs = random_configs(SPACE, 15)
    feed(searcher, configs, lambda c: c["x"] + c["y"], resource=1)
    feed(searcher, configs[:5], lambda c: c["x"] + c["y"], resource=3)
    state = json.loads(json.dumps(searcher.state_dict()))
    fresh = KDESearcher(SPACE, seed=11, multi_fidelity=True)
    fresh.load_state_dict(state)
    assert [fresh.suggest(50 + i) for i in range(5)] == [searcher.suggest(50 + i)
                                                         for i in range(5)]


def test_options_are_checked():
    with pytest.raises(ValueError, match="gamma"):
        KDESearcher(SPACE, gamma=1.5)
    with pytest.raises(ValueError, match="random_fraction"):
        KDESearcher(SPACE, random_fraction=-0.1)
    with pytest.raises(ValueError, match="min_points_in_model"):
        KDESearcher(SPACE, min_points_in_model=1)
    scheduler = build_scheduler("tpe", SPACE, "loss", options={"gamma": 0.25})
    assert scheduler.searcher.gamma == 0.25
    assert type(build_scheduler("kde", SPACE, "loss").searcher) is KDESearcher
