"""Maximizing an acquisition function over the encoded cube of a config space.

Candidates are random configs plus local moves around good observed points; the best few are
refined jointly with L-BFGS-B over their numeric coordinates (one-hot blocks stay fixed, as
chosen by the candidate), then snapped to valid configs. The caller gets candidates ranked best
first, so it can skip ones that were already evaluated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from hpo_core.models.encoding import EncodedSpace

# acquisition(X, with_grad) -> (values, gradients or None); values are maximized.
Acquisition = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray | None]]


def maximize_acquisition(
    acquisition: Acquisition,
    space: EncodedSpace,
    rng: np.random.Generator,
    anchors: np.ndarray | None = None,
    num_random: int = 500,
    num_local: int = 500,
    num_starts: int = 5,
    maxiter: int = 50,
) -> np.ndarray:
    """Candidate rows of the encoded cube, best acquisition value first (no duplicates)."""
    parts = [space.sample(rng, num_random)]
    if anchors is not None and len(anchors) and num_local:
        picks = anchors[rng.integers(len(anchors), size=num_local)]
        scales = np.exp(rng.uniform(np.log(0.01), np.log(0.3), size=(num_local, 1)))
        parts.append(space.perturb(picks, rng, scales))
    candidates = np.vstack(parts)
    values, _ = acquisition(candidates, False)
    order = np.argsort(-values, kind="stable")
    starts = _unique_rows(candidates[order])[:num_starts]
    if space.numeric_columns.size and len(starts) and maxiter > 0:
        refined = space.snap(_refine(acquisition, starts, space.numeric_columns, maxiter))
        refined_values, _ = acquisition(refined, False)
        candidates = np.vstack([refined, candidates])
        values = np.concatenate([refined_values, values])
        order = np.argsort(-values, kind="stable")
    return _unique_rows(candidates[order])


def _refine(acquisition: Acquisition, starts: np.ndarray, free: np.ndarray,
            maxiter: int) -> np.ndarray:
    """Joint L-BFGS-B ascent of the starts' summed acquisition over the `free` columns."""
    k = len(starts)
    base = starts.copy()

    def negative(flat: np.ndarray) -> tuple[float, np.ndarray]:
        X = base.copy()
        X[:, free] = flat.reshape(k, free.size)
        values, grads = acquisition(X, True)
        assert grads is not None  # asked for with_grad
        values = np.where(np.isfinite(values), values, -1e6)
        grads = np.nan_to_num(grads[:, free], nan=0.0, posinf=0.0, neginf=0.0)
        return -float(values.sum()), -grads.reshape(-1)

    x0 = starts[:, free].reshape(-1)
    res = minimize(negative, x0, jac=True, method="L-BFGS-B",
                   bounds=[(0.0, 1.0)] * x0.size, options={"maxiter": maxiter})
    out = base.copy()
    out[:, free] = np.clip(res.x, 0.0, 1.0).reshape(k, free.size)
    return out


def _unique_rows(X: np.ndarray) -> np.ndarray:
    _, first = np.unique(np.round(X, 12), axis=0, return_index=True)
    return X[np.sort(first)]
