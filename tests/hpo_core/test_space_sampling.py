"""Sampling a space of unconditional intervals in one draw gives the configs that drawing one
hyperparameter at a time gives (the same random numbers, in declaration order)."""

from __future__ import annotations

import numpy as np

from hpo_core.space import ConfigSpace, choice, lograndint, loguniform, randint, uniform


def test_one_draw_per_config_equals_one_draw_per_hyperparameter():
    space = ConfigSpace({"lr": loguniform(1e-5, 1.0), "units": lograndint(16, 512),
                         "dropout": uniform(0.0, 1.0), "layers": randint(1, 4), "fixed": "x"})
    assert space._unit_draws
    fast, slow = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(200):
        expected = {n: d.sample(slow) for n, d in space.domains.items()} | {"fixed": "x"}
        assert space.sample(fast) == expected
    assert fast.random() == slow.random()  # the generators stay in step
    assert not ConfigSpace({"a": uniform(0, 1), "b": choice([1, 2])})._unit_draws
