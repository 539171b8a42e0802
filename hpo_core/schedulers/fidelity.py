"""The fidelity options of the rung-based schedulers, as one object checked once.

ASHA and its family, synchronous successive halving, Hyperband and DEHB train trials in
segments up to rung levels of a reported resource. They all take a `FidelityOptions`; a spec
gives its fields flat among `scheduler_options` (`max_t: 50, grace_period: 1`), and the method
registry gathers them (`hpo_core.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from hpo_core.space import ConfigSpace


@dataclass(frozen=True)
class FidelityOptions:
    """Where rungs are, and what a trial reports as its resource.

    Args:
        max_t: the maximum resource (e.g. the last epoch); a trial reaching it is done.
        resource_attr: the reported fidelity (e.g. "epoch"); every report must carry it.
        grace_period: the first rung level (the least resource a trial gets).
        reduction_factor: eta; rung levels grow by it, and a rung keeps its top 1/eta.
        max_resource_attr: a fixed config entry (e.g. "epochs") that the scheduler sets in each
            trial's config to the resource its next segment should train to, so a script can
            end the segment there by itself (Syne Tune's convention).
    """

    max_t: float
    resource_attr: str = "epoch"
    grace_period: float = 1
    reduction_factor: float = 3
    max_resource_attr: str | None = None

    def __post_init__(self) -> None:
        check_fidelity_options(self.max_t, self.grace_period, self.reduction_factor)
        check_resource_attr(self.resource_attr)

    @classmethod
    def names(cls) -> frozenset[str]:
        """The option names, as they appear among `scheduler_options`."""
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> FidelityOptions:
        """The fidelity options among `options` (which may hold others); `max_t` is required."""
        if "max_t" not in options:
            raise ValueError("max_t: required (the maximum resource, e.g. the last epoch)")
        return cls(**{k: v for k, v in options.items() if k in cls.names()})

    def entry_in(self, config_space: ConfigSpace) -> str | None:
        """`max_resource_attr`, checked against the config space it is set in (its fixed
        value is the maximum resource: it must be `max_t`)."""
        name = check_max_resource_attr(self.max_resource_attr, config_space)
        if name is not None:
            value = config_space.fixed[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"max_resource_attr: {name!r} is fixed at {value!r} in the "
                                 f"config space: it must be a number, the maximum resource "
                                 f"(max_t: {self.max_t!r})")
            if float(value) != float(self.max_t):
                raise ValueError(f"max_resource_attr: {name!r} is fixed at {value!r} in the "
                                 f"config space, but max_t is {self.max_t!r}: the fixed value "
                                 "is the maximum resource, they must agree")
        return name


def check_fidelity_options(max_t: Any, grace_period: Any, reduction_factor: Any) -> None:
    """Raise ValueError naming the option if the rung geometry is invalid."""
    for name, value in (("max_t", max_t), ("grace_period", grace_period)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"{name}: must be a positive number, got {value!r}")
    if grace_period > max_t:
        raise ValueError(f"grace_period: {grace_period} is above max_t {max_t}")
    if (isinstance(reduction_factor, bool) or not isinstance(reduction_factor, int | float)
            or not reduction_factor >= 2):
        raise ValueError(f"reduction_factor: must be a number >= 2, got {reduction_factor!r}")


def check_resource_attr(resource_attr: Any) -> None:
    """Raise ValueError unless `resource_attr` names a reported metric (the fidelity)."""
    if not isinstance(resource_attr, str) or not resource_attr:
        raise ValueError(f"resource_attr: must be a metric name, got {resource_attr!r}")


def check_max_resource_attr(name: Any, config_space: ConfigSpace) -> str | None:
    """Raise ValueError unless `name` is None or a fixed entry of the config space (the
    scheduler sets it per trial, so it must not be searched)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name:
        raise ValueError(f"max_resource_attr: must be a config entry name, got {name!r}")
    if name in config_space.domains:
        raise ValueError(f"max_resource_attr: {name!r} is searched; make it a fixed value "
                         "(the maximum resource): the scheduler sets it per trial")
    if name not in config_space.fixed:
        raise ValueError(f"max_resource_attr: {name!r} is not in the config space; add it as a "
                         "fixed value (the maximum resource)")
    return name
