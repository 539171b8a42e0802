"""Multi-objective utilities: Pareto dominance, non-dominated sorting, crowding, hypervolume.

Every function takes objective vectors to *minimize*, one row per point and one column per
objective (schedulers turn the user's metrics into such values with `Scheduler.objectives`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def _as_points(points: ArrayLike) -> np.ndarray:
    values = np.asarray(points, dtype=float)
    if values.ndim == 1:
        values = values.reshape(-1, 1) if values.size else values.reshape(0, 1)
    if values.ndim != 2:
        raise ValueError(f"points: expected a 2-D array (points x objectives), got shape {values.shape}")
    return values


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `a` is no worse than `b` in every objective and better in at least one."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return bool(np.all(a <= b) and np.any(a < b))


def nondominated_sort(points: ArrayLike) -> list[np.ndarray]:
    """The Pareto fronts: indices of the first front (non-dominated points), then of the front
    that is non-dominated once the first is removed, and so on (Deb et al.'s fast sort)."""
    values = _as_points(points)
    n = len(values)
    if n == 0:
        return []
    le = np.all(values[:, None, :] <= values[None, :, :], axis=2)
    lt = np.any(values[:, None, :] < values[None, :, :], axis=2)
    dom = le & lt  # dom[i, j]: i dominates j
    dominated_by = dom.sum(axis=0)  # how many points dominate j
    fronts: list[np.ndarray] = []
    current = np.flatnonzero(dominated_by == 0)
    while current.size:
        fronts.append(current)
        dominated_by = dominated_by - dom[current].sum(axis=0)
        dominated_by[current] = -1  # assigned
        current = np.flatnonzero(dominated_by == 0)
    return fronts


def pareto_mask(values: ArrayLike) -> np.ndarray:
    """Rows of `values` (to minimize, one column per objective) that no other row dominates.

    O(rows x distinct points on the front): in lexicographic order the first row left is on
    the front (a row dominating it would come before it); it and its equals are kept, and
    every row it dominates leaves."""
    values = _as_points(values)
    mask = np.zeros(len(values), dtype=bool)
    left = np.lexsort(values.T[::-1]) if values.size else np.zeros(len(values), dtype=int)
    while left.size:
        rest, point = values[left], values[left[0]]
        no_worse = np.all(rest >= point, axis=1)  # its equals, and the rows it dominates
        equal = no_worse & np.all(rest == point, axis=1)
        no_worse[0] = equal[0] = True  # with a NaN it is neither (it dominates nothing)
        mask[left[equal]] = True
        left = left[~no_worse]
    return mask


def pareto_ranks(points: ArrayLike) -> np.ndarray:
    """Front number of each point (0 for the non-dominated ones)."""
    values = _as_points(points)
    ranks = np.zeros(len(values), dtype=int)
    for r, front in enumerate(nondominated_sort(values)):
        ranks[front] = r
    return ranks


def crowding_distance(points: ArrayLike) -> np.ndarray:
    """NSGA-II crowding distance within one front: larger is lonelier; extremes get inf."""
    values = _as_points(points)
    n, m = values.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(values[:, j], kind="stable")
        column = values[order, j]
        span = column[-1] - column[0]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[2:] - column[:-2]) / span
    return distance


def _normalized(values: np.ndarray, lower: np.ndarray | None = None,
                upper: np.ndarray | None = None) -> np.ndarray:
    lo = values.min(axis=0) if lower is None else lower
    hi = values.max(axis=0) if upper is None else upper
    span = np.where(hi > lo, hi - lo, 1.0)
    return (values - lo) / span


#: fronts of at most this many points get their distance matrix at once (`epsilon_net_front`)
DISTANCE_MATRIX_MAX = 128


def epsilon_net_front(front: ArrayLike, lower: np.ndarray, upper: np.ndarray,
                      count: int | None = None, until: int | None = None) -> np.ndarray:
    """The epsilon-net order of one front's points (rows), normalized by `lower` and `upper`
    (the bounds of the whole set the front is part of): first the best in the sum of normalized
    objectives, then greedily the point farthest from those chosen. Ties go to the earlier row.
    Equal points: the first of them stands for all, the others (at distance 0 from it once it
    is chosen) come after every distinct point, in row order. With `count`, only the first
    `count` of the order (O(distinct points * count) work); with `until` (a row), the order
    ends once that row is in it (a prefix of the full order)."""
    scaled = _normalized(_as_points(front), np.asarray(lower), np.asarray(upper))
    n = len(scaled)
    count = n if count is None else max(0, min(int(count), n))
    if count == 0:
        return np.zeros(0, dtype=int)
    if np.isfinite(scaled).all():
        return _repeats_last(scaled, count, until)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN distances, expected
        return _farthest_first(scaled, count, until, finite=False)


def _repeats_last(scaled: np.ndarray, count: int, until: int | None) -> np.ndarray:
    """`epsilon_net_front`'s order of finite normalized points: the greedy order of the first
    of each group of equal points, then the repeats in row order (the order the greedy steps
    give every row, without a step per repeat: a front of many equal points costs a sort)."""
    _, first = np.unique(scaled, axis=0, return_index=True)
    if len(first) == len(scaled):
        return _farthest_first(scaled, count, until, finite=True)
    distinct = np.sort(first)
    place = int(np.searchsorted(distinct, until)) if until is not None else -1
    in_distinct = 0 <= place < len(distinct) and distinct[place] == until
    order = distinct[_farthest_first(scaled[distinct], min(count, len(distinct)),
                                     place if in_distinct else None, finite=True)]
    if len(order) == count or in_distinct:
        return order
    repeats = np.setdiff1d(np.arange(len(scaled)), distinct, assume_unique=True)
    repeats = repeats[: count - len(order)]
    if until is not None and until in repeats:
        repeats = repeats[: int(np.searchsorted(repeats, until)) + 1]
    return np.concatenate([order, repeats])


