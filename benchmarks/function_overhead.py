"""Overhead of Python-function trials: tunesmith vs Ray Tune (and Optuna, for reference).

100 trials (random search) of a function that reports 10 times and returns, 4 workers:

- tunesmith: `tunesmith.tune(...)` through the Prefect `tune` flow with MLflow on SQLite (or the
  bare tuner with `--bare`); the function runs in the function backend's worker processes.
- Ray Tune 2.60 (`ray[tune]` in its own venv, `benchmarks/.ray-venv`, see `_peers.py`): its
  function trainable with `reuse_actors=True` (its best setting), `max_concurrent_trials=4`.
- Optuna 5.0 (same venv), for reference: `study.optimize(n_jobs=4)`, in-process threads, no
  isolation; `trial.report` each epoch.

Per trial = tuning wall time / trials. Tuning time is what each tool spends on the trials once it
is up: ours from the first trial's start to the end on the tuner's clock (the flow's start-up,
MLflow and shutdown printed apart); Ray's `Tuner.fit()` (`ray.init()` printed apart); Optuna's
`optimize`. With start-up, each side's whole call is printed too.

    python benchmarks/function_overhead.py [--trials 100] [--workers 4] [--bare] [--skip-peers]

The last line is `overhead_ratio_vs_raytune=<ours / Ray Tune's, per trial>` (target: <= 0.5).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks._overhead import (  # noqa: E402 - after the path set-up
    OBJECTIVE,
    Timing,
    figures,
    quiet_state,
    run_peer,
    run_ray,
    run_tune,
)

OPTUNA_DRIVER = """\
import json, sys, time
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
n_trials, n_workers = int(sys.argv[1]), int(sys.argv[2])


def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    for epoch in range(1, 11):
        loss = (x - 0.3) ** 2 + 1 / epoch
        trial.report(loss, epoch)
    return loss


study = optuna.create_study(direction="minimize", sampler=optuna.samplers.RandomSampler(seed=0))
started = time.perf_counter()
study.optimize(objective, n_trials=n_trials, n_jobs=n_workers)
print(json.dumps({"wall": time.perf_counter() - started, "trials": len(study.trials)}))
"""


def run_ours(folder: Path, trials: int, workers: int, bare: bool, name: str = "flow",
             reuse: bool = True) -> Timing:
    """One experiment of function trials in the function backend's workers."""
    (folder / "bench_objective.py").write_text(OBJECTIVE)
    os.chdir(folder)  # the entry point module is found from the working directory
    return run_tune("bench_objective:objective", folder, trials, workers, name, flow=not bare,
                    backend_options={"gpus": None, "poll_interval": 0.05,
                                     "reuse_workers": reuse})


def run_flow(folder: Path, trials: int, workers: int, bare: bool) -> float:
    timing = run_ours(folder, trials, workers, bare)
    how = "bare tuner" if bare else "tune flow"
    print(f"tunesmith ({how}): {timing.total:.2f} s in all, of which "
          f"{timing.total - timing.tuning:.2f} s start-up, tracking and shutdown (once per "
          f"experiment); {timing.total / trials:.3f} s per trial with them")
    return figures(f"tunesmith function trials ({how}, tuning phase)", trials, timing.tuning)


def run_pool(folder: Path, trials: int, workers: int) -> None:
    """What the reused workers save: the bare tuner with and without reuse."""
    for reuse in (True, False):
        timing = run_ours(folder, trials, workers, True, f"pool-{reuse}", reuse)
        how = "workers reused" if reuse else "a fresh process per trial, started one ahead"
        figures(f"tunesmith bare tuner, {how}", trials, timing.tuning)


def run_optuna(python: Path, folder: Path, trials: int, workers: int) -> float:
    out = run_peer(python, OPTUNA_DRIVER, [str(trials), str(workers)], folder)
    return figures(f"optuna 5.0 study.optimize(n_jobs={workers}), in-process (reference)",
                   out["trials"], out["wall"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--bare", action="store_true", help="the bare tuner instead of the flow")
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    cwd = os.getcwd()
    with quiet_state("function-overhead"), \
            tempfile.TemporaryDirectory(prefix="function-overhead-") as tmp:
        folder = Path(tmp)
        for name in ("ours", "ray", "optuna"):
            (folder / name).mkdir()
        try:
            ours = run_flow(folder / "ours", args.trials, args.workers, args.bare)
            run_pool(folder / "ours", args.trials, args.workers)
        finally:
            os.chdir(cwd)
        if args.skip_peers:
            return
        from benchmarks._peers import ensure_ray_python

        python = ensure_ray_python()
        run_optuna(python, folder / "optuna", args.trials, args.workers)
        theirs = figures("ray tune 2.60 function trainable (Tuner.fit)", args.trials,
                         run_ray(python, folder / "ray", args.trials, args.workers).tuning)
    print(f"overhead_ratio_vs_raytune={ours / theirs:.3f}")


if __name__ == "__main__":
    main()
