"""GP-based Bayesian optimization: the searcher, its constrained / cost-aware modes, and the
multi-fidelity variants MOBSTER-like schedulers build on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.fifo import FIFOScheduler
from hpo_core.searchers.gp import GPSearcher
from hpo_core.searchers.gp_multifidelity import MultiFidelityGPSearcher
from hpo_core.searchers.random import RandomSearcher
from hpo_core.searchers.registry import build_searcher
from hpo_core.space import ConfigSpace, choice, lograndint, loguniform, ordinal, randint, uniform
from hpo_core.trial import Trial, TrialResult, TrialStatus

BRANIN_SPACE = ConfigSpace({"x1": uniform(-5, 10), "x2": uniform(0, 15)})
BRANIN_MIN = 0.397887


def branin(c):
    x1, x2 = c["x1"], c["x2"]
    return ((x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
            + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


def run(searcher, f, n, metrics=None):
    """Sequential loop: propose, evaluate, report. Returns the values in order."""
    values = []
    for i in range(n):
        config = searcher.suggest(i)
        searcher.on_trial_start(i, config)
        value = f(config)
        searcher.on_result(i, config, value, metrics=metrics(config) if metrics else None)
        searcher.on_trial_end(i)
        values.append(value)
    return values


def test_beats_random_search_on_branin():
    gp = [min(run(GPSearcher(BRANIN_SPACE, seed=s), branin, 25)) for s in range(3)]
    rs = [min(run(RandomSearcher(BRANIN_SPACE, seed=s), branin, 25)) for s in range(3)]
    assert max(gp) < BRANIN_MIN + 0.2, gp  # every seed gets close to the global minimum
    assert np.median(gp) - BRANIN_MIN < 0.2 * (np.median(rs) - BRANIN_MIN), (gp, rs)


def test_points_to_evaluate_then_random_then_the_model():
    searcher = GPSearcher(BRANIN_SPACE, seed=0, num_init_random=4,
                          points_to_evaluate=[{"x1": 1.0, "x2": 2.0}])
    first = searcher.suggest(0)
    assert first == {"x1": 1.0, "x2": 2.0}
    run_from = [first]
    searcher.on_trial_start(0, first)
    searcher.on_result(0, first, branin(first))
    searcher.on_trial_end(0)
    for i in range(1, 4):
        config = searcher.suggest(i)
        run_from.append(config)
        searcher.on_trial_start(i, config)
        searcher.on_result(i, config, branin(config))
        searcher.on_trial_end(i)
    assert searcher._num_fits == 0  # the first num_init_random proposals use no model
    searcher.suggest(4)
    assert searcher._num_fits == 1


@pytest.mark.parametrize("seed", [1, 2])
def test_pending_trials_are_fantasized_so_parallel_proposals_differ(seed):
    searcher = GPSearcher(BRANIN_SPACE, seed=seed)
    run(searcher, branin, 10)
    proposals = []
    for i in range(10, 14):  # four workers start before any result comes back
        config = searcher.suggest(i)
        searcher.on_trial_start(i, config)
        proposals.append(BRANIN_SPACE.encode(config))
    P = np.array(proposals)
    distances = np.linalg.norm(P[:, None] - P[None], axis=-1)[np.triu_indices(4, 1)]
    assert distances.min() > 0.02, distances
    assert len(searcher.state_dict()["pending"]) == 4


def test_constrained_bo_avoids_the_infeasible_region():
    space = ConfigSpace({"x": uniform(0, 1)})
    searcher = GPSearcher(space, seed=0, constraint_attr="c", num_init_random=5)
    xs = []
    run(searcher, lambda c: xs.append(c["x"]) or (c["x"] - 0.9) ** 2, 20,
        metrics=lambda c: {"c": c["x"] - 0.5})  # feasible: x <= 0.5; unconstrained best 0.9
    model_based = np.array(xs[5:])
    assert np.mean(model_based <= 0.5 + 1e-3) >= 0.75, model_based
    best_feasible = max(x for x in xs if x <= 0.5)
    assert best_feasible > 0.45


def test_cost_aware_bo_prefers_cheap_configs():
    space = ConfigSpace({"x": uniform(0, 1), "y": uniform(0, 1)})

    def f(c):  # two equally good minima, x = 0.2 (cheap) and x = 0.8 (expensive)
        return min((c["x"] - 0.2) ** 2, (c["x"] - 0.8) ** 2) + (c["y"] - 0.5) ** 2

    def cost(c):
        return {"seconds": math.exp(4 * c["x"])}

    mean_x = {}
    for cost_attr in (None, "seconds"):
        xs = []
        for seed in range(2):
            searcher = GPSearcher(space, seed=seed, cost_attr=cost_attr, num_init_random=5)
            chosen: list[float] = []

            def evaluate(c, chosen=chosen):
                chosen.append(c["x"])
                return f(c)

            run(searcher, evaluate, 16, metrics=cost)
            xs += chosen[5:]  # the model-based proposals
        mean_x[cost_attr] = np.mean(xs)
    assert mean_x["seconds"] < mean_x[None] - 0.2, mean_x


MIXED = ConfigSpace({
    "lr": loguniform(1e-4, 1e-1),
    "units": lograndint(16, 512),
    "layers": randint(1, 4),
    "act": choice(["relu", "tanh", "gelu"]),
    "depth": ordinal([2, 4, 8]),
    "epochs": 10,
})


def mixed_objective(c):
    return (math.log10(c["lr"]) + 2.5) ** 2 + 0.5 * (c["act"] != "tanh") + 0.1 * c["layers"] \
        + abs(math.log2(c["units"]) - 7) * 0.2 + 0.1 * (c["depth"] != 4)


def test_categorical_and_integer_spaces_give_valid_distinct_configs():
    searcher = GPSearcher(MIXED, seed=3)
    configs = []
    run(searcher, lambda c: configs.append(c) or mixed_objective(c), 25)
    for config in configs:
        MIXED.validate(config)
        assert config["epochs"] == 10
    assert len({MIXED.config_key(c) for c in configs}) == len(configs)
    assert np.mean([c["act"] == "tanh" for c in configs[-10:]]) >= 0.5  # the model learnt it


def test_small_finite_space_is_exhausted_without_repeats():
    space = ConfigSpace({"a": randint(0, 2), "b": choice(["p", "q"])})
    searcher = GPSearcher(space, seed=0, num_init_random=2)
    configs = []
    for i in range(7):
        config = searcher.suggest(i)
        if config is None:
            break
        configs.append(config)
        searcher.on_trial_start(i, config)
        searcher.on_result(i, config, float(config["a"]) + (config["b"] == "q"))
        searcher.on_trial_end(i)
    assert len(configs) == 6
    assert len({space.config_key(c) for c in configs}) == 6


def test_state_round_trip_gives_the_same_next_proposal():
    searcher = GPSearcher(MIXED, seed=4, constraint_attr="c", cost_attr="t")
    run(searcher, mixed_objective, 12,
        metrics=lambda c: {"c": c["layers"] - 2.5, "t": c["units"] / 100})
    for i in (12, 13):  # two pending trials
        searcher.on_trial_start(i, searcher.suggest(i))
    state = json.loads(json.dumps(searcher.state_dict()))
    fresh = GPSearcher(MIXED, seed=99, constraint_attr="c", cost_attr="t")
    fresh.load_state_dict(state)
    assert fresh.suggest(14) == searcher.suggest(14)


def test_fifo_passes_all_metrics_to_the_searcher():
    space = ConfigSpace({"x": uniform(0, 1)})
    searcher = GPSearcher(space, seed=0, constraint_attr="c")
    scheduler = FIFOScheduler(space, "acc", "max", seed=0, searcher=searcher)
    config = scheduler.suggest(0).config
    trial = Trial(0, config, TrialStatus.RUNNING)
    scheduler.on_trial_add(trial)
    result = TrialResult(0, {"acc": 0.8, "c": -1.5}, 1.0)
    scheduler.on_trial_result(trial, result)
    scheduler.on_trial_complete(trial, result)
    record = searcher.state_dict()["records"][0]
    assert record["value"] == -0.8 and record["constraint"] == -1.5
    assert searcher.state_dict()["pending"] == []


def test_options_are_checked_and_errors_name_them():
    with pytest.raises(ValueError, match="num_init_random"):
        GPSearcher(BRANIN_SPACE, num_init_random=0)
    with pytest.raises(ValueError, match="cost_exponent"):
        GPSearcher(BRANIN_SPACE, cost_exponent=-1)
    with pytest.raises(ValueError, match="scheduler_options.typo"):
        build_scheduler("bo", BRANIN_SPACE, "loss", options={"typo": 1})
    scheduler = build_scheduler("cbo", BRANIN_SPACE, "loss", options={"constraint_attr": "mem"})
    assert scheduler.searcher.constraint_attr == "mem"
    with pytest.raises(ValueError, match="model"):
        MultiFidelityGPSearcher(BRANIN_SPACE, max_resource=9, model="shared")


# -- multi-fidelity ------------------------------------------------------------------------------
def curve(c, r):
    return (c["x"] - 0.3) ** 2 + 0.5 / r


def feed_curves(searcher, trials, levels, start_id=0):
    rng = np.random.default_rng(0)
    for i in range(trials):
        config = {"x": float(rng.random())}
        searcher.on_trial_start(start_id + i, config)
        for r in levels[: 1 + i % len(levels)]:
            searcher.on_result(start_id + i, config, curve(config, r), resource=r)
        searcher.on_trial_end(start_id + i)


def test_joint_model_proposes_near_the_optimum_at_the_max_resource():
    space = ConfigSpace({"x": uniform(0, 1)})
    searcher = build_searcher("gp_multifidelity", space, seed=0,
                              options={"max_resource": 9, "model": "joint"})
    assert searcher.uses_intermediate_results
    feed_curves(searcher, 12, [1, 3, 9])
    assert searcher.input_dim == 2
    config = searcher.suggest(100)
    assert abs(config["x"] - 0.3) < 0.1, config
    # the resource may also come in the metrics only
    searcher.on_result(101, {"x": 0.5}, 1.0, metrics={"epoch": 3})
    assert (101, 3.0) in searcher._records


def test_independent_model_uses_the_highest_level_with_enough_points():
    space = ConfigSpace({"x": uniform(0, 1)})
    searcher = MultiFidelityGPSearcher(space, seed=0, max_resource=9, model="independent",
                                       min_points_per_level=5)
    feed_curves(searcher, 12, [1, 3, 9])  # levels hold 12, 8 and 4 points
    config = searcher.suggest(100)
    assert searcher._level == 3.0
    assert abs(config["x"] - 0.3) < 0.15
    feed_curves(searcher, 3, [9], start_id=50)
    searcher.suggest(101)
    assert searcher._level == 9.0
    state = json.loads(json.dumps(searcher.state_dict()))
    fresh = MultiFidelityGPSearcher(space, seed=5, max_resource=9, model="independent",
                                    min_points_per_level=5)
    fresh.load_state_dict(state)
    assert fresh.suggest(102) == searcher.suggest(102)


def test_refit_every_keeps_the_hyperparameters_between_refits():
    searcher = GPSearcher(BRANIN_SPACE, seed=0, num_init_random=5, refit_every=3)
    thetas = []
    for i in range(11):
        config = searcher.suggest(i)
        searcher.on_trial_start(i, config)
        searcher.on_result(i, config, branin(config))
        searcher.on_trial_end(i)
        if searcher._num_fits:
            thetas.append(searcher.state_dict()["gps"]["objective"]["theta"])
    # proposals 1..6 use the model: refits on the 1st and 4th only
    assert thetas[0] == thetas[1] == thetas[2] != thetas[3] == thetas[4] == thetas[5]


# -- batches of proposals ------------------------------------------------------------------------
def feed_random(searcher, n, start_id=0):
    """n random configs of the Branin space, evaluated and reported (no proposals)."""
    rng = np.random.default_rng(1)
    for i in range(start_id, start_id + n):
        config = BRANIN_SPACE.sample(rng)
        searcher.on_trial_start(i, config)
        searcher.on_result(i, config, branin(config))
        searcher.on_trial_end(i)


def test_one_fit_gives_a_batch_of_spread_out_proposals():
    searcher = GPSearcher(BRANIN_SPACE, seed=0, num_init_random=5, num_candidates=200,
                          batch_size=4, min_distance=0.2)
    feed_random(searcher, 10)
    tried = np.array([BRANIN_SPACE.encode(r["config"])
                      for r in searcher.state_dict()["records"]])
    batch = []
    for i in range(10, 14):  # four workers start before any result comes back
        config = searcher.suggest(i)
        searcher.on_trial_start(i, config)
        batch.append(BRANIN_SPACE.encode(config))
    assert searcher._num_fits == 1  # one model fit for the whole batch
    P = np.array(batch)
    between = np.linalg.norm(P[:, None] - P[None], axis=-1)[np.triu_indices(4, 1)]
    to_tried = np.linalg.norm(P[:, None] - tried[None], axis=-1)
    assert between.min() >= 0.2 and to_tried.min() >= 0.2, (between, to_tried)
    searcher.on_trial_start(14, searcher.suggest(14))  # the batch ran out: a new fit
    assert searcher._num_fits == 2


@pytest.mark.parametrize(("new_results", "fits"), [(1, 1), (2, 2)])
def test_a_batch_is_dropped_when_the_data_grew_by_more_than_ten_percent(new_results, fits):
    searcher = GPSearcher(BRANIN_SPACE, seed=0, num_init_random=5, num_candidates=100,
                          batch_size=4)
    feed_random(searcher, 10)
    searcher.on_trial_start(10, searcher.suggest(10))
    feed_random(searcher, new_results, start_id=20)
    searcher.suggest(11)
    assert searcher._num_fits == fits


def test_refit_every_counts_model_fits_of_batches(gp_fits):
    searcher = GPSearcher(BRANIN_SPACE, seed=0, num_init_random=5, num_candidates=100,
                          batch_size=2, refit_every=2)
    fits = gp_fits(searcher)
    feed_random(searcher, 5)
    for i in range(5, 15):  # sequential: each result below 10% growth, batches run out
        config = searcher.suggest(i)
        searcher.on_trial_start(i, config)
        searcher.on_result(i, config, branin(config))
        searcher.on_trial_end(i)
    assert searcher._num_fits >= 5
    assert fits == list(range(1, searcher._num_fits + 1, 2))  # model fits 1, 3, 5, ...


def test_random_fraction_one_never_uses_the_model():
    searcher = GPSearcher(BRANIN_SPACE, seed=0, num_init_random=2, random_fraction=1.0)
    run(searcher, branin, 8)
    assert searcher._num_fits == 0


def test_state_round_trip_keeps_the_batch():
    searcher = GPSearcher(BRANIN_SPACE, seed=0, num_init_random=5, num_candidates=100,
                          batch_size=3, min_distance=None)
    assert searcher.min_distance == pytest.approx(0.1 * math.sqrt(2))
    feed_random(searcher, 8)
    searcher.on_trial_start(8, searcher.suggest(8))
    state = json.loads(json.dumps(searcher.state_dict()))
    assert len(state["batch"]) == 2
    fresh = GPSearcher(BRANIN_SPACE, seed=7, num_init_random=5, num_candidates=100,
                       batch_size=3, min_distance=None)
    fresh.load_state_dict(state)
    assert fresh.suggest(9) == searcher.suggest(9)
    assert fresh._num_fits == searcher._num_fits == 1


@pytest.mark.parametrize(("option", "value"), [("batch_size", 0), ("batch_size", 1.5),
                                               ("min_distance", 1.0), ("min_distance", -0.1),
                                               ("random_fraction", 1.5), ("refit_every", 0)])
def test_batch_options_are_checked(option, value):
    with pytest.raises(ValueError, match=option):
        GPSearcher(BRANIN_SPACE, **{option: value})
    with pytest.raises(ValueError, match=option):
        MultiFidelityGPSearcher(BRANIN_SPACE, max_resource=9, **{option: value})
