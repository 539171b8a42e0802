"""Simulator speed: tunesmith vs Syne Tune 0.16 on the same simulated experiment.

The experiment: ASHA (stopping; grace period 1, reduction factor 3, max_t = the last epoch),
4 workers, the bundled LCBench blood-transfusion table (1-nearest-neighbour lookups over the
continuous space), a simulated budget of `--budget` seconds. tunesmith runs Tuner +
SimulatedBackend + ASHA with an ExperimentStore (results.parquet and state.json written, as in
a real experiment); Syne Tune runs its simulator (in-memory BlackboxTabular with a
KNeighborsRegressor(1) surrogate, UserBlackboxBackend, SimulatorCallback, sleep_time=0) in the
peer venv (`benchmarks/_peers.py`). Both are timed around `tuner.run()`.

Printed: simulated reports per wall-clock second for each seed and the ratio, then a run of
tunesmith with `--reports` (100,000) reports, and as the last line
`speedup_vs_synetune=<median ratio over seeds>`.

    python benchmarks/simulator_speed.py [--budget 10800] [--seeds 0 1 2] [--reports 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _peers import ensure_syne_tune_python, syne_tune_env  # noqa: E402

from backends.blackbox import load_blackbox  # noqa: E402
from backends.blackbox.repository import find_blackbox  # noqa: E402
from flows.experiment import assemble  # noqa: E402
from hpo_core.spec import ExperimentSpec  # noqa: E402
from hpo_core.stopping import StoppingCriterion  # noqa: E402

NAME, TASK = "lcbench", "blood-transfusion-service-center"


def run_tunesmith(seed: int, workers: int, stop: StoppingCriterion) -> dict[str, float]:
    """One tunesmith run; wall seconds of `tuner.run()` (store writes included)."""
    blackbox = load_blackbox(NAME, TASK)
    with tempfile.TemporaryDirectory() as root:
        # the fidelity options (max_t, resource_attr, grace_period) come from the blackbox
        spec = ExperimentSpec.from_dict({
            "name": f"simspeed-{seed}", "metric": blackbox.default_metric,
            "mode": blackbox.modes[blackbox.default_metric], "scheduler": "asha",
            "scheduler_options": {"reduction_factor": 3}, "backend": "simulated",
            "backend_options": {"blackbox": NAME, "task": TASK},
            "stop": stop.to_dict(),
            "n_workers": workers, "seed": seed, "results_root": root})
        tuner = assemble(spec).tuner()
        start = time.perf_counter()
        tuner.run()
        wall = time.perf_counter() - start
    return {"reports": tuner.status.num_results, "wall_s": wall, "simulated_s": tuner.now(),
            "trials": tuner.status.num_trials_started}


def run_synetune(python: Path, seed: int, workers: int, budget: float) -> dict[str, float]:
    """One Syne Tune run in the peer venv; its last output line is a JSON summary."""
    out = subprocess.run(
        [str(python), str(HERE / "_simulator_synetune.py"), str(find_blackbox(NAME, TASK)),
         "--budget", str(budget), "--seed", str(seed), "--workers", str(workers)],
        capture_output=True, text=True, env=syne_tune_env(), check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"Syne Tune run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=10800.0, help="simulated seconds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--reports", type=int, default=100_000,
                        help="reports of the long tunesmith run (0: skip it)")
    args = parser.parse_args()

    python = ensure_syne_tune_python()
    print(f"ASHA, {args.workers} workers, LCBench {TASK}, simulated budget {args.budget:g} s")
    print(f"{'seed':>4} {'tool':>10} {'reports':>8} {'trials':>7} {'sim_s':>8} {'wall_s':>8} "
          f"{'reports/s':>10}")
    ratios = []
    for seed in args.seeds:
        ours = run_tunesmith(seed, args.workers, StoppingCriterion(max_time=args.budget))
        peer = run_synetune(python, seed, args.workers, args.budget)
        rates = {}
        for tool, r in (("tunesmith", ours), ("synetune", peer)):
            rates[tool] = r["reports"] / r["wall_s"]
            print(f"{seed:>4} {tool:>10} {r['reports']:>8} {r['trials']:>7} "
                  f"{r['simulated_s']:>8.0f} {r['wall_s']:>8.2f} {rates[tool]:>10.0f}")
        ratios.append(rates["tunesmith"] / rates["synetune"])
        print(f"{seed:>4} {'ratio':>10} {ratios[-1]:>55.1f}x")
    if args.reports:
        big = run_tunesmith(0, args.workers, StoppingCriterion(max_results=args.reports))
        print(f"tunesmith, {big['reports']} reports ({big['trials']} trials, "
              f"{big['simulated_s']:.0f} simulated s): {big['wall_s']:.2f} s wall, "
              f"{big['reports'] / big['wall_s']:.0f} reports/s")
    print(f"speedup_vs_synetune={statistics.median(ratios):.1f}")


if __name__ == "__main__":
    main()
