"""MOBSTER: ASHA whose new configs come from a Gaussian process over configs and resources
(Klein et al., 2020, "Model-based asynchronous hyperparameter and neural architecture search").

`model="joint"` fits one GP on (config, resource) and maximizes expected improvement at `max_t`;
`model="independent"` fits one GP per rung level and uses the highest level with enough data
(see `hpo_core.searchers.gp_multifidelity`). By default the searcher sees each trial's values
at the rung levels it reaches (`observe="rungs"`, a small, informative data set: the GP stays
fast); `observe="all"` gives it every report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.rungs import check_fidelity_options
from hpo_core.searchers.gp import _Model
from hpo_core.searchers.gp_multifidelity import MODELS, MultiFidelityGPSearcher
from hpo_core.space import ConfigSpace, as_config_space

OBSERVE = ("rungs", "all")


class _PeriodicRefitGPSearcher(MultiFidelityGPSearcher):
    """The multi-fidelity GP searcher, refitting the GP hyperparameters only on every
    `refit_every`-th proposal (the others condition the GP on all data with the last fitted
    hyperparameters): asynchronous successive halving asks for many configs, most of them
    while little new data came in."""

    def __init__(self, *args: Any, refit_every: int = 1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if isinstance(refit_every, bool) or not isinstance(refit_every, int) or refit_every < 1:
            raise ValueError(f"refit_every: must be a positive integer, got {refit_every!r}")
        self.refit_every = refit_every

    def _fit(self, name: str, X: np.ndarray, values: np.ndarray) -> _Model:
        gp = self._gp(name)
        if gp.theta is None or (self._num_fits - 1) % self.refit_every == 0:
            return super()._fit(name, X, values)
        shift = float(values.mean())
        scale = float(values.std()) or 1.0
        return _Model(gp.posterior(X, (values - shift) / scale), shift, scale)


class MOBSTER(ASHA):
    """ASHA with the multi-fidelity GP searcher; ASHA's fidelity options, plus:

    Args:
        model: "joint" (one GP over config and resource) or "independent" (one per level).
        observe: "rungs" (values at rung levels) or "all" (every report) go to the model.
        num_init_random: random configs before the model is used.
        max_model_points: at most this many observations in the model.
        cost_attr: a reported cost (e.g. elapsed time) for cost-aware expected improvement.
        cost_exponent: weight of the cost in the acquisition.
        num_candidates: acquisition evaluations per proposal.
        refit_every: the GP hyperparameters are refitted on every this many proposals.
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
        max_model_points: int = 500,
        cost_attr: str | None = None,
        cost_exponent: float = 1.0,
        num_candidates: int = 1000,
        refit_every: int = 1,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        if model not in MODELS:
            raise ValueError(f"model: must be one of {MODELS}, got {model!r}")
        if observe not in OBSERVE:
            raise ValueError(f"observe: must be one of {OBSERVE}, got {observe!r}")
        check_fidelity_options(max_t, grace_period, reduction_factor)
        config_space = as_config_space(config_space)
        searcher = _PeriodicRefitGPSearcher(
            config_space, seed=seed, points_to_evaluate=points_to_evaluate,
            resource_attr=resource_attr, max_resource=max_t, min_resource=grace_period,
            model=model, num_init_random=num_init_random, max_model_points=max_model_points,
            cost_attr=cost_attr, cost_exponent=cost_exponent, num_candidates=num_candidates,
            refit_every=refit_every,
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
    max_model_points: int = 500,
    cost_attr: str | None = None,
    cost_exponent: float = 1.0,
    num_candidates: int = 1000,
    refit_every: int = 1,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> MOBSTER:
    """MOBSTER with one GP per rung level (`model="independent"`)."""
    return MOBSTER(config_space, metric, mode, seed, max_t=max_t, resource_attr=resource_attr,
                   grace_period=grace_period, reduction_factor=reduction_factor,
                   brackets=brackets, model="independent", observe=observe,
                   num_init_random=num_init_random, max_model_points=max_model_points,
                   cost_attr=cost_attr, cost_exponent=cost_exponent,
                   num_candidates=num_candidates, refit_every=refit_every,
                   points_to_evaluate=points_to_evaluate)
