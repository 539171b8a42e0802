"""Multi-objective Bayesian optimization with expected hypervolume improvement (EHVI).

One Gaussian process per objective (`hpo_core.models.gp`, fitted to standardized values) and
the next config maximizes EHVI (`hpo_core.models.ehvi`: exact for two objectives, quasi Monte
Carlo for more) over the encoded space, with the reference point 10% of the observed range
beyond the worst observed value of each objective. Pending trials are fantasized at their
posterior means and join the front (kriging believer), so parallel workers get different
proposals. Every trial runs to its end (FIFO).

Constraints are off unless `constraint_attr` names a metric that must be <= 0: then a GP models
it, the front holds feasible configs only, and the acquisition is EHVI x P(feasible) (P(feasible)
alone while nothing is feasible).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.models.acquisition import log_probability_below
from hpo_core.models.ehvi import MonteCarloEHVI, ehvi_2d, pareto_front
from hpo_core.models.encoding import EncodedSpace
from hpo_core.models.gp import GaussianProcess, GPPosterior
from hpo_core.models.optimize import Acquisition, maximize_acquisition
from hpo_core.models.threads import single_threaded_blas
from hpo_core.multiobjective import nondominated_sort
from hpo_core.schedulers.base import Scheduler
from hpo_core.searchers.seen_configs import SeenConfigs, config_digest
from hpo_core.space import ConfigSpace
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion

_TINY = 1e-300


class EHVI(Scheduler):
    """Multi-objective BO: a GP per objective, expected hypervolume improvement.

    Args:
        num_init_random: random configs before the models are used (default: number of
            hyperparameters + 1, at least 5, at most 20).
        constraint_attr: a metric that must be <= 0 (constrained EHVI); None: no constraint.
        num_candidates: acquisition evaluations per proposal before gradient refinement.
        num_mc_samples: quasi-random points of the improvement region (3 or more objectives).
        points_to_evaluate: configs to try first.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        num_init_random: int | None = None,
        constraint_attr: str | None = None,
        num_candidates: int = 1000,
        num_mc_samples: int = 1024,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        super().__init__(config_space, metric, mode, seed)
        if num_init_random is None:
            num_init_random = min(max(5, len(self.config_space) + 1), 20)
        for name, value, low in (("num_init_random", num_init_random, 2),
                                 ("num_candidates", num_candidates, 1),
                                 ("num_mc_samples", num_mc_samples, 16)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")
        self.num_init_random = num_init_random
        self.constraint_attr = constraint_attr
        self.num_candidates = num_candidates
        self.num_mc_samples = num_mc_samples
        self._encoded = EncodedSpace(self.config_space)
        self._initial = [{**self.config_space.fixed, **self.config_space.cast(dict(p))}
                         for p in points_to_evaluate or []]
        self._records: dict[int, dict[str, Any]] = {}  # trial -> config, values, constraint
        self._pending: dict[int, dict[str, Any]] = {}
        self._seen = SeenConfigs()
        self._gps: dict[str, GaussianProcess] = {}

    # -- scheduler contract --------------------------------------------------------------------
    def side_metrics(self) -> dict[str, str]:
        return {self.constraint_attr: "constraint_attr"} if self.constraint_attr else {}

    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        if self._initial:
            config: dict[str, Any] | None = self._initial.pop(0)
        elif self._encoded.dim == 0 or len(self._records) < max(
                2, self.num_init_random - len(self._pending)):
            config = self._random_config()
        else:
            config = self._model_config()
        if config is None:
            return None
        self._seen.add(config_digest(self.config_space, config))
        return TrialSuggestion.start(config)

    def on_trial_add(self, trial: Trial) -> None:
        self._pending[trial.trial_id] = dict(trial.config)

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        return Decision.CONTINUE

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        self._pending.pop(trial.trial_id, None)
        values = self.objectives(result.metrics) if result is not None else None
        if values is None:
            return
        constraint = None
        if self.constraint_attr and result is not None:
            c = result.metrics.get(self.constraint_attr)
            constraint = float(c) if isinstance(c, int | float) and math.isfinite(c) else None
        self._records[trial.trial_id] = {"config": dict(trial.config), "values": values.tolist(),
                                         "constraint": constraint}

    def on_trial_error(self, trial: Trial) -> None:
        self._pending.pop(trial.trial_id, None)

    # -- proposals -----------------------------------------------------------------------------
    def _random_config(self) -> dict[str, Any] | None:
        for _ in range(100):
            config = self.config_space.sample(self.rng)
            if config_digest(self.config_space, config) not in self._seen:
                return config
        return None  # the space looks exhausted

    def _posterior(self, name: str, X: np.ndarray, y: np.ndarray) -> GPPosterior:
        """A GP posterior on `y` standardized (warm-started hyperparameters)."""
        gp = self._gps.setdefault(name, GaussianProcess(self._encoded.dim))
        cold = gp.theta is None
        gp.fit(X, y, self.rng, restarts=2 if cold or len(X) <= 30 else 0,
               maxiter=100 if len(X) <= 30 else 30)
        return gp.posterior(X, y)

    def _model_config(self) -> dict[str, Any] | None:
        records = list(self._records.values())
        X = self.config_space.encode_many([r["config"] for r in records])
        Y = np.array([r["values"] for r in records])
        Y = (Y - Y.mean(0)) / np.where(Y.std(0) > 0, Y.std(0), 1.0)
        feasible = np.ones(len(records), dtype=bool)
        with single_threaded_blas():
            models = [self._posterior(f"objective{j}", X, Y[:, j]) for j in range(Y.shape[1])]
            constraint = None
            if self.constraint_attr:
                c = np.array([np.nan if r["constraint"] is None else r["constraint"]
                              for r in records])
                known = np.isfinite(c)
                feasible = known & (c <= 0)
                if known.sum() >= 2:
                    scale = float(np.abs(c[known]).std()) or 1.0
                    constraint = self._posterior("constraint", X[known], c[known] / scale)
            front_values = Y[feasible]
            if self._pending and feasible.any():  # kriging believer
                Zp = self.config_space.encode_many(list(self._pending.values()))
                models = [m.fantasize(Zp) for m in models]
                front_values = np.vstack([front_values,
                                          np.column_stack([m.predict(Zp)[0] for m in models])])
            acquisition = self._acquisition(models, constraint, front_values, Y)
            pool = feasible if feasible.any() else np.ones(len(records), dtype=bool)
            anchors = X[pool][nondominated_sort(Y[pool])[0]]
            half = self.num_candidates // 2
            ranked = maximize_acquisition(acquisition, self._encoded, self.rng, anchors,
                                          num_random=half, num_local=self.num_candidates - half)
        for row in ranked:
            config = self._encoded.decode(row)
            if config_digest(self.config_space, config) not in self._seen:
                return config
        return self._random_config()

    def _acquisition(self, models: list[GPPosterior], constraint: GPPosterior | None,
                     front_values: np.ndarray, Y: np.ndarray) -> Acquisition:
        """log EHVI (+ log P(feasible)) over encoded configs, with its gradient."""
        span = Y.max(0) - Y.min(0)
        reference = Y.max(0) + 0.1 * np.where(span > 0, span, 1.0)
        front = pareto_front(front_values, reference) if len(front_values) else None
        ehvi = None
        if front is not None:
            if Y.shape[1] == 2:
                ehvi = lambda m, s: ehvi_2d(m, s, front, reference)  # noqa: E731
            else:
                lower = Y.min(0) - 2.0
                ehvi = MonteCarloEHVI(front, reference, lower, self.num_mc_samples,
                                      seed=int(self.rng.integers(2**31)))

        def acquisition(Z: np.ndarray, with_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
            total = np.zeros(len(Z))
            grad = np.zeros((len(Z), Z.shape[1])) if with_grad else None
            if ehvi is not None:
                predictions = [_predict(model, Z, with_grad) for model in models]
                value, d_mean, d_sd = ehvi(np.column_stack([p[0] for p in predictions]),
                                           np.column_stack([p[1] for p in predictions]))
                safe = np.maximum(value, _TINY)
                total += np.log(safe)
                if grad is not None:
                    for j, (_, _, dm, ds) in enumerate(predictions):
                        grad += (d_mean[:, j, None] * dm + d_sd[:, j, None] * ds) / safe[:, None]
            if constraint is not None:
                m, s, dm, ds = _predict(constraint, Z, with_grad)
                value, gm, gs = log_probability_below(m, s, 0.0)
                total += value
                if grad is not None:
                    grad += gm[:, None] * dm + gs[:, None] * ds
            return total, grad

        return acquisition

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "initial": self._initial,
            "records": [[t, r] for t, r in self._records.items()],
            "pending": [[t, c] for t, c in self._pending.items()],
            "seen": self._seen.to_state(),
            "gps": {name: gp.state_dict() for name, gp in self._gps.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._initial = [dict(c) for c in state["initial"]]
        self._records = {int(t): dict(r) for t, r in state["records"]}
        self._pending = {int(t): dict(c) for t, c in state["pending"]}
        self._seen = SeenConfigs.from_state(state["seen"])
        self._gps = {}
        for name, gp_state in state["gps"].items():
            gp = GaussianProcess(self._encoded.dim)
            gp.load_state_dict(gp_state)
            self._gps[name] = gp


def _predict(model: GPPosterior, Z: np.ndarray, with_grad: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Mean, sd and (with_grad) their input gradients."""
    if not with_grad:
        m, v = model.predict(Z)
        return m, np.sqrt(v), None, None
    m, v, dm, dv = model.predict_with_grad(Z)
    s = np.sqrt(v)
    return m, s, dm, dv / (2.0 * s[:, None])

