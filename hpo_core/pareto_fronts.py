"""Non-dominated fronts of a growing set of points, updated point by point.

`ParetoFronts.add` places a new point in the fronts that `multiobjective.nondominated_sort`
would give for the whole set, without sorting again: the fronts are searched by bisection (if a
front dominates the point, every earlier front does too), and the points the new one dominates
move one front down, pushing the points they dominate further down, and so on. With two
objectives a front is a staircase kept sorted by the first objective, so asking whether a front
dominates a point, or which of its points a point dominates, is a bisection: an insertion costs
O(log(fronts) * log(front size)) comparisons plus O(log) per point it moves down. With more
objectives (or one) a front is checked point by point (vectorized).

A caller that only asks whether a point is among the first `cover` points of the order (MO-ASHA:
the top 1/eta of a rung) passes `cover` to `add`: the fronts are then kept exact only as far as
they hold `cover` points. A point that the last of them dominates goes into an unsorted tail, and
so do the points pushed out of it; the tail's next front is peeled off (one sort) only once the
fronts hold fewer than `cover` points. Most of a rung lies behind its top third, so most points
cost one check, and a cascade stops at the last kept front instead of running through every
front of the rung.

`comparisons` counts the point-to-point comparisons made, so tests can bound the work.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import cast

import numpy as np

from hpo_core.multiobjective import pareto_mask


class _Front:
    """The points of one front (any number of objectives): dominance checked point by point,
    vectorized over the front's values as an array (kept until the front changes)."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.values: list[tuple[float, ...]] = []
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def _as_array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.asarray(self.values)
        return self._array

    def dominates(self, p: tuple[float, ...], counter: list[int]) -> bool:
        counter[0] += len(self.values)
        if not self.values:
            return False
        values = self._as_array()
        point = np.asarray(p)
        return bool(np.any(np.all(values <= point, axis=1) & np.any(values < point, axis=1)))

    def take_dominated(self, points: Sequence[tuple[float, ...]], counter: list[int]
                       ) -> list[tuple[int, tuple[float, ...]]]:
        """Remove and return (id, values) of the members some of `points` dominate."""
        if not self.values or not points:
            return []
        counter[0] += len(self.values) * len(points)
        values = self._as_array()
        mask = np.zeros(len(values), dtype=bool)
        for p in points:
            point = np.asarray(p)
            mask |= np.all(point <= values, axis=1) & np.any(point < values, axis=1)
        if not mask.any():
            return []
        taken = [(self.ids[i], self.values[i]) for i in np.flatnonzero(mask)]
        self.ids = [t for t, m in zip(self.ids, mask, strict=True) if not m]
        self.values = [v for v, m in zip(self.values, mask, strict=True) if not m]
        self._array = values[~mask]
        return taken

    def insert(self, trial_id: int, p: tuple[float, ...], counter: list[int]) -> None:
        self.ids.append(trial_id)
        self.values.append(p)
        self._array = None


class _Front2D:
    """A two-objective front: sorted by the first objective (`xs`), so the second one
    decreases (`neg_ys`, its negation, does not). `ParetoFronts._add_2d` works on the arrays
    directly (the hot path of a decision)."""

    __slots__ = ("ids", "xs", "neg_ys")

    def __init__(self) -> None:
        self.ids: list[int] = []
        # contiguous doubles: a decision's bisections touch a few cache lines, not one float
        # object per probe scattered over the heap
        self.xs = array("d")
        self.neg_ys = array("d")  # non-decreasing along the front

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def values(self) -> list[tuple[float, float]]:
        return [(x, -ny) for x, ny in zip(self.xs, self.neg_ys, strict=True)]


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
        tree = self._tree
        i, n = front + 1, len(tree)
        while i < n:
            tree[i] += delta
            i += i & -i

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


def _dominated_runs(xs: array[float], neg_ys: array[float], points_x: list[float],
                    points_y: list[float]) -> list[list[int]]:
    """The runs [start, stop) of a 2-objective front (`xs` increasing, `neg_ys` not
    decreasing) that some of the points dominate, merged and in order."""
    spans: list[list[int]] = []
    for mx, my in zip(points_x, points_y, strict=True):
        a = bisect_left(xs, mx)  # members with x >= mx ...
        b = bisect_right(neg_ys, -my)  # ... and y >= my
        if a < b and xs[a] == mx and neg_ys[a] == -my:
            a = bisect_right(xs, mx, a, b)  # equal points (see `ParetoFronts._add_2d`)
        if a < b:
            spans.append([a, b])
    if not spans:
        return spans
    spans.sort(key=_start)
    merged = [spans[0]]
    for span in spans[1:]:
        last = merged[-1]
        if span[0] <= last[1]:
            last[1] = max(last[1], span[1])
        else:
            merged.append(span)
    return merged


