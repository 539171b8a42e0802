"""A vectorized view of a config space's [0,1]^d encoding, for model-based searchers.

Models work on encoded vectors; this module samples many of them at once, snaps arbitrary points
of the cube to the encodings of valid configs (integers rounded, one-hot made exact, ordinals
moved to their grid), and perturbs points locally. `snap(x)` equals
`space.encode(space.decode(x))` row by row, without a Python call per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.space import Categorical, ConfigSpace, Float, Integer, Ordinal


class EncodedSpace:
    """Sampling, snapping and local moves in the encoded cube of `space`."""

    def __init__(self, space: ConfigSpace):
        self.space = space
        self.dim = space.ndim
        self.cat_slices: list[tuple[int, int]] = []
        self._columns: list[tuple[int, Any]] = []  # (column, domain) of one-column domains
        for name, dom in space.domains.items():
            start, end = space._offsets[name]
            if type(dom) is Categorical:
                self.cat_slices.append((start, end))
            else:
                self._columns.append((start, dom))
        self.numeric_columns = np.array([c for c, _ in self._columns], dtype=int)
        self.numeric_mask = np.zeros(self.dim, dtype=bool)
        self.numeric_mask[self.numeric_columns] = True

    # -- sampling and snapping -----------------------------------------------------------------
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """`n` encodings of configs drawn at random (the space's own sampling distribution)."""
        X = rng.random((n, self.dim))
        for a, b in self.cat_slices:
            X[:, a:b] = 0.0
            X[np.arange(n), a + rng.integers(b - a, size=n)] = 1.0
        return self.snap(X)

    def snap(self, X: np.ndarray) -> np.ndarray:
        """Each row moved to the encoding of the config it decodes to."""
        X = np.array(X, dtype=float, copy=True)
        for col, dom in self._columns:
            X[:, col] = _snap_column(dom, np.clip(X[:, col], 0.0, 1.0))
        for a, b in self.cat_slices:
            idx = np.argmax(X[:, a:b], axis=1)
            X[:, a:b] = 0.0
            X[np.arange(len(X)), a + idx] = 1.0
        return X

    def perturb(self, X: np.ndarray, rng: np.random.Generator, scale: float | np.ndarray,
                flip_prob: float = 0.2) -> np.ndarray:
        """Local moves: Gaussian steps of sd `scale` (a number, or one per row as an (n, 1)
        array) on numeric columns, and each one-hot block redrawn with `flip_prob`."""
        X = np.array(X, dtype=float, copy=True)
        n = len(X)
        if self.numeric_columns.size:
            cols = self.numeric_columns
            X[:, cols] = np.clip(X[:, cols] + scale * rng.standard_normal((n, cols.size)), 0, 1)
        for a, b in self.cat_slices:
            flip = rng.random(n) < flip_prob
            if flip.any():
                X[flip, a:b] = 0.0
                X[np.flatnonzero(flip), a + rng.integers(b - a, size=int(flip.sum()))] = 1.0
        return self.snap(X)

    # -- configs -------------------------------------------------------------------------------
    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self.space.encode_many(list(configs))

    def decode(self, x: np.ndarray) -> dict[str, Any]:
        return self.space.decode(x)


def _snap_column(dom: Any, u: np.ndarray) -> np.ndarray:
    if isinstance(dom, Ordinal):  # includes FiniteRange
        n = len(dom.categories)
        if n == 1:
            return np.full_like(u, 0.5)
        return np.clip(np.round(u * (n - 1)), 0, n - 1) / (n - 1)
    if isinstance(dom, Integer):
        if dom.upper == dom.lower:
            return np.full_like(u, 0.5)
        lo, hi = dom._lo, dom._hi
        v = lo + u * (hi - lo)
        if dom.log:
            v = np.exp(v)
        k = np.clip(np.round(v), dom.lower, dom.upper)
        enc = np.log(k) if dom.log else k
        return np.clip((enc - lo) / (hi - lo), 0.0, 1.0)
    if isinstance(dom, Float):
        return np.full_like(u, 0.5) if dom.upper == dom.lower else u
    raise TypeError(f"unsupported domain {dom!r}")  # pragma: no cover

