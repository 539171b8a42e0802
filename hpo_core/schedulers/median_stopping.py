"""The median stopping rule (Golovin et al., 2017, "Google Vizier").

A trial is stopped at resource r when its best value so far is worse than the median of the
running averages (mean of all values reported up to r) of the other trials that reached r.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.methods import _searcher_from_option
from hpo_core.schedulers.fifo import FIFOScheduler
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace, as_config_space
from hpo_core.trial import Decision, Trial, TrialResult


class _History:
    """One trial's reports: resources in increasing order, with prefix sums and running best."""

    def __init__(self) -> None:
        self.resources: list[float] = []
        self.sums: list[float] = []
        self.bests: list[float] = []

    def add(self, resource: float, value: float) -> None:
        if self.resources and resource <= self.resources[-1]:
            return  # a repeated or out-of-order report: keep the first
        self.resources.append(resource)
        self.sums.append((self.sums[-1] if self.sums else 0.0) + value)
        self.bests.append(min(self.bests[-1], value) if self.bests else value)

    def _upto(self, resource: float) -> int:
        return bisect.bisect_right(self.resources, resource)

    def running_average(self, resource: float) -> float | None:
        """Mean of the values up to `resource`, if the trial reached it."""
        if not self.resources or self.resources[-1] < resource:
            return None
        n = self._upto(resource)
        return self.sums[n - 1] / n

    def best(self, resource: float) -> float:
        return self.bests[self._upto(resource) - 1]

    def to_json(self) -> list[list[float]]:
        values = np.diff(np.r_[0.0, self.sums]).tolist()
        return [self.resources, values]

    @classmethod
    def from_json(cls, data: Sequence[Sequence[float]]) -> _History:
        history = cls()
        for resource, value in zip(data[0], data[1], strict=True):
            history.add(float(resource), float(value))
        return history


class MedianStoppingRule(FIFOScheduler):
    """Stops trials whose best value is worse than the median of the others' running averages.

    Args:
        searcher: a searcher registry name (see `hpo_core.methods`) or a Searcher instance.
        searcher_options: options of the searcher when it is given by name.
        points_to_evaluate: configs to try first (when the searcher is given by name).
        resource_attr: the reported fidelity (e.g. "epoch"); required.
        grace_period: no trial is stopped before this resource.
        min_samples_required: other trials that must have reached r before a decision at r.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        searcher: str | Searcher = "random",
        searcher_options: Mapping[str, Any] | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        resource_attr: str = "epoch",
        grace_period: float = 1.0,
        min_samples_required: int = 3,
    ):
        if not isinstance(resource_attr, str) or not resource_attr:
            raise ValueError(f"resource_attr: must be a metric name, got {resource_attr!r}")
        if grace_period < 0:
            raise ValueError(f"grace_period: must be >= 0, got {grace_period}")
        if min_samples_required < 1:
            raise ValueError(f"min_samples_required: must be >= 1, got {min_samples_required}")
        config_space = as_config_space(config_space)
        searcher = _searcher_from_option(searcher, config_space, seed, searcher_options,
                                         points_to_evaluate)
        super().__init__(config_space, metric, mode, seed, searcher, resource_attr)
        self.grace_period = float(grace_period)
        self.min_samples_required = int(min_samples_required)
        self._histories: dict[int, _History] = {}

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        super().on_trial_result(trial, result)
        value = self.objective(result.metrics)
        resource = result.metrics.get(self.resource_attr)
        if value is None or resource is None:
            return Decision.CONTINUE
        history = self._histories.setdefault(trial.trial_id, _History())
        history.add(float(resource), value)
        if self.should_stop(trial.trial_id, float(resource)):
            if not self.searcher.uses_intermediate_results:
                self._feed(trial, result)
            self.searcher.on_trial_end(trial.trial_id)
            return Decision.STOP
        return Decision.CONTINUE

    def should_stop(self, trial_id: int, resource: float) -> bool:
        """The rule itself, for trial `trial_id` at `resource` (its reports so far are known)."""
        if resource < self.grace_period:
            return False
        averages = [
            avg for tid, h in self._histories.items()
            if tid != trial_id and (avg := h.running_average(resource)) is not None
        ]
        if len(averages) < self.min_samples_required:
            return False
        return self._histories[trial_id].best(resource) > float(np.median(averages))

    def state_dict(self) -> dict[str, Any]:
        histories = {str(tid): h.to_json() for tid, h in self._histories.items()}
        return {**super().state_dict(), "histories": histories}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._histories = {int(k): _History.from_json(v) for k, v in state["histories"].items()}
