"""Regularized evolution (Real et al., 2019): tournament selection, one mutation, aging.

The first `population_size` proposals are random. After that each proposal samples
`sample_size` members of the population, takes the best one as parent and mutates one of its
hyperparameters. Each result joins the population; once it holds more than `population_size`
members the oldest one dies, whatever its value (aging).

Mutation `"local"` moves a numeric hyperparameter by a Gaussian step of sd `mutation_scale` in
the encoded [0,1] space (so log-scaled domains move on a log scale); `"resample"` draws a new
value from its domain. Categorical hyperparameters always switch to a different category.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.searchers.unseen import UnseenSearcher
from hpo_core.space import Categorical, ConfigSpace

MUTATIONS = ("local", "resample")


class REASearcher(UnseenSearcher):
    """Regularized evolution.

    Args:
        population_size: members kept (the oldest dies beyond it); also the random start.
        sample_size: members drawn for each tournament.
        mutation: "local" or "resample" (see the module docstring).
        mutation_scale: sd of a local step in the encoded space.
    """

    def __init__(
        self,
        config_space: ConfigSpace | Mapping[str, Any],
        seed: int | None = None,
        points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
        population_size: int = 50,
        sample_size: int = 10,
        mutation: str = "local",
        mutation_scale: float = 0.15,
    ):
        super().__init__(config_space, seed, points_to_evaluate)
        for name, value in (("population_size", population_size), ("sample_size", sample_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if mutation not in MUTATIONS:
            raise ValueError(f"mutation: must be one of {MUTATIONS}, got {mutation!r}")
        if isinstance(mutation_scale, bool) or not isinstance(mutation_scale, int | float) \
                or not 0 < mutation_scale <= 1:
            raise ValueError(f"mutation_scale: must be a number in (0, 1], got {mutation_scale!r}")
        self.population_size = population_size
        self.sample_size = sample_size
        self.mutation = mutation
        self.mutation_scale = float(mutation_scale)
        self.population: list[tuple[int, dict[str, Any], float]] = []  # oldest first
        self._num_proposed = 0
        # hyperparameters a mutation can change (more than one value)
        self._mutable = [n for n, d in self.config_space.domains.items()
                         if len(set(map(repr, d.grid(3)))) > 1]

    def suggest(self, trial_id: int) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        if config is not None:
            self._num_proposed += 1
        return config

    def on_result(self, trial_id: int, config: Mapping[str, Any], value: float,
                  resource: float | None = None,
                  metrics: Mapping[str, Any] | None = None) -> None:
        if not math.isfinite(value):
            return
        self.population = [m for m in self.population if m[0] != trial_id]  # a newer report
        self.population.append((trial_id, dict(config), float(value)))
        if len(self.population) > self.population_size:
            self.population.pop(0)

    def _suggest(self, trial_id: int) -> dict[str, Any] | None:
        if self._num_proposed < self.population_size or not self.population or not self._mutable:
            return self._random_config()
        return self._first_unseen(self._children(20))

    def _children(self, num: int) -> Iterator[dict[str, Any]]:
        """Up to `num` children, each of a new tournament's winner (drawn lazily)."""
        for _ in range(num):
            size = min(self.sample_size, len(self.population))
            picks = self.rng.choice(len(self.population), size=size, replace=False)
            yield self.mutate(min((self.population[i] for i in picks), key=lambda m: m[2])[1])

    def mutate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` with one of its hyperparameters changed (in a conditional space, the ones
        that this switches on are drawn at random and the ones it switches off dropped)."""
        child = dict(config)
        names = [n for n in self._mutable if n in config]
        name = names[int(self.rng.integers(len(names)))]
        dom = self.config_space.domains[name]
        for _ in range(20):
            if isinstance(dom, Categorical) and not dom.is_numerical:
                value = dom.categories[int(self.rng.integers(len(dom.categories)))]
            elif self.mutation == "resample":
                value = dom.sample(self.rng)
            else:
                u = np.asarray(dom.encode(config[name])) + self.mutation_scale * \
                    self.rng.standard_normal()
                value = dom.decode(np.clip(u, 0.0, 1.0))
            if value != config[name]:
                break
        child[name] = value
        return self.config_space.complete(child, self.rng) if self.config_space.is_conditional \
            else child

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "population": [[t, c, v] for t, c, v in self.population],
            "num_proposed": self._num_proposed,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.population = [(int(t), dict(c), float(v)) for t, c, v in state["population"]]
        self._num_proposed = int(state["num_proposed"])
