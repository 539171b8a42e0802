"""A vectorized view of a config space's [0,1]^d encoding, for model-based searchers.

Models work on encoded vectors; this module samples many of them at once, snaps arbitrary points
of the cube to the encodings of valid configs (integers rounded, one-hot made exact, ordinals
moved to their grid), and perturbs points locally. `snap(x)` equals
`space.encode(space.decode(x))` row by row, without a Python call per row (for a conditional
space, inactive hyperparameters included: they are set to the space's inactive encoding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.space import INACTIVE, Categorical, ConfigSpace, Float, Integer, Ordinal


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
        if self.space.is_conditional:
            self._set_inactive(X)
        return X

    def _set_inactive(self, X: np.ndarray) -> None:
        """Rows' inactive hyperparameters set (in place) to the inactive encoding."""
        active: dict[str, np.ndarray] = {}
        for name in self.space.order:  # parents first
            dom = self.space.domains[name]
            mask = np.ones(len(X), dtype=bool)
            for parent in dom.condition or {}:
                allowed = [c for c in self.space.allowed_codes(name, parent) if c is not None]
                mask &= active[parent] & np.isin(self._codes(parent, X), allowed)
            active[name] = mask
            if dom.condition:
                a, b = self.space._offsets[name]
                X[~mask, a:b] = 0.0 if type(dom) is Categorical else INACTIVE

    def _codes(self, name: str, X: np.ndarray) -> np.ndarray:
        """Each row's value of hyperparameter `name` as `ConfigSpace.code` gives it."""
        dom = self.space.domains[name]
        a, b = self.space._offsets[name]
        if type(dom) is Categorical:
            return np.argmax(X[:, a:b], axis=1)
        u = X[:, a]
        if isinstance(dom, Ordinal):
            n = len(dom.categories)
            return np.clip(np.round(u * (n - 1)), 0, n - 1).astype(int)
        assert isinstance(dom, Integer | Float)  # the other numeric domains
        if dom.upper == dom.lower:
            return np.full(len(X), int(dom.lower))
        v = dom._lo + u * (dom._hi - dom._lo)
        return np.clip(np.round(np.exp(v) if dom.log else v), dom.lower, dom.upper).astype(int)

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

