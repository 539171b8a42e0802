"""MOBSTER: ASHA whose new configs come from a Gaussian process over configs and resources
(Klein et al., 2020, "Model-based asynchronous hyperparameter and neural architecture search").

`model="joint"` fits one GP on (config, resource) and maximizes expected improvement at `max_t`;
`model="independent"` fits one GP per rung level and uses the highest level with enough data
(see `hpo_core.searchers.gp_multifidelity`). By default the searcher sees each trial's values
at the rung levels it reaches (`observe="rungs"`, a small, informative data set: the GP stays
fast); `observe="all"` gives it every report.

Asynchronous successive halving asks for a new config every time a trial is stopped, far more
often than new data changes the model. So one fit of the GP yields a batch of `batch_size`
proposals, used until they run out or the data grew by more than 10%: the best candidates of the acquisition that lie at least `min_distance` (in the
encoded unit cube) from each other and from every config tried so far (which also keeps expected
improvement from proposing near-copies of the incumbent over and over); the GP hyperparameters
are refitted on every `refit_every`-th batch. A `random_fraction` of the proposals is random.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.models.optimize import maximize_acquisition
from hpo_core.models.threads import single_threaded_blas
from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.rungs import check_fidelity_options
from hpo_core.searchers.gp import _Model
from hpo_core.searchers.gp_multifidelity import MODELS, MultiFidelityGPSearcher
from hpo_core.space import ConfigSpace, as_config_space

OBSERVE = ("rungs", "all")


class BatchGPSearcher(MultiFidelityGPSearcher):
    """The multi-fidelity GP searcher proposing diverse batches from one model fit.

    Args:
        batch_size: proposals taken from one fit of the model.
        min_distance: smallest distance (encoded cube) of a proposal to the configs tried so
            far and to the other proposals of its batch (default: 0.1 sqrt(d), at most 0.5).
        refit_every: the GP hyperparameters are refitted on every this many batches.
        random_fraction: share of random proposals.
        The other arguments are `MultiFidelityGPSearcher`'s.
    """

    def __init__(self, *args: Any, batch_size: int = 4, min_distance: float | None = None,
                 refit_every: int = 1, random_fraction: float = 0.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if min_distance is None:
            min_distance = min(0.1 * math.sqrt(max(self.config_space.ndim, 1)), 0.5)
        for name, value in (("batch_size", batch_size), ("refit_every", refit_every)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if not 0 <= min_distance < 1:
            raise ValueError(f"min_distance: must be in [0, 1), got {min_distance!r}")
        if not 0 <= random_fraction <= 1:
            raise ValueError(f"random_fraction: must be in [0, 1], got {random_fraction!r}")
        self.batch_size = batch_size
        self.min_distance = float(min_distance)
        self.refit_every = refit_every
        self.random_fraction = float(random_fraction)
        self._batch: list[dict[str, Any]] = []
        self._batch_data = 0  # observations when the batch was made

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        if self.random_fraction and self.rng.random() < self.random_fraction:
            return self._random_config()
        if len(self._records) - self._batch_data > max(1, 0.1 * self._batch_data):
            self._batch = []  # the data grew by more than 10% (at least 2): refit
        while self._batch:
            config = self._batch.pop(0)
            if self.config_space.config_key(config) not in self._seen:
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
        """Up to `batch_size` configs from the ranked rows, spread out and away from the past."""
        tried = [self._x[k] for k in self._records] + \
            [self.config_space.encode(c) for c in self._pending.values()]
        taken = np.array(tried).reshape(len(tried), -1) if tried else np.empty((0, ranked.shape[1]))
        batch: list[dict[str, Any]] = []
        for row in ranked:
            config = self._encoded.decode(row)
            if self.config_space.config_key(config) in self._seen:
                continue
            x = self.config_space.encode(config)
            if len(taken) and np.min(np.linalg.norm(taken - x, axis=1)) < self.min_distance:
                continue
            batch.append(config)
            taken = np.vstack([taken, x])
            if len(batch) == self.batch_size:
                break
        return batch

    def _fit(self, name: str, X: np.ndarray, values: np.ndarray) -> _Model:
        gp = self._gp(name)
        if gp.theta is None or (self._num_fits - 1) % self.refit_every == 0:
            return super()._fit(name, X, values)
        shift = float(values.mean())
        scale = float(values.std()) or 1.0
        return _Model(gp.posterior(X, (values - shift) / scale), shift, scale)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "batch": self._batch, "batch_data": self._batch_data}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._batch = [dict(c) for c in state["batch"]]
        self._batch_data = int(state["batch_data"])


class MOBSTER(ASHA):
    """ASHA with the multi-fidelity GP searcher; ASHA's fidelity options, plus:

    Args:
        model: "joint" (one GP over config and resource) or "independent" (one per level).
        observe: "rungs" (values at rung levels) or "all" (every report) go to the model.
        num_init_random: random configs before the model is used.
        max_model_points: at most this many observations in the model.
        cost_attr: a reported cost (e.g. elapsed time) for cost-aware expected improvement.
        cost_exponent: weight of the cost in the acquisition.
        num_candidates: acquisition evaluations per model fit.
        batch_size, min_distance, refit_every, random_fraction: see `BatchGPSearcher`.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        max_t: float,
        resource_attr: str = "epoch",
        grace_period: float = 1,
        reduction_factor: float = 3,
        brackets: int = 1,
        model: str = "joint",
        observe: str = "rungs",
        num_init_random: int | None = None,
        max_model_points: int = 300,
        cost_attr: str | None = None,
        cost_exponent: float = 1.0,
        num_candidates: int = 300,
        batch_size: int = 8,
        min_distance: float | None = None,
        refit_every: int = 5,
        random_fraction: float = 0.2,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        if model not in MODELS:
            raise ValueError(f"model: must be one of {MODELS}, got {model!r}")
        if observe not in OBSERVE:
            raise ValueError(f"observe: must be one of {OBSERVE}, got {observe!r}")
        check_fidelity_options(max_t, grace_period, reduction_factor)
        config_space = as_config_space(config_space)
        searcher = BatchGPSearcher(
            config_space, seed=seed, points_to_evaluate=points_to_evaluate,
            resource_attr=resource_attr, max_resource=max_t, min_resource=grace_period,
            model=model, num_init_random=num_init_random, max_model_points=max_model_points,
            cost_attr=cost_attr, cost_exponent=cost_exponent, num_candidates=num_candidates,
            batch_size=batch_size, min_distance=min_distance, refit_every=refit_every,
            random_fraction=random_fraction,
        )
        if observe == "rungs":
            searcher.uses_intermediate_results = False
        super().__init__(config_space, metric, mode, seed, max_t=max_t,
                         resource_attr=resource_attr, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=brackets,
                         searcher=searcher)
        self.model = model
        self.observe = observe

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "model": self.model, "observe": self.observe}


def mobster_independent(
    config_space: ConfigSpace | Mapping[str, Any],
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    *,
    max_t: float,
    resource_attr: str = "epoch",
    grace_period: float = 1,
    reduction_factor: float = 3,
    brackets: int = 1,
    observe: str = "rungs",
    num_init_random: int | None = None,
    max_model_points: int = 300,
    cost_attr: str | None = None,
    cost_exponent: float = 1.0,
    num_candidates: int = 300,
    batch_size: int = 8,
    min_distance: float | None = None,
    refit_every: int = 5,
    random_fraction: float = 0.2,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> MOBSTER:
    """MOBSTER with one GP per rung level (`model="independent"`)."""
    return MOBSTER(config_space, metric, mode, seed, max_t=max_t, resource_attr=resource_attr,
                   grace_period=grace_period, reduction_factor=reduction_factor,
                   brackets=brackets, model="independent", observe=observe,
                   num_init_random=num_init_random, max_model_points=max_model_points,
                   cost_attr=cost_attr, cost_exponent=cost_exponent,
                   num_candidates=num_candidates, batch_size=batch_size,
                   min_distance=min_distance, refit_every=refit_every,
                   random_fraction=random_fraction, points_to_evaluate=points_to_evaluate)
