"""Gaussian-process regression: Matern-5/2 ARD kernel, constant mean, Gaussian noise.

Hyperparameters live in one vector `theta = [log lengthscales (dim), log signal variance,
log noise variance, mean]` and are fitted by maximizing the log marginal likelihood plus weak
log-normal priors (L-BFGS-B with the analytic gradient, warm-started, a few restarts). Inputs
are expected in [0,1]^dim and targets standardized by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.linalg import cho_solve, lapack
from scipy.optimize import minimize

from hpo_core.models.threads import single_threaded_blas

SQRT5 = math.sqrt(5.0)
JITTER = 1e-8
LOG_2PI = math.log(2.0 * math.pi)


def matern52(r: np.ndarray) -> np.ndarray:
    """Matern-5/2 correlation of (lengthscale-scaled) distances `r`."""
    return (1.0 + SQRT5 * r + (5.0 / 3.0) * r * r) * np.exp(-SQRT5 * r)


def _scaled_sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d2 = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d2, 0.0)


def _cholesky(K: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor, adding jitter if `K` is numerically not positive definite."""
    jitter = 0.0
    scale = float(np.mean(np.diag(K)))
    for _ in range(6):
        L, info = lapack.dpotrf(K + jitter * np.eye(len(K)) if jitter else K, lower=1, clean=1)
        if info == 0:
            return L
        jitter = scale * 1e-8 if jitter == 0.0 else jitter * 10.0
    raise np.linalg.LinAlgError("kernel matrix is not positive definite")


def _cho_inverse(L: np.ndarray) -> np.ndarray:
    inv, info = lapack.dpotri(L, lower=1)
    if info != 0:  # pragma: no cover - L comes from a successful factorization
        raise np.linalg.LinAlgError("could not invert the kernel matrix")
    return np.tril(inv) + np.tril(inv, -1).T


class GaussianProcess:
    """GP hyperparameters with their fitting; `posterior(X, y)` conditions on data.

    Args:
        dim: input dimension.
        priors: add weak log-normal priors on the hyperparameters (recommended with little data).
    """

    def __init__(self, dim: int, priors: bool = True):
        self.dim = dim
        self.priors = priors
        d = max(dim, 1)
        # Prior means and sds, in theta's coordinates.
        self.prior_mean = np.array([math.log(0.5) + 0.5 * math.log(d)] * dim + [0.0, -4.0, 0.0])
        self.prior_sd = np.array([1.5] * dim + [1.0, 2.0, 1.0])
        self.bounds = [(math.log(1e-2), math.log(1e2))] * dim + [
            (math.log(1e-2), math.log(1e2)),
            (math.log(1e-6), math.log(10.0)),
            (-10.0, 10.0),
        ]
        self.theta: np.ndarray | None = None

    def default_theta(self) -> np.ndarray:
        theta = self.prior_mean.copy()
        theta[self.dim + 1] = math.log(1e-2)
        return theta

    # -- likelihood ----------------------------------------------------------------------------
    def neg_log_posterior(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray,
                          sqdiff: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """Negative log marginal likelihood (+ negative log prior) and its gradient in theta.

        `sqdiff` (n, n, dim) holds the per-dimension squared differences of `X` (computed if
        not given; pass it when evaluating many thetas on the same data).
        """
        n, dim = X.shape
        if sqdiff is None:
            sqdiff = (X[:, None, :] - X[None, :, :]) ** 2
        ls2 = np.exp(2.0 * theta[:dim])
        s2, noise, mean = math.exp(theta[dim]), math.exp(theta[dim + 1]), theta[dim + 2]
        r2 = sqdiff.reshape(n * n, dim) @ (1.0 / ls2)
        r = np.sqrt(r2).reshape(n, n)
        e = np.exp(-SQRT5 * r)
        Kf = s2 * (1.0 + SQRT5 * r + (5.0 / 3.0) * r * r) * e
        K = Kf.copy()
        K[np.diag_indices(n)] += noise + JITTER
        L, info = lapack.dpotrf(K, lower=1, clean=1)
        if info != 0:
            return 1e25, np.zeros_like(theta)
        resid = y - mean
        alpha = cho_solve((L, True), resid)
        value = 0.5 * resid @ alpha + np.log(np.diag(L)).sum() + 0.5 * n * LOG_2PI
        W = _cho_inverse(L)
        W -= np.outer(alpha, alpha)
        grad = np.empty_like(theta)
        G = (s2 * 5.0 / 3.0) * (1.0 + SQRT5 * r) * e  # dK / dlog(l_d) = G * sqdiff_d / l_d^2
        grad[:dim] = 0.5 * ((W * G).reshape(-1) @ sqdiff.reshape(n * n, dim)) / ls2
        grad[dim] = 0.5 * np.sum(W * Kf)
        grad[dim + 1] = 0.5 * noise * np.trace(W)
        grad[dim + 2] = -alpha.sum()
        if self.priors:
            z = (theta - self.prior_mean) / self.prior_sd
            value += 0.5 * z @ z
            grad += z / self.prior_sd
        return float(value), grad

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, rng: np.random.Generator,
            restarts: int = 2, maxiter: int = 100, max_points: int = 300) -> None:
        """Fit theta to (X, y): warm-started from the current theta, plus `restarts` fresh starts.

        With more than `max_points` points, a random subset of that size is used.
        """
        if len(X) > max_points:
            keep = np.sort(rng.choice(len(X), size=max_points, replace=False))
            X, y = X[keep], y[keep]
        sqdiff = (X[:, None, :] - X[None, :, :]) ** 2
        starts: list[np.ndarray] = []
        if self.theta is not None:
            starts.append(self.theta)
        if self.theta is None or restarts > 0:
            starts.append(self.default_theta())
        for _ in range(max(restarts - 1, 0)):
            starts.append(self._random_theta(rng))
        lo, hi = np.array(self.bounds).T
        best_theta, best_value = None, math.inf
        with single_threaded_blas():
            for theta0 in starts:
                res = minimize(self.neg_log_posterior, np.clip(theta0, lo, hi),
                               args=(X, y, sqdiff), jac=True, method="L-BFGS-B",
                               bounds=self.bounds, options={"maxiter": maxiter})
                if math.isfinite(res.fun) and res.fun < best_value:
                    best_theta, best_value = res.x, float(res.fun)
        if best_theta is not None:
            self.theta = np.asarray(best_theta, dtype=float)
        elif self.theta is None:
            self.theta = self.default_theta()

    def _random_theta(self, rng: np.random.Generator) -> np.ndarray:
        theta = self.default_theta()
        theta[: self.dim] = rng.uniform(math.log(0.05), math.log(5.0), self.dim)
        theta[self.dim] = rng.uniform(math.log(0.3), math.log(3.0))
        theta[self.dim + 1] = rng.uniform(math.log(1e-4), math.log(1e-1))
        return theta

    def posterior(self, X: np.ndarray, y: np.ndarray) -> GPPosterior:
        """The GP conditioned on (X, y) under the current (or default) hyperparameters."""
        theta = self.theta if self.theta is not None else self.default_theta()
        return GPPosterior(X, y, theta)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, list[float] | None]:
        return {"theta": None if self.theta is None else [float(t) for t in self.theta]}

    def load_state_dict(self, state: dict[str, Sequence[float] | None]) -> None:
        theta = state.get("theta")
        self.theta = None if theta is None else np.asarray(theta, dtype=float)