def _start(span: list[int]) -> int:
    return span[0]


class ParetoFronts:
    """The non-dominated fronts of the points added so far (objectives to minimize).

    NaN objectives count as +inf (worst). Front 0 is the non-dominated points.
    """

    def __init__(self, num_objectives: int):
        self.num_objectives = int(num_objectives)
        self._fronts: list[_Front] | list[_Front2D] = []
        # 2 objectives: each front's xs and neg_ys arrays (the same objects), for the search
        self._front_xs: list[array[float]] = []
        self._front_nys: list[array[float]] = []
        self._sizes = _Sizes()
        self._arrival: dict[int, int] = {}
        self._lower = [math.inf] * self.num_objectives
        self._upper = [-math.inf] * self.num_objectives
        self._counter = [0]
        # the points behind the kept fronts (each dominated by a member of the last front):
        # ids, and their objectives one point after another, flat (a peel reads them as a
        # matrix without copying)
        self._tail_ids = array("q")
        self._tail_values = array("d")

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
        """The number of points added (the tail's included)."""
        return len(self._arrival)

    def __contains__(self, trial_id: object) -> bool:
        return trial_id in self._arrival

    @property
    def num_fronts(self) -> int:
        """The number of fronts kept (every front, unless `add` was given `cover`)."""
        return len(self._fronts)

    @property
    def num_behind(self) -> int:
        """The number of points in the tail, behind the kept fronts."""
        return len(self._tail_ids)

    def add(self, trial_id: int, values: Sequence[float], cover: int | None = None) -> int:
        """Add a point; returns the index of its front.

        `cover`: the fronts need to be exact only as far as they hold `cover` points (the
        caller asks no more). A point behind them goes into the tail and gets `num_fronts`,
        and `before(num_fronts)` (the points in the kept fronts) is at least `cover` then.
        None: every front is kept exact."""
        if trial_id in self._arrival:
            raise ValueError(f"trial {trial_id} is already ranked")
        if len(values) != self.num_objectives:
            raise ValueError(f"values: expected {self.num_objectives} objectives, got {len(values)}")
        self._arrival[trial_id] = len(self._arrival)
        needed = math.inf if cover is None else cover
        self._cover(needed)
        # the tail may take the point (and the points pushed out of the last front)
        behind = cover is not None and self._sizes.before(len(self._fronts)) >= needed
        if self.num_objectives == 2:  # the hot path of MO-ASHA's decisions: no tuples, no maps
            x, y = values
            x = math.inf if math.isnan(x) else float(x)
            y = math.inf if math.isnan(y) else float(y)
            if math.isfinite(x) and math.isfinite(y):
                lower, upper = self._lower, self._upper
                if x < lower[0]:
                    lower[0] = x
                if y < lower[1]:
                    lower[1] = y
                if x > upper[0]:
                    upper[0] = x
                if y > upper[1]:
                    upper[1] = y
            return self._add_2d(trial_id, x, y, behind)
        p = tuple(math.inf if math.isnan(v) else float(v) for v in values)
        if all(map(math.isfinite, p)):
            self._lower = list(map(min, self._lower, p))
            self._upper = list(map(max, self._upper, p))
        fronts = cast(list[_Front], self._fronts)
        lo, hi = 0, len(fronts)  # first front that does not dominate p
        while lo < hi:
            mid = (lo + hi) // 2
            if fronts[mid].dominates(p, self._counter):
                lo = mid + 1
            else:
                hi = mid
        if lo == len(fronts) and behind:
            self._to_tail([trial_id], p)
            return lo
        moved = [(trial_id, p)]
        front = lo
        while moved:
            if front == len(fronts):
                if behind:
                    self._to_tail([t for t, _ in moved], [x for _, v in moved for x in v])
                    break
                fronts.append(_Front())
                self._sizes.append()
            target = fronts[front]
            pushed = target.take_dominated([v for _, v in moved], self._counter)
            for tid, v in moved:
                target.insert(tid, v, self._counter)
            self._sizes.add(front, len(moved) - len(pushed))
            moved, front = pushed, front + 1
        return lo

    def _add_2d(self, trial_id: int, x: float, y: float, behind: bool) -> int:
        """`add` with two objectives: each front a staircase, searched by bisection.

        The first front that does not dominate (x, y) is found by bisection over the fronts
        (a front dominates the point iff its member with the largest first objective <= x has
        a second objective <= y). There the point goes in, and the members it dominates (a
        contiguous run of the staircase) move one front down, where they push the members
        they dominate (a union of such runs) further down, and so on. Usually one point
        moves at a time: that case takes no span lists. `behind`: a point the last front
        dominates, and the points pushed out of it, go into the tail."""
        fronts = cast(list[_Front2D], self._fronts)
        front_xs, front_nys = self._front_xs, self._front_nys
        work = 0
        neg_y = -y
        lo, hi = 0, len(front_xs)
        mid = hi - 1 if behind else hi >> 1  # `behind`: most points go behind the last front
        while lo < hi:
            xs = front_xs[mid]
            work += len(xs).bit_length() or 1
            i = bisect_right(xs, x) - 1
            if i >= 0 and (fny := front_nys[mid][i]) >= neg_y and (xs[i] < x or fny > neg_y):
                lo = mid + 1
            else:
                hi = mid
            mid = (lo + hi) >> 1
        sizes = self._sizes
        if lo == len(fronts):  # every front dominates the point (or there is none yet)
            if behind and fronts:
                self._counter[0] += work
                self._to_tail([trial_id], (x, y))
                return lo
            self._new_front()
        # the new point into front lo; the members it dominates (a run of the staircase) move
        # down (usually none: then this is all)
        f = fronts[lo]
        ids, xs, neg_ys = f.ids, f.xs, f.neg_ys
        a = b = 0
        if xs:
            work += 2 * len(xs).bit_length()
            a = bisect_left(xs, x)  # members with x >= the point's ...
            b = bisect_right(neg_ys, neg_y)  # ... and y >= the point's
            # equal points do not dominate each other: members with the point's x share one y
            # (a smaller one would dominate the rest), so the equal ones are that x's run
            if a < b and xs[a] == x and neg_ys[a] == neg_y:
                a = bisect_right(xs, x, a, b)
        moved_ids: list[int] = []
        moved_xs: list[float] = []
        moved_ys: list[float] = []
        if a < b:
            moved_ids, moved_xs = ids[a:b], xs[a:b].tolist()
            moved_ys = [-v for v in neg_ys[a:b]]
            del ids[a:b], xs[a:b], neg_ys[a:b]
        work += len(xs).bit_length() or 1
        i = bisect_right(xs, x)
        xs.insert(i, x)
        neg_ys.insert(i, neg_y)
        ids.insert(i, trial_id)
        if len(moved_ids) != 1:
            sizes.add(lo, 1 - len(moved_ids))
        front = lo + 1
        while moved_ids:
            if front == len(fronts):
                if behind:
                    self._to_tail(moved_ids, [v for point in zip(moved_xs, moved_ys, strict=True)
                                              for v in point])
                    break
                self._new_front()
            f = fronts[front]
            ids, xs, neg_ys = f.ids, f.xs, f.neg_ys
            pushed_ids: list[int] = []
            pushed_xs: list[float] = []
            pushed_ys: list[float] = []
            if xs:
                bits = 2 * len(xs).bit_length()
                if len(moved_ids) == 1:
                    work += bits
                    mx, neg_my = moved_xs[0], -moved_ys[0]
                    a = bisect_left(xs, mx)  # members with x >= mx ...
                    b = bisect_right(neg_ys, neg_my)  # ... and y >= my
                    if a < b and xs[a] == mx and neg_ys[a] == neg_my:
                        a = bisect_right(xs, mx, a, b)  # equal points (see above)
                    if a < b:
                        pushed_ids, pushed_xs = ids[a:b], xs[a:b].tolist()
                        pushed_ys = [-v for v in neg_ys[a:b]]
                        del ids[a:b], xs[a:b], neg_ys[a:b]
                else:
                    work += bits * len(moved_ids)
                    runs = _dominated_runs(xs, neg_ys, moved_xs, moved_ys)
                    for a, b in runs:
                        pushed_ids += ids[a:b]
                        pushed_xs += xs[a:b]
                        pushed_ys += [-v for v in neg_ys[a:b]]
                    for a, b in reversed(runs):
                        del ids[a:b], xs[a:b], neg_ys[a:b]
            for tid, mx, my in zip(moved_ids, moved_xs, moved_ys, strict=True):
                work += len(xs).bit_length() or 1
                i = bisect_right(xs, mx)
                xs.insert(i, mx)
                neg_ys.insert(i, -my)
                ids.insert(i, tid)
            if len(moved_ids) != len(pushed_ids):
                sizes.add(front, len(moved_ids) - len(pushed_ids))
            moved_ids, moved_xs, moved_ys = pushed_ids, pushed_xs, pushed_ys
            front += 1
        self._counter[0] += work
        return lo

    def _to_tail(self, ids: Sequence[int], values: Sequence[float]) -> None:
        """Points into the tail: their ids, and their objectives one point after another."""
        self._tail_ids.extend(ids)
        self._tail_values.extend(values)

    def _cover(self, needed: float) -> None:
        """Peel fronts off the tail until the kept fronts hold `needed` points (or the tail
        is empty)."""
        while self._tail_ids and self._sizes.before(len(self._fronts)) < needed:
            self._peel()

    def _peel(self) -> None:
        """Move the tail's non-dominated points into a new last front (every other tail point
        is dominated by one of them, so the tail stays behind the fronts)."""
        values = np.frombuffer(self._tail_values).reshape(-1, self.num_objectives)
        ids = np.frombuffer(self._tail_ids, dtype=np.int64)
        m = len(values)
        if self.num_objectives == 2:
            self._counter[0] += m * max(1, m.bit_length())  # a sort, then one sweep
            order = np.lexsort((values[:, 1], values[:, 0]))
            xs, ys = values[order, 0], values[order, 1]
            # a point is dominated iff a distinct point before it (sorted by x, then y) has a
            # y no larger: the running minimum of y up to the start of its group of equals
            # (the first group has none before it, even with an infinite y)
            starts = np.ones(m, dtype=bool)
            starts[1:] = (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])
            running = np.empty(m)
            running[0] = math.inf
            np.minimum.accumulate(ys[:-1], out=running[1:])
            group = np.maximum.accumulate(np.where(starts, np.arange(m), 0))
            first = (running[group] > ys) | (group == 0)
            members = order[first]  # increasing x: a staircase
            self._new_front()
            f = cast(list[_Front2D], self._fronts)[-1]
            f.ids = ids[members].tolist()
            f.xs.extend(xs[first].tolist())
            f.neg_ys.extend((-ys[first]).tolist())
            in_front = np.zeros(m, dtype=bool)
            in_front[members] = True
        else:
            in_front = pareto_mask(values)  # a cull: rows x the front's distinct points
            self._counter[0] += m * int(in_front.sum())
            front = _Front()
            for tid, point in zip(ids[in_front].tolist(), values[in_front].tolist(), strict=True):
                front.insert(tid, tuple(point), self._counter)
            cast(list[_Front], self._fronts).append(front)
            self._sizes.append()
        self._sizes.add(len(self._fronts) - 1, int(in_front.sum()))
        rest = ~in_front
        # new arrays (the views above keep the old ones from growing)
        self._tail_ids = array("q", ids[rest].tobytes())
        self._tail_values = array("d", values[rest].tobytes())

    def _new_front(self) -> None:
        f = _Front2D()
        cast(list[_Front2D], self._fronts).append(f)
        self._front_xs.append(f.xs)
        self._front_nys.append(f.neg_ys)
        self._sizes.append()

    def size(self, front: int) -> int:
        return self._sizes.sizes[front]

    def before(self, front: int) -> int:
        """The number of points in the fronts ahead of `front`."""
        return self._sizes.before(front)

    def count_equal(self, front: int, values: Sequence[float]) -> int:
        """The number of points in `front` equal to `values` (NaN counting as inf): a
        bisection with two objectives, else a scan of the front."""
        p = [math.inf if math.isnan(v) else float(v) for v in values]
        f = self._fronts[front]
        if isinstance(f, _Front2D):  # members with the same x share one y (`_add_2d`)
            a, b = bisect_left(f.xs, p[0]), bisect_right(f.xs, p[0])
            return b - a if a < b and f.neg_ys[a] == -p[1] else 0
        return sum(1 for v in f.values if list(v) == p)

    def members(self, front: int) -> tuple[list[int], np.ndarray]:
        """The ids and values (rows) of one front, in arrival order."""
        f = self._fronts[front]
        ids = f.ids
        order = sorted(range(len(ids)), key=list(map(self._arrival.__getitem__, ids)).__getitem__)
        if isinstance(f, _Front2D):  # the arrays as they are, reordered
            values = np.empty((len(ids), 2))
            values[:, 0] = np.frombuffer(f.xs)[order]
            values[:, 1] = np.frombuffer(f.neg_ys)[order]
            np.negative(values[:, 1], out=values[:, 1])
            return [ids[i] for i in order], values
        return [ids[i] for i in order], np.asarray([f.values[i] for i in order], dtype=float)

    def fronts(self) -> list[list[int]]:
        """Every front's ids in arrival order, front 0 first (the tail's fronts peeled off)."""
        self._cover(math.inf)
        return [self.members(f)[0] for f in range(len(self._fronts))]
