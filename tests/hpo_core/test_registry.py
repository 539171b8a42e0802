"""The method table: options split into fidelity, the factory's own and the searcher's, each
checked against what it is for; typed flags instead of signature probes."""

from __future__ import annotations

import pytest

from hpo_core.registry import METHODS, build_scheduler, check_scheduler_options
from hpo_core.schedulers.asha import ASHA
from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.searchers.gp import GPSearcher
from hpo_core.searchers.kde import KDESearcher
from hpo_core.space import ConfigSpace, choice, uniform

SPACE = ConfigSpace({"x": uniform(0, 1), "y": uniform(0, 1), "c": choice(["a", "b"])})


def test_a_method_built_on_a_searcher_takes_the_searchers_options():
    assert "batch_size" in METHODS["bo"].option_names()  # GPSearcher's, never spelled in FIFO
    scheduler = build_scheduler("bo", SPACE, "loss", options={"batch_size": 2, "num_candidates": 50})
    assert isinstance(scheduler.searcher, GPSearcher)
    assert (scheduler.searcher.batch_size, scheduler.searcher.num_candidates) == (2, 50)
    assert build_scheduler("cbo", SPACE, "loss").searcher.constraint_attr == "constraint"


def test_bohb_is_asha_with_the_kde_searcher_and_one_fidelity_object():
    scheduler = build_scheduler("bohb", SPACE, "loss", options={"max_t": 9, "gamma": 0.2,
                                                                 "grace_period": 3})
    assert type(scheduler) is ASHA and isinstance(scheduler.searcher, KDESearcher)
    assert scheduler.searcher.gamma == 0.2 and not scheduler.searcher.uses_intermediate_results
    assert (scheduler.max_t, scheduler.grace_period) == (9, 3)
    assert FidelityOptions.names() <= METHODS["dehb"].option_names()


@pytest.mark.parametrize("name, options, message", [
    ("bohb", {"max_t": 9, "gama": 0.2}, r"scheduler_options\.gama: unknown option for 'bohb'"),
    ("bo", {"seed": 1}, r"scheduler_options\.seed: set at the top"),
    ("bo", {"searcher": "kde"}, r"scheduler_options\.searcher: unknown option for 'bo'"),
    ("nope", {}, r"scheduler: unknown method 'nope'"),
    ("asha", {"searcher": "kde", "searcher_options": {"gama": 1}},
     r"scheduler_options\.searcher_options\.gama: unknown option for 'kde'"),
    ("asha", {"searcher": "kdee"}, r"scheduler_options\.searcher: unknown searcher 'kdee'"),
    # what Syne Tune calls them: the message names ours
    ("hyperband", {"max_t": 9, "type": "promotion"},
     r"scheduler_options\.type: unknown option for 'hyperband'; Syne Tune's type='stopping' is "
     r"the method asha, type='promotion' is asha_promotion$"),
    ("asha", {"max_t": 9, "time_attr": "epoch"},
     r"scheduler_options\.time_attr: unknown option for 'asha'; .* is resource_attr here$"),
])
def test_options_are_checked_before_anything_is_built(name, options, message):
    with pytest.raises(ValueError, match=message):
        check_scheduler_options(name, options)


def test_values_are_checked_when_built():
    with pytest.raises(ValueError, match="max_t: required"):
        build_scheduler("asha", SPACE, "loss")
    with pytest.raises(ValueError, match=r"scheduler_options\.max_resource: MOBSTER sets it"):
        build_scheduler("mobster", SPACE, "loss", options={"max_t": 9, "max_resource": 3})
    with pytest.raises(ValueError, match=r"searcher_options\.nope: unknown option for 'kde'"):
        build_scheduler("fifo", SPACE, "loss", options={"searcher": "kde",
                                                        "searcher_options": {"nope": 1}})


def test_flags_replace_signature_probes():
    assert METHODS["grid"].needs_stop_limit is False and METHODS["random"].needs_stop_limit
    assert METHODS["pbt"].multi_fidelity and not METHODS["pbt"].fidelity
    assert METHODS["zero_shot"].transfer and METHODS["ehvi"].multi_objective


@pytest.mark.parametrize("name, options, message", [
    ("bore", {"gamma": 2}, r"^scheduler_options\.gamma: must be a number in \(0, 1\)"),
    ("bore", {"bootstrap": "false"}, r"^scheduler_options\.bootstrap: must be true or false"),
    ("asha", {"max_t": 9, "searcher": "bore", "searcher_options": {"gamma": 2}},
     r"^scheduler_options\.searcher_options\.gamma: must be a number"),
    ("optuna", {"sampler": "foo"}, r"^scheduler_options\.sampler: unknown sampler 'foo'"),
    ("optuna", {"sampler_options": [1]}, r"^scheduler_options\.sampler_options: must be a mapping"),
])
def test_a_searchers_option_errors_name_the_option_as_the_spec_has_it(name, options, message):
    """A method with its own searcher takes the searcher's options among its own: its errors
    name `scheduler_options.<option>` (before: `searcher_options.<option>`, a field the spec
    does not have, or a Python error about a dictionary update sequence)."""
    if name == "optuna":
        pytest.importorskip("optuna")
    with pytest.raises(ValueError, match=message):
        build_scheduler(name, SPACE, "loss", "min", 0, options)
