"""The method table: every HPO method by name (`spec.scheduler`), with what it is.

A method is a factory `factory(config_space, metric, mode, seed, **options) -> Scheduler` (a
scheduler class or a function beside it), plus typed flags that say what it needs. Its options
(`spec.scheduler_options`, flat) are split three ways and each part is checked against what it
is for:

* the fidelity options (`FidelityOptions`: max_t, resource_attr, grace_period, ...) of a
  rung-based method (`fidelity=True`), gathered into one object passed as `fidelity=`;
* the factory's own keyword arguments;
* for a method built on a searcher (`searcher="gp"`: `bo` is FIFO with the GP searcher), the
  rest: the searcher's options, checked against the searcher's own signature.

Modules load lazily: checking or building one method imports only its own modules. No module
a method loads imports this one; a method that builds another (`bounding_box`) is handed
`build_method`.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hpo_core.options import Keywords, check_options, keywords
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.searchers.registry import RESERVED as SEARCHER_RESERVED
from hpo_core.searchers.registry import SEARCHERS, searcher_info
from hpo_core.space import ConfigSpace, as_config_space

if TYPE_CHECKING:
    from hpo_core.schedulers.base import Scheduler

#: set at the top of a spec (or by the registry), never a scheduler option
RESERVED = ("config_space", "metric", "mode", "seed")
#: what the registry itself passes to factories that ask for it
_WIRING = ("fidelity", "build_method")
FIELD = "scheduler_options"


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: where its factory lives and what it needs.

    Attributes:
        multi_fidelity: trials report a resource (`resource_attr`) the method acts on.
        fidelity: takes the rung options (`FidelityOptions`); implies `multi_fidelity`.
        multi_objective: optimizes a list of metrics.
        needs_stop_limit: proposes trials for as long as it runs, so a spec must set a limit
            (False for a method that runs dry by itself, like the grid).
        transfer: learns from earlier experiments (`transfer_from`).
        searcher: the registered searcher that proposes configs; the method's options other
            than the factory's own go to it.
        defaults: option values of this method where the spec leaves them out.
    """

    name: str
    target: str  # "module:attribute"
    description: str
    multi_fidelity: bool = False
    fidelity: bool = False
    multi_objective: bool = False
    needs_stop_limit: bool = True
    transfer: bool = False
    searcher: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def load(self) -> Callable[..., Scheduler]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def own_options(self) -> Keywords:
        """The factory's own options (less the fidelity object and what the registry wires)."""
        leave_out = (*RESERVED, *_WIRING, *(("searcher", "searcher_options") if self.searcher
                                            else ()))
        return keywords(self.load(), leave_out=leave_out)

    def runs(self, options: Mapping[str, Any]) -> Any:
        """The name of the method this one runs with `options` (`bounding_box`: its option
        `scheduler`, or that option's default); None if it runs no other method."""
        params = inspect.signature(self.load()).parameters
        if "build_method" not in params:
            return None
        return options.get("scheduler", params["scheduler"].default)

    def option_names(self) -> frozenset[str]:
        """Every option this method takes."""
        names = set(self.own_options().names)
        if self.fidelity:
            names |= FidelityOptions.names()
        if self.searcher:
            names |= SEARCHERS[self.searcher].options().names
        return frozenset(names)


METHODS: dict[str, MethodInfo] = {}


