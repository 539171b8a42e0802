"""Overhead of trials on a Dask cluster: tunesmith's `dask` backend vs Ray Tune on a Ray runtime.

A real `dask scheduler` and 4 single-thread `dask worker` processes on 127.0.0.1; 100 trivial
trials (random search; each reports 10 times and returns) through the Prefect `tune` flow with
MLflow on SQLite, as a Python function and as a script. In the same run, Ray Tune 2.60 (its own
venv, `benchmarks/_peers.py`) with a local Ray runtime limited to 4 CPUs, the same function, the
same number of trials at once, `reuse_actors=True`. Then, for ours only, 1,000 function trials
over 8 workers (how the overhead grows with trials and workers).

Per trial = tuning wall time / trials, each side once it is up: ours from the first trial's start
to the end on the tuner's clock (the Dask cluster's start, Prefect's server, MLflow's set-up
printed apart), Ray's `Tuner.fit()` (`ray.init()` printed apart); trials/minute from the same
time. With their start-ups (the Dask cluster or `ray.init()`, then one call) both are printed
too, and their ratio.

    python benchmarks/dask_overhead.py [--trials 100] [--workers 4] [--large-trials 1000]
        [--large-workers 8] [--quick] [--ray-python PATH] [--skip-peers]

`--quick` (20 trials, no 1,000-trial run) checks that it works in about a minute. The last line is
`overhead_ratio_vs_raytune_cluster=<ours (function trials) / Ray Tune's, per trial>` (target:
<= 0.5).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests" / "backends"):  # the cluster helper of the tests
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchmarks._overhead import (  # noqa: E402 - after the path set-up
    OBJECTIVE,
    SCRIPT,
    Timing,
    figures,
    quiet_state,
    run_ray,
    run_tune,
)


def run_cluster(folder: Path, trials: int, workers: int,
                kinds: tuple[str, ...]) -> tuple[dict[str, Timing], float]:
    """Each kind of trial through the tune flow on a fresh cluster of `workers` workers; and
    the seconds the cluster took to start."""
    from dask_cluster import start_cluster

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "objective.py").write_text(OBJECTIVE)
    (folder / "train.py").write_text(SCRIPT)
    entry = {"function": f"{folder / 'objective.py'}:objective", "script": str(folder / "train.py")}
    started = time.perf_counter()
    cluster = start_cluster(folder / f"cluster-{workers}",
                            {f"w{i}": 0 for i in range(1, workers + 1)}, nthreads=1)
    cluster_start = time.perf_counter() - started
    print(f"dask cluster: scheduler and {workers} single-thread workers up in "
          f"{cluster_start:.1f} s")
    out = {}
    try:
        for kind in kinds:
            timing = run_tune(entry[kind], folder, trials, workers, f"{kind}-{trials}-{workers}",
                              backend="dask",
                              backend_options={"address": cluster.address, "poll_interval": 0.05})
            print(f"tunesmith dask ({kind} trials, tune flow): {timing.total:.2f} s in all, "
                  f"{timing.total - timing.tuning:.2f} s of it start-up, tracking and shutdown; "
                  f"{timing.total / trials:.3f} s per trial with them")
            figures(f"tunesmith dask {kind} trials, {workers} workers (tuning phase)", trials,
                    timing.tuning)
            out[kind] = timing
    finally:
        cluster.stop()
    return out, cluster_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--large-trials", type=int, default=1000, help="0: skip")
    parser.add_argument("--large-workers", type=int, default=8)
    parser.add_argument("--quick", action="store_true",
                        help="20 trials and no large run: checks that it works")
    parser.add_argument("--ray-python", type=Path, help="python of a venv with ray[tune]==2.60")
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.large_trials = 20, 0
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with quiet_state("dask-overhead"), tempfile.TemporaryDirectory(prefix="dask-overhead-") as tmp:
        folder = Path(tmp)
        ours, cluster_start = run_cluster(folder / "ours", args.trials, args.workers, ("function", "script"))
        if args.large_trials:
            run_cluster(folder / "large", args.large_trials, args.large_workers, ("function",))
        if args.skip_peers:
            return
        from benchmarks._peers import ensure_ray_python

        python = args.ray_python or ensure_ray_python()
        theirs = run_ray(python, folder / "ray", args.trials, args.workers)
        ray_per_trial = figures(f"ray tune 2.60 function trainable, {args.workers} CPUs "
                                "(Tuner.fit)", args.trials, theirs.tuning)
        ours_per_trial = ours["function"].tuning / args.trials
        ours_total = cluster_start + ours["function"].total
        print(f"with start-ups (the cluster or ray.init, then one call): ours {ours_total:.2f} s, "
              f"Ray Tune {theirs.total:.2f} s, ratio {ours_total / theirs.total:.3f}")
    print(f"overhead_ratio_vs_raytune_cluster={ours_per_trial / ray_per_trial:.3f}")


if __name__ == "__main__":
    main()
