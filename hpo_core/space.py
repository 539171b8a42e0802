"""Configuration spaces: domains, seeded sampling, encoding to [0,1]^d, validation, JSON.

A config space is a mapping from hyperparameter name to a `Domain` or to a fixed value::

    space = ConfigSpace({
        "lr": loguniform(1e-4, 1e-1),
        "layers": randint(1, 4),
        "act": choice(["relu", "tanh"]),
        "epochs": 50,                      # fixed
    })

In JSON a domain is ``{"type": "loguniform", "lower": 1e-4, "upper": 0.1}``; anything else
(a number, a string, a list) is a fixed value.

Conditional hyperparameters exist only when others take certain values::

    space = ConfigSpace({
        "optimizer": choice(["sgd", "adam"]),
        "momentum": when(uniform(0.0, 0.99), optimizer="sgd"),   # JSON: "when": {"optimizer": ["sgd"]}
    })

A condition names earlier or later hyperparameters of the space (choice, ordinal or integer
domains, no cycles) and the values that switch it on; all of them must hold, and a hyperparameter
whose parent is inactive is inactive too. An inactive hyperparameter is absent from the config
(sampling, decoding, validation) and encoded at a fixed value (`INACTIVE`, all zeros for a
one-hot block), so models see every config in the same [0,1]^d.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from hpo_core.json_encoders import compiled_encoder

#: The encoded value of an inactive numeric hyperparameter.
INACTIVE = 0.5
#: `ConfigSpace.config_key`'s encoder: what `json.dumps(..., sort_keys=True, default=str)`
#: builds on every call, built once
_KEY_ENCODE = compiled_encoder(json.JSONEncoder(sort_keys=True, default=str))

#: An encoded point of [0,1]^d, as a list or a numpy vector.
Vector = Sequence[float] | np.ndarray


class ConfigSpaceError(ValueError):
    """An invalid domain, config space or config; the message names the field and the reason."""


def _check_number(field: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigSpaceError(f"{field}: '{name}' must be a finite number, got {value!r}")
    return float(value)


class Domain(ABC):
    """The set of values one hyperparameter may take."""

    type_name: str = ""
    field: str = "<domain>"
    #: parent name -> the values of the parent for which this hyperparameter exists (or None)
    condition: dict[str, list[Any]] | None = None

    def when(self, **condition: Any) -> Domain:
        """This domain, existing only when each named hyperparameter takes the given value (or
        one of the given list of values)."""
        self.condition = {name: list(v) if isinstance(v, list | tuple) else [v]
                          for name, v in condition.items()}
        return self

    @property
    @abstractmethod
    def encoded_dim(self) -> int:
        """Number of [0,1] coordinates this domain takes in the encoded vector."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any: ...

    @abstractmethod
    def encode(self, value: Any) -> list[float]: ...

    @abstractmethod
    def decode(self, x: Vector) -> Any: ...

    @abstractmethod
    def contains(self, value: Any) -> bool: ...

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    def grid(self, num_points: int) -> list[Any]:
        """Values of this domain on a grid with at most `num_points` values (numerical domains)."""
        return [self.decode([u]) for u in np.linspace(0.0, 1.0, num_points)]

    @property
    def is_numerical(self) -> bool:
        return True

    def cast(self, value: Any) -> Any:
        """Bring a value read from elsewhere (argv, a table) to this domain's type."""
        return value

    def json(self) -> dict[str, Any]:
        """The JSON form, with the condition if there is one."""
        data = self.to_json()
        if self.condition:
            data["when"] = {name: list(values) for name, values in self.condition.items()}
        return data

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Domain) and self.json() == other.json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.json(), sort_keys=True, default=str))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_json().items() if k != "type")
        return f"{self.type_name}({args})"


