"""Gaussian-process Bayesian optimization, optionally constrained or cost-aware.

After `num_init_random` random configs, each proposal fits a GP (Matern-5/2 ARD, see
`hpo_core.models.gp`) to the standardized objective values (bad outliers clipped to
median + 3 IQR) and maximizes log expected improvement over the encoded space. Configs still being evaluated are fantasized at the
posterior mean (kriging believer), so parallel workers get different proposals.

* `constraint_attr`: a reported metric that must be <= 0 for a config to be feasible; a second
  GP models it and the acquisition becomes EI x P(feasible) (Gardner et al., 2014).
* `cost_attr`: a reported positive cost (e.g. training time); a GP on log cost turns the
  acquisition into EI / cost^`cost_exponent` (EI per unit cost, Snoek et al., 2012).
* `batch_size`: one model fit yields up to this many proposals, used until they run out or the
  data grew by more than 10%: the best candidates of the acquisition lying at least
  `min_distance` (in the encoded unit cube) from each other and from every config tried so far
  (which also keeps expected improvement from proposing near-copies of the incumbent).
  With `refit_every`, the hyperparameters are refitted on every this many model fits only, and
  a `random_fraction` of the proposals is random. This keeps the model cheap for schedulers
  that ask for many configs per new result (e.g. MOBSTER).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.models.acquisition import log_expected_improvement, log_probability_below
from hpo_core.models.encoding import EncodedSpace
from hpo_core.models.gp import GaussianProcess, GPPosterior
from hpo_core.models.optimize import Acquisition, maximize_acquisition
from hpo_core.models.threads import single_threaded_blas
from hpo_core.searchers.unseen import UnseenSearcher
from hpo_core.space import ConfigSpace

_NUM_ANCHORS = 5


class _Model:
    """A GP posterior on standardized targets; predictions come back in original units."""

    def __init__(self, posterior: GPPosterior, shift: float, scale: float):
        self.posterior, self.shift, self.scale = posterior, shift, scale

    def predict(self, Z: np.ndarray, with_grad: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Mean, sd and (with_grad) their input gradients, in original units."""
        if not with_grad:
            m, v = self.posterior.predict(Z)
            return self.shift + self.scale * m, self.scale * np.sqrt(v), None, None
        m, v, dm, dv = self.posterior.predict_with_grad(Z)
        s = np.sqrt(v)
        ds = dv / (2.0 * s[:, None])
        return self.shift + self.scale * m, self.scale * s, self.scale * dm, self.scale * ds


