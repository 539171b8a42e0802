"""Syne Tune 0.16's simulator on a tunesmith blackbox folder; runs in the peer venv.

Reads the blackbox files directly (no tunesmith import), builds an in-memory BlackboxTabular
with a 1-nearest-neighbour surrogate over the same continuous space tunesmith uses, and runs
ASHA (stopping) with UserBlackboxBackend + SimulatorCallback, sleep_time=0. Results are stored
as usual (results.csv.zip); pickling the whole tuner (`tuner.dill`, Syne Tune's default) is off
unless `--save-tuner`: that pickle grows with the experiment and, once it takes longer than the
10 s save interval, dominates the run. Prints one JSON line: reports, wall seconds of
`tuner.run()`, simulated seconds reached.

    python _simulator_synetune.py BLACKBOX_DIR --budget 10800 --seed 0 --workers 4
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def load_blackbox(path: Path):
    from sklearn.neighbors import KNeighborsRegressor
    from syne_tune import config_space as cs
    from syne_tune.blackbox_repository.blackbox_surrogate import add_surrogate
    from syne_tune.blackbox_repository.blackbox_tabular import BlackboxTabular

    meta = json.loads((path / "meta.json").read_text())
    makers = {"uniform": cs.uniform, "loguniform": cs.loguniform, "randint": cs.randint,
              "lograndint": cs.lograndint}
    space = {}
    for name, dom in meta["config_space"].items():
        if dom["type"] == "choice":
            space[name] = cs.choice(dom["categories"])
        else:
            space[name] = makers[dom["type"]](dom["lower"], dom["upper"])
    shape = tuple(meta["shape"])
    table = pq.read_table(path / "objectives.parquet")
    objectives = np.stack(
        [table.column(n).to_numpy().reshape(shape[:3]) for n in meta["objective_names"]], axis=-1
    ).astype(np.float64)
    fidelities = np.asarray(meta["fidelity_values"])
    tabular = BlackboxTabular(
        hyperparameters=pd.read_parquet(path / "configs.parquet")[list(space)],
        configuration_space=space,
        fidelity_space={meta["fidelity_name"]: cs.randint(int(fidelities[0]), int(fidelities[-1]))},
        objectives_evaluations=objectives,
        fidelity_values=fidelities,
        objectives_names=meta["objective_names"],
    )
    blackbox = add_surrogate(tabular, surrogate=KNeighborsRegressor(n_neighbors=1),
                             configuration_space=space)
    return blackbox, meta, space


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("blackbox")
    parser.add_argument("--budget", type=float, required=True, help="simulated seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--metric", default=None)
    parser.add_argument("--save-tuner", action="store_true",
                        help="Syne Tune's default: pickle the whole tuner every 10 s (slow)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    os.environ.setdefault("SYNETUNE_FOLDER", tempfile.mkdtemp(prefix="synetune-"))

    from syne_tune import StoppingCriterion, Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.optimizer.baselines import ASHA
    from syne_tune.tuner_callback import TunerCallback

    class CountReports(TunerCallback):
        reports = 0

        def on_trial_result(self, trial, status, result, decision):
            CountReports.reports += 1

    blackbox, meta, space = load_blackbox(Path(args.blackbox))
    metric = args.metric or meta["default_metric"]
    fidelities = meta["fidelity_values"]
    backend = UserBlackboxBackend(blackbox=blackbox, elapsed_time_attr=meta["time_attr"])
    scheduler = ASHA(
        config_space=space, metric=metric, do_minimize=meta["modes"][metric] == "min",
        time_attr=meta["fidelity_name"], max_t=int(fidelities[-1]),
        grace_period=int(fidelities[0]), reduction_factor=3, random_seed=args.seed,
    )
    tuner = Tuner(
        trial_backend=backend, scheduler=scheduler,
        stop_criterion=StoppingCriterion(max_wallclock_time=args.budget),
        n_workers=args.workers, sleep_time=0, callbacks=[SimulatorCallback(), CountReports()],
        tuner_name=f"simspeed-{args.seed}", save_tuner=args.save_tuner,
    )
    start = time.perf_counter()
    tuner.run()
    wall = time.perf_counter() - start
    print(json.dumps({"reports": CountReports.reports, "wall_s": wall,
                      "simulated_s": float(backend.time_keeper.time()),
                      "trials": tuner.tuning_status.num_trials_started}))


if __name__ == "__main__":
    main()