class Float(Domain):
    """A real interval [lower, upper], uniform or log-uniform."""

    def __init__(self, lower: float, upper: float, log: bool = False, field: str = "<domain>"):
        self.field = field
        self.lower = _check_number(field, "lower", lower)
        self.upper = _check_number(field, "upper", upper)
        if self.lower > self.upper:
            raise ConfigSpaceError(
                f"{field}: lower bound {lower} is above the upper bound {upper}"
            )
        if log and self.lower <= 0:
            raise ConfigSpaceError(f"{field}: a log domain needs lower > 0, got {lower}")
        self.log = bool(log)
        self.type_name = "loguniform" if self.log else "uniform"
        if self.log:
            self._lo, self._hi = math.log(self.lower), math.log(self.upper)
        else:
            self._lo, self._hi = self.lower, self.upper

    @property
    def encoded_dim(self) -> int:
        return 1

    def _from_unit(self, u: float) -> float:
        u = min(max(u, 0.0), 1.0)
        if u in (0.0, 1.0):  # the bounds exactly, not exp(log(bound))
            return self.upper if u else self.lower
        v = self._lo + u * (self._hi - self._lo)
        v = math.exp(v) if self.log else v
        return min(max(v, self.lower), self.upper)

    def _to_unit(self, value: float) -> float:
        if self._hi == self._lo:
            return 0.5
        v = math.log(value) if self.log else value
        return min(max((v - self._lo) / (self._hi - self._lo), 0.0), 1.0)

    def sample(self, rng: np.random.Generator) -> float:
        return self._from_unit(float(rng.random()))

    def encode(self, value: Any) -> list[float]:
        return [self._to_unit(float(value))]

    def decode(self, x: Vector) -> float:
        return self._from_unit(float(x[0]))

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.lower <= value <= self.upper

    def cast(self, value: Any) -> float:
        return float(value)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "lower": self.lower, "upper": self.upper}


class Integer(Domain):
    """Integers in [lower, upper] (both included), uniform or log-uniform."""

    def __init__(self, lower: int, upper: int, log: bool = False, field: str = "<domain>"):
        self.field = field
        for name, v in (("lower", lower), ("upper", upper)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) and not (
                isinstance(v, float) and v.is_integer()
            ):
                raise ConfigSpaceError(f"{field}: '{name}' must be an integer, got {v!r}")
        self.lower, self.upper = int(lower), int(upper)
        if self.lower > self.upper:
            raise ConfigSpaceError(
                f"{field}: lower bound {lower} is above the upper bound {upper}"
            )
        if log and self.lower <= 0:
            raise ConfigSpaceError(f"{field}: a log domain needs lower > 0, got {lower}")
        self.log = bool(log)
        self.type_name = "lograndint" if self.log else "randint"
        # Encoding treats each integer as the cell [k - 0.5, k + 0.5] of the real line.
        lo, hi = self.lower - 0.4999, self.upper + 0.4999
        if self.log:
            lo, hi = math.log(max(self.lower - 0.4999, 1e-12)), math.log(self.upper + 0.4999)
        self._lo, self._hi = lo, hi

    @property
    def encoded_dim(self) -> int:
        return 1

    def _from_unit(self, u: float) -> int:
        v = self._lo + min(max(u, 0.0), 1.0) * (self._hi - self._lo)
        v = math.exp(v) if self.log else v
        return int(min(max(round(v), self.lower), self.upper))

    def sample(self, rng: np.random.Generator) -> int:
        return self._from_unit(float(rng.random()))

    def encode(self, value: Any) -> list[float]:
        if self.upper == self.lower:
            return [0.5]
        v = math.log(float(value)) if self.log else float(value)
        return [min(max((v - self._lo) / (self._hi - self._lo), 0.0), 1.0)]

    def decode(self, x: Vector) -> int:
        return self._from_unit(float(x[0]))

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if isinstance(value, float) and not value.is_integer():
            return False
        if not isinstance(value, int | float | np.integer):
            return False
        return bool(self.lower <= value <= self.upper)

    def cast(self, value: Any) -> int:
        return int(round(float(value)))

    def grid(self, num_points: int) -> list[Any]:
        values = sorted({self.decode([u]) for u in np.linspace(0.0, 1.0, num_points)})
        return values

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "lower": self.lower, "upper": self.upper}


