"""Synchronous successive halving against a hand-computed bracket (max_t=9, eta=3: 9 -> 3 -> 1)."""

from __future__ import annotations

import json

import pytest
from sched_sim import Driver, RecordingSearcher, make_space, with_fidelity

from hpo_core.schedulers.successive_halving import SyncSuccessiveHalving, bracket_sizes
from hpo_core.trial import Decision

C, S, P = Decision.CONTINUE, Decision.STOP, Decision.PAUSE
SPACE = make_space()
RUNG0 = [5.0, 3.0, 4.0, 6.0, 3.5, 4.5, 1.0, 3.9, 3.2]  # values of trials 0..8 at epoch 1


def sh(mode="min", **options):
    return SyncSuccessiveHalving(SPACE, "loss", mode, 0, **with_fidelity(
        {"max_t": 9, "grace_period": 1, "reduction_factor": 3, **options}))


def test_bracket_sizes():
    assert bracket_sizes(3, 3, 3) == [9, 3, 1]
    assert bracket_sizes(2, 3, 3) == [5, 1]  # ceil(3/2 * 3) = 5
    assert bracket_sizes(1, 3, 3) == [3]
    assert bracket_sizes(5, 5, 3) == [81, 27, 9, 3, 1]
    assert bracket_sizes(3, 5, 3) == [15, 5, 1]  # ceil(5/3 * 9) = 15


def fill_rung0(driver):
    trials = [driver.start() for _ in range(9)]
    assert trials == list(range(9))
    assert driver.scheduler.brackets[0].sizes == [9, 3, 1]
    return trials


@pytest.mark.parametrize("mode", ["min", "max"])
def test_rung_waits_for_all_then_promotes_the_top_third(mode):
    sign = 1.0 if mode == "min" else -1.0
    driver = Driver(sh(mode))
    trials = fill_rung0(driver)
    for t, value in zip(trials[:-1], RUNG0[:-1], strict=True):
        assert driver.report(t, 1, sign * value) == P
        assert driver.scheduler.suggest(99).is_resume is False  # waiting: no promotion yet
    assert driver.report(trials[-1], 1, sign * RUNG0[-1]) == P
    # the best three of 9: trial 6 (1.0), trial 1 (3.0), trial 8 (3.2)
    assert [driver.suggest() for _ in range(3)] == [("resume", 6), ("resume", 1), ("resume", 8)]
    for t in (6, 1, 8):
        assert driver.report(t, 2, sign * 2.0) == C
    assert driver.report(6, 3, sign * 2.0) == P
    assert driver.report(1, 3, sign * 0.5) == P
    assert driver.suggest() == ("start", 9)  # rung 2 waits for trial 8: a new bracket starts
    assert driver.report(8, 3, sign * 1.5) == P
    assert driver.suggest() == ("resume", 1)
    for epoch in range(4, 9):
        assert driver.report(1, epoch, sign * 0.4) == C
    assert driver.report(1, 9, sign * 0.3) == S
    assert list(driver.scheduler.brackets) == [1]  # bracket 0 is done; bracket 1 has trial 9
    assert driver.scheduler.brackets[1].trials == [9]


def test_failures_and_early_ends_do_not_deadlock_a_rung():
    driver = Driver(sh())
    trials = fill_rung0(driver)
    driver.fail(0)
    driver.fail(1)
    for t in trials[2:8]:
        driver.report(t, 1, float(t))
    driver.report(8, 1, 0.5)  # the last one in: rung 0 is full with 7 values
    assert [driver.suggest() for _ in range(3)] == [("resume", 8), ("resume", 2), ("resume", 3)]
    driver.fail(8)
    driver.report(2, 2, 1.0)
    driver.complete(2)  # its script ended at epoch 2, before level 3: in, without a value
    assert driver.report(3, 3, 7.0) == P
    assert driver.suggest() == ("resume", 3)  # the only value of rung 1 is promoted
    assert driver.report(3, 9, 6.0) == S
    assert driver.scheduler.brackets == {}


def test_a_rung_without_values_ends_the_bracket():
    driver = Driver(sh())
    for t in fill_rung0(driver):
        driver.fail(t)
    assert driver.scheduler.brackets == {}
    assert driver.suggest() == ("start", 9)
    assert list(driver.scheduler.brackets) == [1]


def test_searcher_feeding():
    searcher = RecordingSearcher(SPACE, seed=0)
    driver = Driver(sh(searcher=searcher))
    fill_rung0(driver)
    assert searcher.calls == [("start", t) for t in range(9)]
    searcher.calls.clear()
    driver.report(0, 1, 2.0)
    assert searcher.calls == [("result", 0, 2.0, 1.0), ("end", 0)]
    driver.fail(1)
    assert searcher.calls[-1] == ("error", 1)


def test_state_round_trip_mid_bracket():
    driver = Driver(sh())
    fill_rung0(driver)
    for t, value in enumerate(RUNG0):
        driver.report(t, 1, value)
    assert [driver.suggest() for _ in range(4)] == \
        [("resume", 6), ("resume", 1), ("resume", 8), ("start", 9)]  # 9: a second bracket
    driver.report(6, 3, 1.0)
    state = json.loads(json.dumps(driver.scheduler.state_dict()))
    fresh = sh()
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert [fresh.suggest(10) for _ in range(3)] == \
        [driver.scheduler.suggest(10) for _ in range(3)]


def test_report_without_resource_names_resource_attr():
    driver = Driver(sh(resource_attr="step"))
    trial = driver.start()
    with pytest.raises(ValueError, match="resource_attr"):
        driver.report(trial, 1, 1.0)
