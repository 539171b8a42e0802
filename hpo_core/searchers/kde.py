"""TPE / BOHB's searcher: a density ratio of good to bad configs (Bergstra et al. 2011,
Falkner et al. 2018).

Observed configs are split into the best `gamma` fraction (good) and the rest (bad). Each set
gets a product kernel density over the encoded space: truncated Gaussians on [0,1] for numeric
columns (bandwidth by Scott's rule, at least `min_bandwidth` and at least 1 / (n + 1) for n
points, so that a tight cluster of good points cannot collapse the search onto itself) and a
smoothed-frequency kernel for categorical ones, mixed with a uniform prior component of weight
`prior_weight`.
`num_candidates` configs are drawn from the good density with bandwidths widened by
`bandwidth_factor`; the one with the largest l(x)/g(x) is proposed. A `random_fraction` of
proposals is random.

Multi-fidelity (BOHB): observations are kept per resource level, and the model is fitted on the
highest level that has at least `min_points_in_model` of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import logsumexp, ndtr, ndtri

from hpo_core.models.encoding import EncodedSpace
from hpo_core.searchers.unseen import UnseenSearcher
from hpo_core.space import ConfigSpace

# A categorical kernel keeps its point's category, or with this probability redraws uniformly.
_CATEGORICAL_SMOOTHING = 0.5


class _ProductKDE:
    """Product kernel density of points in the encoded cube, with a uniform prior component."""

    def __init__(self, X: np.ndarray, space: EncodedSpace, min_bandwidth: float,
                 prior_weight: float):
        self.X, self.space, self.prior_weight = X, space, prior_weight
        n = len(X)
        cols = space.numeric_columns
        d = max(len(cols) + len(space.cat_slices), 1)
        sd = X[:, cols].std(axis=0) if n > 1 else np.full(cols.size, 0.5)
        # Scott's rule, clipped below so that a few clustered points cannot collapse the
        # density onto themselves (the floor shrinks as 1 / n, as in Optuna's TPE)
        floor = max(min_bandwidth, 1.0 / min(100.0, n + 1.0))
        self.bandwidth = np.maximum(sd * n ** (-1.0 / (d + 4)), floor)

    def _log_kernels(self, Z: np.ndarray) -> np.ndarray:
        """log K_i(z) for every row z of Z and kernel i: shape (len(Z), n)."""
        cols = self.space.numeric_columns
        mu = self.X[:, cols][None, :, :]
        h = self.bandwidth[None, None, :]
        z = Z[:, cols][:, None, :]
        log_mass = np.log(np.maximum(ndtr((1.0 - mu) / h) - ndtr(-mu / h), 1e-300))
        logk = (-0.5 * ((z - mu) / h) ** 2 - np.log(h) - 0.5 * math.log(2 * math.pi)
                - log_mass).sum(-1)
        for a, b in self.space.cat_slices:
            k = b - a
            same = (Z[:, None, a:b] * self.X[None, :, a:b]).sum(-1)  # 1 if same category
            other = _CATEGORICAL_SMOOTHING / k
            logk = logk + np.where(same > 0.5, math.log(1.0 - _CATEGORICAL_SMOOTHING + other),
                                   math.log(other))
        return logk

    def log_pdf(self, Z: np.ndarray) -> np.ndarray:
        terms = self._log_kernels(Z)
        if self.prior_weight > 0:  # the uniform density over the encoded configs
            log_prior = -sum(math.log(b - a) for a, b in self.space.cat_slices)
            terms = np.column_stack(
                [terms, np.full(len(Z), math.log(self.prior_weight) + log_prior)])
        return logsumexp(terms, axis=1) - math.log(len(self.X) + self.prior_weight)

    def sample(self, rng: np.random.Generator, num: int, factor: float) -> np.ndarray:
        """Draws from the density with numeric bandwidths multiplied by `factor`."""
        n = len(self.X)
        Z = self.X[rng.integers(n, size=num)].copy()
        from_prior = rng.random(num) < self.prior_weight / (n + self.prior_weight)
        cols = self.space.numeric_columns
        if cols.size:
            mu, h = Z[:, cols], self.bandwidth[None, :] * factor
            lo, hi = ndtr(-mu / h), ndtr((1.0 - mu) / h)
            u = lo + rng.random(mu.shape) * (hi - lo)
            Z[:, cols] = np.clip(mu + h * ndtri(np.clip(u, 1e-300, 1 - 1e-16)), 0.0, 1.0)
        for a, b in self.space.cat_slices:
            redraw = rng.random(num) < _CATEGORICAL_SMOOTHING
            idx = np.where(redraw, rng.integers(b - a, size=num), np.argmax(Z[:, a:b], axis=1))
            Z[:, a:b] = 0.0
            Z[np.arange(num), a + idx] = 1.0
        if from_prior.any():
            Z[from_prior] = self.space.sample(rng, int(from_prior.sum()))
        return self.space.snap(Z)


class KDESearcher(UnseenSearcher):
    """Tree-structured Parzen estimator in the BOHB flavour.

    Args:
        gamma: fraction of observations that count as good.
        min_points_in_model: observations (at one level) before the model is used
            (default: number of hyperparameters + 2, at least 4).
        num_candidates: draws from the good density per proposal.
        bandwidth_factor: widening of the good density when drawing candidates.
        min_bandwidth: smallest numeric bandwidth (encoded units).
        random_fraction: share of proposals that are random.
        prior_weight: weight of the uniform component in each density.
        multi_fidelity: take every intermediate result (BOHB); otherwise final results only.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        gamma: float = 0.15,
        min_points_in_model: int | None = None,
        num_candidates: int = 64,
        bandwidth_factor: float = 3.0,
        min_bandwidth: float = 1e-3,
        random_fraction: float = 1.0 / 3.0,
        prior_weight: float = 1.0,
        multi_fidelity: bool = False,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        _check_range("gamma", gamma, 0.0, 1.0, open_low=True, open_high=True)
        _check_range("random_fraction", random_fraction, 0.0, 1.0)
        _check_range("bandwidth_factor", bandwidth_factor, 0.0, math.inf, open_low=True)
        _check_range("min_bandwidth", min_bandwidth, 0.0, math.inf, open_low=True)
        _check_range("prior_weight", prior_weight, 0.0, math.inf)
        if min_points_in_model is None:
            min_points_in_model = max(len(self.config_space) + 2, 4)
        for name, value, low in (("min_points_in_model", min_points_in_model, 3),
                                 ("num_candidates", num_candidates, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        self.gamma = gamma
        self.min_points_in_model = min_points_in_model
        self.num_candidates = num_candidates
        self.bandwidth_factor = bandwidth_factor
        self.min_bandwidth = min_bandwidth
        self.random_fraction = random_fraction
        self.prior_weight = prior_weight
        self.uses_intermediate_results = multi_fidelity
        self._encoded = EncodedSpace(self.config_space)
        self._configs: dict[int, dict[str, Any]] = {}
        self._x: dict[int, np.ndarray] = {}
        self._values: dict[float | None, dict[int, float]] = {}  # level -> trial -> value

    def on_result(self, trial_id: int, config: Mapping[str, Any], value: float,
                  resource: float | None = None,
                  metrics: Mapping[str, Any] | None = None) -> None:
        if not math.isfinite(value):
            return
        level = None if resource is None else float(resource)
        self._values.setdefault(level, {})[trial_id] = float(value)
        if trial_id not in self._configs:
            self._configs[trial_id] = dict(config)
            self._x[trial_id] = self.config_space.encode(config)
        self._remember(config)

    def model_level(self) -> float | None:
        """The resource level the model is fitted on (BOHB: highest one with enough points)."""
        levels = [lv for lv, obs in self._values.items() if len(obs) >= self.min_points_in_model]
        if not levels:
            raise LookupError("no level has enough observations")
        return max(levels, key=lambda lv: -math.inf if lv is None else lv)

    def split(self) -> tuple[list[int], list[int]]:
        """Trial ids of the good and the bad observations at the model level."""
        obs = self._values[self.model_level()]
        order = sorted(obs, key=lambda t: (obs[t], t))
        n_good = min(max(math.ceil(self.gamma * len(order)), 2), len(order) - 1)
        return order[:n_good], order[n_good:]

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        if self._encoded.dim == 0 or self.rng.random() < self.random_fraction:
            return self._random_config()
        try:
            good, bad = self.split()
        except LookupError:
            return self._random_config()
        l_kde = _ProductKDE(np.array([self._x[t] for t in good]), self._encoded,
                            self.min_bandwidth, self.prior_weight)
        g_kde = _ProductKDE(np.array([self._x[t] for t in bad]), self._encoded,
                            self.min_bandwidth, self.prior_weight)
        candidates = l_kde.sample(self.rng, self.num_candidates, self.bandwidth_factor)
        score = l_kde.log_pdf(candidates) - g_kde.log_pdf(candidates)
        return self._first_unseen(self._encoded.decode(candidates[i])
                                  for i in np.argsort(-score, kind="stable"))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "configs": [[t, c] for t, c in self._configs.items()],
            "values": [[lv, [[t, v] for t, v in obs.items()]] for lv, obs in self._values.items()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._configs = {int(t): dict(c) for t, c in state["configs"]}
        self._x = {t: self.config_space.encode(c) for t, c in self._configs.items()}
        self._values = {lv: {int(t): float(v) for t, v in obs} for lv, obs in state["values"]}


def _check_range(name: str, value: Any, low: float, high: float, open_low: bool = False,
                 open_high: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
    ok = ok and (value > low if open_low else value >= low)
    ok = ok and (value < high if open_high else value <= high)
    if not ok:
        lo, hi = "(" if open_low else "[", ")" if open_high else "]"
        raise ValueError(f"{name}: must be a number in {lo}{low}, {high}{hi}, got {value!r}")
