"""Syne Tune's side of `benchmarks/quality.py`; runs inside the peer venv (`_peers.py`).

Usage: `<peer python> _quality_peer.py REQUEST.json RESULT.json`. The request names the repo
root (for the blackbox files and tunesmith's nearest-neighbour lookup, so both tools map a config
to the same table row), the Syne Tune methods, metrics, seeds, budget, workers and tick. The
result holds, per run, the (simulated time, value) of the reports within the budget that improved
on the best value so far.

Setup: an in-memory `BlackboxTabular` (the bundled LCBench task) whose lookup of a config goes
through `backends.blackbox.NearestNeighbourSurrogate`, run by `_synetune_sim.simulate`
(`UserBlackboxBackend`, `SimulatorCallback` and Syne Tune's own `Tuner` with `sleep_time=0`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from _synetune_sim import simulate, syne_tune_space


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


def run_one(blackbox: Any, st_blackbox: Any, name: str, metric: str, mode: str, seed: int,
            budget: float, workers: int, tick: float) -> dict[str, Any]:
    run = simulate(blackbox, st_blackbox, name, metric, mode, seed, budget, workers, tick,
                   tuner_name=f"q-{name.lower()}-{seed}")
    return {"method": name, "metric": metric, "seed": seed, **run}


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
