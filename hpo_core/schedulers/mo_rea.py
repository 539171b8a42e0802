"""Multi-objective regularized evolution.

Regularized evolution (Real et al., 2019) with a multi-objective tournament: the population holds
the `population_size` most recent finished trials (the oldest leaves when a new one arrives).
A new config mutates the winner of a tournament among `sample_size` random members, the winner
being the best of the sample by non-dominated sorting and then crowding distance (NSGA-II
order). A mutation redraws one hyperparameter to a different value.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.multiobjective import nsga2_order
from hpo_core.schedulers.base import Scheduler
from hpo_core.searchers.seen_configs import SeenConfigs, config_digest
from hpo_core.space import ConfigSpace
from hpo_core.trial import Decision, Trial, TrialResult, TrialSuggestion


class MORegularizedEvolution(Scheduler):
    """Evolution on several metrics; every trial runs to its end (FIFO).

    Args:
        population_size: finished trials kept; random configs are tried until it is reached.
        sample_size: members drawn for each tournament.
        points_to_evaluate: configs to try first.
        max_retries: mutations tried to find a config not proposed before.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        metric: str | Sequence[str],
        mode: str | Sequence[str] = "min",
        seed: int | None = None,
        population_size: int = 50,
        sample_size: int = 10,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        max_retries: int = 20,
    ):
        super().__init__(config_space, metric, mode, seed)
        if population_size < 2:
            raise ValueError(f"population_size: must be at least 2, got {population_size}")
        if not 1 <= sample_size <= population_size:
            raise ValueError(f"sample_size: must be from 1 to population_size, got {sample_size}")
        if not self.config_space.names:
            raise ValueError("config_space: evolution needs at least one searched hyperparameter")
        self.population_size = int(population_size)
        self.sample_size = int(sample_size)
        self.max_retries = int(max_retries)
        self._initial = [{**self.config_space.fixed, **self.config_space.cast(dict(p))}
                         for p in points_to_evaluate or []]
        self.population: deque[tuple[dict[str, Any], list[float]]] = deque(
            maxlen=self.population_size)
        self._seen = SeenConfigs()

    def suggest(self, trial_id: int) -> TrialSuggestion | None:
        if self._initial:
            config = self._initial.pop(0)
        elif len(self.population) < self.population_size:
            config = self.config_space.sample(self.rng)
        else:
            parent = self.tournament()
            config = self.mutate(parent)
            for _ in range(self.max_retries):
                if config_digest(self.config_space, config) not in self._seen:
                    break
                config = self.mutate(parent)
        self._seen.add(config_digest(self.config_space, config))
        return TrialSuggestion.start(config)

    def tournament(self) -> dict[str, Any]:
        """The best of `sample_size` random members (fronts first, then crowding distance)."""
        picks = self.rng.choice(len(self.population), size=self.sample_size, replace=False)
        values = np.array([self.population[i][1] for i in picks])
        return dict(self.population[int(picks[nsga2_order(values)[0]])][0])

    def mutate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` with one of its hyperparameters redrawn (to a different value when
        possible; in a conditional space, the ones this switches on are drawn at random and the
        ones it switches off dropped)."""
        child = dict(config)
        names = [n for n in self.config_space.names if n in config]
        name = names[int(self.rng.integers(len(names)))]
        domain = self.config_space.domains[name]
        for _ in range(10):
            child[name] = domain.sample(self.rng)
            if child[name] != config[name]:
                break
        return self.config_space.complete(child, self.rng) if self.config_space.is_conditional \
            else child

    def on_trial_result(self, trial: Trial, result: TrialResult) -> Decision:
        return Decision.CONTINUE

    def on_trial_complete(self, trial: Trial, result: TrialResult | None) -> None:
        values = self.objectives(result.metrics) if result is not None else None
        if values is not None:
            self.population.append((dict(trial.config), values.tolist()))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "initial": self._initial,
                "population": [[c, v] for c, v in self.population], "seen": self._seen.to_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._initial = [dict(c) for c in state["initial"]]
        self.population = deque(((dict(c), list(v)) for c, v in state["population"]),
                                maxlen=self.population_size)
        self._seen = SeenConfigs.from_state(state["seen"])
