"""Config spaces: every domain's sampling, encoding, validation, JSON form and grid."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hpo_core.space import (
    Categorical,
    ConfigSpace,
    ConfigSpaceError,
    Float,
    Integer,
    choice,
    domain_from_json,
    finrange,
    logfinrange,
    lograndint,
    loguniform,
    ordinal,
    randint,
    uniform,
)

DOMAINS = {
    "u": uniform(-1.0, 2.0),
    "lu": loguniform(1e-4, 1.0),
    "ri": randint(-3, 5),
    "lri": lograndint(1, 1000),
    "c": choice(["a", 2, None, [1, 2]]),
    "o": ordinal([1, 5, 10]),
    "fr": finrange(0.0, 1.0, 5),
    "lfr": logfinrange(1, 1000, 4, cast_int=True),
}


def space() -> ConfigSpace:
    return ConfigSpace({**DOMAINS, "fixed": 3})


@pytest.mark.parametrize("name", sorted(DOMAINS))
def test_samples_lie_in_the_domain_and_are_seeded(name):
    dom = DOMAINS[name]

    def draws(seed):
        rng = np.random.default_rng(seed)
        return [dom.sample(rng) for _ in range(500)]

    samples = draws(7)
    assert all(dom.contains(v) for v in samples)
    assert draws(7) == samples and draws(8) != samples
    assert len({json.dumps(v) for v in samples}) >= 3


def test_integers_cover_their_bounds_uniformly():
    rng = np.random.default_rng(0)
    counts = np.bincount([randint(-3, 5).sample(rng) + 3 for _ in range(9000)], minlength=9)
    assert len(counts) == 9 and counts.min() > 800 and counts.max() < 1200


def test_log_domains_sample_log_uniformly():
    rng = np.random.default_rng(0)
    values = np.array([loguniform(1e-4, 1.0).sample(rng) for _ in range(4000)])
    assert np.median(values) == pytest.approx(1e-2, rel=0.2)  # the geometric midpoint
    assert np.mean(values < 1e-3) == pytest.approx(0.25, abs=0.03)
    assert loguniform(1e-4, 1.0).encode(1e-2) == [pytest.approx(0.5)]
    ints = np.array([lograndint(1, 1000).sample(rng) for _ in range(4000)])
    assert np.mean(ints <= 31) == pytest.approx(0.5, abs=0.05)


def test_encode_decode_round_trip_for_every_domain():
    sp = space()
    rng = np.random.default_rng(1)
    for _ in range(300):
        config = sp.sample(rng)
        x = sp.encode(config)
        assert x.shape == (sp.ndim,) and np.all((x >= 0) & (x <= 1))
        back = sp.decode(x)
        for name, value in config.items():
            if isinstance(value, float):
                assert back[name] == pytest.approx(value, rel=1e-9)
            else:
                assert back[name] == value
    assert sp.encode_many([]).shape == (0, sp.ndim)


def test_one_hot_encoding_of_choices():
    sp = space()
    assert sp.ndim == 1 + 1 + 1 + 1 + 4 + 1 + 1 + 1  # a choice takes one column per category
    (start, end), = sp.categorical_slices()
    config = {**sp.sample(np.random.default_rng(0)), "c": None}
    assert list(sp.encode(config)[start:end]) == [0.0, 0.0, 1.0, 0.0]
    assert DOMAINS["c"].decode([0.1, 0.7, 0.2, 0.0]) == 2  # the largest coordinate wins
    assert DOMAINS["o"].encode(5) == [0.5]  # an ordinal is one coordinate, in order


@pytest.mark.parametrize("config, field", [
    ({"u": 0.0}, "config.lu: missing"),
    ({"u": 3.0}, "config.u"),
    ({"ri": 1.5}, "config.ri"),
    ({"ri": True}, "config.ri"),
    ({"c": "b"}, "config.c"),
    ({"fr": 0.3}, "config.fr"),
    ({"lfr": 50}, "config.lfr"),
    ({"other": 1}, "unknown hyperparameters \\['other'\\]"),
])
def test_validate_names_the_bad_hyperparameter(config, field):
    sp = space()
    good = sp.sample(np.random.default_rng(0))
    sp.validate(good)
    bad = {**good, **config}
    if field.endswith("missing"):
        del bad["lu"]
    with pytest.raises(ConfigSpaceError, match=field):
        sp.validate(bad)


def test_json_round_trip():
    sp = space()
    text = json.dumps(sp.to_json())
    again = ConfigSpace.from_json(json.loads(text))
    assert again == sp
    assert again.fixed == {"fixed": 3} and again.names == sp.names
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert [sp.sample(rng_a) for _ in range(5)] == [again.sample(rng_b) for _ in range(5)]
    assert json.loads(text)["lu"] == {"type": "loguniform", "lower": 1e-4, "upper": 1.0}


@pytest.mark.parametrize("data, message", [
    ({"type": "normal", "lower": 0, "upper": 1}, "config_space.x: unknown domain type 'normal'"),
    ({"type": "uniform", "lower": 0}, "config_space.x: domain 'uniform' is missing upper"),
    ({"type": "uniform", "lower": 0, "upper": 1, "step": 2}, "unknown keys \\['step'\\]"),
    ({"type": "uniform", "lower": 2, "upper": 1}, "config_space.x: lower bound 2"),
    ({"type": "randint", "lower": 5, "upper": 1}, "config_space.x: lower bound 5"),
    ({"type": "randint", "lower": 0.5, "upper": 1}, "config_space.x: 'lower' must be an integer"),
    ({"type": "loguniform", "lower": 0, "upper": 1}, "config_space.x: a log domain needs lower > 0"),
    ({"type": "uniform", "lower": "a", "upper": 1}, "config_space.x: 'lower' must be a finite"),
    ({"type": "uniform", "lower": 0, "upper": math.inf}, "'upper' must be a finite"),
    ({"type": "choice", "categories": []}, "config_space.x: 'categories' is empty"),
    ({"type": "choice", "categories": "abc"}, "'categories' must be a list"),
    ({"type": "choice", "categories": [1, 1]}, "duplicates"),
    ({"type": "finrange", "lower": 0, "upper": 1, "size": 0}, "'size' must be a positive"),
])
def test_bad_domains_name_the_field(data, message):
    with pytest.raises(ConfigSpaceError, match=message):
        ConfigSpace({"x": data})


def test_bad_spaces():
    with pytest.raises(ConfigSpaceError, match="config_space: must be a mapping"):
        ConfigSpace([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigSpaceError, match="non-empty strings"):
        ConfigSpace({"": uniform(0, 1)})
    with pytest.raises(ConfigSpaceError, match="unknown domain type"):
        domain_from_json("f", {"lower": 0})


def test_grid():
    sp = ConfigSpace({"lr": loguniform(1e-3, 1e-1), "n": randint(1, 3), "act": choice(["a", "b"]),
                      "o": ordinal(["s", "m", "l"]), "fixed": 3})
    grid = sp.grid(3)
    assert len(grid) == 3 * 3 * 2 * 3
    assert sorted({g["lr"] for g in grid}) == pytest.approx([1e-3, 1e-2, 1e-1])
    assert min(g["lr"] for g in grid) == 1e-3 and max(g["lr"] for g in grid) == 1e-1  # exact
    assert {g["n"] for g in grid} == {1, 2, 3} and {g["act"] for g in grid} == {"a", "b"}
    assert {g["o"] for g in grid} == {"s", "m", "l"}  # finite domains: every value
    assert all(g["fixed"] == 3 for g in grid)
    assert len({json.dumps(g, sort_keys=True) for g in grid}) == len(grid)
    assert randint(1, 3).grid(10) == [1, 2, 3]  # no duplicates when the grid is finer
    assert len(ConfigSpace({"x": uniform(0, 1)}).grid(1)) == 1
    with pytest.raises(ConfigSpaceError, match="num_points"):
        sp.grid(0)


def test_cast_brings_values_to_their_domains():
    sp = space()
    cast = sp.cast({"u": "0.5", "ri": "2", "c": "2", "fr": 0.2600001, "lfr": 99.0})
    assert cast == {"u": 0.5, "ri": 2, "c": 2, "fr": 0.25, "lfr": 100}


def test_domain_classes_and_equality():
    assert isinstance(uniform(0, 1), Float) and isinstance(randint(0, 1), Integer)
    assert isinstance(ordinal([1, 2]), Categorical)
    assert uniform(0, 1) == uniform(0.0, 1.0) and uniform(0, 1) != loguniform(0.1, 1)
    assert len({uniform(0, 1), uniform(0, 1)}) == 1
