"""The median stopping rule on a hand example."""

from __future__ import annotations

import pytest
from sched_sim import make_space, run_simulation

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.median_stopping import MedianStoppingRule
from hpo_core.trial import Decision, Trial, TrialResult, TrialStatus

SPACE = make_space()


def report(scheduler, trial_id, epoch, loss):
    trial = Trial(trial_id, SPACE.sample(scheduler.rng), TrialStatus.RUNNING)
    return scheduler.on_trial_result(trial, TrialResult(trial_id, {"epoch": epoch, "loss": loss},
                                                        float(epoch)))


def test_stops_only_trials_worse_than_the_median_of_running_averages():
    rule = MedianStoppingRule(SPACE, "loss", grace_period=1, min_samples_required=3, seed=0)
    curves = {0: [1.0, 0.8, 0.6], 1: [2.0, 1.5, 1.0], 2: [3.0, 2.0, 1.5]}
    for epoch in range(1, 4):
        for tid, curve in curves.items():
            # with fewer than three others at an epoch, nobody is stopped
            assert report(rule, tid, epoch, curve[epoch - 1]) == Decision.CONTINUE
    # averages at epoch 1: 1, 2, 3 -> median 2; trial 3's best 5 is worse
    assert report(rule, 3, 1, 5.0) == Decision.STOP
    assert report(rule, 4, 1, 1.5) == Decision.CONTINUE
    # epoch 2: its best is still 1.5; averages 0.9, 1.75, 2.5 (trial 3 never got there)
    assert report(rule, 4, 2, 1.9) == Decision.CONTINUE
    # epoch 3: averages 0.8, 1.5, 2.1667 -> median 1.5; best 1.5 is not worse: continue
    assert report(rule, 4, 3, 1.6) == Decision.CONTINUE
    # trial 5: epoch 1 median 2 (now with trial 4's 1.5), epoch 2 median (1.7 + 1.75) / 2;
    # at epoch 3 the averages are 0.8, 1.5, 2.1667 and trial 4's 1.6667 -> median 1.5833
    for epoch, loss in ((1, 1.8), (2, 1.7)):
        assert report(rule, 5, epoch, loss) == Decision.CONTINUE
    assert rule.should_stop(5, 2.0) is False
    assert report(rule, 5, 3, 1.6) == Decision.STOP


def test_grace_period_and_min_samples():
    rule = MedianStoppingRule(SPACE, "loss", grace_period=2, min_samples_required=2, seed=0)
    for tid in (0, 1):
        report(rule, tid, 1, 1.0)
        report(rule, tid, 2, 1.0)
    assert report(rule, 2, 1, 9.0) == Decision.CONTINUE  # in the grace period
    assert report(rule, 2, 2, 9.0) == Decision.STOP
    with pytest.raises(ValueError, match="min_samples_required"):
        MedianStoppingRule(SPACE, "loss", min_samples_required=0)


def test_stops_some_trials_in_a_run_and_keeps_the_searcher_informed():
    scheduler = build_scheduler("median_stopping", SPACE, "loss", "min", 0,
                                {"min_samples_required": 2})
    _, result, trace = run_simulation(scheduler, max_results=80)
    assert Decision.STOP in trace.decisions
    assert result.best_value is not None


def test_a_report_without_the_resource_names_resource_attr():
    """A misspelled resource_attr is an error at the first report (it stopped nothing)."""
    rule = MedianStoppingRule(SPACE, "loss", resource_attr="step", seed=0)
    with pytest.raises(ValueError, match=r"^spec\.scheduler_options\.resource_attr: trial 0 "
                                         r"reported \['epoch', 'loss'\] without a number 'step'"):
        report(rule, 0, 1, 0.5)