def register_method(
    name: str,
    target: str,
    description: str,
    *,
    multi_fidelity: bool = False,
    fidelity: bool = False,
    multi_objective: bool = False,
    needs_stop_limit: bool = True,
    transfer: bool = False,
    searcher: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Make the factory at `target` ("module:attribute") a method called `name` (flags: see
    `MethodInfo`)."""
    METHODS[name] = MethodInfo(
        name, target, description, multi_fidelity=multi_fidelity or fidelity, fidelity=fidelity,
        multi_objective=multi_objective, needs_stop_limit=needs_stop_limit, transfer=transfer,
        searcher=searcher, defaults=MappingProxyType(dict(defaults or {})))


_FIFO = "hpo_core.schedulers.fifo:fifo"
# -- FIFO: every trial runs to its end, a searcher proposes -------------------------------------
register_method("random", _FIFO, "FIFO with random search", searcher="random")
register_method("grid", _FIFO, "FIFO with grid search", searcher="grid", needs_stop_limit=False)
register_method("fifo", _FIFO, "FIFO with any searcher (`searcher: name`)")
register_method("bo", _FIFO, "Bayesian optimization with a Gaussian process", searcher="gp")
register_method("cbo", _FIFO, "constrained Bayesian optimization (a metric that must be <= 0)",
                searcher="gp", defaults={"constraint_attr": "constraint"})
register_method("tpe", _FIFO, "tree-structured Parzen estimator (TPE)", searcher="kde")
register_method("kde", _FIFO, "tree-structured Parzen estimator (alias of tpe)", searcher="kde")
register_method("rea", _FIFO, "regularized evolution", searcher="rea")
register_method("bore", _FIFO,
                "BORE: BO with a classifier of good vs bad configs (Syne Tune's BORE)",
                searcher="bore")
register_method("optuna", _FIFO,
                "an Optuna sampler (TPE, CMA-ES, NSGA-II, GP, ...) through ask/tell; "
                "extra 'optuna'",
                searcher="optuna")
# -- transfer from earlier experiments ------------------------------------------------------------
register_method("zero_shot", "hpo_core.transfer:zero_shot",
                "transfer: a greedy portfolio of earlier experiments' configs first, "
                "then a searcher",
                transfer=True)
register_method("bounding_box", "hpo_core.transfer:bounding_box",
                "transfer: any method on the box of earlier experiments' best configs",
                transfer=True)
# -- multi-fidelity ------------------------------------------------------------------------------
register_method("asha", "hpo_core.schedulers.asha:ASHA",
                "asynchronous successive halving, stopping variant", fidelity=True)
register_method("asha_promotion", "hpo_core.schedulers.asha_promotion:PromotionASHA",
                "asynchronous successive halving, promotion (pause/resume) variant", fidelity=True)
register_method("hyperband", "hpo_core.schedulers.hyperband:SyncHyperband",
                "synchronous Hyperband", fidelity=True)
register_method("successive_halving",
                "hpo_core.schedulers.successive_halving:SyncSuccessiveHalving",
                "synchronous successive halving", fidelity=True)
register_method("bohb", "hpo_core.schedulers.asha:ASHA",
                "asynchronous BOHB: ASHA with the KDE searcher", fidelity=True, searcher="kde")
register_method("sync_bohb", "hpo_core.schedulers.hyperband:SyncHyperband",
                "BOHB: synchronous Hyperband with the KDE searcher", fidelity=True, searcher="kde")
register_method("mobster", "hpo_core.schedulers.mobster:MOBSTER",
                "MOBSTER: ASHA with a GP over config and resource", fidelity=True,
                searcher="gp_multifidelity")
register_method("mobster_independent", "hpo_core.schedulers.mobster:MOBSTER",
                "MOBSTER with one GP per rung level", fidelity=True, searcher="gp_multifidelity",
                defaults={"model": "independent"})
register_method("dehb", "hpo_core.schedulers.dehb:DEHB",
                "differential evolution Hyperband (asynchronous brackets)", fidelity=True)
register_method("hypertune", "hpo_core.schedulers.hypertune:HyperTune",
                "asynchronous Hyperband with a learnt bracket distribution (Hyper-Tune)",
                fidelity=True)
register_method("pasha", "hpo_core.schedulers.pasha:PASHA",
                "progressive ASHA: the maximum resource grows as rankings settle", fidelity=True)
register_method("median_stopping", "hpo_core.schedulers.median_stopping:MedianStoppingRule",
                "median stopping rule", multi_fidelity=True)
register_method("pbt", "hpo_core.schedulers.pbt:PopulationBasedTraining",
                "population-based training (exploit by checkpoint copy, explore)",
                multi_fidelity=True)
# -- multi-objective -----------------------------------------------------------------------------
register_method("moasha", "hpo_core.schedulers.moasha:MOASHA",
                "multi-objective ASHA (Pareto fronts, epsilon-net)", fidelity=True,
                multi_objective=True)
register_method("mo_rea", "hpo_core.schedulers.mo_rea:MORegularizedEvolution",
                "multi-objective regularized evolution", multi_objective=True)
register_method("ehvi", "hpo_core.schedulers.ehvi:EHVI",
                "multi-objective BO: a GP per objective, expected hypervolume improvement",
                multi_objective=True)


#: scheduler options of Syne Tune and Ray Tune that are named otherwise here
PEER_OPTION_HINTS = {
    "type": "Syne Tune's type='stopping' is the method asha, type='promotion' is asha_promotion",
    "time_attr": "Syne Tune's and Ray Tune's time_attr is resource_attr here",
}


def method_info(name: Any) -> MethodInfo:
    """The registered method `name`; ValueError naming `scheduler` if there is none."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"scheduler: unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    return sorted(METHODS)


def _split(info: MethodInfo, options: Mapping[str, Any]
           ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """`options` (after the method's defaults) as (fidelity, own, searcher) options, each
    checked; raises ValueError naming `scheduler_options.<option>`."""
    check_options(options, Keywords(info.option_names(), frozenset(), False), FIELD, info.name,
                  RESERVED, hints=PEER_OPTION_HINTS)
    options = {**info.defaults, **options}
    fidelity = {k: v for k, v in options.items() if info.fidelity and k in FidelityOptions.names()}
    own_names = info.own_options().names
    own = {k: v for k, v in options.items() if k not in fidelity and k in own_names}
    rest = {k: v for k, v in options.items() if k not in fidelity and k not in own}
    if isinstance(own.get("searcher"), str):  # a searcher by name: its options are its own
        searcher = searcher_info(own["searcher"], f"{FIELD}.searcher")
        nested = own.get("searcher_options") or {}
        if not isinstance(nested, Mapping):
            raise ValueError(f"{FIELD}.searcher_options: must be a mapping, got {nested!r}")
        check_options(nested, searcher.options(), f"{FIELD}.searcher_options", searcher.name,
                      SEARCHER_RESERVED)
    return fidelity, own, rest


def check_scheduler_options(name: str, options: Mapping[str, Any]) -> None:
    """Raise ValueError naming the field if `name` is no method or an option is unknown to it.

    Values (and required options such as `max_t`, which a backend may fill in) are checked when
    the scheduler is built.
    """
    _split(method_info(name), options)


def build_scheduler(
    name: str,
    config_space: ConfigSpace | Mapping[str, Any],
    metric: str | Sequence[str],
    mode: str | Sequence[str] = "min",
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Scheduler:
    """A scheduler by registry name (`spec.scheduler`) with `options` (`spec.scheduler_options`)."""
    info = method_info(name)
    fidelity, kwargs, searcher_options = _split(info, options or {})
    if info.fidelity:
        kwargs["fidelity"] = FidelityOptions.from_options(fidelity)
    if info.searcher:
        kwargs["searcher"] = info.searcher
        kwargs["searcher_options"] = searcher_options
    factory = info.load()
    if "build_method" in keywords(factory).names:
        kwargs["build_method"] = build_scheduler
    try:
        return factory(as_config_space(config_space), metric=metric, mode=mode, seed=seed, **kwargs)
    except TypeError as err:  # a value of the wrong type deep inside
        raise ValueError(f"{FIELD}: invalid options for {name!r}: {err}") from err
    except ValueError as err:
        text = str(err)
        if not text.startswith("searcher_options."):
            raise
        # the searcher's: given with the method's own options (bore, optuna, ...), or nested
        raise ValueError(f"{FIELD}.{text.split('.', 1)[1] if info.searcher else text}") from err
