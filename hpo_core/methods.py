"""The one registry of HPO methods and searchers, so a spec picks them by name.

A method is a callable `factory(config_space, metric, mode, seed, **options) -> Scheduler`;
its keyword options are what `scheduler_options` may hold, checked against its signature so a
typo is an error that names the option. Modules load lazily: building one method imports only
its own module.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpo_core.schedulers.base import Scheduler
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace, as_config_space


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: where its factory lives and what it is."""

    name: str
    target: str  # "module:attribute"
    description: str
    multi_fidelity: bool = False
    multi_objective: bool = False

    def load(self) -> Callable[..., Any]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


METHODS: dict[str, MethodInfo] = {}
SEARCHERS: dict[str, MethodInfo] = {}


def register_method(name: str, target: str, description: str, multi_fidelity: bool = False,
                    multi_objective: bool = False) -> None:
    METHODS[name] = MethodInfo(name, target, description, multi_fidelity, multi_objective)


def register_searcher(name: str, target: str, description: str) -> None:
    SEARCHERS[name] = MethodInfo(name, target, description)


# -- searchers (single-fidelity proposers; FIFO uses them, multi-fidelity schedulers too) --------
register_searcher("random", "hpo_core.searchers.random:RandomSearcher", "random search")
register_searcher("grid", "hpo_core.searchers.grid:GridSearcher", "grid search")
register_searcher("gp", "hpo_core.searchers.gp:GPSearcher",
                  "Gaussian-process BO (expected improvement; constraint and cost options)")
register_searcher("gp_multifidelity", "hpo_core.searchers.gp_multifidelity:MultiFidelityGPSearcher",
                  "Gaussian-process BO over config and resource (joint or per-level models)")
register_searcher("kde", "hpo_core.searchers.kde:KDESearcher", "TPE / BOHB density-ratio model")
register_searcher("rea", "hpo_core.searchers.rea:REASearcher", "regularized evolution")
register_searcher("bore", "hpo_core.searchers.bore:BORESearcher",
                  "BORE: classifier-based BO (density ratio of top-gamma vs rest)")
register_searcher("optuna", "hpo_core.searchers.optuna_sampler:OptunaSearcher",
                  "any Optuna sampler through ask/tell (extra 'optuna')")

# -- methods ---------------------------------------------------------------------------------------
register_method("random", "hpo_core.methods:fifo_random", "FIFO with random search")
register_method("grid", "hpo_core.methods:fifo_grid", "FIFO with grid search")
register_method("fifo", "hpo_core.methods:fifo", "FIFO with any searcher (`searcher: name`)")
register_method("bo", "hpo_core.methods:bo", "Bayesian optimization with a Gaussian process")
register_method("cbo", "hpo_core.methods:cbo",
                "constrained Bayesian optimization (a metric that must be <= 0)")
register_method("tpe", "hpo_core.methods:tpe", "tree-structured Parzen estimator (TPE)")
register_method("kde", "hpo_core.methods:tpe", "tree-structured Parzen estimator (alias of tpe)")
register_method("rea", "hpo_core.methods:rea", "regularized evolution")
register_method("bore", "hpo_core.searchers.bore:bore",
                "BORE: BO with a classifier of good vs bad configs (Syne Tune's BORE)")
register_method("zero_shot", "hpo_core.transfer:zero_shot",
                "transfer: a greedy portfolio of earlier experiments' configs first, then a searcher")
register_method("bounding_box", "hpo_core.transfer:bounding_box",
                "transfer: any method on the box of earlier experiments' best configs")
register_method("asha", "hpo_core.schedulers.asha:ASHA",
                "asynchronous successive halving, stopping variant", multi_fidelity=True)
register_method("asha_promotion", "hpo_core.schedulers.asha_promotion:PromotionASHA",
                "asynchronous successive halving, promotion (pause/resume) variant",
                multi_fidelity=True)
register_method("hyperband", "hpo_core.schedulers.hyperband:SyncHyperband",
                "synchronous Hyperband", multi_fidelity=True)
register_method("successive_halving", "hpo_core.schedulers.successive_halving:SyncSuccessiveHalving",
                "synchronous successive halving", multi_fidelity=True)
# H7: multi-fidelity, population-based and multi-objective methods
register_method("bohb", "hpo_core.schedulers.bohb:BOHB",
                "asynchronous BOHB: ASHA with the KDE searcher", multi_fidelity=True)
