"""MOBSTER: ASHA whose new configs come from a Gaussian process over configs and resources
(Klein et al., 2020, "Model-based asynchronous hyperparameter and neural architecture search").

`model="joint"` fits one GP on (config, resource) and maximizes expected improvement at `max_t`;
`model="independent"` fits one GP per rung level and uses the highest level with enough data
(see `hpo_core.searchers.gp_multifidelity`). By default the searcher sees each trial's values
at the rung levels it reaches (`observe="rungs"`, a small, informative data set: the GP stays
fast); `observe="all"` gives it every report.

Asynchronous successive halving asks for a new config every time a trial is stopped, far more
often than new data changes the model. So the searcher proposes batches: one fit of the GP
yields `batch_size` configs at least `min_distance` apart and away from every config tried so
far, the GP hyperparameters are refitted on every `refit_every`-th batch, and a
`random_fraction` of the proposals is random (see `hpo_core.searchers.gp`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.rungs import check_fidelity_options
from hpo_core.searchers.gp_multifidelity import MODELS, MultiFidelityGPSearcher
from hpo_core.space import ConfigSpace, as_config_space

OBSERVE = ("rungs", "all")


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
        batch_size, min_distance, refit_every, random_fraction: see `GPSearcher`
            (`hpo_core.searchers.gp`); MOBSTER's defaults batch the proposals.
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
        max_resource_attr: str | None = None,
    ):
        if model not in MODELS:
            raise ValueError(f"model: must be one of {MODELS}, got {model!r}")
        if observe not in OBSERVE:
            raise ValueError(f"observe: must be one of {OBSERVE}, got {observe!r}")
        check_fidelity_options(max_t, grace_period, reduction_factor)
        config_space = as_config_space(config_space)
        searcher = MultiFidelityGPSearcher(
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
                         searcher=searcher, max_resource_attr=max_resource_attr)
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
    max_resource_attr: str | None = None,
) -> MOBSTER:
    """MOBSTER with one GP per rung level (`model="independent"`)."""
    return MOBSTER(config_space, metric, mode, seed, max_t=max_t, resource_attr=resource_attr,
                   grace_period=grace_period, reduction_factor=reduction_factor,
                   brackets=brackets, model="independent", observe=observe,
                   num_init_random=num_init_random, max_model_points=max_model_points,
                   cost_attr=cost_attr, cost_exponent=cost_exponent,
                   num_candidates=num_candidates, batch_size=batch_size,
                   min_distance=min_distance, refit_every=refit_every,
                   random_fraction=random_fraction, points_to_evaluate=points_to_evaluate,
                   max_resource_attr=max_resource_attr)
