"""max_resource_attr: the config entry a multi-fidelity scheduler sets to the segment's end."""

from __future__ import annotations

import pytest

from hpo_core.registry import build_scheduler
from hpo_core.trial import Decision, Trial, TrialResult

SPACE = {"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 27}
OPTIONS = {"max_t": 27, "grace_period": 1, "reduction_factor": 3, "max_resource_attr": "epochs"}


def test_stopping_schedulers_train_to_max_t():
    for method in ("asha", "bohb", "moasha"):
        metric = ["loss", "loss2"] if method == "moasha" else "loss"
        scheduler = build_scheduler(method, SPACE, metric, options=OPTIONS, seed=0)
        assert scheduler.suggest(0).config["epochs"] == 27


def test_promotion_trains_to_the_next_rung_level_and_survives_a_state_round_trip():
    scheduler = build_scheduler("asha_promotion", SPACE, "loss", seed=0,
                                options={**OPTIONS, "brackets": 2})
    starts = {}
    for tid in range(6):
        config = scheduler.suggest(tid).config
        scheduler.on_trial_add(Trial(tid, config))
        starts[tid] = config["epochs"]
        # a new trial trains to the first level of the bracket it was drawn into
        assert config["epochs"] == scheduler.levels[scheduler._bracket_of[tid]][0]
    assert set(starts.values()) == {1, 3}
    for tid, level in starts.items():
        metrics = {"epoch": level, "loss": float(tid)}
        assert scheduler.on_trial_result(Trial(tid, {}), TrialResult(tid, metrics, 1.0)) \
            == Decision.PAUSE
    again = build_scheduler("asha_promotion", SPACE, "loss", seed=0,
                            options={**OPTIONS, "brackets": 2})
    again.load_state_dict(scheduler.state_dict())
    resume = again.suggest(6)
    assert resume.is_resume
    bracket = again._bracket_of[resume.resume_trial_id]
    level = starts[resume.resume_trial_id]
    next_level = again.levels[bracket][again.levels[bracket].index(level) + 1]
    assert resume.config == {"x": resume.config["x"], "epochs": next_level}


@pytest.mark.parametrize(("space", "message"), [
    ({"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}}, "not in the config space"),
    ({"x": {"type": "uniform", "lower": 0.0, "upper": 1.0},
      "epochs": {"type": "randint", "lower": 1, "upper": 27}}, "is searched"),
    # trials would train past what the spec fixes
    ({"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}, "epochs": 5},
     "'epochs' is fixed at 5 in the config space, but max_t is 27: .* must agree"),
])
def test_max_resource_attr_must_be_a_fixed_entry(space, message):
    with pytest.raises(ValueError, match=f"max_resource_attr: .*{message}"):
        build_scheduler("asha", space, "loss", options=OPTIONS)


@pytest.mark.parametrize("method", ["successive_halving", "hyperband", "sync_bohb", "dehb"])
def test_synchronous_brackets_train_each_segment_to_the_rung_level(method):
    scheduler = build_scheduler(method, SPACE, "loss", seed=0, options=OPTIONS)
    trials, next_id = {}, 0
    for _ in range(60):  # run the brackets: start or resume, then report at the level given
        suggestion = scheduler.suggest(next_id)
        if suggestion is None:
            break
        if suggestion.is_resume:
            trial = trials[suggestion.resume_trial_id]
            trial.config = dict(suggestion.config)
        else:
            trial = trials[next_id] = Trial(next_id, dict(suggestion.config))
            scheduler.on_trial_add(trial)
            next_id += 1
        level = trial.config["epochs"]
        assert level in (1, 3, 9, 27)
        metrics = {"epoch": level, "loss": trial.config["x"]}
        decision = scheduler.on_trial_result(trial, TrialResult(trial.trial_id, metrics, 1.0))
        # the level given is a decision point (DEHB may also stop a config it will not promote)
        below = {Decision.PAUSE, Decision.STOP} if method == "dehb" else {Decision.PAUSE}
        assert decision in ({Decision.STOP} if level == 27 else below)
    assert any(t.config["epochs"] == 27 for t in trials.values())
