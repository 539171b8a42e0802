"""MOBSTER: the GP over config and resource is fitted once there is enough data."""

from __future__ import annotations

import math

import pytest
from sched_sim import make_space, run_simulation

from hpo_core.registry import build_scheduler
from hpo_core.searchers.gp_multifidelity import MultiFidelityGPSearcher

SPACE = make_space()


@pytest.mark.parametrize(("name", "model"), [("mobster", "joint"),
                                             ("mobster_independent", "independent")])
def test_gp_is_used_after_the_initial_random_configs(name, model, gp_fits):
    scheduler = build_scheduler(name, SPACE, "loss", "min", 0,
                                {"max_t": 9, "num_init_random": 4, "num_candidates": 50,
                                 "refit_every": 3, "batch_size": 2, "random_fraction": 0.0})
    searcher = scheduler.searcher
    assert type(searcher) is MultiFidelityGPSearcher and searcher.model == model
    assert (searcher.batch_size, searcher.refit_every, searcher.random_fraction) == (2, 3, 0.0)
    fits = gp_fits(searcher)
    _, result, _ = run_simulation(scheduler, max_results=60)
    assert result.reason.startswith("max_results")
    assert searcher._num_fits > 6, "the GP never proposed"
    # hyperparameters are refitted on proposals 1, 4, 7, ... only (once per GP and proposal);
    # the independent model also fits the GP of a level the first time that level is used
    proposals = sorted(set(fits))
    assert proposals[0] == 1
    if model == "joint":
        assert all((p - 1) % 3 == 0 for p in proposals[1:])
    assert len(proposals) < searcher._num_fits
    # rung-level observations only (and the last report of trials that end at epoch 4)
    assert {key[1] for key in searcher._records} <= {1.0, 3.0, 4.0, 9.0}
    gp = next(iter(searcher._gps.values()))
    assert gp.theta is not None


def test_observe_all_feeds_every_report():
    scheduler = build_scheduler("mobster", SPACE, "loss", "min", 0,
                                {"max_t": 9, "observe": "all", "num_candidates": 50})
    run_simulation(scheduler, max_results=30)
    assert {key[1] for key in scheduler.searcher._records} - {1.0, 3.0, 9.0}
    with pytest.raises(ValueError, match="observe"):
        build_scheduler("mobster", SPACE, "loss", "min", 0, {"max_t": 9, "observe": "some"})


def test_cost_aware_mobster_models_the_cost():
    # any positive reported metric can be the cost; here the epoch stands in for elapsed time
    scheduler = build_scheduler("mobster", SPACE, "loss", "min", 0,
                                {"max_t": 9, "num_init_random": 4, "num_candidates": 50,
                                 "cost_attr": "epoch"})
    run_simulation(scheduler, max_results=60)
    assert scheduler.searcher.cost_attr == "epoch"
    assert any(name.startswith("cost") for name in scheduler.searcher._gps)


def test_default_options_batch_the_proposals():
    scheduler = build_scheduler("mobster", SPACE, "loss", "min", 0, {"max_t": 9})
    searcher = scheduler.searcher
    assert (searcher.batch_size, searcher.refit_every, searcher.random_fraction) == (8, 5, 0.2)
    assert searcher.min_distance == pytest.approx(min(0.1 * math.sqrt(SPACE.ndim), 0.5))
    assert not searcher.uses_intermediate_results  # observe="rungs"
    with pytest.raises(ValueError, match="batch_size"):
        build_scheduler("mobster_independent", SPACE, "loss", "min", 0,
                        {"max_t": 9, "batch_size": 0})
