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
