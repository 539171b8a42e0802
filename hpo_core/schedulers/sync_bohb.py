"""BOHB as in the paper (Falkner et al., 2018): synchronous Hyperband whose new configs come from
the KDE model, fitted on the highest budget with enough observations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.schedulers.bohb import kde_options
from hpo_core.schedulers.hyperband import SyncHyperband
from hpo_core.space import ConfigSpace


class SyncBOHB(SyncHyperband):
    """Synchronous Hyperband with the KDE searcher; options of `SyncHyperband` and of `BOHB`'s
    model (gamma, min_points_in_model, num_candidates, bandwidth_factor, min_bandwidth,
    random_fraction)."""

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
        brackets: int | None = None,
        gamma: float = 0.15,
        min_points_in_model: int | None = None,
        num_candidates: int = 64,
        bandwidth_factor: float = 3.0,
        min_bandwidth: float = 1e-3,
        random_fraction: float = 1.0 / 3.0,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        max_resource_attr: str | None = None,
    ):
        super().__init__(
            config_space, metric, mode, seed, max_t=max_t, resource_attr=resource_attr,
            grace_period=grace_period, reduction_factor=reduction_factor, brackets=brackets,
            searcher="kde",
            searcher_options=kde_options(gamma, min_points_in_model, num_candidates,
                                         bandwidth_factor, min_bandwidth, random_fraction),
            points_to_evaluate=points_to_evaluate, max_resource_attr=max_resource_attr,
        )
