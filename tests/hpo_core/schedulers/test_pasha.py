"""PASHA: the maximum resource grows only when the top two rungs disagree."""

from __future__ import annotations

import numpy as np
from sched_sim import make_space, run_simulation

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.pasha import PASHA, has_inversion
from hpo_core.trial import Decision, Trial, TrialResult, TrialStatus

SPACE = make_space()


def add(pasha: PASHA, tid: int) -> Trial:
    suggestion = pasha.suggest(tid)
    assert suggestion is not None and not suggestion.is_resume
    trial = Trial(tid, suggestion.config, TrialStatus.RUNNING)
    pasha.on_trial_add(trial)
    return trial


def run(pasha: PASHA, trial: Trial, epochs: range, value: float) -> Decision:
    decision = Decision.CONTINUE
    for epoch in epochs:
        decision = pasha.on_trial_result(
            trial, TrialResult(trial.trial_id, {"epoch": epoch, "loss": value}, float(epoch)))
    return decision


def promote(pasha: PASHA) -> int | None:
    suggestion = pasha.suggest(999)
    return suggestion.resume_trial_id if suggestion is not None and suggestion.is_resume else None


def test_inversions_beyond_epsilon():
    assert not has_inversion(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.5, 2.5]), 0.0)
    assert has_inversion(np.array([1.0, 2.0]), np.array([2.0, 1.0]), 0.0)
    assert not has_inversion(np.array([1.0, 1.2]), np.array([1.2, 1.0]), 0.5)  # within noise


def test_max_resource_grows_only_when_rankings_disagree():
    # levels 1, 3, 9, 27
    pasha = PASHA(SPACE, "loss", seed=0, fidelity=FidelityOptions(max_t=27), epsilon=0.0)
    assert pasha.max_resource == 3
    trials = [add(pasha, t) for t in range(6)]
    for t, trial in enumerate(trials):  # values 0, 1, ..., 5 at epoch 1
        assert run(pasha, trial, range(1, 2), float(t)) == Decision.PAUSE
    # floor(6/3) = 2 promotions: trials 0 and 1; they keep their order at epoch 3
    first, second = promote(pasha), promote(pasha)
    assert {first, second} == {0, 1}
    assert run(pasha, trials[0], range(2, 4), 0.0) == Decision.PAUSE
    assert run(pasha, trials[1], range(2, 4), 1.0) == Decision.PAUSE
    assert pasha.max_resource == 3
    assert promote(pasha) is None  # nothing goes past the top rung; the searcher takes over
    # three more trials; trial 6 is promoted to epoch 3 and overtakes trial 0 there
    more = [add(pasha, t) for t in range(6, 9)]
    for trial, value in zip(more, (-1.0, 7.0, 8.0), strict=True):
        run(pasha, trial, range(1, 2), value)
    assert promote(pasha) == 6
    run(pasha, more[0], range(2, 4), 0.5)  # best at epoch 1, second at epoch 3: disagree
    assert pasha.max_resource == 9
    assert promote(pasha) == 0  # the old top rung is promotable now


def test_auto_epsilon_ignores_noise_sized_inversions():
    pasha = PASHA(SPACE, "loss", seed=0, fidelity=FidelityOptions(max_t=27),
                  epsilon_quantile=0.9)
    a, b, c = (add(pasha, t) for t in range(3))
    # report changes between epochs 1 and 3 of about 0.3 set epsilon
    for trial, values in ((a, (1.0, 1.3, 1.0)), (b, (1.1, 0.8, 1.1)), (c, (5.0, 5.3, 5.0))):
        for epoch, value in enumerate(values, start=1):
            pasha.on_trial_result(trial, TrialResult(trial.trial_id, {"epoch": epoch,
                                                                       "loss": value}, 0.0))
    assert abs(pasha.current_epsilon() - 0.3) < 1e-9
    # recorded at the two levels: a 1.0 / 1.0, b 1.1 / 1.1, c 5.0 / 5.0. c overtaking both by
    # less than epsilon is noise; by more, a real change of the ranking
    assert pasha.max_resource == 3 and not pasha.rankings_disagree()
    pasha.rungs[0][1].values[c.trial_id] = 0.8
    assert not pasha.rankings_disagree()
    pasha.rungs[0][1].values[c.trial_id] = 0.5
    assert pasha.rankings_disagree()


def test_runs_in_a_simulation_and_records_its_max_resource():
    pasha = build_scheduler("pasha", SPACE, "loss", "min", 0, {"max_t": 9})
    _, result, _ = run_simulation(pasha, max_results=120)
    assert result.reason.startswith("max_results")
    assert pasha.max_resource in (3, 9)
