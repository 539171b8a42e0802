"""Overhead of trials on a Dask cluster: tunesmith's `dask` backend vs Ray Tune on a Ray runtime.

A real `dask scheduler` and 4 single-thread `dask worker` processes on 127.0.0.1; 100 trivial
trials (random search; each reports 10 times and returns) through the Prefect `tune` flow with
MLflow on SQLite, as a Python function and as a script. In the same run, Ray Tune 2.60 (its own
venv, `benchmarks/_peers.py`) with a local Ray runtime limited to 4 CPUs, the same function,
`reuse_actors=True`. Then, for ours only, 1,000 function trials over 8 workers (how the
overhead grows with trials and workers).

Per trial = tuning wall time / trials (from the first trial's start to the end, on the tuner's
clock; Ray: `Tuner.fit()`), as in `function_overhead.py`; trials/minute from the same time.

    python benchmarks/dask_overhead.py [--trials 100] [--workers 4] [--large-trials 1000]
        [--large-workers 8] [--ray-python PATH] [--skip-peers]

The last line is `overhead_ratio_vs_raytune_cluster=<ours (function trials) / Ray Tune's, per
trial>` (target: <= 0.5).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests" / "backends"):  # the cluster helper of the tests
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

OBJECTIVE = """\
from tunesmith import report


def objective(config):
    for epoch in range(1, 11):
        report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch)
"""

SCRIPT = """\
from hpo_core.report import get_config, report

config = get_config()
for epoch in range(1, 11):
    report(epoch=epoch, loss=(config["x"] - 0.3) ** 2 + 1 / epoch)
"""


def figures(label: str, trials: int, wall: float) -> float:
    per_trial = wall / trials
    print(f"{label}: {trials} trials in {wall:.2f} s -> {per_trial:.3f} s per trial, "
          f"{60 * trials / wall:.0f} trials/minute")
    return per_trial


def run_ours(folder: Path, address: str, entry_point: str, trials: int, workers: int,
             name: str) -> tuple[float, float]:
    """(tuning seconds, whole call seconds) of one experiment through the tune flow."""
    from tunesmith import tune, uniform

    started = time.perf_counter()
    result = tune(entry_point, {"x": uniform(0.0, 1.0)}, metric="loss", method="random",
                  stop={"max_trials_started": trials}, n_workers=workers, backend="dask",
                  backend_options={"address": address, "poll_interval": 0.05},
                  name=name, results_root=folder / "experiments",
                  tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    total = time.perf_counter() - started
    state = result.experiment.state
    first_start = min(t["start_time"] for t in state["trials"].values())
    tuning = float(state["time"]) - first_start
    done = [t["status"] for t in state["trials"].values()].count("completed")
    assert done == trials and len(result.results) == 10 * trials, (done, len(result.results))
    return tuning, total


def run_cluster(folder: Path, trials: int, workers: int, kinds: tuple[str, ...]) -> dict:
    from dask_cluster import start_cluster

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "objective.py").write_text(OBJECTIVE)
    (folder / "train.py").write_text(SCRIPT)
    entry = {"function": f"{folder / 'objective.py'}:objective", "script": str(folder / "train.py")}
    started = time.perf_counter()
    cluster = start_cluster(folder / f"cluster-{workers}",
                            {f"w{i}": 0 for i in range(1, workers + 1)}, nthreads=1)
    print(f"dask cluster: scheduler and {workers} single-thread workers up in "
          f"{time.perf_counter() - started:.1f} s")
    out = {}
    try:
        for kind in kinds:
            tuning, total = run_ours(folder, cluster.address, entry[kind], trials, workers,
                                     f"{kind}-{trials}-{workers}")
            print(f"tunesmith dask ({kind} trials, tune flow): {total:.2f} s in all, "
                  f"{total - tuning:.2f} s of it start-up, tracking and shutdown")
            out[kind] = figures(f"tunesmith dask {kind} trials, {workers} workers (tuning phase)",
                                trials, tuning)
    finally:
        cluster.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--large-trials", type=int, default=1000, help="0: skip")
    parser.add_argument("--large-workers", type=int, default=8)
    parser.add_argument("--ray-python", type=Path, help="python of a venv with ray[tune]==2.60")
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    prefect_home = tempfile.mkdtemp(prefix="dask-overhead-prefect-")
    os.environ.setdefault("PREFECT_HOME", prefect_home)  # set before prefect is imported
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="dask-overhead-") as tmp:
        folder = Path(tmp)
        ours = run_cluster(folder / "ours", args.trials, args.workers, ("function", "script"))
        if args.large_trials:
            run_cluster(folder / "large", args.large_trials, args.large_workers, ("function",))
        if args.skip_peers:
            shutil.rmtree(prefect_home, ignore_errors=True)
            return
        from benchmarks._peers import ensure_ray_python
        from benchmarks.function_overhead import run_ray

        python = args.ray_python or ensure_ray_python()
        (folder / "ray").mkdir()
        theirs = run_ray(python, folder / "ray", args.trials, args.workers)
        print(f"ray tune: {60 / theirs:.0f} trials/minute")
    shutil.rmtree(prefect_home, ignore_errors=True)
    logging.getLogger("prefect").setLevel(logging.WARNING)  # its exit message would come last
    print(f"overhead_ratio_vs_raytune_cluster={ours['function'] / theirs:.3f}")


if __name__ == "__main__":
    main()