register_method("sync_bohb", "hpo_core.schedulers.sync_bohb:SyncBOHB",
                "BOHB: synchronous Hyperband with the KDE searcher", multi_fidelity=True)
register_method("mobster", "hpo_core.schedulers.mobster:MOBSTER",
                "MOBSTER: ASHA with a GP over config and resource", multi_fidelity=True)
register_method("mobster_independent", "hpo_core.schedulers.mobster:mobster_independent",
                "MOBSTER with one GP per rung level", multi_fidelity=True)
register_method("dehb", "hpo_core.schedulers.dehb:DEHB",
                "differential evolution Hyperband (asynchronous brackets)", multi_fidelity=True)
register_method("hypertune", "hpo_core.schedulers.hypertune:HyperTune",
                "asynchronous Hyperband with a learnt bracket distribution (Hyper-Tune)",
                multi_fidelity=True)
register_method("pasha", "hpo_core.schedulers.pasha:PASHA",
                "progressive ASHA: the maximum resource grows as rankings settle",
                multi_fidelity=True)
register_method("median_stopping", "hpo_core.schedulers.median_stopping:MedianStoppingRule",
                "median stopping rule", multi_fidelity=True)
register_method("pbt", "hpo_core.schedulers.pbt:PopulationBasedTraining",
                "population-based training (exploit by checkpoint copy, explore)",
                multi_fidelity=True)
register_method("moasha", "hpo_core.schedulers.moasha:MOASHA",
                "multi-objective ASHA (Pareto fronts, epsilon-net)", multi_fidelity=True,
                multi_objective=True)
register_method("mo_rea", "hpo_core.schedulers.mo_rea:MORegularizedEvolution",
                "multi-objective regularized evolution", multi_objective=True)
register_method("optuna", "hpo_core.methods:optuna",
                "an Optuna sampler (TPE, CMA-ES, NSGA-II, GP, ...) through ask/tell; extra 'optuna'")
register_method("ehvi", "hpo_core.schedulers.ehvi:EHVI",
                "multi-objective BO: a GP per objective, expected hypervolume improvement",
                multi_objective=True)


def build_searcher(
    name: str,
    config_space: ConfigSpace | Mapping[str, Any],
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    field: str = "searcher",
) -> Searcher:
    """A searcher by registry name, with its options checked."""
    if name not in SEARCHERS:
        raise ValueError(f"{field}: unknown searcher {name!r}; expected one of {sorted(SEARCHERS)}")
    factory = SEARCHERS[name].load()
    kwargs = _checked_options(factory, options or {}, f"{field}_options", name,
                              reserved=("config_space", "seed"))
    return factory(as_config_space(config_space), seed=seed, **kwargs)


