"""MO-ASHA: rungs ranked by Pareto fronts; the experiment store's Pareto front of a run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sched_sim import QuadraticBackend, make_space

from hpo_core.multiobjective import nondominated_sort
from hpo_core.registry import build_scheduler
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.moasha import MOASHA
from hpo_core.stopping import StoppingCriterion
from hpo_core.store import ExperimentStore, load_experiment
from hpo_core.trial import Decision, Trial, TrialResult, TrialStatus
from hpo_core.tuner import Tuner

SPACE = make_space()
METRICS = ["loss", "loss2"]


def test_rung_ranking_by_fronts():
    moasha = MOASHA(SPACE, METRICS, seed=0, fidelity=FidelityOptions(max_t=9))
    entries = [(10, [1.0, 5.0]), (11, [2.0, 3.0]), (12, [4.0, 1.0]), (13, [3.0, 4.0]),
               (14, [5.0, 2.0]), (15, [6.0, 6.0])]
    order = moasha._rank(entries)
    assert set(order[:3]) == {10, 11, 12} and order[-1] == 15
    nsga2 = MOASHA(SPACE, METRICS, fidelity=FidelityOptions(max_t=9), rank_by="nsga2")
    assert set(nsga2._rank(entries)[:3]) == {10, 11, 12}
    with pytest.raises(ValueError, match="rank_by"):
        MOASHA(SPACE, METRICS, fidelity=FidelityOptions(max_t=9), rank_by="hv")


def test_decisions_at_a_rung():
    moasha = MOASHA(SPACE, METRICS, seed=0, fidelity=FidelityOptions(max_t=9))

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


def _feed(moasha, values, first_id=0):
    """Report `values` (rows of objectives: loss, loss2, ...) at the first rung; the
    decisions."""
    decisions = []
    for i, row in enumerate(values):
        tid = first_id + i
        trial = Trial(tid, {}, TrialStatus.RUNNING)
        moasha.on_trial_add(trial)
        metrics = {"epoch": 1, **{name: float(v) for name, v in zip(moasha.metrics, row,
                                                                      strict=True)}}
        decisions.append(moasha.on_trial_result(trial, TrialResult(tid, metrics, 1.0)))
    return decisions


def _tied_values(rng, ties: str) -> np.ndarray:
    if ties == "half":
        return np.where(rng.random((300, 1)) < 0.5, rng.random((300, 2)),
                        rng.integers(0, 12, (300, 2)))
    if ties == "few values":  # e.g. accuracy on a small validation set, and a model size
        return rng.integers(0, 3, (300, 2)).astype(float)
    return np.ones((300, 2))  # all equal


@pytest.mark.parametrize("rank_by, ties", [("epsnet", "half"), ("nsga2", "half"),
                                           ("epsnet", "few values"), ("epsnet", "all equal"),
                                           ("nsga2", "few values")])
def test_incremental_decisions_equal_ranking_the_whole_rung(rank_by, ties):
    rng = np.random.default_rng(3)
    moasha = MOASHA(SPACE, METRICS, seed=0, fidelity=FidelityOptions(max_t=9), rank_by=rank_by)
    values = _tied_values(rng, ties)
    for tid, decision in enumerate(_feed(moasha, values)):
        entries = [(t, list(v)) for t, v in enumerate(values[: tid + 1].tolist())]
        keep = math.ceil((tid + 1) / 3 - 1e-12)
        expected = Decision.CONTINUE if tid in moasha._rank(entries)[:keep] else Decision.STOP
        assert decision == expected, tid
    # after a state round trip the rung caches are rebuilt and decide the same way
    again = MOASHA(SPACE, METRICS, seed=0, fidelity=FidelityOptions(max_t=9), rank_by=rank_by)
    again.load_state_dict(moasha.state_dict())
    more = rng.random((40, 2))
    assert _feed(again, more, 300) == _feed(moasha, more, 300)


def _comparisons_per_decision(moasha, values, n):
    """The rung fed up to `n` values: the comparisons per decision of its last 200."""
    start = len(moasha.rungs[0][0])
    _feed(moasha, values[start:n - 200], start)
    before = moasha.comparisons
    _feed(moasha, values[n - 200:n], n - 200)
    return (moasha.comparisons - before) / 200


@pytest.mark.parametrize("shape", ["independent", "correlated"])
def test_work_per_decision_is_bounded_by_the_fronts_not_the_pairs(shape):
    """Comparisons per decision, not time. Sorting the rung again compares all n^2 pairs at
    every decision; the incremental fronts cost O(log(fronts) log(n)) to place a point plus
    O(log n) per front it pushes points down through: at most ~fronts * log2(n)."""
    rng = np.random.default_rng(0)
    first = rng.random(8000)
    second = rng.random(8000) if shape == "independent" else first + 0.3 * rng.random(8000)
    values = np.column_stack([first, second])
    moasha = MOASHA(SPACE, METRICS, seed=0, fidelity=FidelityOptions(max_t=9))
    for n in (1000, 8000):
        per_decision = _comparisons_per_decision(moasha, values, n)
        num_fronts = moasha._fronts[0, 0].num_fronts
        assert per_decision <= num_fronts * math.log2(n), (n, per_decision, num_fronts)
        assert per_decision <= n / 2, (n, per_decision)  # a full sort: n^2 / 2 pairs


@pytest.mark.parametrize("ties", ["few values", "all equal"])
def test_work_per_decision_stays_bounded_when_objectives_tie(ties):
    """Equal points share a front, which then holds most of the rung and straddles its top
    third at every decision: each decision used to order that whole front (all equal: 20 s
    for 2,000 trials). A point equal to an earlier one of its front is placed by bisection,
    and the epsilon-net orders the distinct points only."""
    rng = np.random.default_rng(1)
    values = (rng.integers(0, 3, (4000, 2)) if ties == "few values" else np.ones((4000, 2)))
    moasha = MOASHA(SPACE, METRICS, seed=0, fidelity=FidelityOptions(max_t=9))
    for n in (1000, 4000):
        per_decision = _comparisons_per_decision(moasha, values, n)
        # placing the point: four bisections of its front (ordering the front: ~n^2 / 3)
        assert per_decision <= 5 * math.log2(n), (n, per_decision)


def test_work_per_decision_with_three_objectives_stays_below_the_pairs():
    """Past two objectives a front is checked point by point, but the rung's tail is culled
    for its next front (rows x that front's points), not compared pair by pair: that made
    each decision cost ~n comparisons more (16,000 trials: 955 us per decision, now 230)."""
    values = np.random.default_rng(0).random((8000, 3))
    moasha = MOASHA(SPACE, ["loss", "loss2", "loss3"], seed=0,
                    fidelity=FidelityOptions(max_t=9))
    _feed(moasha, values)
    per_decision = moasha.comparisons / len(values)  # the peels included
    assert per_decision <= len(values) / 2, per_decision  # pair by pair: ~8,200
