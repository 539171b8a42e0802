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
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUR_OBJECTIVE = """\
from tunesmith import report


def objective(config):
    for epoch in range(1, 11):
        report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch)
"""

RAY_DRIVER = """\
import json, logging, os, sys, time
n_trials, n_workers, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
started = time.perf_counter()
import ray
from ray import tune

ray.init(num_cpus=n_workers, include_dashboard=False, log_to_driver=False,
         logging_level=logging.ERROR, _temp_dir=os.path.join(folder, "ray"))
init = time.perf_counter() - started


def objective(config):
    for epoch in range(1, 11):
        tune.report({"epoch": epoch, "loss": (config["x"] - 0.3) ** 2 + 1 / epoch})


tuner = tune.Tuner(
    objective, param_space={"x": tune.uniform(0.0, 1.0)},
    tune_config=tune.TuneConfig(metric="loss", mode="min", num_samples=n_trials,
                                max_concurrent_trials=n_workers, reuse_actors=True),
    run_config=tune.RunConfig(storage_path=os.path.join(folder, "results"), verbose=0))
fit_started = time.perf_counter()
results = tuner.fit()
wall = time.perf_counter() - fit_started
reports = sum(len(r.metrics_dataframe) for r in results)
print(json.dumps({"init": init, "wall": wall, "trials": len(results),
                  "errors": results.num_errors, "reports": reports}))
ray.shutdown()
"""

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


def figures(label: str, trials: int, wall: float) -> float:
    per_trial = wall / trials
    print(f"{label}: {trials} trials in {wall:.2f} s -> {per_trial:.3f} s per trial")
    return per_trial


def run_ours(folder: Path, trials: int, workers: int, bare: bool, name: str = "flow",
             reuse: bool = True) -> tuple[float, float]:
    """(tuning seconds, whole call seconds) of one experiment."""
    (folder / "bench_objective.py").write_text(OUR_OBJECTIVE)
    from tunesmith import tune, uniform

    os.chdir(folder)  # the entry point module is found from the working directory
    started = time.perf_counter()
    result = tune("bench_objective:objective", {"x": uniform(0.0, 1.0)}, metric="loss",
                  method="random", stop={"max_trials_started": trials}, n_workers=workers,
                  backend_options={"gpus": None, "poll_interval": 0.05, "reuse_workers": reuse},
                  name=name, results_root=folder / "experiments",
                  flow=not bare, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    total = time.perf_counter() - started
    state = result.experiment.state
    first_start = min(t["start_time"] for t in state["trials"].values())
    tuning = float(state["time"]) - first_start
    done = [t["status"] for t in state["trials"].values()].count("completed")
    assert done == trials and len(result.results) == 10 * trials, (done, len(result.results))
    return tuning, total


def run_flow(folder: Path, trials: int, workers: int, bare: bool) -> float:
    tuning, total = run_ours(folder, trials, workers, bare)
    how = "bare tuner" if bare else "tune flow"
    print(f"tunesmith ({how}): {total:.2f} s in all, of which {total - tuning:.2f} s start-up, "
          f"tracking and shutdown (once per experiment); {total / trials:.3f} s per trial "
          "with them")
    return figures(f"tunesmith function trials ({how}, tuning phase)", trials, tuning)


def run_pool(folder: Path, trials: int, workers: int) -> None:
    """What the reused workers save: the bare tuner with and without reuse."""
    for reuse in (True, False):
        tuning, _ = run_ours(folder, trials, workers, True, f"pool-{reuse}", reuse)
        how = "workers reused" if reuse else "a fresh process per trial, started one ahead"
        figures(f"tunesmith bare tuner, {how}", trials, tuning)


def run_peer(python: Path, driver: str, args: list[str], folder: Path) -> dict:
    path = folder / "driver.py"
    path.write_text(driver)
    completed = subprocess.run([str(python), str(path), *args], capture_output=True, text=True,
                               cwd=folder, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"peer run failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_ray(python: Path, folder: Path, trials: int, workers: int) -> float:
    out = run_peer(python, RAY_DRIVER, [str(trials), str(workers), str(folder)], folder)
    assert out["trials"] == trials and out["errors"] == 0, out
    print(f"ray tune 2.60 (reuse_actors=True): ray.init {out['init']:.2f} s; "
          f"{(out['init'] + out['wall']) / trials:.3f} s per trial with it; "
          f"{out['reports']} reports")
    return figures("ray tune 2.60 function trainable (Tuner.fit)", trials, out["wall"])


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
    prefect_home = tempfile.mkdtemp(prefix="function-overhead-prefect-")
    os.environ.setdefault("PREFECT_HOME", prefect_home)  # set before prefect is imported
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="function-overhead-") as tmp:
        folder = Path(tmp)
        for name in ("ours", "ray", "optuna"):
            (folder / name).mkdir()
        try:
            ours = run_flow(folder / "ours", args.trials, args.workers, args.bare)
            run_pool(folder / "ours", args.trials, args.workers)
        finally:
            os.chdir(cwd)
        if args.skip_peers:
            shutil.rmtree(prefect_home, ignore_errors=True)
            return
        from benchmarks._peers import ensure_ray_python

        python = ensure_ray_python()
        run_optuna(python, folder / "optuna", args.trials, args.workers)
        theirs = run_ray(python, folder / "ray", args.trials, args.workers)
    shutil.rmtree(prefect_home, ignore_errors=True)
    logging.getLogger("prefect").setLevel(logging.WARNING)  # its exit message would come last
    print(f"overhead_ratio_vs_raytune={ours / theirs:.3f}")


if __name__ == "__main__":
    main()
