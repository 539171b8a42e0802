"""FIFO: every trial runs to the end; a searcher picks the configs.

`fifo` is the factory of the registry's FIFO methods (`random`, `grid`, `bo`, `tpe`, `rea`, ...:
FIFO with that searcher; see `hpo_core.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hpo_core.schedulers.base import Scheduler
from hpo_core.searchers.base import Searcher
from hpo_core.searchers.random import RandomSearcher
from hpo_core.searchers.registry import searcher_from_option
from hpo_core.space import ConfigSpace, as_config_space
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion


class FIFOScheduler(Scheduler):
    """Runs each suggested config to completion and feeds its results to the searcher.

    Args:
        searcher: the searcher proposing configs (random search by default).
        resource_attr: the reported fidelity (e.g. "epoch"), passed to the searcher if present.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        searcher: Searcher | None = None,
        resource_attr: str | None = None,
    ):
        super().__init__(config_space, metric, mode, seed)
        self.searcher = searcher or RandomSearcher(self.config_space, seed=seed)
        self.resource_attr = resource_attr

    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        config = self.searcher.suggest(trial_id)
        if config is None:
            return None
        return TrialSuggestion.start(config)

    def on_trial_add(self, trial: Trial) -> None:
        self.searcher.on_trial_start(trial.trial_id, trial.config)

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        if self.searcher.uses_intermediate_results:
            self._feed(trial, result)
        return Decision.CONTINUE

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        if result is not None and not self.searcher.uses_intermediate_results:
            self._feed(trial, result)
        self.searcher.on_trial_end(trial.trial_id)

    def _feed(self, trial: Trial, result: TrialResult) -> None:
        value = self.objective(result.metrics)
        if value is not None:
            resource = result.metrics.get(self.resource_attr) if self.resource_attr else None
            self.searcher.on_result(trial.trial_id, trial.config, value, resource,
                                    metrics=result.metrics)

    def on_trial_error(self, trial: Trial) -> None:
        self.searcher.on_error(trial.trial_id)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "searcher": self.searcher.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.searcher.load_state_dict(state["searcher"])


def fifo(
    config_space: ConfigSpace | Mapping[str, Any],
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    searcher: str | Searcher = "random",
    searcher_options: Mapping[str, Any] | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    resource_attr: str | None = None,
) -> FIFOScheduler:
    """FIFO with `searcher` (a registry name, with `searcher_options`, or a Searcher)."""
    config_space = as_config_space(config_space)
    return FIFOScheduler(
        config_space, metric, mode, seed,
        searcher=searcher_from_option(searcher, config_space, seed, searcher_options,
                                      points_to_evaluate),
        resource_attr=resource_attr,
    )
