"""MO-ASHA: rungs ranked by Pareto fronts; the experiment store's Pareto front of a run."""

from __future__ import annotations

import numpy as np
import pytest
from sched_sim import QuadraticBackend, make_space

from hpo_core.methods import build_scheduler
from hpo_core.multiobjective import nondominated_sort
from hpo_core.schedulers.moasha import MOASHA
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import Decision, Trial, TrialResult, TrialStatus
from hpo_core.tuner import Tuner

SPACE = make_space()
METRICS = ["loss", "loss2"]


def test_rung_ranking_by_fronts():
    moasha = MOASHA(SPACE, METRICS, seed=0, max_t=9)
    entries = [(10, [1.0, 5.0]), (11, [2.0, 3.0]), (12, [4.0, 1.0]), (13, [3.0, 4.0]),
               (14, [5.0, 2.0]), (15, [6.0, 6.0])]
    order = moasha._rank(entries)
    assert set(order[:3]) == {10, 11, 12} and order[-1] == 15
    assert set(MOASHA(SPACE, METRICS, max_t=9, rank_by="nsga2")._rank(entries)[:3]) == {10, 11, 12}
    with pytest.raises(ValueError, match="rank_by"):
        MOASHA(SPACE, METRICS, max_t=9, rank_by="hv")


def test_decisions_at_a_rung():
    moasha = MOASHA(SPACE, METRICS, seed=0, max_t=9)

    def report(tid, values):
        trial = Trial(tid, SPACE.sample(moasha.rng), TrialStatus.RUNNING)
        moasha.on_trial_add(trial)
        metrics = {"epoch": 1, "loss": values[0], "loss2": values[1]}
        return moasha.on_trial_result(trial, TrialResult(tid, metrics, 1.0))

    assert report(0, (1.0, 1.0)) == Decision.CONTINUE  # alone: in its top third
    assert report(1, (2.0, 2.0)) == Decision.STOP  # dominated: ceil(2/3) = 1 continues
    # on the first front, and first in it: the smallest sum of normalized objectives
    assert report(2, (0.1, 1.05)) == Decision.CONTINUE
    assert report(3, (3.0, 3.0)) == Decision.STOP


def test_pareto_front_of_a_moasha_experiment(tmp_path):
    scheduler = build_scheduler("moasha", SPACE, METRICS, ["min", "min"], 0, {"max_t": 9})
    store = ExperimentStore(tmp_path, "mo")
    backend = QuadraticBackend(SPACE, METRICS)
    Tuner(scheduler, backend, StoppingCriterion(max_results=80), n_workers=3, store=store).run()
    experiment = load_experiment(store.path)
    assert experiment.metrics == METRICS
    front = experiment.pareto_front()
    assert len(front) >= 2
    values = experiment.results[METRICS].to_numpy(float)
    first = values[nondominated_sort(values)[0]]
    assert sorted(map(tuple, front[METRICS].to_numpy(float))) == sorted(map(tuple, first))
    # nothing in the results dominates a point of the front
    for point in front[METRICS].to_numpy(float):
        assert not np.any(np.all(values <= point, axis=1) & np.any(values < point, axis=1))
