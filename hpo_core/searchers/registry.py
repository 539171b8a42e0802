"""The searchers by name, so that a spec or a scheduler picks one (`searcher: kde`).

A searcher is a class `Searcher(config_space, seed=None, points_to_evaluate=None, **options)`;
its options are checked against its own signature. Modules load lazily: building one searcher
imports only its own module. No searcher module imports this one.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpo_core.options import Keywords, check_options, keywords
from hpo_core.searchers.base import Searcher
from hpo_core.space import ConfigSpace, as_config_space

#: set by whoever builds the searcher, never an option
RESERVED = ("config_space", "seed")


@dataclass(frozen=True)
class SearcherInfo:
    """A registered searcher: where its class lives and what it does."""

    name: str
    target: str  # "module:attribute"
    description: str

    def load(self) -> type[Searcher]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def options(self) -> Keywords:
        """The options this searcher takes."""
        return keywords(self.load(), leave_out=RESERVED)


SEARCHERS: dict[str, SearcherInfo] = {}


def register_searcher(name: str, target: str, description: str) -> None:
    """Make the searcher class at `target` ("module:Class") available as `name`."""
    SEARCHERS[name] = SearcherInfo(name, target, description)


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


def searcher_info(name: Any, field: str = "searcher") -> SearcherInfo:
    """The registered searcher `name`; ValueError naming `field` if there is none."""
    if not isinstance(name, str) or name not in SEARCHERS:
        raise ValueError(f"{field}: unknown searcher {name!r}; expected one of {sorted(SEARCHERS)}")
    return SEARCHERS[name]


def build_searcher(
    name: str,
    config_space: ConfigSpace | Mapping[str, Any],
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    field: str = "searcher",
) -> Searcher:
    """A searcher by registry name, with its options checked (errors name `field`)."""
    info = searcher_info(name, field)
    check_options(options or {}, info.options(), f"{field}_options", name, RESERVED)
    try:
        return info.load()(as_config_space(config_space), seed=seed, **(options or {}))
    except ValueError as err:  # "<option>: ..." from the searcher: named as the spec has it
        text = str(err)
        if text.split(":", 1)[0].split(".", 1)[0] in (options or {}):
            raise ValueError(f"{field}_options.{text}") from err
        raise


def searcher_from_option(
    searcher: str | Searcher,
    config_space: ConfigSpace,
    seed: int | None,
    searcher_options: Mapping[str, Any] | None,
    points_to_evaluate: Sequence[Mapping[str, Any]] | None,
) -> Searcher:
    """The searcher a scheduler's `searcher` option names (or the instance it already is)."""
    if isinstance(searcher, Searcher):
        return searcher
    options = dict(searcher_options or {})
    if points_to_evaluate is not None:
        options["points_to_evaluate"] = points_to_evaluate
    return build_searcher(searcher, config_space, seed, options)
