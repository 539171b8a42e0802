"""FidelityOptions: the rung-based schedulers' fidelity options, one object checked once."""

from __future__ import annotations

import pytest

from hpo_core.schedulers.fidelity import FidelityOptions
from hpo_core.space import ConfigSpace, uniform


def test_from_flat_options_with_others_among_them():
    fidelity = FidelityOptions.from_options({"max_t": 27, "grace_period": 3, "brackets": 2})
    assert fidelity == FidelityOptions(max_t=27, grace_period=3)
    assert FidelityOptions.names() == {"max_t", "resource_attr", "grace_period",
                                       "reduction_factor", "max_resource_attr"}


@pytest.mark.parametrize("options, field", [
    ({}, "max_t: required"),
    ({"max_t": -1}, "max_t"),
    ({"max_t": 9, "grace_period": 10}, "grace_period"),
    ({"max_t": 9, "reduction_factor": 1.5}, "reduction_factor"),
    ({"max_t": 9, "resource_attr": ""}, "resource_attr"),
])
def test_bad_values_name_the_option(options, field):
    with pytest.raises(ValueError, match=field):
        FidelityOptions.from_options(options)


def test_max_resource_attr_must_be_a_fixed_entry_of_the_space():
    space = ConfigSpace({"lr": uniform(0, 1), "epochs": 9})
    assert FidelityOptions(max_t=9, max_resource_attr="epochs").entry_in(space) == "epochs"
    assert FidelityOptions(max_t=9).entry_in(space) is None
    text = ConfigSpace({"lr": uniform(0, 1), "epochs": "9"})  # a string, from a YAML quote
    with pytest.raises(ValueError, match="max_resource_attr: 'epochs' is fixed at '9' in the "
                                         "config space: it must be a number"):
        FidelityOptions(max_t=9, max_resource_attr="epochs").entry_in(text)
    for name, message in (("lr", "is searched"), ("steps", "is not in the config space")):
        with pytest.raises(ValueError, match=f"max_resource_attr: '{name}' {message}"):
            FidelityOptions(max_t=9, max_resource_attr=name).entry_in(space)
