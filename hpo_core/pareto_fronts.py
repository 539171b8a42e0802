"""Non-dominated fronts of a growing set of points, updated point by point.

`ParetoFronts.add` places a new point in the fronts that `multiobjective.nondominated_sort`
would give for the whole set, without sorting again: the fronts are searched by bisection (if a
front dominates the point, every earlier front does too), and the points the new one dominates
move one front down, pushing the points they dominate further down, and so on. With two
objectives a front is a staircase kept sorted by the first objective, so asking whether a front
dominates a point, or which of its points a point dominates, is a bisection: an insertion costs
O(log(fronts) * log(front size)) comparisons plus O(log) per point it moves down. With more
objectives (or one) a front is checked point by point (vectorized).

`comparisons` counts the point-to-point comparisons made, so tests can bound the work.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import numpy as np


class _Front:
    """The points of one front (any number of objectives): dominance checked point by point."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.values: list[tuple[float, ...]] = []

    def __len__(self) -> int:
        return len(self.ids)

    def dominates(self, p: tuple[float, ...], counter: list[int]) -> bool:
        counter[0] += len(self.values)
        if not self.values:
            return False
        values = np.asarray(self.values)
        point = np.asarray(p)
        return bool(np.any(np.all(values <= point, axis=1) & np.any(values < point, axis=1)))

    def take_dominated(self, points: Sequence[tuple[float, ...]], counter: list[int]
                       ) -> list[tuple[int, tuple[float, ...]]]:
        """Remove and return (id, values) of the members some of `points` dominate."""
        if not self.values or not points:
            return []
        counter[0] += len(self.values) * len(points)
        values = np.asarray(self.values)
        mask = np.zeros(len(values), dtype=bool)
        for p in points:
            point = np.asarray(p)
            mask |= np.all(point <= values, axis=1) & np.any(point < values, axis=1)
        taken = [(self.ids[i], self.values[i]) for i in np.flatnonzero(mask)]
        self.ids = [t for t, m in zip(self.ids, mask, strict=True) if not m]
        self.values = [v for v, m in zip(self.values, mask, strict=True) if not m]
        return taken

    def insert(self, trial_id: int, p: tuple[float, ...], counter: list[int]) -> None:
        self.ids.append(trial_id)
        self.values.append(p)


class _Front2D(_Front):
    """A two-objective front: sorted by the first objective, so the second one decreases."""

    def __init__(self) -> None:
        super().__init__()
        self.xs: list[float] = []
        self.neg_ys: list[float] = []  # non-decreasing along the front

    def dominates(self, p: tuple[float, ...], counter: list[int]) -> bool:
        # the member with the largest x <= p's x has the smallest y of those members
        counter[0] += len(self.xs).bit_length() or 1
        i = bisect.bisect_right(self.xs, p[0]) - 1
        if i < 0:
            return False
        x, y = self.xs[i], -self.neg_ys[i]
        return y <= p[1] and (x < p[0] or y < p[1])

    def _dominated_range(self, p: tuple[float, ...], counter: list[int]) -> range:
        counter[0] += 2 * (len(self.xs).bit_length() or 1)
        lo = bisect.bisect_left(self.xs, p[0])
        hi = bisect.bisect_right(self.neg_ys, -p[1])  # members with y >= p's y
        while lo < hi and self.xs[lo] == p[0] and self.neg_ys[lo] == -p[1]:
            lo += 1  # equal points do not dominate each other
        return range(lo, max(lo, hi))

    def take_dominated(self, points: Sequence[tuple[float, ...]], counter: list[int]
                       ) -> list[tuple[int, tuple[float, ...]]]:
        if not self.xs or not points:
            return []
        ranges = sorted((r for p in points if (r := self._dominated_range(p, counter))),
                        key=lambda r: r.start)
        if not ranges:
            return []
        spans: list[list[int]] = []  # the union of the ranges, as disjoint [start, stop)
        for r in ranges:
            if spans and r.start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], r.stop)
            else:
                spans.append([r.start, r.stop])
        out = [(self.ids[i], self.values[i]) for a, b in spans for i in range(a, b)]
        for a, b in reversed(spans):
            for column in (self.ids, self.values, self.xs, self.neg_ys):
                del column[a:b]
        return out

    def insert(self, trial_id: int, p: tuple[float, ...], counter: list[int]) -> None:
        counter[0] += len(self.xs).bit_length() or 1
        i = bisect.bisect_right(self.xs, p[0])
        self.xs.insert(i, p[0])
        self.neg_ys.insert(i, -p[1])
        self.ids.insert(i, trial_id)
        self.values.insert(i, p)


