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
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.searchers.gp_multifidelity import MultiFidelityGPSearcher
from hpo_core.searchers.registry import build_searcher
from hpo_core.space import ConfigSpace, as_config_space

OBSERVE = ("rungs", "all")
#: MOBSTER's defaults for the searcher's options: batched proposals keep the GP fast
SEARCHER_DEFAULTS = {"max_model_points": 300, "num_candidates": 300, "batch_size": 8,
                     "min_distance": None, "refit_every": 5, "random_fraction": 0.2}
#: searcher options MOBSTER sets from its fidelity options
_FROM_FIDELITY = {"max_resource": "max_t", "min_resource": "grace_period"}


class MOBSTER(ASHA):
    """ASHA with the multi-fidelity GP searcher (`gp_multifidelity`).

    Args:
        fidelity, brackets: as for `ASHA`.
        observe: "rungs" (values at rung levels) or "all" (every report) go to the model.
        searcher_options: options of `MultiFidelityGPSearcher` (model: "joint" or
            "independent", num_init_random, max_model_points, cost_attr, cost_exponent,
            num_candidates, batch_size, min_distance, refit_every, random_fraction, ...);
            `SEARCHER_DEFAULTS` where they are left out. Its resource range is the fidelity's.
        points_to_evaluate: configs to try first.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        *,
        fidelity: FidelityOptions,
        brackets: int = 1,
        observe: str = "rungs",
        searcher: str = "gp_multifidelity",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        if searcher != "gp_multifidelity":
            raise ValueError(f"searcher: MOBSTER's is 'gp_multifidelity', got {searcher!r}")
        if observe not in OBSERVE:
            raise ValueError(f"observe: must be one of {OBSERVE}, got {observe!r}")
        for key, source in _FROM_FIDELITY.items():
            if key in (searcher_options or {}):
                raise ValueError(f"scheduler_options.{key}: MOBSTER sets it from {source}")
        config_space = as_config_space(config_space)
        options = {**SEARCHER_DEFAULTS, **(searcher_options or {}),
                   "resource_attr": fidelity.resource_attr, "max_resource": fidelity.max_t,
                   "min_resource": fidelity.grace_period,
                   "points_to_evaluate": points_to_evaluate}
        model = build_searcher(searcher, config_space, seed, options)
        assert isinstance(model, MultiFidelityGPSearcher)
        if observe == "rungs":
            model.uses_intermediate_results = False
        super().__init__(config_space, metric, mode, seed, fidelity=fidelity, brackets=brackets,
                         searcher=model)
        self.model = model.model
        self.observe = observe
