"""Multi-objective regularized evolution: Pareto tournaments and one-hyperparameter mutations."""

from __future__ import annotations

import json

from sched_sim import make_space, run_simulation

from hpo_core.registry import build_scheduler
from hpo_core.schedulers.mo_rea import MORegularizedEvolution

SPACE = make_space()
METRICS = ["loss", "loss2"]


def test_tournament_picks_a_non_dominated_member_and_mutation_changes_one_value():
    rea = MORegularizedEvolution(SPACE, METRICS, seed=0, population_size=4, sample_size=4)
    configs = [SPACE.sample(rea.rng) for _ in range(4)]
    values = [[3.0, 3.0], [1.0, 4.0], [2.0, 2.0], [4.0, 4.0]]
    for config, value in zip(configs, values, strict=True):
        rea.population.append((config, value))
    winners = {json.dumps(rea.tournament(), sort_keys=True) for _ in range(20)}
    assert winners <= {json.dumps(configs[i], sort_keys=True) for i in (1, 2)}
    for _ in range(30):
        child = rea.mutate(configs[0])
        changed = [n for n in SPACE.names if child[n] != configs[0][n]]
        assert len(changed) == 1
        SPACE.validate(child)


def test_population_ages_out_and_later_configs_are_mutants():
    rea = build_scheduler("mo_rea", SPACE, METRICS, ["min", "min"], 0,
                          {"population_size": 5, "sample_size": 3})
    tuner, result, _ = run_simulation(rea, max_results=120)
    assert result.reason.startswith("max_results")
    assert len(rea.population) == 5  # the oldest left
    finished = [t.config for t in tuner.trials.values()]
    late = finished[8:]
    assert late
    # every late config differs in exactly one hyperparameter from some earlier config
    for i, config in enumerate(late, start=8):
        assert any(sum(config[n] != other[n] for n in SPACE.names) == 1 for other in finished[:i])
