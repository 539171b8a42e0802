"""Synchronous Hyperband: bracket shapes, round-robin order, promotions (max_t=9, eta=3)."""

from __future__ import annotations

import pytest
from sched_sim import Driver, make_space, with_fidelity

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.hyperband import SyncHyperband
from hpo_core.trial import Decision

C, S, P = Decision.CONTINUE, Decision.STOP, Decision.PAUSE
SPACE = make_space()


def hyperband(**options):
    return SyncHyperband(SPACE, "loss", "min", 0, **with_fidelity(
        {"max_t": 9, "grace_period": 1, "reduction_factor": 3, **options}))


def test_brackets_open_round_robin_with_hyperband_sizes():
    driver = Driver(hyperband())
    for _ in range(9 + 5 + 3 + 1):
        driver.start()
    shapes = {i: (b.levels, b.sizes) for i, b in driver.scheduler.brackets.items()}
    assert shapes == {
        0: ([1, 3, 9], [9, 3, 1]),
        1: ([3, 9], [5, 1]),  # ceil(3/2 * 3) = 5 trials from epoch 3
        2: ([9], [3]),  # ceil(3/1 * 1) = 3 trials run to max_t
        3: ([1, 3, 9], [9, 3, 1]),  # and again
    }
    owner = driver.scheduler._bracket_of
    assert [owner[t] for t in range(18)] == [0] * 9 + [1] * 5 + [2] * 3 + [3]


def test_promotions_inside_a_bracket_from_epoch_3():
    driver = Driver(hyperband(brackets=2))
    for _ in range(14):
        driver.start()
    bracket1 = list(range(9, 14))
    for t in bracket1:
        assert driver.report(t, 1, 1.0) == C  # epoch 1 is no rung of bracket 1
    values = [4.0, 2.0, 3.0, 5.0, 1.0]
    for t, value in zip(bracket1, values, strict=True):
        assert driver.report(t, 3, value) == P
    assert driver.suggest() == ("resume", 13)  # floor(5/3) = 1 promoted: the best
    assert driver.suggest() == ("start", 14)  # bracket 0 still waits at rung 0: a new bracket
    assert driver.scheduler._bracket_of[14] == 2 and driver.scheduler.brackets[2].levels == [1, 3, 9]
    assert driver.report(13, 9, 0.5) == S
    assert 1 not in driver.scheduler.brackets


def test_a_one_level_bracket_runs_trials_to_max_t():
    driver = Driver(hyperband(brackets=3))
    for _ in range(17):
        driver.start()
    for epoch in range(1, 9):
        assert driver.report(14, epoch, 1.0) == C
    assert driver.report(14, 9, 1.0) == S


def test_brackets_option():
    assert len(build_scheduler("hyperband", SPACE, "loss", options={"max_t": 9}).all_levels) == 3
    with pytest.raises(ValueError, match="brackets"):
        hyperband(brackets=4)
