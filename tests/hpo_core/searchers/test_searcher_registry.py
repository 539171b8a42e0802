"""The searcher registry: a searcher by name, options checked against its own signature."""

from __future__ import annotations

import pytest

from hpo_core.searchers.grid import GridSearcher
from hpo_core.searchers.registry import SEARCHERS, build_searcher, searcher_from_option
from hpo_core.space import ConfigSpace, uniform

SPACE = ConfigSpace({"x": uniform(0, 1)})


def test_build_by_name_with_its_options():
    searcher = build_searcher("grid", SPACE, seed=0, options={"num_points": 3})
    assert isinstance(searcher, GridSearcher) and searcher.num_points == 3
    assert "num_points" in SEARCHERS["grid"].options().names


@pytest.mark.parametrize("name, options, message", [
    ("nope", {}, r"searcher: unknown searcher 'nope'"),
    ("grid", {"points": 3}, r"searcher_options\.points: unknown option for 'grid'"),
    ("grid", {"seed": 3}, r"searcher_options\.seed: set at the top"),
])
def test_bad_names_and_options_name_the_field(name, options, message):
    with pytest.raises(ValueError, match=message):
        build_searcher(name, SPACE, options=options)


def test_a_scheduler_option_names_a_searcher_or_is_one():
    built = searcher_from_option("random", SPACE, 0, None, [{"x": 0.25}])
    assert built.suggest(0) == {"x": 0.25}
    assert searcher_from_option(built, SPACE, 0, None, None) is built