class Categorical(Domain):
    """An unordered set of values; encoded one-hot."""

    type_name = "choice"

    def __init__(self, categories: Iterable[Any], field: str = "<domain>"):
        self.field = field
        if isinstance(categories, str | bytes) or not isinstance(categories, Iterable):
            raise ConfigSpaceError(f"{field}: 'categories' must be a list, got {categories!r}")
        self.categories = list(categories)
        if not self.categories:
            raise ConfigSpaceError(f"{field}: 'categories' is empty; a choice needs at least one")
        keys = [json.dumps(c, sort_keys=True, default=str) for c in self.categories]
        if len(set(keys)) != len(keys):
            raise ConfigSpaceError(f"{field}: 'categories' has duplicates: {self.categories!r}")
        self._index = {k: i for i, k in enumerate(keys)}

    @property
    def encoded_dim(self) -> int:
        return len(self.categories)

    @property
    def is_numerical(self) -> bool:
        return False

    def index(self, value: Any) -> int:
        return self._index[json.dumps(value, sort_keys=True, default=str)]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.categories[int(rng.integers(len(self.categories)))]

    def encode(self, value: Any) -> list[float]:
        x = [0.0] * len(self.categories)
        x[self.index(value)] = 1.0
        return x

    def decode(self, x: Vector) -> Any:
        return self.categories[int(np.argmax(np.asarray(x[: len(self.categories)])))]

    def contains(self, value: Any) -> bool:
        try:
            self.index(value)
        except KeyError:
            return False
        return True

    def cast(self, value: Any) -> Any:
        if self.contains(value):
            return value
        for c in self.categories:
            if str(c) == str(value):
                return c
        return value

    def grid(self, num_points: int) -> list[Any]:
        return list(self.categories)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type_name, "categories": list(self.categories)}


class Ordinal(Categorical):
    """An ordered list of values; encoded as one coordinate, equally spaced."""

    type_name = "ordinal"

    @property
    def encoded_dim(self) -> int:
        return 1

    @property
    def is_numerical(self) -> bool:
        return True

    def encode(self, value: Any) -> list[float]:
        n = len(self.categories)
        return [0.5 if n == 1 else self.index(value) / (n - 1)]

    def decode(self, x: Vector) -> Any:
        n = len(self.categories)
        return self.categories[int(min(max(round(float(x[0]) * (n - 1)), 0), n - 1))]


class FiniteRange(Ordinal):
    """`size` values equally spaced (or log-spaced) in [lower, upper], optionally integers."""

    def __init__(
        self,
        lower: float,
        upper: float,
        size: int,
        log: bool = False,
        cast_int: bool = False,
        field: str = "<domain>",
    ):
        lower = _check_number(field, "lower", lower)
        upper = _check_number(field, "upper", upper)
        if lower > upper:
            raise ConfigSpaceError(f"{field}: lower bound {lower} is above the upper bound {upper}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigSpaceError(f"{field}: 'size' must be a positive integer, got {size!r}")
        if log and lower <= 0:
            raise ConfigSpaceError(f"{field}: a log domain needs lower > 0, got {lower}")
        self.lower, self.upper, self.size = lower, upper, size
        self.log, self.cast_int = bool(log), bool(cast_int)
        if log:
            values = np.exp(np.linspace(math.log(lower), math.log(upper), size))
        else:
            values = np.linspace(lower, upper, size)
        cats = [int(round(v)) for v in values] if cast_int else [float(v) for v in values]
        cats = list(dict.fromkeys(cats))
        self.type_name = "logfinrange" if log else "finrange"
        super().__init__(cats, field=field)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            return False
        return any(math.isclose(float(value), float(c), rel_tol=1e-9) for c in self.categories)

    def cast(self, value: Any) -> Any:
        v = float(value)
        best = min(self.categories, key=lambda c: abs(float(c) - v))
        return best

    def index(self, value: Any) -> int:
        v = float(value)
        for i, c in enumerate(self.categories):
            if math.isclose(v, float(c), rel_tol=1e-9):
                return i
        raise KeyError(value)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type_name,
            "lower": self.lower,
            "upper": self.upper,
            "size": self.size,
            "cast_int": self.cast_int,
        }


def uniform(lower: float, upper: float) -> Float:
    return Float(lower, upper)


def loguniform(lower: float, upper: float) -> Float:
    return Float(lower, upper, log=True)


def randint(lower: int, upper: int) -> Integer:
    """Integers from `lower` to `upper`, both included."""
    return Integer(lower, upper)


