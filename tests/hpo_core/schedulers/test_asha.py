"""ASHA (stopping and promotion variants) against hand-computed examples."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sched_sim import Driver, RecordingSearcher, make_space, with_fidelity

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.asha_promotion import PromotionASHA
from hpo_core.schedulers.rungs import (
    bracket_levels,
    hyperband_bracket_weights,
    num_continuing,
    num_promotable,
    rung_levels,
)
from hpo_core.trial import Decision

C, S, P = Decision.CONTINUE, Decision.STOP, Decision.PAUSE
SPACE = make_space()


def asha(cls=ASHA, mode="min", **options):
    options = {"max_t": 9, "grace_period": 1, "reduction_factor": 3, **options}
    return cls(SPACE, "loss", mode, 0, **with_fidelity(options))


def test_rung_levels_and_counts():
    assert rung_levels(1, 3, 81) == [1, 3, 9, 27, 81]
    assert rung_levels(1, 3, 10) == [1, 3, 9, 10]
    assert rung_levels(2, 2, 3) == [2, 3]
    assert rung_levels(5, 3, 5) == [5]
    assert [num_continuing(n, 3) for n in range(1, 10)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [num_promotable(n, 3) for n in range(1, 10)] == [0, 0, 1, 1, 1, 2, 2, 2, 3]


# values arriving at rung level 1 (eta = 3), and the hand-computed decisions: a trial continues
# iff its value is among the ceil(n/3) best of the n values recorded there so far
ARRIVALS = [5.0, 3.0, 4.0, 6.0, 3.5, 4.5, 1.0, 3.9, 3.2]
EXPECTED = [C, C, S, S, C, S, C, S, C]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_stopping_decisions_at_the_first_rung(mode):
    driver = Driver(asha(mode=mode))
    sign = 1.0 if mode == "min" else -1.0
    decisions = []
    for value in ARRIVALS:
        decisions.append(driver.report(driver.start(), 1, sign * value))
    assert decisions == EXPECTED


def test_stopping_between_rungs_and_at_max_t():
    driver = Driver(asha())
    first, second = driver.start(), driver.start()
    assert driver.report(first, 1, 2.0) == C
    assert driver.report(first, 2, 1.9) == C  # between levels: no rung
    assert driver.report(first, 3, 1.5) == C  # alone at level 3
    assert driver.report(second, 1, 1.0) == C
    assert driver.report(second, 3, 1.6) == S  # 2 values at level 3: only the best goes on
    for epoch in range(4, 9):
        assert driver.report(first, epoch, 1.0) == C
    assert driver.report(first, 9, 0.9) == S  # max_t: done
    rungs = driver.scheduler.rungs[0]
    assert [r.level for r in rungs] == [1, 3, 9]
    assert rungs[1].values == {first: 1.5, second: 1.6} and rungs[2].values == {first: 0.9}


def test_equal_values_rank_in_arrival_order():
    driver = Driver(asha())
    decisions = [driver.report(driver.start(), 1, 1.0) for _ in range(4)]
    assert decisions == [C, S, S, S]  # the 4th ranks last of 4, outside ceil(4/3) = 2


def test_a_report_skipping_levels_is_recorded_at_the_highest():
    driver = Driver(asha())
    trial = driver.start()
    assert driver.report(trial, 5, 1.0) == C
    assert trial in driver.scheduler.rungs[0][1].values
    assert trial not in driver.scheduler.rungs[0][0].values


def test_promotion_resumes_the_top_third_else_starts_new():
    driver = Driver(asha(PromotionASHA))
    t0, t1, t2 = driver.start(), driver.start(), driver.start()
    assert [driver.report(t, 1, v) for t, v in ((t0, 5.0), (t1, 3.0), (t2, 4.0))] == [P, P, P]
    assert driver.suggest() == ("resume", t1)  # floor(3/3) = 1: the best of rung 1
    t3 = driver.start()  # t1 was promoted already: a new config
    assert driver.report(t3, 1, 2.0) == P  # 4 values, floor(4/3) = 1: t3 is best, not promoted
    assert driver.suggest() == ("resume", t3)
    assert driver.report(t1, 2, 2.9) == C
    assert driver.report(t1, 3, 2.5) == P  # alone at level 3: floor(1/3) = 0, nothing promoted
    assert driver.report(t3, 3, 1.5) == P
    t4, t5 = driver.start(), driver.start()
    assert driver.report(t4, 1, 6.0) == P and driver.report(t5, 1, 3.5) == P
    # rung 1 holds 6 values: top 2 are t3 and t1, both promoted; rung 3 holds 2: none
    t6 = driver.start()
    assert driver.report(t6, 1, 3.2) == P
    t7 = driver.start()
    assert driver.report(t7, 3, 1.0) == P  # skips level 1; now 3 values at level 3
    # level 3 before level 1: the best of level 3 (t7) goes first
    assert driver.suggest() == ("resume", t7)
    t8 = driver.start()  # rung 1 has 7 values: floor = 2, t3 and t1 are promoted already
    assert driver.report(t8, 1, 9.0) == P  # now 8 values at rung 1: still 2
    t9 = driver.start()
    assert driver.report(t9, 1, 8.0) == P  # 9 values: floor = 3, the third best is t6 (3.2)
    assert driver.suggest() == ("resume", t6)
    for epoch in range(4, 9):
        assert driver.report(t7, epoch, 1.0) == C
    assert driver.report(t7, 9, 0.5) == S


def test_promotion_goes_on_after_a_promoted_trial_fails():
    driver = Driver(asha(PromotionASHA))
    trials = [driver.start() for _ in range(3)]
    for t, v in zip(trials, (1.0, 2.0, 3.0), strict=True):
        driver.report(t, 1, v)
    assert driver.suggest() == ("resume", trials[0])
    driver.fail(trials[0])
    assert driver.suggest()[0] == "start"  # the failed trial is not offered again


def test_multi_bracket_grace_periods_and_shares():
    scheduler = asha(brackets=3)
    assert scheduler.levels == [[1, 3, 9], [3, 9], [9]]
    assert bracket_levels(1, 3, 9, 2) == [[1, 3, 9], [3, 9]]
    assert np.allclose(scheduler.bracket_probabilities(), np.array([9, 4.5, 3]) / 16.5)
    driver = Driver(scheduler)
    for _ in range(3000):
        driver.start()
    counts = np.bincount(list(scheduler._bracket_of.values()), minlength=3) / 3000
    assert np.allclose(counts, [9 / 16.5, 4.5 / 16.5, 3 / 16.5], atol=0.03)
    by_bracket = {b: t for t, b in reversed(list(scheduler._bracket_of.items()))}
    # bracket 1 starts at level 3: epoch 1 is no rung there
    assert driver.report(by_bracket[1], 1, 1.0) == C
    assert not any(by_bracket[1] in r.values for r in scheduler.rungs[1])
    assert driver.report(by_bracket[1], 3, 1.0) == C
    assert by_bracket[1] in scheduler.rungs[1][0].values
    # bracket 2 runs to max_t without a rung on the way
    for epoch in range(1, 9):
        assert driver.report(by_bracket[2], epoch, 5.0) == C
    assert driver.report(by_bracket[2], 9, 5.0) == S


def test_hyperband_weights():
    weights = hyperband_bracket_weights(bracket_levels(1, 3, 81, 5), 3)
    raw = np.array([81, 5 / 4 * 27, 5 / 3 * 9, 5 / 2 * 3, 5])
    assert np.allclose(weights, raw / raw.sum())


@pytest.mark.parametrize("cls", [ASHA, PromotionASHA])
def test_searcher_is_fed_at_rung_levels(cls):
    searcher = RecordingSearcher(SPACE, seed=0)
    driver = Driver(asha(cls, searcher=searcher))
    t0 = driver.start()
    assert searcher.calls == [("start", t0)]
    driver.report(t0, 1, 3.0)
    if cls is PromotionASHA:
        assert searcher.calls[1:] == [("result", t0, 3.0, 1.0), ("end", t0)]  # paused
        assert driver.suggest()[0] == "start"  # floor(1/3) = 0: nothing to promote
        t1 = driver.next_id - 1
    else:
        assert searcher.calls[1:] == [("result", t0, 3.0, 1.0)]
        t1 = driver.start()
    driver.report(t1, 1, 1.0)
    assert ("result", t1, 1.0, 1.0) in searcher.calls
    searcher.calls.clear()
    t2 = driver.start()
    driver.report(t2, 1, 0.5)
    if cls is ASHA:
        driver.report(t2, 2, 0.4)  # between rungs: not fed
        assert searcher.calls == [("start", t2), ("result", t2, 0.5, 1.0)]
        driver.complete(t2)  # its script ended: the unfed last report goes in
        assert searcher.calls[2:] == [("result", t2, 0.4, 2.0), ("end", t2)]
    _, t3 = driver.suggest()  # a new trial (stopping) or t2 resumed (promotion)
    driver.fail(t3)
    assert searcher.calls[-1] == ("error", t3)


def test_searcher_with_intermediate_results_gets_every_report():
    searcher = RecordingSearcher(SPACE, seed=0, intermediate=True)
    driver = Driver(asha(searcher=searcher))
    t0 = driver.start()
    for epoch in (1, 2, 3):
        driver.report(t0, epoch, 1.0 / epoch)
    assert [c for c in searcher.calls if c[0] == "result"] == [
        ("result", t0, 1.0, 1.0), ("result", t0, 0.5, 2.0), ("result", t0, 1 / 3, 3.0)]
    driver.complete(t0)
    assert searcher.calls[-1] == ("end", t0)  # nothing fed twice


@pytest.mark.parametrize("cls", [ASHA, PromotionASHA])
def test_state_round_trip_mid_experiment(cls):
    driver = Driver(asha(cls, brackets=2))
    for value in ARRIVALS:
        kind, trial = driver.suggest()
        driver.report(trial, 1 if kind == "start" else 3, value)
    state = json.loads(json.dumps(driver.scheduler.state_dict()))
    fresh = asha(cls, brackets=2)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    assert fresh.suggest(99) == driver.scheduler.suggest(99)
    with pytest.raises(ValueError, match="brackets"):
        asha(cls, brackets=1).load_state_dict(state)


def test_registry_builds_both_variants_and_checks_options():
    a = build_scheduler("asha", SPACE, "loss", options={"max_t": 9})
    b = build_scheduler("asha_promotion", SPACE, "loss", options={"max_t": 9, "brackets": 2})
    assert type(a) is ASHA and type(b) is PromotionASHA and len(b.levels) == 2
    c = build_scheduler("asha", SPACE, "loss", options={"max_t": 9, "searcher": "grid",
                                                        "searcher_options": {"num_points": 2}})
    assert type(c.searcher).__name__ == "GridSearcher"
    with pytest.raises(ValueError, match="max_t"):
        build_scheduler("asha", SPACE, "loss")
    with pytest.raises(ValueError, match="scheduler_options.grace"):
        build_scheduler("asha", SPACE, "loss", options={"max_t": 9, "grace": 2})


@pytest.mark.parametrize("options, field", [
    ({"max_t": 0}, "max_t"),
    ({"max_t": 9, "grace_period": 10}, "grace_period"),
    ({"max_t": 9, "reduction_factor": 1}, "reduction_factor"),
    ({"max_t": 9, "brackets": 4}, "brackets"),
    ({"max_t": 9, "brackets": 0}, "brackets"),
    ({"max_t": 9, "resource_attr": ""}, "resource_attr"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ValueError, match=field):
        build_scheduler("asha", SPACE, "loss", options=options)


def test_report_without_the_resource_names_resource_attr():
    driver = Driver(asha(resource_attr="step"))
    trial = driver.start()
    with pytest.raises(ValueError, match="resource_attr"):
        driver.report(trial, 1, 1.0)


def test_a_report_without_the_resource_is_an_error_naming_the_spec_field():
    from hpo_core.trial import Trial, TrialResult, TrialStatus

    scheduler = asha()  # resource_attr: epoch
    trial = Trial(0, scheduler.suggest(0).config, TrialStatus.RUNNING)
    scheduler.on_trial_add(trial)
    with pytest.raises(ValueError, match=r"^spec\.scheduler_options\.resource_attr: trial 0 "
                                         r"reported \['loss', 'step'\] without a number 'epoch'"):
        scheduler.on_trial_result(trial, TrialResult(0, {"step": 1, "loss": 0.5}, 1.0))
