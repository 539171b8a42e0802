"""Hyper-Tune: the bracket distribution follows how well each level ranks like the top."""

from __future__ import annotations

import numpy as np
import pytest
from sched_sim import make_space, run_simulation

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.schedulers.hypertune import HyperTune, discordance, loo_knn_predictions
from hpo_core.schedulers.rungs import hyperband_bracket_weights

SPACE = make_space()


def test_discordance_and_loo_predictions():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    present = np.ones(4, dtype=bool)
    assert discordance(ref, ref * 10, present) == 0.0
    assert discordance(ref, -ref, present) == 1.0
    assert discordance(ref, np.zeros(4), present) == 0.5  # all ties at the level: half
    x = np.array([[0.0], [0.1], [1.0], [1.1]])
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert loo_knn_predictions(x, y, 1).tolist() == [2.0, 1.0, 4.0, 3.0]


def fill(ht: HyperTune, level_columns: dict[int, np.ndarray], top: np.ndarray) -> None:
    """Record trials 0..n-1 in bracket 0 at the given levels and at the top."""
    rng = np.random.default_rng(5)
    for tid, value in enumerate(top):
        ht._encoded[tid] = rng.random(SPACE.ndim).tolist()  # configs unrelated to the values
        for level, column in level_columns.items():
            ht.rungs[0][level].add(tid, float(column[tid]))
        ht.rungs[0][-1].add(tid, float(value))


def test_distribution_moves_to_the_bracket_whose_first_level_ranks_like_the_top():
    ht = HyperTune(SPACE, "loss", seed=0, fidelity=FidelityOptions(max_t=9), num_samples=40,
                   exploration=0.0)
    assert ht.levels == [[1, 3, 9], [3, 9], [9]]
    # before enough trials reached the top: Hyperband's shares
    assert np.allclose(ht.bracket_probabilities(), hyperband_bracket_weights(ht.levels, 3))
    top = np.arange(20, dtype=float)
    noisy = top + np.random.default_rng(0).normal(0, 6, 20)
    fill(ht, {0: top * 2, 1: noisy}, top)  # level 1 ranks perfectly, level 3 noisily
    p = ht.bracket_probabilities()
    assert p.sum() == pytest.approx(1.0)
    assert p[0] > 0.9
    # the same data, but the first level ranks backwards and the second one perfectly
    ht2 = HyperTune(SPACE, "loss", seed=0, fidelity=FidelityOptions(max_t=9), num_samples=40,
                    exploration=0.2)
    fill(ht2, {0: -top, 1: top + 100}, top)
    p2 = ht2.bracket_probabilities()
    assert np.argmax(p2) == 1 and p2[1] > 0.8
    assert p2.min() >= 0.2 / 3 - 1e-12  # exploration keeps every bracket alive
    # the distribution is cached until a new trial reaches the top
    assert ht2._fitted_on == 20


def test_runs_and_learns_a_distribution_in_a_simulation():
    ht = build_scheduler("hypertune", SPACE, "loss", "min", 0,
                         {"max_t": 9, "min_top_observations": 3})
    _, result, _ = run_simulation(ht, max_results=250)
    assert result.reason.startswith("max_results")
    assert ht._distribution is not None
    assert len(ht.levels) == 3
