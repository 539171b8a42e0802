"""DEHB: DE operators stay in [0,1]^d, bracket geometry, selection, SH then DE stages."""

from __future__ import annotations

import numpy as np
import pytest
from sched_sim import MAX_T, make_space, run_simulation, with_fidelity

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.dehb import DEHB, _Bracket, _Job
from hpo_core.trial import Decision

SPACE = make_space()


def make(**options) -> DEHB:
    return DEHB(SPACE, "loss", seed=0, **with_fidelity({"max_t": 27, **options}))


def test_mutation_and_crossover_stay_within_bounds():
    dehb = make(mutation_factor=2.0, crossover_prob=0.5)
    rng = np.random.default_rng(1)
    d = SPACE.ndim
    pool = [np.zeros(d), np.ones(d)] + [rng.random(d) for _ in range(6)]
    for _ in range(300):
        mutant = dehb.mutant(pool)
        assert mutant.shape == (d,) and np.all((0 <= mutant) & (mutant <= 1))
        target = rng.random(d)
        child = dehb.crossover(mutant, target)
        assert np.all((0 <= child) & (child <= 1))
        from_mutant = np.isclose(child, mutant)
        assert np.all(from_mutant | np.isclose(child, target))
        assert from_mutant.any()  # at least one coordinate from the mutant
        SPACE.validate(SPACE.decode(child))
    # rand/1 without leaving the box: x1 + F (x2 - x3) exactly
    inner = [np.full(d, 0.5), np.full(d, 0.6), np.full(d, 0.5)]
    dehb_small = make(mutation_factor=0.5)
    assert {tuple(np.round(dehb_small.mutant(inner), 6)) for _ in range(30)} <= {
        tuple(np.round(np.full(d, v), 6)) for v in (0.55, 0.45, 0.5, 0.6)}


def test_crossover_probability_extremes():
    d = SPACE.ndim
    mutant, target = np.ones(d), np.zeros(d)
    assert make(crossover_prob=1.0).crossover(mutant, target).tolist() == [1.0] * d
    assert make(crossover_prob=0.0).crossover(mutant, target).sum() == 1.0  # just one coordinate


def test_bracket_geometry_is_hyperbands():
    dehb = make()  # levels 1, 3, 9, 27
    assert dehb.levels == [1, 3, 9, 27]
    assert [dehb.stage_sizes(s) for s in range(4)] == [[27, 9, 3, 1], [12, 4, 1], [6, 2], [4]]
    assert dehb.pop_size == [27, 9, 3, 1]
    with pytest.raises(ValueError, match="crossover_prob"):
        make(crossover_prob=1.5)


def test_selection_replaces_the_target_only_if_not_worse():
    dehb = make()
    dehb.population[3] = [([0.1] * SPACE.ndim, 0.5)]
    bracket = _Bracket(0, 3, 0, [_Job([0.2] * SPACE.ndim, 3, target=0),
                                 _Job([0.3] * SPACE.ndim, 3, target=0)])
    dehb._brackets.append(bracket)
    dehb._finish(bracket, bracket.jobs[0], 0.7)  # worse: the target stays
    assert dehb.population[3][0][1] == 0.5
    dehb._finish(bracket, bracket.jobs[1], 0.4)  # better: replaces it
    assert dehb.population[3][0] == ([0.3] * SPACE.ndim, 0.4)
    assert bracket not in dehb._brackets  # its only stage is done


def test_first_iteration_is_successive_halving_then_de_takes_over():
    scheduler = build_scheduler("dehb", SPACE, "loss", "min", 0, {"max_t": MAX_T})
    de_jobs = []
    original = scheduler._de_job

    def counting(rung, pool):
        job = original(rung, pool)
        de_jobs.append((rung, len(scheduler.population[rung])))
        return job

    scheduler._de_job = counting
    _, result, trace = run_simulation(scheduler, max_results=400, n_workers=3)
    assert result.reason.startswith("max_results")
    # levels 1, 3, 9: populations of 9, 3, 1, all filled by now
    assert [len(p) for p in scheduler.population] == [9, 3, 1]
    # successive halving promoted paused trials by resuming them
    resumes = [e for e in trace.trace if e[0] == "start" and e[3] > 0]
    assert resumes
    assert Decision.PAUSE in trace.decisions
    # later brackets run DE trials, and only on full subpopulations
    assert scheduler._num_brackets > 3
    assert de_jobs and {r for r, _ in de_jobs} == {0, 1, 2}
    assert all(n == scheduler.pop_size[r] for r, n in de_jobs)
    # the population keeps the best values seen at each level (selection never worsens it)
    for members in scheduler.population:
        assert all(np.isfinite(v) for _, v in members)
    assert result.best_value is not None
