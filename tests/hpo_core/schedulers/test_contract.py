"""The scheduler contract: every method of the registry passes these checks.

Methods are read from `hpo_core.registry.METHODS` when the tests are collected, so a newly
registered method is checked without touching this file. A method that takes `max_t` or
`resource_attr` gets them filled in; anything else it needs goes into `OPTIONS`.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np
import pytest
from sched_sim import MAX_T, losses, make_space, run_simulation

from hpo_core.registry import METHODS, build_scheduler, method_names
from hpo_core.schedulers.base import Scheduler
from hpo_core.trial import Decision, Trial, TrialResult, TrialStatus

SPACE = make_space()


def earlier_task(seed: int) -> dict[str, Any]:
    """Evaluations of an earlier experiment on the test problem, inline (transfer methods)."""
    rng = np.random.default_rng(seed)
    configs = [SPACE.sample(rng) for _ in range(12)]
    return {"configs": configs, "values": [losses(SPACE, c, MAX_T)[0] for c in configs],
            "mode": "min"}


TRANSFER = {"transfer_from": [earlier_task(0), earlier_task(1)]}
#: Extra scheduler options a method needs on the test problem (method name -> options).
OPTIONS: dict[str, dict[str, Any]] = {"grid": {"num_points": 3},
                                      "zero_shot": {**TRANSFER, "num_configs": 4},
                                      "bounding_box": TRANSFER}
#: Methods whose sequence of configs does not depend on the seed.
SEED_INSENSITIVE = {"grid"}

NAMES = method_names()


def options_for(name: str) -> dict[str, Any]:
    params = METHODS[name].option_names()
    options: dict[str, Any] = {}
    if "max_t" in params:
        options["max_t"] = MAX_T
    if "resource_attr" in params:
        options["resource_attr"] = "epoch"
    return {**options, **OPTIONS.get(name, {})}


def build(name: str, seed: int = 0, mode: str = "min") -> Scheduler:
    info = METHODS[name]
    metric: str | list[str] = ["loss", "loss2"] if info.multi_objective else "loss"
    modes: str | list[str] = [mode, mode] if info.multi_objective else mode
    return build_scheduler(name, SPACE, metric, modes, seed, options_for(name))


@functools.cache
def reference_run(name: str):
    """The run of seed 0, mode min (shared by the tests below)."""
    return run_simulation(build(name))


@pytest.mark.parametrize("name", NAMES)
def test_runs_to_the_limit_with_valid_configs_and_decisions(name):
    tuner, result, trace = reference_run(name)
    assert result.reason.startswith("max_results"), result.reason  # no deadlock, no running dry
    assert len(tuner.trials) >= 3
    for trial in tuner.trials.values():
        SPACE.validate(trial.config)
    assert trace.decisions and all(isinstance(d, Decision) for d in trace.decisions)
    assert result.best_config is not None
    SPACE.validate(result.best_config)


@pytest.mark.parametrize("name", NAMES)
def test_a_method_that_pauses_trials_says_so(name):
    """`may_pause` tells the backend to hold each report for the tuner (exact pauses on Dask);
    a method that pauses without it would let its paused trials run on past their reports."""
    tuner, _, trace = reference_run(name)
    if Decision.PAUSE in trace.decisions:
        assert tuner.scheduler.may_pause


@pytest.mark.parametrize("name", NAMES)
def test_errors_and_completions_do_not_break_later_suggestions(name):
    _, _, trace = reference_run(name)
    first_error = next(i for i, e in enumerate(trace.trace) if e[0] == "error")
    assert any(e[0] == "start" for e in trace.trace[first_error:])
    # and directly: a completed trial and a failed trial, then more suggestions
    scheduler = build(name)
    first = _start(scheduler, 0)
    result = TrialResult(0, {"epoch": 1, "loss": 1.0, "loss2": 1.0}, 1.0)
    if scheduler.on_trial_result(first, result) == Decision.CONTINUE:
        first.status = TrialStatus.COMPLETED
        scheduler.on_trial_complete(first, result)
    second = _start(scheduler, 1)
    second.status = TrialStatus.FAILED
    scheduler.on_trial_error(second)
    suggestion = scheduler.suggest(2)
    assert suggestion is not None
    if not suggestion.is_resume:
        SPACE.validate(suggestion.config)


def _start(scheduler: Scheduler, trial_id: int) -> Trial:
    suggestion = scheduler.suggest(trial_id)
    assert suggestion is not None and not suggestion.is_resume
    trial = Trial(trial_id, dict(suggestion.config), TrialStatus.RUNNING)
    scheduler.on_trial_add(trial)
    return trial


def probe(scheduler: Scheduler, trials: dict[int, Trial], next_id: int) -> list[Any]:
    """What a scheduler does next: six suggestions, each followed by up to three reports."""
    trials = {t: Trial.from_dict(trial.to_dict()) for t, trial in trials.items()}
    seen: list[Any] = []
    for _ in range(6):
        suggestion = scheduler.suggest(next_id)
        if suggestion is None:
            seen.append(None)
            break
        seen.append((suggestion.config, suggestion.resume_trial_id, suggestion.checkpoint_from))
        if suggestion.is_resume:
            trial = trials[suggestion.resume_trial_id]
            if suggestion.config is not None:
                trial.config = dict(suggestion.config)
        else:
            trial = Trial(next_id, dict(suggestion.config), TrialStatus.RUNNING)
            trials[next_id] = trial
            scheduler.on_trial_add(trial)
            next_id += 1
        trial.status = TrialStatus.RUNNING
        done = int((trial.last_result or {}).get("epoch", 0))
        for epoch in range(done + 1, min(done + 3, MAX_T) + 1):
            loss, loss2 = losses(SPACE, trial.config, epoch)
            metrics = {"epoch": epoch, "loss": loss, "loss2": loss2}
            trial.last_result, trial.num_results = metrics, trial.num_results + 1
            decision = scheduler.on_trial_result(trial, TrialResult(trial.trial_id, metrics, 0.0))
            seen.append(decision)
            if decision != Decision.CONTINUE:
                trial.status = TrialStatus.PAUSED if decision == Decision.PAUSE \
                    else TrialStatus.STOPPED
                break
    return seen


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_through_json(name):
    scheduler = build(name)
    tuner, _, _ = run_simulation(scheduler, max_results=20)
    text = json.dumps(scheduler.state_dict())
    fresh = build(name)
    fresh.load_state_dict(json.loads(text))
    assert json.loads(json.dumps(fresh.state_dict())) == json.loads(text)
    next_id = max(tuner.trials) + 1
    expected = probe(scheduler, tuner.trials, next_id)
    assert probe(fresh, tuner.trials, next_id) == expected
    assert any(isinstance(s, Decision) for s in expected)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_run_other_seed_other_run(name):
    _, _, trace = reference_run(name)
    _, _, again = run_simulation(build(name, seed=0))
    assert again.trace == trace.trace
    if name not in SEED_INSENSITIVE:
        _, _, other = run_simulation(build(name, seed=1))
        configs = [e[2] for e in trace.trace if e[0] == "start"]
        other_configs = [e[2] for e in other.trace if e[0] == "start"]
        assert configs != other_configs


@pytest.mark.parametrize("name", NAMES)
def test_mode_max_mirrors_mode_min(name):
    _, _, trace = reference_run(name)
    _, result, mirrored = run_simulation(build(name, mode="max"), sign=-1.0)
    assert mirrored.trace == trace.trace
    assert result.best_value is not None and result.best_value < 0
