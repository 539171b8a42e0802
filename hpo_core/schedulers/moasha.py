"""MO-ASHA: asynchronous successive halving on several metrics (Schmucker et al., 2021).

Rungs record each trial's vector of objectives; a trial continues past a rung if it is in the
top 1/eta of the rung's trials ordered by non-dominated sorting, and within a front either by an
epsilon-net (`rank_by="epsnet"`, the paper's choice: a prefix covers the front evenly) or by
crowding distance (`rank_by="nsga2"`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.multiobjective import epsilon_net_order, nsga2_order
from hpo_core.schedulers.asha import ASHA
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace

RANKINGS = {"epsnet": epsilon_net_order, "nsga2": nsga2_order}


class MOASHA(ASHA):
    """ASHA ranking rungs by Pareto fronts; see `ASHA` for the fidelity options.

    Args:
        rank_by: "epsnet" or "nsga2", the order within a Pareto front.
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
        rank_by: str = "epsnet",
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    ):
        if rank_by not in RANKINGS:
            raise ValueError(f"rank_by: expected one of {sorted(RANKINGS)}, got {rank_by!r}")
        super().__init__(config_space, metric, mode, seed, max_t=max_t,
                         resource_attr=resource_attr, grace_period=grace_period,
                         reduction_factor=reduction_factor, brackets=brackets,
                         searcher=searcher, searcher_options=searcher_options,
                         points_to_evaluate=points_to_evaluate)
        self.rank_by = rank_by

    def _value(self, metrics: Mapping[str, Any]) -> Any:
        values = self.objectives(metrics)
        return None if values is None else values.tolist()

    def _rank(self, entries: Sequence[tuple[int, Any]]) -> list[int]:
        if not entries:
            return []
        order = RANKINGS[self.rank_by]([v for _, v in entries])
        return [entries[i][0] for i in order]

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "rank_by": self.rank_by}
