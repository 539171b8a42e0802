"""Where a simulated trial's curve comes from: `CurveSurrogate`, and its table-backed kinds.

`TableLookup` serves tabulated configs only. The nearest-neighbour surrogate gives any config of
a blackbox's space a tabulated curve.

Configs are compared in the encoded [0,1]^d space of the blackbox's `ConfigSpace` (log domains
on a log scale, one-hot for choices). A tabulated config hits its own row exactly; another one
gets the curve of its nearest tabulated config, or the mean curve of its `k` nearest.

The nearest config is found by a KD-tree, or on small tables (`SCAN_MAX_VALUES`) by one
single-precision matrix-vector product over the table, which costs less than a tree query's
call (the simulated backend looks up every trial it starts); when that scan's winner is not
ahead by a margin far above the scan's rounding errors the tree decides, so both give the
same neighbour.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy.spatial import cKDTree

from backends.blackbox.blackbox import Blackbox, BlackboxError

#: tables of at most this many encoded values (configs x dimensions) are scanned for k=1
SCAN_MAX_VALUES = 200_000


def scan_margin(dims: int) -> float:
    """How far a scanned winner's squared distance must be below every other one's: twice a
    bound on the float32 scan's error for [0,1]^dims encodings (dims^2 * 2^-23)."""
    return 2.5e-7 * (dims + 1) ** 2


class CurveSurrogate(ABC):
    """Gives a config its learning curve: a (fidelities, objectives) array of the blackbox."""

    @abstractmethod
    def key(self, config: Mapping[str, Any], seed: int = 0) -> Hashable:
        """Equal for configs (and seeds) that get the same curve (the replay cache's key)."""

    @abstractmethod
    def curve(self, config: Mapping[str, Any], seed: int = 0) -> np.ndarray:
        """(fidelities, objectives) array for `config`."""


class TableLookup(CurveSurrogate):
    """Tabulated configs only: any other config is a `BlackboxError`."""

    def __init__(self, blackbox: Blackbox):
        self.blackbox = blackbox

    def _row(self, config: Mapping[str, Any]) -> int:
        index = self.blackbox.index_of(config)
        if index is None:
            raise BlackboxError(
                f"config: {dict(config)} is not in the table of {self.blackbox.name!r} "
                "(set surrogate='nearest' to use the nearest tabulated config)"
            )
        return index

    def key(self, config: Mapping[str, Any], seed: int = 0) -> Hashable:
        return (self._row(config), seed)

    def curve(self, config: Mapping[str, Any], seed: int = 0) -> np.ndarray:
        return self.blackbox.curve(self._row(config), seed)


class NearestNeighbourSurrogate(CurveSurrogate):
    """Looks up curves of arbitrary configs on a tabulated blackbox (lookups are cached)."""

    def __init__(self, blackbox: Blackbox, k: int = 1):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BlackboxError(f"k: must be a positive integer, got {k!r}")
        self.blackbox = blackbox
        self.k = min(k, blackbox.num_configs)
        space = blackbox.config_space
        self._space = space
        points = space.encode_many(blackbox.all_configs())
        self._tree = cKDTree(points)
        # the scan computes |p|^2 - 2 p.x (the squared distance less |x|^2) for every row p as
        # one product: rows (-2 p, |p|^2) times (x, 1); and the margin a winner needs
        self._scan: tuple[np.ndarray, float] | None = None
        if self.k == 1 and points.size <= SCAN_MAX_VALUES:
            rows = np.column_stack([-2.0 * points, np.einsum("ij,ij->i", points, points)])
            self._scan = (np.ascontiguousarray(rows, dtype=np.float32),
                          scan_margin(points.shape[1]))
        self._cache: dict[Hashable, tuple[int, ...]] = {}

    def neighbours(self, config: Mapping[str, Any]) -> tuple[int, ...]:
        """Rows of the tabulated configs standing in for `config` (itself if tabulated)."""
        try:
            key = self.blackbox.config_key(config)
        except KeyError:
            missing = [n for n in self._space.names if n not in config]
            raise BlackboxError(
                f"config: the blackbox {self.blackbox.name!r} needs the hyperparameters {missing}"
            ) from None
        rows = self._cache.get(key)
        if rows is None:
            exact = self.blackbox.index_of_key(key)
            if exact is not None:
                rows = (exact,)
            else:
                rows = self._nearest(self._space.encode_values(config))
            self._cache[key] = rows
        return rows

    def _nearest(self, x: Sequence[float]) -> tuple[int, ...]:
        """Rows of the `k` tabulated configs nearest to the encoded config `x`."""
        if self._scan is not None:
            rows, margin = self._scan
            shifted = rows.dot(np.array([*x, 1.0], dtype=np.float32))
            best = int(shifted.argmin())
            winner = shifted[best] + margin
            shifted[best] = np.inf
            if shifted[shifted.argmin()] > winner:
                return (best,)
        _, found = self._tree.query(np.asarray(x, dtype=float), k=self.k)
        return tuple(int(i) for i in np.atleast_1d(found))

    def key(self, config: Mapping[str, Any], seed: int = 0) -> Hashable:
        return (self.neighbours(config), seed)

    def curve(self, config: Mapping[str, Any], seed: int = 0) -> np.ndarray:
        """(fidelities, objectives) array for `config`: its row, or the mean of its neighbours."""
        rows = self.neighbours(config)
        if len(rows) == 1:
            return self.blackbox.curve(rows[0], seed)
        with warnings.catch_warnings():  # a fidelity none of the neighbours reaches stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.blackbox.objectives[list(rows), seed], axis=0)
