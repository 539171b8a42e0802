"""BOHB (asynchronous) and synchronous BOHB: the KDE model takes over once a level has data."""

from __future__ import annotations

import pytest
from sched_sim import make_space, run_simulation

from hpo_core.registry import build_scheduler
from hpo_core.searchers.kde import KDESearcher

SPACE = make_space()


def count_model_proposals(searcher: KDESearcher) -> list[float]:
    """Patch the searcher so that each model-based proposal records the level it used."""
    levels: list[float] = []
    split = searcher.split

    def recording_split():
        good, bad = split()
        levels.append(searcher.model_level())
        return good, bad

    searcher.split = recording_split  # type: ignore[method-assign]
    return levels


@pytest.mark.parametrize("name", ["bohb", "sync_bohb"])
def test_kde_model_is_used_after_enough_data(name):
    scheduler = build_scheduler(name, SPACE, "loss", "min", 0,
                                {"max_t": 9, "min_points_in_model": 5, "random_fraction": 0.2})
    assert isinstance(scheduler.searcher, KDESearcher)
    assert not scheduler.searcher.uses_intermediate_results  # rung-level observations
    levels = count_model_proposals(scheduler.searcher)
    _, result, _ = run_simulation(scheduler, max_results=150)
    assert result.reason.startswith("max_results")
    assert levels, "the model was never used"
    # observations arrive at rung levels (and at the last epoch of a trial that ended before
    # its next rung), and the model moves up to the highest level with enough data
    observed = set(scheduler.searcher._values)
    assert {1.0, 3.0} <= observed and max(observed) <= 9.0
    assert max(levels) > 1.0


def test_bohb_options_are_checked():
    with pytest.raises(ValueError, match="gamma"):
        build_scheduler("bohb", SPACE, "loss", "min", 0, {"max_t": 9, "gamma": 1.5})
