"""MO-ASHA scaling: wall time of multi-objective methods as the simulated budget grows.

The experiment: two objectives, validation cross-entropy and elapsed training time (both
minimized), on the bundled LCBench blood-transfusion table (1-nearest-neighbour lookups over
the continuous space), 4 workers, the simulated backend, with an experiment store (results.parquet and state.json
written, as in a real experiment). `moasha` (grace period 1,
reduction factor 3, max_t = the last epoch) and `mo_rea` (every trial to its last epoch), the
peer being `mo_rea` in the same run: its cost per decision does not depend on the number of
trials, so the ratio shows whether MO-ASHA's does. For reference, `asha` on the first objective
alone runs the same way: it shows what the tuner, the simulated backend and the store cost for
that many trials (MO-ASHA starts ~25x as many trials as MO-REA in the same budget).
Each run is repeated (`--repeats`, the methods taking turns) and the smallest wall time is kept
(the machine is shared).

Printed: wall seconds, reports and trials per method and budget, then as the last line
`moasha_wall_ratio_vs_morea_3600=<moasha wall / mo_rea wall at 3600 simulated s>`.

    python benchmarks/mo_scaling.py [--budgets 600 1800 3600] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flows.experiment import assemble  # noqa: E402
from hpo_core.spec import ExperimentSpec  # noqa: E402

NAME, TASK = "lcbench", "blood-transfusion-service-center"
METRICS = ["Train/val_cross_entropy", "elapsed_time"]


def run(method: str, budget: float, seed: int, workers: int) -> dict[str, float]:
    """One run of `method` for `budget` simulated seconds; wall seconds of `tuner.run()`."""
    metrics, modes = (METRICS, ["min", "min"]) if method != "asha" else (METRICS[0], "min")
    # moasha, asha: resource_attr, max_t and grace_period come from the blackbox
    options = {"reduction_factor": 3} if method in ("moasha", "asha") else {}
    with tempfile.TemporaryDirectory() as root:
        spec = ExperimentSpec.from_dict({
            "name": f"{method}-{budget:.0f}", "metric": metrics, "mode": modes,
            "scheduler": method, "scheduler_options": options, "backend": "simulated",
            "backend_options": {"blackbox": NAME, "task": TASK, "objectives": METRICS},
            "stop": {"max_time": budget}, "n_workers": workers, "seed": seed,
            "results_root": root})
        tuner = assemble(spec).tuner()
        start, cpu = time.perf_counter(), time.process_time()
        tuner.run()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"wall_s": wall, "cpu_s": cpu, "reports": tuner.status.num_results,
            "trials": tuner.status.num_trials_started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[600.0, 1800.0, 3600.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"{args.workers} workers, LCBench {TASK}, objectives {METRICS}, seed {args.seed}")
    print(f"{'method':>7} {'sim_s':>6} {'wall_s':>7} {'cpu_s':>6} {'reports':>8} {'trials':>7}")
    run("mo_rea", 60, args.seed, args.workers)  # imports and first-use costs, not timed
    walls: dict[tuple[str, float], float] = {}
    methods = ("moasha", "mo_rea", "asha")
    for budget in args.budgets:
        # the methods take turns, so a slower stretch of the shared machine meets each of them
        runs: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for method in methods:
                runs[method].append(run(method, budget, args.seed, args.workers))
        for method in methods:
            r = min(runs[method], key=lambda r: r["wall_s"])
            walls[method, budget] = r["wall_s"]
            print(f"{method:>7} {budget:>6.0f} {r['wall_s']:>7.2f} {r['cpu_s']:>6.2f} "
                  f"{r['reports']:>8} {r['trials']:>7}", flush=True)
    last = args.budgets[-1]
    print(f"moasha_wall_ratio_vs_morea_{last:.0f}="
          f"{walls['moasha', last] / walls['mo_rea', last]:.2f}")


if __name__ == "__main__":
    main()