def build_scheduler(
    name: str,
    config_space: ConfigSpace | Mapping[str, Any],
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Scheduler:
    """A scheduler by registry name (`spec.scheduler`) with `options` (`spec.scheduler_options`)."""
    check_scheduler_options(name, options or {})
    factory = METHODS[name].load()
    kwargs = dict(options or {})
    try:
        return factory(as_config_space(config_space), metric=metric, mode=mode, seed=seed, **kwargs)
    except TypeError as err:
        raise ValueError(f"scheduler_options: invalid options for {name!r}: {err}") from err


def check_scheduler_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError naming the field if `name` is no method or an option is unknown to it.

    Required options (e.g. `max_t`) are checked when the scheduler is built.
    """
    if name not in METHODS:
        raise ValueError(f"scheduler: unknown method {name!r}; expected one of {sorted(METHODS)}")
    _checked_options(METHODS[name].load(), options, "scheduler_options", name,
                     reserved=("config_space", "metric", "mode", "seed"))


def _checked_options(factory: Callable[..., Any], options: Mapping[str, Any], field: str,
                     name: str, reserved: Sequence[str]) -> dict[str, Any]:
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values())
    allowed = sorted(p for p in params if p not in reserved and p != "self"
                     and params[p].kind != inspect.Parameter.VAR_KEYWORD)
    for key in options:
        if key in reserved:
            raise ValueError(f"{field}.{key}: set at the top of the spec, not as an option")
        if key not in params and not accepts_any:
            raise ValueError(f"{field}.{key}: unknown option for {name!r}; expected some of {allowed}")
    return dict(options)


def searcher_from_option(
    searcher: str | Searcher, config_space: ConfigSpace, seed: int | None,
    searcher_options: Mapping[str, Any] | None, points_to_evaluate: Sequence[Mapping[str, Any]] | None,
) -> Searcher:
    """The searcher a scheduler's `searcher` option names (or the instance it already is)."""
    if isinstance(searcher, Searcher):
        return searcher
    options = dict(searcher_options or {})
    if points_to_evaluate is not None:
        options["points_to_evaluate"] = points_to_evaluate
    return build_searcher(searcher, config_space, seed, options)


def fifo(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    searcher: str | Searcher = "random",
    searcher_options: Mapping[str, Any] | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
    resource_attr: str | None = None,
) -> Scheduler:
    """FIFO: every trial runs to its end; `searcher` (a registry name) proposes the configs."""
    from hpo_core.schedulers.fifo import FIFOScheduler

    config_space = as_config_space(config_space)
    return FIFOScheduler(
        config_space, metric, mode, seed,
        searcher=searcher_from_option(searcher, config_space, seed, searcher_options,
                                       points_to_evaluate),
        resource_attr=resource_attr,
    )


def fifo_random(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> Scheduler:
    """Random search."""
    return fifo(config_space, metric, mode, seed, "random", None, points_to_evaluate)


def fifo_grid(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    num_points: int = 5,
    shuffle: bool = False,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> Scheduler:
    """Grid search over `num_points` values per numerical hyperparameter."""
    return fifo(config_space, metric, mode, seed, "grid",
                {"num_points": num_points, "shuffle": shuffle}, points_to_evaluate)


def bo(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    num_init_random: int | None = None,
    cost_attr: str | None = None,
    cost_exponent: float = 1.0,
    num_candidates: int = 1000,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> Scheduler:
    """Gaussian-process BO; with `cost_attr`, expected improvement per unit of that cost."""
    return fifo(config_space, metric, mode, seed, "gp",
                {"num_init_random": num_init_random, "cost_attr": cost_attr,
                 "cost_exponent": cost_exponent, "num_candidates": num_candidates},
                points_to_evaluate)


def cbo(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    constraint_attr: str = "constraint",
    num_init_random: int | None = None,
    num_candidates: int = 1000,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> Scheduler:
    """Constrained GP-BO: configs whose `constraint_attr` metric is > 0 are infeasible."""
    return fifo(config_space, metric, mode, seed, "gp",
                {"num_init_random": num_init_random, "constraint_attr": constraint_attr,
                 "num_candidates": num_candidates},
                points_to_evaluate)


def tpe(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    gamma: float = 0.15,
    min_points_in_model: int | None = None,
    num_candidates: int = 64,
    bandwidth_factor: float = 3.0,
    random_fraction: float = 1.0 / 3.0,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> Scheduler:
    """TPE: the config maximizing good-to-bad density ratio (BOHB's kernel density model)."""
    return fifo(config_space, metric, mode, seed, "kde",
                {"gamma": gamma, "min_points_in_model": min_points_in_model,
                 "num_candidates": num_candidates, "bandwidth_factor": bandwidth_factor,
                 "random_fraction": random_fraction},
                points_to_evaluate)


def rea(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    population_size: int = 50,
    sample_size: int = 10,
    mutation: str = "local",
    mutation_scale: float = 0.15,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> Scheduler:
    """Regularized evolution: tournament selection, one-hyperparameter mutation, aging."""
    return fifo(config_space, metric, mode, seed, "rea",
                {"population_size": population_size, "sample_size": sample_size,
                 "mutation": mutation, "mutation_scale": mutation_scale},
                points_to_evaluate)


def optuna(
    config_space: ConfigSpace,
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    sampler: str = "tpe",
    sampler_options: Mapping[str, Any] | None = None,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None = None,
) -> Scheduler:
    """FIFO with an Optuna sampler (`tpe`, `cmaes`, `nsga2`, `gp`, `qmc`, `random`)."""
    return fifo(config_space, metric, mode, seed, "optuna",
                {"sampler": sampler, "sampler_options": sampler_options}, points_to_evaluate)


def method_names() -> list[str]:
    return sorted(METHODS)
