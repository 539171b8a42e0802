"""When is a model-based or evolutionary searcher worth it over random search?

Two synthetic problems with known optima, each searcher proposing one config at a time (the
searcher alone, no tuner: this measures proposals, not scheduling), random search being the
reference measured in the same run:

* `smooth`: a 4-d bowl with ripples over [0, 1]^4 (the kind of space GP-BO and TPE model well);
* `categorical`: a NAS-Bench-like space, one categorical of 300 operations whose values come from
  a fixed random table (nothing shared between categories), plus a learning rate that adds a
  smooth log-scale term.

Printed: median simple regret (best value found - optimum) over seeds at each budget, per
searcher, and the ratio to random search; the last line is
`bo_vs_random_regret_ratio_categorical_<largest budget>=<bo median / random median>`.

    python benchmarks/method_choice.py [--seeds 3] [--budgets 20 64 150]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hpo_core.searchers.registry import build_searcher  # noqa: E402
from hpo_core.space import ConfigSpace, choice, loguniform, uniform  # noqa: E402

SEARCHERS = {
    "random": ("random", {}),
    "bo": ("gp", {}),
    "tpe": ("kde", {}),
    "rea": ("rea", {}),
    "rea_p10": ("rea", {"population_size": 10, "sample_size": 3}),
}

CENTER = np.linspace(0.25, 0.7, 4)
NUM_OPS = 300
SMOOTH_SPACE = ConfigSpace({f"x{i}": uniform(0.0, 1.0) for i in range(4)})
OPS = [f"op{i:04d}" for i in range(NUM_OPS)]
TABLE = dict(zip(OPS, np.random.default_rng(12345).random(NUM_OPS), strict=True))
CATEGORICAL_SPACE = ConfigSpace({"op": choice(OPS), "lr": loguniform(1e-4, 1e-1)})


def smooth(config: dict[str, Any]) -> float:
    x = np.array([config[f"x{i}"] for i in range(4)])
    return float(np.sum((x - CENTER) ** 2) + 0.1 * np.sum(np.sin(6 * x)))


def categorical(config: dict[str, Any]) -> float:
    return float(TABLE[config["op"]] + 0.1 * (np.log10(config["lr"]) + 2.0) ** 2)


def minimum(problem: str) -> float:
    if problem == "categorical":
        return float(min(TABLE.values()))
    from scipy.optimize import minimize

    def at(x: np.ndarray) -> float:
        return smooth({f"x{i}": v for i, v in enumerate(x)})

    starts = np.random.default_rng(0).random((20, 4))
    return float(min(minimize(at, s, bounds=[(0, 1)] * 4).fun for s in starts))


PROBLEMS = {"smooth": (SMOOTH_SPACE, smooth), "categorical": (CATEGORICAL_SPACE, categorical)}


def trajectory(problem: str, name: str, seed: int, budget: int) -> list[float]:
    """The best value after each of `budget` proposals."""
    space, f = PROBLEMS[problem]
    registry_name, options = SEARCHERS[name]
    searcher = build_searcher(registry_name, space, seed, options)
    best, out = float("inf"), []
    for i in range(budget):
        config = searcher.suggest(i)
        if config is None:
            break
        searcher.on_trial_start(i, config)
        value = f(config)
        searcher.on_result(i, config, value)
        searcher.on_trial_end(i)
        best = min(best, value)
        out.append(best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 64, 150])
    args = parser.parse_args()
    budgets = sorted(args.budgets)
    ratio = float("nan")
    for problem in PROBLEMS:
        optimum = minimum(problem)
        print(f"{problem}: median regret over {args.seeds} seeds (ratio to random)")
        print(f"{'searcher':>9} " + " ".join(f"{'@' + str(b):>16}" for b in budgets) + "  wall_s")
        medians: dict[str, list[float]] = {}
        for name in SEARCHERS:
            start = time.perf_counter()
            runs = [trajectory(problem, name, seed, budgets[-1]) for seed in range(args.seeds)]
            wall = time.perf_counter() - start
            medians[name] = [statistics.median(r[min(b, len(r)) - 1] - optimum for r in runs)
                             for b in budgets]
            cells = " ".join(
                f"{m:>8.4f} ({m / medians['random'][i] if medians['random'][i] else 0:>5.2f})"
                for i, m in enumerate(medians[name]))
            print(f"{name:>9} {cells}  {wall:6.1f}", flush=True)
        if problem == "categorical":
            ratio = medians["bo"][-1] / medians["random"][-1]
    print(f"bo_vs_random_regret_ratio_categorical_{budgets[-1]}={ratio:.2f}")


if __name__ == "__main__":
    main()