class GPSearcher(UnseenSearcher):
    """Bayesian optimization with a Gaussian process and expected improvement.

    Args:
        num_init_random: random configs before the model is used (default: number of
            hyperparameters + 1, at least 5, at most 20).
        constraint_attr: metric that must be <= 0 (constrained BO).
        cost_attr: positive cost metric (cost-aware BO); `cost_exponent` weighs it.
        num_candidates: acquisition evaluations per model fit before local refinement.
        max_fit_points: at most this many observations are used to fit hyperparameters.
        priors: weak priors on the GP hyperparameters.
        refit_every: the hyperparameters are refitted on every this many model fits (the
            others condition on all data with the last fitted ones).
        batch_size: proposals taken from one model fit.
        min_distance: smallest distance (encoded cube) of a model-based proposal to the configs
            tried so far and to the other proposals of its batch; None: 0.1 sqrt(d), at most 0.5.
        random_fraction: share of random proposals.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        num_init_random: int | None = None,
        constraint_attr: str | None = None,
        cost_attr: str | None = None,
        cost_exponent: float = 1.0,
        num_candidates: int = 1000,
        max_fit_points: int = 300,
        priors: bool = True,
        refit_every: int = 1,
        batch_size: int = 1,
        min_distance: float | None = 0.0,
        random_fraction: float = 0.0,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        if num_init_random is None:
            num_init_random = min(max(5, len(self.config_space) + 1), 20)
        if min_distance is None:
            min_distance = min(0.1 * math.sqrt(max(self.config_space.ndim, 1)), 0.5)
        for name, value, low in (("num_init_random", num_init_random, 1),
                                 ("num_candidates", num_candidates, 1),
                                 ("max_fit_points", max_fit_points, 10),
                                 ("refit_every", refit_every, 1),
                                 ("batch_size", batch_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        if not isinstance(cost_exponent, int | float) or cost_exponent < 0:
            raise ValueError(f"cost_exponent: must be a number >= 0, got {cost_exponent!r}")
        if not 0 <= min_distance < 1:
            raise ValueError(f"min_distance: must be in [0, 1), got {min_distance!r}")
        if not 0 <= random_fraction <= 1:
            raise ValueError(f"random_fraction: must be in [0, 1], got {random_fraction!r}")
        self.num_init_random = num_init_random
        self.constraint_attr = constraint_attr
        self.cost_attr = cost_attr
        self.cost_exponent = float(cost_exponent)
        self.num_candidates = num_candidates
        self.max_fit_points = max_fit_points
        self.priors = priors
        self.refit_every = refit_every
        self.batch_size = batch_size
        self.min_distance = float(min_distance)
        self.random_fraction = float(random_fraction)
        self._encoded = EncodedSpace(self.config_space)
        self._records: dict[Any, dict[str, Any]] = {}
        self._x: dict[Any, np.ndarray] = {}  # encoded config of each record (cache)
        self._pending: dict[int, dict[str, Any]] = {}
        self._gps: dict[str, GaussianProcess] = {}
        self._num_fits = 0
        self._batch: list[dict[str, Any]] = []  # proposals left from the last model fit
        self._batch_data = 0  # observations when that batch was made

    def side_metrics(self) -> dict[str, str]:
        named = {"constraint_attr": self.constraint_attr, "cost_attr": self.cost_attr}
        return {metric: option for option, metric in named.items() if metric}

    # -- hooks for the multi-fidelity variants ---------------------------------------------------
    @property
    def input_dim(self) -> int:
        return self._encoded.dim

    def _record_key(self, trial_id: int, resource: float | None) -> Any:
        return trial_id

    def _model_records(self) -> list[Any]:
        """Keys of the records the models are trained on."""
        return list(self._records)

    def _inputs(self, keys: Sequence[Any]) -> np.ndarray:
        """Model inputs of these records."""
        return np.array([self._x[k] for k in keys]).reshape(len(keys), self._encoded.dim)

    def _target_inputs(self, Z: np.ndarray) -> np.ndarray:
        """Model inputs at which configs (rows of encoded Z) are proposed."""
        return Z

    def _pending_configs(self, keys: Sequence[Any]) -> list[dict[str, Any]]:
        """Configs to fantasize: those of pending trials without an observation."""
        observed = {self._records[k]["trial_id"] for k in keys}
        return [c for t, c in self._pending.items() if t not in observed]

    def _gp(self, name: str) -> GaussianProcess:
        if name not in self._gps:
            self._gps[name] = GaussianProcess(self.input_dim, self.priors)
        return self._gps[name]

    # -- searcher contract ---------------------------------------------------------------------
    def on_trial_start(self, trial_id: int, config: Mapping[str, Any]) -> None:
        super().on_trial_start(trial_id, config)
        self._pending[trial_id] = dict(config)

    def on_trial_end(self, trial_id: int) -> None:
        self._pending.pop(trial_id, None)

    def on_result(self, trial_id: int, config: Mapping[str, Any], value: float,
                  resource: float | None = None,
                  metrics: Mapping[str, Any] | None = None) -> None:
        if not math.isfinite(value):
            return
        key = self._record_key(trial_id, resource)
        metrics = metrics or {}
        self._records[key] = {
            "trial_id": trial_id,
            "config": dict(config),
            "value": float(value),
            "resource": None if resource is None else float(resource),
            "constraint": _finite(metrics.get(self.constraint_attr)) if self.constraint_attr else None,
            "cost": _positive(metrics.get(self.cost_attr)) if self.cost_attr else None,
        }
        self._x[key] = self.config_space.encode(config)
        self._remember(config)

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        if self.random_fraction and self.rng.random() < self.random_fraction:
            return self._random_config()
        if len(self._records) - self._batch_data > max(1, 0.1 * self._batch_data):
            self._batch = []  # the data grew by more than 10% (at least 2): refit
        while self._batch:
            config = self._batch.pop(0)
            if not self._is_seen(config):
                return config
        keys = self._model_records()
        trials = {self._records[k]["trial_id"] for k in keys} | set(self._pending)
        if self._encoded.dim == 0 or len(keys) < 2 or len(trials) < self.num_init_random:
            return self._random_config()
        with single_threaded_blas():
            acquisition, anchors = self._acquisition(keys)
            half = self.num_candidates // 2
            ranked = maximize_acquisition(acquisition, self._encoded, self.rng, anchors,
                                          num_random=half, num_local=self.num_candidates - half)
        self._batch = self._diverse(ranked)
        self._batch_data = len(self._records)
        return self._batch.pop(0) if self._batch else self._random_config()

    def _diverse(self, ranked: np.ndarray) -> list[dict[str, Any]]:
        """Up to `batch_size` unseen configs from the ranked rows, spread out and away from
        the configs tried so far (by `min_distance`)."""
        tried = [self._x[k] for k in self._records] + \
            [self.config_space.encode(c) for c in self._pending.values()]
        taken = np.array(tried).reshape(len(tried), self.config_space.ndim)
        batch: list[dict[str, Any]] = []
        for row in ranked:
            config = self._encoded.decode(row)
            if self._is_seen(config):
                continue
            x = self.config_space.encode(config)
            if len(taken) and np.min(np.linalg.norm(taken - x, axis=1)) < self.min_distance:
                continue
            batch.append(config)
            taken = np.vstack([taken, x])
            if len(batch) == self.batch_size:
                break
        return batch

    # -- models and acquisition ----------------------------------------------------------------
    def _fit(self, name: str, X: np.ndarray, values: np.ndarray) -> _Model:
        shift = float(values.mean())
        scale = float(values.std()) or 1.0
        y = (values - shift) / scale
        gp = self._gp(name)
        n = len(X)
        cold = gp.theta is None
        if cold or n <= 30:
            restarts, maxiter = 2, 100
        else:  # warm start; a fresh start now and then
            restarts, maxiter = int(self._num_fits % 10 == 0), (50 if n <= 100 else 20)
        if cold or (self._num_fits - 1) % self.refit_every == 0:
            gp.fit(X, y, self.rng, restarts=restarts, maxiter=maxiter,
                   max_points=self.max_fit_points)
        return _Model(gp.posterior(X, y), shift, scale)

    def _acquisition(self, keys: list[Any]) -> tuple[Acquisition, np.ndarray]:
        """The log acquisition function over encoded configs, and good configs to search near."""
        self._num_fits += 1
        X = self._inputs(keys)
        values = np.array([self._records[k]["value"] for k in keys])
        objective = self._fit("objective", X, _clip_bad_outliers(values))
        feasible = np.ones(len(keys), dtype=bool)
        constraint = cost = None
        if self.constraint_attr:
            c = np.array([np.nan if self._records[k]["constraint"] is None
                          else self._records[k]["constraint"] for k in keys])
            known = np.isfinite(c)
            feasible = known & (c <= 0)
            if known.sum() >= 2:
                constraint = self._fit("constraint", X[known], c[known])
        if self.cost_attr:
            w = np.array([self._records[k]["cost"] or np.nan for k in keys])
            known = np.isfinite(w)
            if known.sum() >= 2:
                cost = self._fit("cost", X[known], np.log(w[known]))
        configs = np.array([self._x[k] for k in keys])
        incumbent_inputs = self._target_inputs(configs[feasible])
        best = float(objective.predict(incumbent_inputs, False)[0].min()) if feasible.any() \
            else None
        pending = self._pending_configs(keys)
        if pending:  # kriging believer: pending configs take their posterior mean
            Zp = self._target_inputs(self.config_space.encode_many(pending))
            objective.posterior = objective.posterior.fantasize(Zp)
            if best is not None:
                best = min(best, float(objective.predict(Zp, False)[0].min()))
        order = np.argsort(values[feasible] if feasible.any() else values)
        anchors = (configs[feasible] if feasible.any() else configs)[order[:_NUM_ANCHORS]]
        dim = self._encoded.dim
        exponent = self.cost_exponent

        def acquisition(Z: np.ndarray, with_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
            inputs = self._target_inputs(Z)
            total = np.zeros(len(Z))
            grad = np.zeros((len(Z), dim)) if with_grad else None
            if best is not None:
                m, s, dm, ds = objective.predict(inputs, with_grad)
                v, gm, gs = log_expected_improvement(m, s, best)
                total += v
                if grad is not None:
                    grad += (gm[:, None] * dm + gs[:, None] * ds)[:, :dim]
            if constraint is not None:
                m, s, dm, ds = constraint.predict(inputs, with_grad)
                v, gm, gs = log_probability_below(m, s, 0.0)
                total += v
                if grad is not None:
                    grad += (gm[:, None] * dm + gs[:, None] * ds)[:, :dim]
            if cost is not None and exponent:
                m, _, dm, _ = cost.predict(inputs, with_grad)
                total -= exponent * m
                if grad is not None and dm is not None:
                    grad -= exponent * dm[:, :dim]
            return total, grad

        return acquisition, anchors

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "records": list(self._records.values()),
            "pending": [[t, c] for t, c in self._pending.items()],
            "gps": {name: gp.state_dict() for name, gp in self._gps.items()},
            "num_fits": self._num_fits,
            "batch": self._batch,
            "batch_data": self._batch_data,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._records, self._x = {}, {}
        for record in state["records"]:
            key = self._record_key(record["trial_id"], record["resource"])
            self._records[key] = dict(record)
            self._x[key] = self.config_space.encode(record["config"])
        self._pending = {int(t): dict(c) for t, c in state["pending"]}
        self._gps = {}
        for name, gp_state in state["gps"].items():
            self._gp(name).load_state_dict(gp_state)
        self._num_fits = int(state["num_fits"])
        self._batch = [dict(c) for c in state.get("batch", [])]
        self._batch_data = int(state.get("batch_data", 0))


def _clip_bad_outliers(values: np.ndarray) -> np.ndarray:
    """Values far above the median (diverged runs, error codes) cut down to the fence
    median + 3 IQR, so that they do not squash the good values together when standardized."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return np.minimum(values, median + 3.0 * (q3 - q1)) if q3 > q1 else values


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _positive(value: Any) -> float | None:
    value = _finite(value)
    return value if value is not None and value > 0 else None