def lograndint(lower: int, upper: int) -> Integer:
    return Integer(lower, upper, log=True)


def choice(categories: Sequence[Any]) -> Categorical:
    return Categorical(categories)


def ordinal(categories: Sequence[Any]) -> Ordinal:
    return Ordinal(categories)


def finrange(lower: float, upper: float, size: int, cast_int: bool = False) -> FiniteRange:
    return FiniteRange(lower, upper, size, cast_int=cast_int)


def logfinrange(lower: float, upper: float, size: int, cast_int: bool = False) -> FiniteRange:
    return FiniteRange(lower, upper, size, log=True, cast_int=cast_int)


def when(domain: Domain, **condition: Any) -> Domain:
    """`domain`, existing only when each named hyperparameter takes the given value(s)."""
    return domain.when(**condition)


_DOMAIN_KEYS: dict[str, set[str]] = {
    "uniform": {"lower", "upper"},
    "loguniform": {"lower", "upper"},
    "randint": {"lower", "upper"},
    "lograndint": {"lower", "upper"},
    "choice": {"categories"},
    "ordinal": {"categories"},
    "finrange": {"lower", "upper", "size"},
    "logfinrange": {"lower", "upper", "size"},
}


def domain_from_json(field: str, data: Mapping[str, Any]) -> Domain:
    """Build a domain from its JSON form; errors name `field`."""
    kind = data.get("type")
    if kind not in _DOMAIN_KEYS:
        raise ConfigSpaceError(
            f"{field}: unknown domain type {kind!r}; expected one of {sorted(_DOMAIN_KEYS)}"
        )
    required = _DOMAIN_KEYS[kind]
    missing = sorted(required - set(data))
    if missing:
        raise ConfigSpaceError(f"{field}: domain '{kind}' is missing {', '.join(missing)}")
    allowed = required | {"type", "cast_int", "when"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigSpaceError(f"{field}: domain '{kind}' has unknown keys {unknown}")
    domain = _plain_domain_from_json(field, kind, data)
    if "when" in data:
        condition = data["when"]
        if not isinstance(condition, Mapping) or not condition or \
                not all(isinstance(k, str) for k in condition):
            raise ConfigSpaceError(f"{field}.when: must map hyperparameter names to values, "
                                   f"got {condition!r}")
        domain.when(**condition)
    return domain


def _plain_domain_from_json(field: str, kind: str, data: Mapping[str, Any]) -> Domain:
    if kind in ("uniform", "loguniform"):
        return Float(data["lower"], data["upper"], log=kind == "loguniform", field=field)
    if kind in ("randint", "lograndint"):
        return Integer(data["lower"], data["upper"], log=kind == "lograndint", field=field)
    if kind == "choice":
        return Categorical(data["categories"], field=field)
    if kind == "ordinal":
        return Ordinal(data["categories"], field=field)
    return FiniteRange(
        data["lower"],
        data["upper"],
        data["size"],
        log=kind == "logfinrange",
        cast_int=bool(data.get("cast_int", False)),
        field=field,
    )


class ConfigSpace:
    """Named domains plus fixed values; samples, encodes, validates and serializes configs."""

    def __init__(self, entries: Mapping[str, Any]):
        if not isinstance(entries, Mapping):
            raise ConfigSpaceError(f"config_space: must be a mapping, got {type(entries).__name__}")
        self.domains: dict[str, Domain] = {}
        self.fixed: dict[str, Any] = {}
        for name, value in entries.items():
            if not isinstance(name, str) or not name:
                raise ConfigSpaceError(f"config_space: names must be non-empty strings, got {name!r}")
            if isinstance(value, Domain):
                value.field = f"config_space.{name}"
                self.domains[name] = value
            elif isinstance(value, Mapping) and "type" in value:
                self.domains[name] = domain_from_json(f"config_space.{name}", value)
            else:
                self.fixed[name] = value
        self._offsets: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, dom in self.domains.items():
            self._offsets[name] = (offset, offset + dom.encoded_dim)
            offset += dom.encoded_dim
        self.ndim = offset
        self.order = self._checked_order()
        #: every hyperparameter is an unconditional interval drawn from one uniform number:
        #: `sample` draws them all in one call (the same numbers, in declaration order); then
        #: these are the (name, domain) pairs, else None
        intervals = [(n, d) for n, d in self.domains.items()
                     if (type(d) is Float or type(d) is Integer) and not d.condition]
        self._unit_draws: list[tuple[str, Float | Integer]] | None = \
            intervals if len(intervals) == len(self.domains) else None

    def _checked_order(self) -> list[str]:
        """The names with every condition's parents before their children (declaration order
        where the conditions allow it); conditions checked, errors naming the field."""
        for name, dom in self.domains.items():
            for parent, values in (dom.condition or {}).items():
                field = f"config_space.{name}.when.{parent}"
                if parent not in self.domains:
                    raise ConfigSpaceError(f"{field}: no searched hyperparameter {parent!r} in "
                                           "the space")
                parent_domain = self.domains[parent]
                if parent == name or not isinstance(parent_domain, Categorical | Integer):
                    raise ConfigSpaceError(f"{field}: a condition needs another choice, ordinal "
                                           "or integer hyperparameter")
                if not values:  # it would never exist
                    raise ConfigSpaceError(f"{field}: needs at least one value of {parent!r}")
                for value in values:
                    if not parent_domain.contains(value):
                        raise ConfigSpaceError(f"{field}: {value!r} is not a value of {parent!r}")
        order: list[str] = []
        waiting = list(self.domains)
        while waiting:
            ready = [n for n in waiting if all(p in order for p in self.domains[n].condition or {})]
            if not ready:
                raise ConfigSpaceError(f"config_space: the conditions of {waiting} form a cycle")
            order.extend(ready)
            waiting = [n for n in waiting if n not in ready]
        return order

    @property
    def is_conditional(self) -> bool:
        """Whether some hyperparameter exists only under a condition."""
        return any(d.condition for d in self.domains.values())

    def is_active(self, name: str, config: Mapping[str, Any]) -> bool:
        """Whether hyperparameter `name` exists in `config` (its parents active, with values that
        switch it on)."""
        condition = self.domains[name].condition
        return not condition or all(
            parent in config and self.is_active(parent, config)
            and self.code(parent, config[parent]) in self.allowed_codes(name, parent)
            for parent in condition)

    def code(self, name: str, value: Any) -> int | None:
        """The index of a choice's or ordinal's value, an integer's value; None if not in it."""
        dom = self.domains[name]
        if not dom.contains(value):
            return None
        return dom.index(value) if isinstance(dom, Categorical) else int(value)

    def allowed_codes(self, name: str, parent: str) -> set[int | None]:
        """The codes (see `code`) of the values of `parent` that switch `name` on."""
        return {self.code(parent, v) for v in (self.domains[name].condition or {})[parent]}

    @property
    def names(self) -> list[str]:
        """Names of the hyperparameters that are searched (fixed values excluded)."""
        return list(self.domains)

    def __len__(self) -> int:
        return len(self.domains)

    def __contains__(self, name: str) -> bool:
        return name in self.domains or name in self.fixed

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One config drawn at random (log domains log-uniformly), active hyperparameters only."""
        if self._unit_draws is not None:
            units = rng.random(len(self._unit_draws)).tolist()
            config = {name: dom._from_unit(u)
                      for (name, dom), u in zip(self._unit_draws, units, strict=True)}
            config.update(self.fixed)
            return config
        config = {}
        for name in self.order:
            if self.is_active(name, config):
                config[name] = self.domains[name].sample(rng)
        config = {n: config[n] for n in self.domains if n in config}  # declaration order
        config.update(self.fixed)
        return config

    def complete(self, config: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """`config` with the fixed values, its missing active hyperparameters drawn at random
        and its inactive ones dropped."""
        drawn: dict[str, Any] | None = None  # one random config, drawn at the first gap
        out: dict[str, Any] = {}
        for name in self.order:
            if not self.is_active(name, out):
                continue
            if name in config:
                out[name] = config[name]
                continue
            drawn = self.sample(rng) if drawn is None else drawn
            out[name] = drawn[name] if name in drawn else self.domains[name].sample(rng)
        out = {n: out[n] for n in self.domains if n in out}  # declaration order
        out.update(self.fixed)
        out.update({k: v for k, v in config.items() if k not in self.domains})
        return out

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """A config as a vector in [0,1]^ndim (one-hot for choices; inactive hyperparameters at
        `INACTIVE`, one-hot blocks all zero)."""
        return np.array(self.encode_values(config), dtype=float)

    def encode_values(self, config: Mapping[str, Any]) -> list[float]:
        """`encode(config)` as a list (for a caller that builds its own array)."""
        x: list[float] = []
        for name, dom in self.domains.items():
            if name in config:
                x += dom.encode(config[name])
            elif dom.condition and not self.is_active(name, config):
                x += [0.0 if type(dom) is Categorical else INACTIVE] * dom.encoded_dim
            else:
                raise ConfigSpaceError(f"config.{name}: missing")
        return x

    def encode_many(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if not configs:
            return np.empty((0, self.ndim))
        return np.stack([self.encode(c) for c in configs])

    def decode(self, x: Vector) -> dict[str, Any]:
        """The config nearest to a vector of [0,1]^ndim (active hyperparameters only)."""
        config: dict[str, Any] = {}
        for name in self.order:
            if self.is_active(name, config):
                a, b = self._offsets[name]
                config[name] = self.domains[name].decode(x[a:b])
        config = {n: config[n] for n in self.domains if n in config}  # declaration order
        config.update(self.fixed)
        return config

    def categorical_slices(self) -> list[tuple[int, int]]:
        """Encoded column ranges of the one-hot (unordered categorical) hyperparameters."""
        return [
            self._offsets[n] for n, d in self.domains.items() if type(d) is Categorical
        ]

    def validate(self, config: Mapping[str, Any]) -> None:
        """Raise ConfigSpaceError naming the first hyperparameter that is missing or out of range."""
        for name in self.order:
            dom = self.domains[name]
            if dom.condition and not self.is_active(name, config):
                if name in config:
                    raise ConfigSpaceError(
                        f"config.{name}: only exists when {_describe(dom.condition)}")
                continue
            if name not in config:
                raise ConfigSpaceError(f"config.{name}: missing")
            if not dom.contains(config[name]):
                raise ConfigSpaceError(
                    f"config.{name}: {config[name]!r} is not in {dom!r}"
                )
        if config.keys() - self.domains.keys() - self.fixed.keys():
            unknown = sorted(k for k in config if k not in self.domains and k not in self.fixed)
            raise ConfigSpaceError(f"config: unknown hyperparameters {unknown}")

    def cast(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A config read from elsewhere with each value brought to its domain's type."""
        out = dict(config)
        for name, dom in self.domains.items():
            if name in out:
                out[name] = dom.cast(out[name])
        return out

    def grid(self, num_points: int = 5) -> list[dict[str, Any]]:
        """The full grid: every category, `num_points` values per numerical domain."""
        if num_points < 1:
            raise ConfigSpaceError(f"num_points: must be >= 1, got {num_points}")
        configs: list[dict[str, Any]] = [{}]
        for name in self.order:
            values = self.domains[name].grid(num_points)
            configs = [grown for c in configs for grown in
                       ([{**c, name: v} for v in values] if self.is_active(name, c) else [c])]
        return [{**{n: c[n] for n in self.domains if n in c}, **self.fixed} for c in configs]

    def config_key(self, config: Mapping[str, Any]) -> str:
        """A canonical string for a config, for de-duplication."""
        return _KEY_ENCODE({n: config.get(n) for n in self.domains})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: dom.json() for name, dom in self.domains.items()}
        out.update(self.fixed)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConfigSpace:
        return cls(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConfigSpace) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return f"ConfigSpace({self.to_json()!r})"


def _describe(condition: Mapping[str, list[Any]] | None) -> str:
    return " and ".join(f"{parent} is {values[0]!r}" if len(values) == 1
                        else f"{parent} is one of {values!r}"
                        for parent, values in (condition or {}).items())


def as_config_space(space: ConfigSpace | Mapping[str, Any]) -> ConfigSpace:
    return space if isinstance(space, ConfigSpace) else ConfigSpace(space)