def _farthest_first(scaled: np.ndarray, count: int, until: int | None, finite: bool
                    ) -> np.ndarray:
    """`epsilon_net_front`'s greedy order of normalized points (`finite`: no inf in them)."""
    chosen = int(np.argmin(scaled.sum(axis=1)))
    order = [chosen]
    # a small front's distances all at once (the same numbers as row by row): then a step is
    # a few numpy calls, not a few more per distance row
    rows = _distance_matrix(scaled) if len(scaled) <= DISTANCE_MATRIX_MAX else None
    # each point's distance to the nearest chosen one; chosen points at -inf, never picked
    # again (argmax then takes the earliest unchosen row among equals, as ties require). The
    # minimum keeps them at -inf, so only the new one is set, unless an infinite objective
    # made a distance NaN
    nearest = rows[chosen].copy() if rows is not None else _distances(scaled, chosen)
    nearest[chosen] = -np.inf
    while len(order) < count and chosen != until:
        chosen = int(nearest.argmax())
        order.append(chosen)
        np.minimum(nearest, rows[chosen] if rows is not None else _distances(scaled, chosen),
                   out=nearest)
        nearest[chosen if finite else order] = -np.inf
    return np.asarray(order, dtype=int)


def _distance_matrix(points: np.ndarray) -> np.ndarray:
    """Euclidean distances between all rows: row i is `_distances(points, i)`, bit for bit."""
    d = points[:, None, :] - points[None, :, :]
    d *= d
    return np.sqrt(np.add.reduce(d, axis=2))


def _distances(points: np.ndarray, i: int) -> np.ndarray:
    """Euclidean distance of every row to row `i` (what `np.linalg.norm(..., axis=1)` gives,
    without its overhead)."""
    d = points - points[i]
    d *= d
    return np.sqrt(np.add.reduce(d, axis=1))


def epsilon_net_order(points: ArrayLike) -> np.ndarray:
    """All indices ordered best first by fronts, and within a front by greedy farthest-point
    selection in normalized objective space (the epsilon-net idea of MO-ASHA: a prefix of the
    order covers each front evenly); see `epsilon_net_front`."""
    values = _as_points(points)
    if len(values) == 0:
        return np.zeros(0, dtype=int)
    lower, upper = values.min(axis=0), values.max(axis=0)
    order = [front[epsilon_net_front(values[front], lower, upper)]
             for front in nondominated_sort(values)]
    return np.concatenate(order).astype(int)


def nsga2_order(points: ArrayLike) -> np.ndarray:
    """All indices ordered best first: by front, then by decreasing crowding distance."""
    values = _as_points(points)
    order: list[int] = []
    for front in nondominated_sort(values):
        crowd = crowding_distance(values[front])
        order.extend(front[np.argsort(-crowd, kind="stable")].tolist())
    return np.asarray(order, dtype=int)


def hypervolume(points: ArrayLike, reference: ArrayLike,
                method: str = "exact", num_samples: int = 100_000,
                seed: int | None = None) -> float:
    """Volume dominated by `points` and bounded by `reference` (minimization).

    Points not strictly better than the reference in every objective add nothing.
    `method="exact"`: a sweep in 2-D, recursive slicing in more dimensions (fine for the few
    hundred points of a tuning run in 3-4 objectives); `method="mc"`: a Monte Carlo estimate
    from `num_samples` uniform draws in the box between the points' minimum and the reference.
    """
    values = _as_points(points)
    ref = np.asarray(reference, dtype=float).ravel()
    if values.shape[1] != ref.size:
        raise ValueError(f"reference: has {ref.size} objectives, the points have {values.shape[1]}")
    values = values[np.all(values < ref, axis=1)]
    if len(values) == 0:
        return 0.0
    if method == "exact":
        front = values[nondominated_sort(values)[0]]
        return float(_hv_exact(front, ref))
    if method == "mc":
        rng = np.random.default_rng(seed)
        lower = values.min(axis=0)
        box = float(np.prod(ref - lower))
        samples = lower + rng.random((num_samples, ref.size)) * (ref - lower)
        covered = np.zeros(num_samples, dtype=bool)
        for p in values:
            covered |= np.all(samples >= p, axis=1)
        return box * float(covered.mean())
    raise ValueError(f"method: expected 'exact' or 'mc', got {method!r}")


def _hv_2d(front: np.ndarray, ref: np.ndarray) -> float:
    order = np.argsort(front[:, 0], kind="stable")
    volume, best_y = 0.0, ref[1]
    for x, y in front[order]:
        if y < best_y:
            volume += (ref[0] - x) * (best_y - y)
            best_y = y
    return volume


def _hv_exact(front: np.ndarray, ref: np.ndarray) -> float:
    if front.shape[1] == 1:
        return float(ref[0] - front[:, 0].min())
    if front.shape[1] == 2:
        return _hv_2d(front, ref)
    # Slice along the last objective: between consecutive levels, the dominated region is the
    # (d-1)-dimensional hypervolume of the points at or below the lower level.
    order = np.argsort(front[:, -1], kind="stable")
    levels = front[order, -1]
    volume = 0.0
    for i in range(len(order)):
        upper = levels[i + 1] if i + 1 < len(order) else ref[-1]
        height = upper - levels[i]
        if height <= 0:
            continue
        active = front[order[: i + 1], :-1]
        active = active[nondominated_sort(active)[0]]
        volume += height * _hv_exact(active, ref[:-1])
    return volume
