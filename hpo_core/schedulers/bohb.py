"""BOHB, asynchronous: ASHA whose new configs come from BOHB's KDE model (Falkner et al., 2018).

As in Syne Tune's BOHB, the successive-halving part is asynchronous (ASHA, stopping variant; or
asynchronous Hyperband with `brackets > 1`). The searcher gets each trial's value at every rung
level it reaches and fits its two densities (good / bad) on the highest level holding at least
`min_points_in_model` observations (see `hpo_core.searchers.kde`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.schedulers.asha import ASHA
from hpo_core.space import ConfigSpace


def kde_options(gamma: float, min_points_in_model: int | None, num_candidates: int,
                bandwidth_factor: float, min_bandwidth: float, random_fraction: float
                ) -> dict[str, Any]:
    """The KDE searcher's options as BOHB passes them (rung-level observations only)."""
    return {"gamma": gamma, "min_points_in_model": min_points_in_model,
            "num_candidates": num_candidates, "bandwidth_factor": bandwidth_factor,
            "min_bandwidth": min_bandwidth, "random_fraction": random_fraction,
            "multi_fidelity": False}


class BOHB(ASHA):
    """ASHA with the KDE searcher; ASHA's fidelity options, plus the model's:

    Args:
        gamma: share of observations that count as good (BOHB's top_n_percent / 100).
        min_points_in_model: observations at a level before the model is used there.
        num_candidates: draws from the good density per proposal.
        bandwidth_factor: widening of the good density when drawing.
        min_bandwidth: smallest bandwidth (encoded units).
        random_fraction: share of random proposals.
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
