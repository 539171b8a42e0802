"""The median stopping rule (Golovin et al., 2017, "Google Vizier").

A trial is stopped at resource r when its best value so far is worse than the median of the
running averages (mean of all values reported up to r) of the other trials that reported at r.
Trials are compared on the resources they report (epochs, say): a trial reporting at r is
compared with the others' running averages recorded at exactly r.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.schedulers.fidelity import check_resource_attr
from hpo_core.schedulers.fifo import FIFOScheduler
from hpo_core.schedulers.rungs import resource_of
from hpo_core.searchers.base import Searcher
from hpo_core.searchers.registry import searcher_from_option
from hpo_core.space import ConfigSpace, as_config_space
from hpo_core.trial import Decision, Trial, TrialResult


class MedianStoppingRule(FIFOScheduler):
    """Stops trials whose best value is worse than the median of the others' running averages.

    Args:
        searcher: a searcher registry name (see `hpo_core.searchers.registry`) or a Searcher.
        searcher_options: options of the searcher when it is given by name.
        points_to_evaluate: configs to try first (when the searcher is given by name).
        resource_attr: the reported fidelity (e.g. "epoch"); required.
        grace_period: no trial is stopped before this resource.
        min_samples_required: other trials that must have reached r before a decision at r.
    """

    resource_attr: str  # required here

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
        check_resource_attr(resource_attr)
        if grace_period < 0:
            raise ValueError(f"grace_period: must be >= 0, got {grace_period}")
        if min_samples_required < 1:
            raise ValueError(f"min_samples_required: must be >= 1, got {min_samples_required}")
        config_space = as_config_space(config_space)
        searcher = searcher_from_option(searcher, config_space, seed, searcher_options,
                                         points_to_evaluate)
        super().__init__(config_space, metric, mode, seed, searcher, resource_attr)
        self.grace_period = float(grace_period)
        self.min_samples_required = int(min_samples_required)
        # per trial: (number of reports, sum of values, best value) so far
        self._running: dict[int, tuple[int, float, float]] = {}
        self._last_resource: dict[int, float] = {}
        # per resource: {trial: running average there}
        self._averages: dict[float, dict[int, float]] = {}

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        super().on_trial_result(trial, result)
        resource = resource_of(result.metrics, self.resource_attr, trial.trial_id)
        value = self.objective(result.metrics)
        if value is None:
            return Decision.CONTINUE
        tid = trial.trial_id
        if resource <= self._last_resource.get(tid, -math.inf):
            return Decision.CONTINUE  # a repeated or out-of-order report
        count, total, best = self._running.get(tid, (0, 0.0, math.inf))
        count, total, best = count + 1, total + value, min(best, value)
        self._running[tid] = (count, total, best)
        self._last_resource[tid] = resource
        self._averages.setdefault(resource, {})[tid] = total / count
        if self.should_stop(tid, resource):
            if not self.searcher.uses_intermediate_results:
                self._feed(trial, result)
            self.searcher.on_trial_end(tid)
            return Decision.STOP
        return Decision.CONTINUE

    def should_stop(self, trial_id: int, resource: float) -> bool:
        """The rule for trial `trial_id`, whose latest report was at `resource`."""
        if resource < self.grace_period:
            return False
        at = self._averages.get(resource, {})
        others = [avg for tid, avg in at.items() if tid != trial_id]
        if len(others) < self.min_samples_required:
            return False
        return self._running[trial_id][2] > float(np.median(others))

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "running": [[t, *v] for t, v in self._running.items()],
            "last_resource": [[t, r] for t, r in self._last_resource.items()],
            "averages": [[r, [[t, a] for t, a in at.items()]] for r, at in self._averages.items()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._running = {int(t): (int(n), float(s), float(b)) for t, n, s, b in state["running"]}
        self._last_resource = {int(t): float(r) for t, r in state["last_resource"]}
        self._averages = {float(r): {int(t): float(a) for t, a in at}
                          for r, at in state["averages"]}
