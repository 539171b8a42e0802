"""FIFO `grid`: the tuner evaluates exactly the grid, each point once."""

from __future__ import annotations

import pytest
from sched_sim import run_simulation

from hpo_core.registry import build_scheduler
from hpo_core.space import ConfigSpace, choice, loguniform, randint


def test_grid_enumerates_exactly_the_grid():
    space = ConfigSpace({"act": choice(["relu", "tanh"]), "lr": loguniform(1e-3, 1e-1),
                         "layers": randint(1, 2), "batch": 32})
    scheduler = build_scheduler("grid", space, "loss", options={"num_points": 3})
    tuner, result, _ = run_simulation(scheduler, max_results=10_000)
    assert result.reason.startswith("no trial running")  # it ran dry: the grid is exhausted
    seen = sorted((c["act"], c["layers"], c["lr"], c["batch"])
                  for c in (t.config for t in tuner.trials.values()))
    expected = sorted((a, n, lr, 32) for a in ("relu", "tanh") for n in (1, 2)
                      for lr in (1e-3, 1e-2, 1e-1))
    assert len(seen) == len(expected) == 12
    for got, want in zip(seen, expected, strict=True):
        assert got[:2] == want[:2] and got[3] == want[3]
        assert got[2] == pytest.approx(want[2], rel=1e-9)
