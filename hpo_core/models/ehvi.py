"""Expected hypervolume improvement (EHVI) of independent Gaussian predictions, for minimization.

For a prediction y ~ N(mean, diag(sd^2)), a Pareto front and a reference point r, EHVI is the
expected volume that y adds to the region the front dominates below r. By Fubini it equals the
integral, over the region that is below r and not dominated by the front, of P(y <= u):

* two objectives (`ehvi_2d`): that region is a union of k + 1 vertical strips
  [a_i, a_{i+1}) x (-inf, b_i) between the front's points sorted by the first objective, and
  EHVI = sum_i (psi_1(a_{i+1}) - psi_1(a_i)) psi_2(b_i) with psi_j(t) = E[(t - y_j)^+]
  (the expected-improvement integral; exact, as in Emmerich et al., 2006);
* more objectives (`ehvi_mc`): the integral estimated with fixed quasi-random points of the
  region (the same points for every candidate, so that comparisons are not noisy), the region
  cut below at `lower`.

Both return the value and its derivatives in `mean` and `sd`, row by row.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr
from scipy.stats import qmc

from hpo_core.multiobjective import nondominated_sort

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _psi(t: np.ndarray, mean: np.ndarray, sd: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E[(t - y)^+] for y ~ N(mean, sd^2), and its derivatives in mean and sd.

    `t` broadcasts against `mean[:, None]`; t = -inf gives 0."""
    z = (t - mean[:, None]) / sd[:, None]
    with np.errstate(invalid="ignore"):
        cdf = ndtr(z)
        pdf = np.exp(-0.5 * z * z) * _INV_SQRT_2PI
        value = sd[:, None] * (z * cdf + pdf)
    finite = np.isfinite(z)
    return (np.where(finite, value, 0.0), np.where(finite, -cdf, 0.0),
            np.where(finite, pdf, 0.0))


def pareto_front(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The non-dominated rows of `points` that are strictly below `reference`."""
    points = np.asarray(points, dtype=float).reshape(-1, len(reference))
    points = points[np.all(points < reference, axis=1)]
    return points[nondominated_sort(points)[0]] if len(points) else points


def ehvi_2d(mean: np.ndarray, sd: np.ndarray, front: np.ndarray, reference: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact EHVI for two objectives: values (B,), d/dmean (B, 2), d/dsd (B, 2)."""
    front = pareto_front(front, reference)
    front = front[np.argsort(front[:, 0], kind="stable")]
    a = np.concatenate([[-np.inf], front[:, 0], [reference[0]]])  # strip edges, k + 2
    b = np.concatenate([[reference[1]], front[:, 1]])  # strip tops, k + 1
    p1, dm1, ds1 = _psi(a[None, :], mean[:, 0], sd[:, 0])
    p2, dm2, ds2 = _psi(b[None, :], mean[:, 1], sd[:, 1])
    width = p1[:, 1:] - p1[:, :-1]
    value = (width * p2).sum(1)
    d_mean = np.column_stack([((dm1[:, 1:] - dm1[:, :-1]) * p2).sum(1), (width * dm2).sum(1)])
    d_sd = np.column_stack([((ds1[:, 1:] - ds1[:, :-1]) * p2).sum(1), (width * ds2).sum(1)])
    return value, d_mean, d_sd


class MonteCarloEHVI:
    """EHVI for any number of objectives from `num_samples` fixed points of the improvement
    region (scrambled Sobol points of the box [lower, reference], those the front dominates
    dropped)."""

    def __init__(self, front: np.ndarray, reference: np.ndarray, lower: np.ndarray,
                 num_samples: int, seed: int):
        front = pareto_front(front, reference)
        sobol = qmc.Sobol(len(reference), scramble=True, seed=seed)
        box = lower + sobol.random(num_samples) * (reference - lower)
        dominated = np.zeros(len(box), dtype=bool)
        for p in front:
            dominated |= np.all(box >= p, axis=1)
        self.points = box[~dominated]
        self.weight = float(np.prod(reference - lower)) / num_samples

    def __call__(self, mean: np.ndarray, sd: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Values (B,), d/dmean (B, d), d/dsd (B, d)."""
        z = (self.points[None, :, :] - mean[:, None, :]) / sd[:, None, :]  # (B, S, d)
        cdf = np.maximum(ndtr(z), 1e-300)
        pdf = np.exp(-0.5 * z * z) * _INV_SQRT_2PI
        prob = cdf.prod(axis=2)  # (B, S)
        value = self.weight * prob.sum(1)
        # d prob / d mean_j = -pdf_j / sd_j * prod_{k != j} cdf_k
        rest = prob[:, :, None] / cdf
        d_mean = -self.weight * (rest * pdf).sum(1) / sd
        d_sd = -self.weight * (rest * pdf * z).sum(1) / sd
        return value, d_mean, d_sd