class GPPosterior:
    """A GP conditioned on data: predictive mean and latent variance, with input gradients.

    The last `num_exact` points are conditioned on without noise (fantasies).
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, theta: np.ndarray, num_exact: int = 0):
        dim = X.shape[1]
        self.X, self.y, self.theta, self.num_exact = X, y, theta, num_exact
        self.lengthscales = np.exp(theta[:dim])
        self.signal_variance = math.exp(theta[dim])
        self.noise_variance = math.exp(theta[dim + 1])
        self.mean = float(theta[dim + 2])
        self._Xs = X / self.lengthscales
        K = self.signal_variance * matern52(np.sqrt(_scaled_sqdist(self._Xs, self._Xs)))
        noise = np.full(len(X), self.noise_variance + JITTER)
        noise[len(X) - num_exact:] = 1e-6 * self.signal_variance
        K[np.diag_indices(len(X))] += noise
        self.L = _cholesky(K)
        self.alpha = cho_solve((self.L, True), y - self.mean)

    def _cross(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = np.sqrt(_scaled_sqdist(Z / self.lengthscales, self._Xs))
        return r, self.signal_variance * matern52(r)

    def predict(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and latent (noise-free) variance at the rows of `Z`."""
        _, Ks = self._cross(Z)
        mean = self.mean + Ks @ self.alpha
        V = lapack.dtrtrs(self.L, Ks.T, lower=1)[0]
        var = np.maximum(self.signal_variance - (V * V).sum(0), 1e-12)
        return mean, var

    def predict_with_grad(
        self, Z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance and their gradients (rows of shape dim) at the rows of `Z`."""
        r, Ks = self._cross(Z)
        mean = self.mean + Ks @ self.alpha
        v = cho_solve((self.L, True), Ks.T)  # (n, B)
        var = np.maximum(self.signal_variance - np.einsum("bi,ib->b", Ks, v), 1e-12)
        # dk/dz_d = -(5/3) s2 (1 + sqrt5 r) exp(-sqrt5 r) (z_d - x_d) / l_d^2
        G = -(5.0 / 3.0) * self.signal_variance * (1.0 + SQRT5 * r) * np.exp(-SQRT5 * r)
        ls2 = self.lengthscales**2
        diff = (Z[:, None, :] - self.X[None, :, :]) / ls2  # (B, n, dim)
        dmean = np.einsum("bi,bid->bd", G * self.alpha[None, :], diff)
        dvar = -2.0 * np.einsum("bi,bid->bd", G * v.T, diff)
        return mean, var, dmean, dvar

    def fantasize(self, Z: np.ndarray) -> GPPosterior:
        """Kriging believer: condition also on the posterior mean at the rows of `Z`, as if
        observed without noise, so the variance collapses there."""
        if len(Z) == 0:
            return self
        mean, _ = self.predict(Z)
        return GPPosterior(np.vstack([self.X, Z]), np.concatenate([self.y, mean]), self.theta,
                           self.num_exact + len(Z))
