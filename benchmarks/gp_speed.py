"""Time one GP-BO proposal with 200 and 1000 observations (median of several proposals).

    .venv/bin/python benchmarks/gp_speed.py [--sizes 200 1000] [--repeats 7] [--optuna]

Last line: `gp_proposal_ms_n<largest size>=<median wall ms of a tunesmith proposal>`.

The space looks like LCBench's (7 hyperparameters: log-scaled, integer and uniform ones); the
objective is a smooth function with noise. Each timed proposal follows one new observation, so
the figures include the hyperparameter refit that a real experiment pays every time. CPU time
is printed too: on a busy machine it is the steadier figure (BLAS runs single-threaded here).
`--optuna` times Optuna's GPSampler the same way, in the peer venv (`benchmarks/.peers-venv`),
installing optuna and torch there if they are missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hpo_core.searchers.gp import GPSearcher  # noqa: E402
from hpo_core.space import ConfigSpace, lograndint, loguniform, randint, uniform  # noqa: E402

SPACE = {
    "batch_size": lograndint(16, 512),
    "learning_rate": loguniform(1e-4, 1e-1),
    "momentum": uniform(0.1, 0.99),
    "weight_decay": uniform(1e-5, 0.1),
    "num_layers": randint(1, 5),
    "max_units": lograndint(64, 1024),
    "max_dropout": uniform(0.0, 1.0),
}


def objective(config: dict[str, Any], rng: np.random.Generator) -> float:
    x = ConfigSpace(SPACE).encode(config)
    centre = np.array([0.3, 0.6, 0.8, 0.1, 0.5, 0.7, 0.2])
    return float(np.sum((x - centre) ** 2 * np.arange(1, 8)) + 0.05 * rng.standard_normal())


def time_tunesmith(n: int, repeats: int, seed: int = 0) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of `repeats` proposals after `n` observations."""
    rng = np.random.default_rng(seed)
    space = ConfigSpace(SPACE)
    searcher = GPSearcher(space, seed=seed)
    for i in range(n):  # observations of random configs
        config = space.sample(rng)
        searcher.on_trial_start(i, config)
        searcher.on_result(i, config, objective(config, rng))
        searcher.on_trial_end(i)
    times, cpu_times = [], []
    for j in range(repeats):
        trial_id = n + j
        start, cpu_start = time.perf_counter(), time.process_time()
        proposal = searcher.suggest(trial_id)
        assert proposal is not None  # a GP over a continuous space always proposes
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        searcher.on_trial_start(trial_id, proposal)
        searcher.on_result(trial_id, proposal, objective(proposal, rng))
        searcher.on_trial_end(trial_id)
    return times, cpu_times


OPTUNA_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np
import optuna
warnings.filterwarnings("ignore")
optuna.logging.set_verbosity(optuna.logging.ERROR)
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
centre = np.array([0.3, 0.6, 0.8, 0.1, 0.5, 0.7, 0.2])
dists = {
    "batch_size": optuna.distributions.IntDistribution(16, 512, log=True),
    "learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    "momentum": optuna.distributions.FloatDistribution(0.1, 0.99),
    "weight_decay": optuna.distributions.FloatDistribution(1e-5, 0.1),
    "num_layers": optuna.distributions.IntDistribution(1, 5),
    "max_units": optuna.distributions.IntDistribution(64, 1024, log=True),
    "max_dropout": optuna.distributions.FloatDistribution(0.0, 1.0),
}
def unit(params):
    out = []
    for k, d in dists.items():
        lo, hi, v = d.low, d.high, params[k]
        if d.log:
            lo, hi, v = np.log(lo), np.log(hi), np.log(v)
        out.append((v - lo) / (hi - lo))
    return np.array(out)
def f(params):
    x = unit(params)
    return float(np.sum((x - centre) ** 2 * np.arange(1, 8)) + 0.05 * rng.standard_normal())
study = optuna.create_study(sampler=optuna.samplers.GPSampler(seed=0))
rs = optuna.samplers.RandomSampler(seed=0)
for _ in range(n):
    t = optuna.create_study(sampler=rs).ask(dists)
    study.add_trial(optuna.trial.create_trial(params=t.params, distributions=dists,
                                              value=f(t.params)))
times = []
for _ in range(repeats):
    start = time.perf_counter()
    trial = study.ask(dists)
    times.append(time.perf_counter() - start)
    study.tell(trial, f(trial.params))
print(json.dumps(times))
"""


def time_optuna(n: int, repeats: int) -> list[float] | str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _peers import _uv, ensure_syne_tune_python

    python = str(ensure_syne_tune_python())
    check = subprocess.run([python, "-c", "import optuna, torch"], capture_output=True)
    if check.returncode != 0:
        install = subprocess.run([*_uv(), "pip", "install", "--quiet", "--python", python,
                                  "optuna", "torch"], capture_output=True, text=True)
        if install.returncode != 0:
            return f"optuna not installable: {install.stderr.strip()[-300:]}"
    out = subprocess.run([python, "-c", OPTUNA_SCRIPT, str(n), str(repeats)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        return f"optuna failed: {out.stderr.strip()[-300:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--optuna", action="store_true", help="also time Optuna's GPSampler")
    args = parser.parse_args()
    medians = {}
    for n in args.sizes:
        times, cpu_times = time_tunesmith(n, args.repeats)
        medians[n] = statistics.median(times)
        print(f"tunesmith GPSearcher  n={n:5d}: median {1000 * statistics.median(times):7.1f} ms"
              f"  max {1000 * max(times):7.1f} ms  (CPU median "
              f"{1000 * statistics.median(cpu_times):7.1f} ms; {args.repeats} proposals)")
        if args.optuna:
            result = time_optuna(n, args.repeats)
            if isinstance(result, str):
                print(f"optuna GPSampler      n={n:5d}: {result}")
            else:
                print(f"optuna GPSampler      n={n:5d}: median "
                      f"{1000 * statistics.median(result):7.1f} ms  max {1000 * max(result):7.1f} ms")
    largest = max(medians)
    print(f"gp_proposal_ms_n{largest}={1000 * medians[largest]:.1f}")


if __name__ == "__main__":
    main()
