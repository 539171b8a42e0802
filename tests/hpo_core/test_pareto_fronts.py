"""Incremental non-dominated fronts: the same fronts as sorting the whole set, point by point."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_core.multiobjective import nondominated_sort
from hpo_core.pareto_fronts import ParetoFronts


@pytest.mark.parametrize("num_objectives", [1, 2, 3])
def test_fronts_match_a_full_sort_after_every_insertion(num_objectives):
    rng = np.random.default_rng(num_objectives)
    for case in range(12):
        n = int(rng.integers(1, 80))
        # every other case on a coarse grid: ties and duplicate points
        points = (rng.integers(0, 5, size=(n, num_objectives)).astype(float) if case % 2
                  else rng.random((n, num_objectives)))
        fronts = ParetoFronts(num_objectives)
        for i, p in enumerate(points):
            fronts.add(i, p)
            expected = [sorted(f.tolist()) for f in nondominated_sort(points[: i + 1])]
            assert [sorted(f) for f in fronts.fronts()] == expected
            assert [fronts.before(f) for f in range(fronts.num_fronts)] == [
                sum(map(len, expected[:f])) for f in range(len(expected))]


@pytest.mark.parametrize("num_objectives", [2, 3])
def test_fronts_covering_a_prefix_are_exact_as_far_as_they_cover(num_objectives):
    """With `cover`, the kept fronts are the sort's first fronts and hold at least `cover`
    points; a point behind them is reported as `num_fronts` and really is behind them."""
    rng = np.random.default_rng(10 + num_objectives)
    for case in range(6):
        n = 150
        points = (rng.integers(0, 6, size=(n, num_objectives)).astype(float) if case % 2
                  else rng.random((n, num_objectives)))
        if case == 4:  # NaN (the worst) and infinite objectives, in the tail and peeled
            points[rng.random(points.shape) < 0.1] = np.nan
            points[rng.random(points.shape) < 0.1] = np.inf
        fronts = ParetoFronts(num_objectives)
        for i, p in enumerate(points):
            cover = -(-(i + 1) // 3)
            front = fronts.add(i, p, cover=cover)
            expected = [sorted(f.tolist()) for f in nondominated_sort(
                np.where(np.isnan(points[: i + 1]), np.inf, points[: i + 1]))]
            kept = fronts.num_fronts
            assert [sorted(fronts.members(f)[0]) for f in range(kept)] == expected[:kept]
            assert fronts.before(kept) + fronts.num_behind == i + 1
            true_front = next(f for f, members in enumerate(expected) if i in members)
            if front < kept:
                assert front == true_front
            else:  # behind: at least `cover` points ahead of it
                assert front == kept and true_front >= kept and fronts.before(kept) >= cover
        assert fronts.num_behind > 0
        assert [sorted(f) for f in fronts.fronts()] == expected  # the tail peeled off
        assert fronts.num_behind == 0


def test_a_point_dominating_everything_pushes_every_front_down():
    fronts = ParetoFronts(2)
    for i, p in enumerate([[3, 3], [2, 4], [4, 2], [5, 5]]):
        fronts.add(i, p)
    assert fronts.fronts() == [[0, 1, 2], [3]]
    assert fronts.add(4, [1, 1]) == 0
    assert fronts.fronts() == [[4], [0, 1, 2], [3]]
    assert fronts.add(5, [float("nan"), 6.0]) == 3  # NaN counts as +inf: the worst
    assert fronts.lower.tolist() == [1, 1] and fronts.upper.tolist() == [5, 5]
    with pytest.raises(ValueError, match="already"):
        fronts.add(4, [0, 0])