class _Sizes:
    """Front sizes with prefix sums in O(log fronts) (a Fenwick tree that grows)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._tree = [0] * 9

    def append(self) -> None:
        self.sizes.append(0)
        if len(self.sizes) >= len(self._tree):
            sizes, self._tree = self.sizes, [0] * (2 * len(self._tree))
            for i, s in enumerate(sizes):
                self._add_tree(i, s)

    def add(self, front: int, delta: int) -> None:
        self.sizes[front] += delta
        self._add_tree(front, delta)

    def _add_tree(self, i: int, delta: int) -> None:
        i += 1
        while i < len(self._tree):
            self._tree[i] += delta
            i += i & -i

    def before(self, front: int) -> int:
        """The number of points in fronts 0 .. front-1."""
        total, i = 0, front
        while i > 0:
            total += self._tree[i]
            i -= i & -i
        return total


class ParetoFronts:
    """The non-dominated fronts of the points added so far (objectives to minimize).

    NaN objectives count as +inf (worst). Front 0 is the non-dominated points.
    """

    def __init__(self, num_objectives: int):
        self.num_objectives = int(num_objectives)
        self._front_type = _Front2D if self.num_objectives == 2 else _Front
        self._fronts: list[_Front] = []
        self._sizes = _Sizes()
        self._arrival: dict[int, int] = {}
        self._lower = [math.inf] * self.num_objectives
        self._upper = [-math.inf] * self.num_objectives
        self._counter = [0]

    @property
    def lower(self) -> np.ndarray:
        """The smallest finite value of each objective so far."""
        return np.asarray(self._lower)

    @property
    def upper(self) -> np.ndarray:
        """The largest finite value of each objective so far."""
        return np.asarray(self._upper)

    @property
    def comparisons(self) -> int:
        """Point-to-point comparisons made so far."""
        return self._counter[0]

    def count(self, work: int) -> None:
        """Add `work` comparisons done by a caller on these fronts (e.g. ordering one)."""
        self._counter[0] += int(work)

    def __len__(self) -> int:
        return len(self._arrival)

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self._arrival

    @property
    def num_fronts(self) -> int:
        return len(self._fronts)

    def add(self, trial_id: int, values: Sequence[float]) -> int:
        """Add a point; returns the index of its front."""
        if trial_id in self._arrival:
            raise ValueError(f"trial {trial_id} is already ranked")
        if len(values) != self.num_objectives:
            raise ValueError(f"values: expected {self.num_objectives} objectives, got {len(values)}")
        p = tuple(math.inf if math.isnan(v) else float(v) for v in values)
        self._arrival[trial_id] = len(self._arrival)
        if all(map(math.isfinite, p)):
            self._lower = list(map(min, self._lower, p))
            self._upper = list(map(max, self._upper, p))
        lo, hi = 0, len(self._fronts)  # first front that does not dominate p
        while lo < hi:
            mid = (lo + hi) // 2
            if self._fronts[mid].dominates(p, self._counter):
                lo = mid + 1
            else:
                hi = mid
        moved = [(trial_id, p)]
        front = lo
        while moved:
            if front == len(self._fronts):
                self._fronts.append(self._front_type())
                self._sizes.append()
            target = self._fronts[front]
            pushed = target.take_dominated([v for _, v in moved], self._counter)
            for tid, v in moved:
                target.insert(tid, v, self._counter)
            self._sizes.add(front, len(moved) - len(pushed))
            moved, front = pushed, front + 1
        return lo

    def size(self, front: int) -> int:
        return self._sizes.sizes[front]

    def before(self, front: int) -> int:
        """The number of points in the fronts ahead of `front`."""
        return self._sizes.before(front)

    def members(self, front: int) -> tuple[list[int], np.ndarray]:
        """The ids and values (rows) of one front, in arrival order."""
        f = self._fronts[front]
        order = sorted(range(len(f.ids)), key=lambda i: self._arrival[f.ids[i]])
        return [f.ids[i] for i in order], np.asarray([f.values[i] for i in order], dtype=float)

    def fronts(self) -> list[list[int]]:
        """Every front's ids in arrival order, front 0 first."""
        return [self.members(f)[0] for f in range(len(self._fronts))]
