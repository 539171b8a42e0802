"""Multi-objective utilities: fronts, crowding, hypervolume, orders; the store's Pareto front."""

from __future__ import annotations

import numpy as np
import pytest

from hpo_core import multiobjective
from hpo_core.multiobjective import (
    crowding_distance,
    dominates,
    epsilon_net_front,
    epsilon_net_order,
    hypervolume,
    nondominated_sort,
    nsga2_order,
    pareto_mask,
    pareto_ranks,
)

# A hand example (minimize both): fronts {0, 1, 2}, {3, 4}, {5}.
POINTS = np.array([
    [1.0, 5.0],  # 0
    [2.0, 3.0],  # 1
    [4.0, 1.0],  # 2
    [3.0, 4.0],  # 3 dominated by 1
    [5.0, 2.0],  # 4 dominated by 2
    [6.0, 6.0],  # 5 dominated by everything
])


def test_dominance_and_fronts_on_a_hand_example():
    assert dominates([1, 2], [1, 3]) and not dominates([1, 3], [1, 3])
    assert not dominates([1, 3], [2, 2]) and not dominates([2, 2], [1, 3])
    fronts = nondominated_sort(POINTS)
    assert [sorted(f.tolist()) for f in fronts] == [[0, 1, 2], [3, 4], [5]]
    assert pareto_ranks(POINTS).tolist() == [0, 0, 0, 1, 1, 2]
    # duplicates do not dominate each other
    assert [f.tolist() for f in nondominated_sort([[1, 1], [1, 1], [2, 2]])] == [[0, 1], [2]]


def test_crowding_distance_gives_extremes_infinity_and_ranks_the_middle():
    front = np.array([[0.0, 4.0], [1.0, 3.0], [3.0, 1.0], [4.0, 0.0], [1.5, 2.5]])
    distance = crowding_distance(front)
    assert np.isinf(distance[0]) and np.isinf(distance[3])
    # point 2 sits in the widest gap: (4 - 1.5)/4 + (2.5 - 0)/4 = 1.25
    assert distance[2] == pytest.approx(1.25)
    assert distance[4] == pytest.approx((3 - 1) / 4 + (3 - 1) / 4)
    assert distance[1] < distance[2]


def test_hypervolume_of_known_fronts():
    # 2-D: the staircase of (1,3), (2,2), (3,1) under reference (4,4): 3 + 2 + 1 = 6
    front = [[1, 3], [2, 2], [3, 1]]
    assert hypervolume(front, [4, 4]) == pytest.approx(6.0)
    # dominated and out-of-box points add nothing
    assert hypervolume(front + [[3, 3], [5, 0]], [4, 4]) == pytest.approx(6.0)
    assert hypervolume([[5, 5]], [4, 4]) == 0.0
    # 3-D: two boxes [1,3]^3 and [2,3]x[0,3]x[2,3] ... inclusion-exclusion by hand
    pts = [[1, 1, 1], [2, 0, 2]]
    ref = [3, 3, 3]
    expected = 2 * 2 * 2 + 1 * 3 * 1 - 1 * 2 * 1
    assert hypervolume(pts, ref) == pytest.approx(expected)
    assert hypervolume(pts, ref, method="mc", num_samples=200_000, seed=0) == pytest.approx(
        expected, rel=0.02)
    # 4-D single point: a box
    assert hypervolume([[0, 0, 0, 0]], [1, 2, 3, 4]) == pytest.approx(24.0)


def test_hypervolume_exact_agrees_with_monte_carlo_on_random_3d_fronts():
    rng = np.random.default_rng(0)
    pts = rng.random((30, 3))
    exact = hypervolume(pts, [1.0, 1.0, 1.0])
    mc = hypervolume(pts, [1.0, 1.0, 1.0], method="mc", num_samples=200_000, seed=1)
    assert 0 < exact < 1
    assert mc == pytest.approx(exact, rel=0.02)


def test_hypervolume_errors_name_the_argument():
    with pytest.raises(ValueError, match="reference"):
        hypervolume([[1, 2]], [3, 3, 3])
    with pytest.raises(ValueError, match="method"):
        hypervolume([[1, 2]], [3, 3], method="wfg")


def test_orders_put_the_first_front_first_and_spread_it():
    for order in (nsga2_order(POINTS), epsilon_net_order(POINTS)):
        assert sorted(order.tolist()) == list(range(len(POINTS)))
        assert set(order[:3].tolist()) == {0, 1, 2}
        assert order[-1] == 5
    # on a long front, the epsilon-net's first three points span it (both ends and the middle)
    t = np.linspace(0, 1, 11)
    front = np.c_[t, 1 - t]
    first = set(epsilon_net_order(front)[:3].tolist())
    assert {0, 10} <= first
    assert first & {4, 5, 6}


