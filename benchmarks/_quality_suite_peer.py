"""Syne Tune's side of `benchmarks/quality_suite.py`; runs inside the peer venv (`_peers.py`).

Usage: `<peer python> _quality_suite_peer.py REQUEST.json RESULT.json`. The request names the
repo root, the YAHPO scenario, the metric and mode, budget, workers, tick and the jobs (method,
task, seed). Every job replays the same surrogate as tunesmith does: a Syne Tune `Blackbox`
whose curves come from tunesmith's `YahpoBlackbox` (the same ONNX model, the same batched call,
the same numbers), run by `_synetune_sim.simulate` (Syne Tune's `UserBlackboxBackend`,
`SimulatorCallback` and `Tuner` with `sleep_time=0`). Unless the request sets
`charge_compute`, the real time Syne Tune's tuner and scheduler take is not added to its
simulated clock (tunesmith's never is). The result holds, per run, the (simulated time, value)
of the reports within the budget that improved on the best so far, in the shape of
`hpo_core.comparison.Run`.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from _synetune_sim import simulate, syne_tune_space


def make_blackbox(ours: Any) -> Any:
    """A Syne Tune Blackbox whose curves are tunesmith's predictions for the same config."""
    import numpy as np
    from syne_tune import config_space as cs
    from syne_tune.blackbox_repository.blackbox import Blackbox

    space = ours.config_space
    fidelities = np.asarray(ours.fidelity_values)

    class YahpoCurves(Blackbox):
        def __init__(self) -> None:
            super().__init__(
                configuration_space=syne_tune_space(space),
                fidelity_space={ours.fidelity_name: cs.randint(int(fidelities[0]),
                                                               int(fidelities[-1]))},
                objectives_names=list(ours.objective_names))

        @property
        def fidelity_values(self) -> Any:
            return fidelities

        def _objective_function(self, configuration, fidelity=None, seed=None):  # noqa: ANN001, ANN202
            curve = ours.curve(space.cast({k: configuration[k] for k in space.names}))
            if fidelity is None:
                return np.asarray(curve, dtype=float)
            index = int(np.searchsorted(fidelities, next(iter(fidelity.values()))))
            return dict(zip(ours.objective_names, curve[index].tolist(), strict=True))

    return YahpoCurves()


def run_one(ours: Any, name: str, metric: str, mode: str, seed: int, budget: float,
            workers: int, tick: float) -> dict[str, Any]:
    run = simulate(ours, make_blackbox(ours), name, metric, mode, seed, budget, workers, tick,
                   tuner_name=f"qs-{name.lower()}-{seed}")
    return {"method": name, "task": str(ours.task), "seed": seed, "times": run["times"],
            "values": run["values"], "budget": budget, "end_time": budget,
            "end_reason": "max_wallclock_time reached", "tool": "SyneTune",
            "num_trials": run["num_trials"], "seconds": run["seconds"]}


def main(request_path: str, result_path: str) -> None:
    request = json.loads(Path(request_path).read_text())
    sys.path.insert(0, request["repo"])
    logging.disable(logging.WARNING)
    from backends.blackbox import load_blackbox

    if not request.get("charge_compute", False):
        from syne_tune.backend.simulator_backend.time_keeper import SimulatedTimeKeeper

        # Syne Tune's simulator adds the real time its tuner and scheduler take to the simulated
        # clock; that time depends on the machine and its load. Off by default, so both
        # simulators move from event to event only.
        SimulatedTimeKeeper.real_time_since_last_recent_exit = lambda self: 0.0
    runs = []
    for job in request["jobs"]:
        ours = load_blackbox(request["blackbox"], task=job["task"])
        runs.append(run_one(ours, job["method"], request["metric"], request["mode"],
                            int(job["seed"]), float(request["budget"]),
                            int(request["workers"]), float(request["tick"])))
        Path(result_path).write_text(json.dumps(runs))  # what is done survives a time limit


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
