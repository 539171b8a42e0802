"""Syne Tune's side of `benchmarks/quality.py`; runs inside the peer venv (`_peers.py`).

Usage: `<peer python> _quality_peer.py REQUEST.json RESULT.json`. The request names the repo
root (for the blackbox files and tunesmith's nearest-neighbour lookup, so both tools map a config
to the same table row), the Syne Tune methods, metrics, seeds, budget, workers and tick. The
result holds, per run, the (simulated time, value) of the reports within the budget that improved
on the best value so far.

Setup: an in-memory `BlackboxTabular` (the bundled LCBench task) whose lookup of a config goes
through `backends.blackbox.NearestNeighbourSurrogate`, `UserBlackboxBackend`, `SimulatorCallback`
and Syne Tune's own `Tuner` with `sleep_time=0`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any


def syne_tune_space(space: Any) -> dict[str, Any]:
    """tunesmith's ConfigSpace as Syne Tune domains (the types LCBench uses)."""
    from syne_tune import config_space as cs

    makers = {"uniform": cs.uniform, "loguniform": cs.loguniform, "randint": cs.randint,
              "lograndint": cs.lograndint}
    out: dict[str, Any] = {}
    for name, domain in space.domains.items():
        spec = domain.to_json()
        if spec["type"] == "choice":
            out[name] = cs.choice(spec["categories"])
        else:
            out[name] = makers[spec["type"]](spec["lower"], spec["upper"])
    out.update(space.fixed)
    return out


def make_blackbox(blackbox: Any) -> Any:
    """A Syne Tune BlackboxTabular over the same table, looked up by nearest neighbour."""
    import numpy as np
    import pandas as pd
    from syne_tune import config_space as cs
    from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular

    from backends.blackbox import NearestNeighbourSurrogate

    lookup = NearestNeighbourSurrogate(blackbox)
    space = blackbox.config_space

    class NearestRowTabular(BlackboxTabular):
        def _objective_function(self, configuration, fidelity=None, seed=None):
            config = space.cast({k: configuration[k] for k in space.names})
            row = lookup.neighbours(config)[0]
            values = blackbox.objectives[row, seed or 0]
            if fidelity is None:
                return values
            index = list(blackbox.fidelity_values).index(next(iter(fidelity.values())))
            return dict(zip(blackbox.objective_names, values[index], strict=True))

    hyperparameters = pd.DataFrame([blackbox.config(i) for i in range(blackbox.num_configs)])
    fidelities = np.asarray(blackbox.fidelity_values)
    return NearestRowTabular(
        hyperparameters=hyperparameters[space.names],
        configuration_space=syne_tune_space(space),
        fidelity_space={blackbox.fidelity_name: cs.randint(int(fidelities[0]),
                                                            int(fidelities[-1]))},
        objectives_evaluations=np.asarray(blackbox.objectives, dtype=float),
        fidelity_values=fidelities,
        objectives_names=list(blackbox.objective_names),
    )


def make_scheduler(name: str, config_space: dict[str, Any], metric: str, minimize: bool,
                   seed: int, fidelity: str, max_t: int) -> Any:
    from syne_tune.optimizer import baselines as b

    if name == "RandomSearch":
        return b.RandomSearch(config_space, metrics=[metric], do_minimize=minimize,
                              random_seed=seed)
    single = {"TPE": b.TPE, "REA": b.REA, "BORE": b.BORE}
    if name in single:
        return single[name](config_space, metric=metric, do_minimize=minimize, random_seed=seed)
    multi = {"ASHA": b.ASHA, "BOHB": b.BOHB}
    if name in multi:
        return multi[name](config_space, metric=metric, time_attr=fidelity, max_t=max_t,
                           do_minimize=minimize, random_seed=seed)
    raise ValueError(f"methods: unknown Syne Tune method {name!r}")


def run_one(blackbox: Any, st_blackbox: Any, name: str, metric: str, mode: str, seed: int,
            budget: float, workers: int, tick: float) -> dict[str, Any]:
    import numpy as np
    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.constants import ST_TUNER_TIME

    np.random.seed(seed)  # Syne Tune's ASHA draws brackets from the global generator
    backend = UserBlackboxBackend(blackbox=st_blackbox, elapsed_time_attr=blackbox.time_attr,
                                  seed=0, tuner_sleep_time=tick)
    scheduler = make_scheduler(name, st_blackbox.configuration_space, metric, mode == "min",
                               seed, blackbox.fidelity_name, int(blackbox.fidelity_values[-1]))
    callback = SimulatorCallback()
    started = time.perf_counter()
    tuner = Tuner(trial_backend=backend, scheduler=scheduler,
                  stop_criterion=StoppingCriterion(max_wallclock_time=budget), n_workers=workers,
                  sleep_time=0, callbacks=[callback], save_tuner=False,
                  tuner_name=f"q-{name.lower()}-{seed}", print_update_interval=1e9,
                  results_update_interval=1e9)
    tuner.run()
    frame = callback.dataframe()
    frame = frame[frame[ST_TUNER_TIME] <= budget].sort_values(ST_TUNER_TIME, kind="stable")
    times, values = [], []  # the reports that improved on the best so far
    sign = 1.0 if mode == "min" else -1.0
    for t, v in zip(frame[ST_TUNER_TIME].astype(float), frame[metric].astype(float), strict=True):
        if not values or sign * v < sign * values[-1]:
            times.append(t)
            values.append(v)
    return {"method": name, "metric": metric, "seed": seed, "times": times, "values": values,
            "num_trials": int(frame["trial_id"].nunique()) if len(frame) else 0,
            "seconds": time.perf_counter() - started}


def main(request_path: str, result_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    sys.path.insert(0, request["repo"])
    logging.disable(logging.WARNING)
    from backends.blackbox import load_blackbox

    blackbox = load_blackbox(request["blackbox"], task=request["task"])
    st_blackbox = make_blackbox(blackbox)
    runs = []
    for job in request["jobs"]:
        runs.append(run_one(blackbox, st_blackbox, job["method"], job["metric"], job["mode"],
                            int(job["seed"]), float(request["budget"]), int(request["workers"]),
                            float(request["tick"])))
    Path(result_path).write_text(json.dumps(runs))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