def test_epsilon_net_front_until_a_row_is_a_prefix_of_the_full_order():
    rng = np.random.default_rng(5)
    for _ in range(20):
        points = rng.random((int(rng.integers(2, 40)), 2))
        lower, upper = points.min(axis=0), points.max(axis=0)
        full = epsilon_net_front(points, lower, upper).tolist()
        for row in range(len(points)):
            prefix = epsilon_net_front(points, lower, upper, until=row).tolist()
            assert prefix == full[: full.index(row) + 1]
        assert epsilon_net_front(points, lower, upper, 1, until=full[-1]).tolist() == full[:1]


@pytest.mark.parametrize("objectives", [2, 3, 11])
def test_epsilon_net_front_orders_with_its_distance_matrix_as_row_by_row(objectives, monkeypatch):
    """Small fronts take all their distances at once: bit for bit the rows computed one by one,
    so the same order (ties on a coarse grid included)."""
    rng = np.random.default_rng(objectives)
    for case in range(40):
        n = int(rng.integers(1, 60))
        points = rng.random((n, objectives)) if case % 2 else \
            rng.integers(0, 3, (n, objectives)).astype(float)
        lower, upper = points.min(axis=0), points.max(axis=0)
        scaled = multiobjective._normalized(points, lower, upper)
        matrix = multiobjective._distance_matrix(scaled)
        assert all(np.array_equal(matrix[i], multiobjective._distances(scaled, i))
                   for i in range(n))
        with_matrix = epsilon_net_front(points, lower, upper).tolist()
        monkeypatch.setattr(multiobjective, "DISTANCE_MATRIX_MAX", 0)
        assert epsilon_net_front(points, lower, upper).tolist() == with_matrix
        monkeypatch.undo()


def _greedy_order(points, lower, upper, count, until):
    """The epsilon-net's definition step by step over every row (repeats included)."""
    scaled = multiobjective._normalized(points, lower, upper)
    order = [int(np.argmin(scaled.sum(axis=1)))]
    while len(order) < count and order[-1] != until:
        nearest = [-np.inf if i in order else min(np.linalg.norm(scaled[i] - scaled[j])
                                                  for j in order) for i in range(len(scaled))]
        order.append(int(np.argmax(nearest)))
    return order[:count]


def test_epsilon_net_front_with_equal_points_is_the_greedy_order_of_every_row():
    """Equal points are ordered once (the first of them), the repeats appended: the same
    order as the greedy steps over every row, with `count` and `until` too."""
    rng = np.random.default_rng(11)
    for _ in range(300):
        n, objectives = int(rng.integers(1, 30)), int(rng.integers(1, 4))
        points = rng.integers(0, int(rng.integers(1, 4)), (n, objectives)).astype(float)
        lower, upper = points.min(axis=0), points.max(axis=0)
        count = int(rng.integers(1, n + 1))
        until = int(rng.integers(0, n)) if rng.random() < 0.7 else None
        assert epsilon_net_front(points, lower, upper, count, until).tolist() == \
            _greedy_order(points, lower, upper, count, until), (points.tolist(), count, until)


def test_epsilon_net_front_with_infinite_objectives_picks_each_point_once():
    """A worst (NaN, so infinite) objective makes some distances NaN: chosen points are
    still never picked again, so the order is a permutation."""
    points = np.array([[0.0, np.inf], [np.inf, 0.0], [0.5, 0.5], [np.inf, 0.2], [0.2, np.inf]])
    finite = points[np.isfinite(points).all(axis=1)]
    order = epsilon_net_front(points, finite.min(axis=0), finite.max(axis=0)).tolist()
    assert sorted(order) == list(range(len(points)))


def test_pareto_mask_is_every_row_no_other_row_dominates():
    """The mask culls from the lexicographically first row (rows x front points of work, not
    rows^2: 20,000 rows took 18 s): the same rows as checking each row against all, ties,
    infinities and NaN (never dominated, never dominating) included."""
    rng = np.random.default_rng(2)
    for case in range(400):
        n, m = int(rng.integers(0, 40)), int(rng.integers(1, 4))
        values = rng.integers(0, 4, (n, m)).astype(float) if case % 2 else rng.random((n, m))
        if n and case % 3 == 0:
            values[rng.integers(0, n)] = rng.choice([np.inf, -np.inf, np.nan], m)
        dominated = [bool(np.any(np.all(values <= v, axis=1) & np.any(values < v, axis=1)))
                     for v in values]
        assert pareto_mask(values).tolist() == [not d for d in dominated], values.tolist()
