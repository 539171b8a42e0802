"""Regularized evolution."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hpo_core.registry import build_scheduler
from hpo_core.searchers.random import RandomSearcher
from hpo_core.searchers.rea import REASearcher
from hpo_core.space import ConfigSpace, choice, lograndint, loguniform, ordinal, randint, uniform

SPACE = ConfigSpace({
    "lr": loguniform(1e-4, 1e-1),
    "x": uniform(0, 1),
    "units": lograndint(16, 512),
    "layers": randint(1, 4),
    "act": choice(["relu", "tanh"]),
    "depth": ordinal([2, 4, 8]),
    "fixed": 1,
    "one": randint(3, 3),
})


def f(c):
    return (c["x"] - 0.3) ** 2 + (np.log10(c["lr"]) + 2) ** 2 + (c["act"] == "relu")


@pytest.mark.parametrize("mutation", ["local", "resample"])
def test_mutation_changes_exactly_one_hyperparameter_and_stays_in_the_space(mutation):
    searcher = REASearcher(SPACE, seed=0, mutation=mutation)
    rng = np.random.default_rng(1)
    changed = set()
    for _ in range(300):
        parent = SPACE.sample(rng)
        child = searcher.mutate(parent)
        SPACE.validate(child)
        diff = [k for k in parent if child[k] != parent[k]]
        assert len(diff) <= 1  # a local step may round back to the same integer, rarely
        changed.update(diff)
    assert changed == {"lr", "x", "units", "layers", "act", "depth"}  # never "fixed", "one"


def test_random_start_then_tournament_children_of_the_best():
    searcher = REASearcher(SPACE, seed=2, population_size=10, sample_size=10)
    for i in range(10):  # the random initial population
        config = searcher.suggest(i)
        searcher.on_trial_start(i, config)
        searcher.on_result(i, config, f(config))
    best = min(searcher.population, key=lambda m: m[2])[1]
    for i in range(10, 15):  # sample_size == population_size: the parent is always the best
        child = searcher.suggest(i)
        assert sum(child[k] != best[k] for k in best) == 1


def test_aging_removes_the_oldest_even_if_it_is_the_best():
    searcher = REASearcher(SPACE, seed=3, population_size=5, sample_size=2)
    for i in range(8):
        config = searcher.suggest(i)
        searcher.on_result(i, config, -100.0 if i == 0 else float(i))
        assert len(searcher.population) == min(i + 1, 5)
    assert [m[0] for m in searcher.population] == [3, 4, 5, 6, 7]


def test_beats_random_search():
    def best(searcher):
        values = []
        for i in range(80):
            config = searcher.suggest(i)
            values.append(f(config))
            searcher.on_result(i, config, values[-1])
        return min(values)

    rea = [best(REASearcher(SPACE, seed=s, population_size=20)) for s in range(4)]
    rnd = [best(RandomSearcher(SPACE, seed=s)) for s in range(4)]
    assert np.median(rea) < 0.5 * np.median(rnd), (rea, rnd)


def test_state_round_trip_gives_the_same_next_proposals():
    searcher = REASearcher(SPACE, seed=4, population_size=6, sample_size=3)
    for i in range(9):
        config = searcher.suggest(i)
        searcher.on_result(i, config, f(config))
    state = json.loads(json.dumps(searcher.state_dict()))
    fresh = REASearcher(SPACE, seed=0, population_size=6, sample_size=3)
    fresh.load_state_dict(state)
    assert [fresh.suggest(20 + i) for i in range(5)] == [searcher.suggest(20 + i)
                                                         for i in range(5)]


def test_options_are_checked():
    with pytest.raises(ValueError, match="population_size"):
        REASearcher(SPACE, population_size=0)
    with pytest.raises(ValueError, match="mutation"):
        REASearcher(SPACE, mutation="crossover")
    with pytest.raises(ValueError, match="mutation_scale"):
        REASearcher(SPACE, mutation_scale=2.0)
    scheduler = build_scheduler("rea", SPACE, "loss", options={"sample_size": 3})
    assert scheduler.searcher.sample_size == 3
