"""Overhead of running real trials as local processes: tunesmith vs Syne Tune's LocalBackend.

100 trials (random search, FIFO) of a script that reports 10 times and exits at once, 4 workers.
Each side's script uses its own reporter, as its users' scripts do: ours imports
`hpo_core.report` (stdlib only, milliseconds), Syne Tune's imports `syne_tune.Reporter` (about
0.45 s), each run by its own venv's interpreter. With `--same-script`, both sides run one
stdlib-only script (it prints `[tune-metric]:` lines, which both parse) with one interpreter
(the base Python of this venv), so the figures compare the backends and tuner loops alone.

Overhead per trial = tuning wall time x workers / trials: the script itself does no work, so all
of it is process start, reporting, and the tuner's reaction. Ours runs through the Prefect `tune`
flow (flows/tune.py; its one-off start-up is printed apart) or, with `--bare`, the bare tuner.
Syne Tune 0.16 runs in the peer venv (`benchmarks/_peers.py`) with `sleep_time=0.05`.

    python benchmarks/local_overhead.py [--trials 100] [--workers 4] [--bare] [--same-script]
                                        [--skip-synetune]

The last line is `overhead_ratio_vs_synetune=<ours/theirs>` (target: at most 0.5).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Syne Tune needs the st_worker_timestamp its Reporter adds.
PLAIN_SCRIPT = """\
import argparse, json, time
parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, default=0.5)
args, _ = parser.parse_known_args()
for epoch in range(1, 11):
    metrics = {"epoch": epoch, "loss": (args.x - 0.3) ** 2 + 1 / epoch,
               "st_worker_timestamp": time.time()}
    print("[tune-metric]: " + json.dumps(metrics), flush=True)
"""

OUR_SCRIPT = """\
from hpo_core.report import get_config, report
x = get_config()["x"]
for epoch in range(1, 11):
    report(epoch=epoch, loss=(x - 0.3) ** 2 + 1 / epoch)
"""

SYNE_TUNE_SCRIPT = """\
import argparse
from syne_tune import Reporter
parser = argparse.ArgumentParser()
parser.add_argument("--x", type=float, default=0.5)
args, _ = parser.parse_known_args()
report = Reporter()
for epoch in range(1, 11):
    report(epoch=epoch, loss=(args.x - 0.3) ** 2 + 1 / epoch)
"""

SYNE_TUNE_DRIVER = """\
import json, logging, sys, time
logging.disable(logging.WARNING)
from syne_tune import StoppingCriterion, Tuner
from syne_tune.backend import LocalBackend
from syne_tune.config_space import uniform
from syne_tune.optimizer.baselines import RandomSearch

entry_point, n_trials, n_workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
binary = sys.argv[4] if len(sys.argv) > 4 else None
scheduler = RandomSearch({"x": uniform(0.0, 1.0)}, metrics=["loss"], do_minimize=True,
                         random_seed=0)
tuner = Tuner(trial_backend=LocalBackend(entry_point=entry_point, binary=binary),
              scheduler=scheduler,
              stop_criterion=StoppingCriterion(max_num_trials_completed=n_trials - 1),
              n_workers=n_workers, sleep_time=0.05, save_tuner=False,
              print_update_interval=3600, results_update_interval=3600)
start = time.perf_counter()
tuner.run()
wall = time.perf_counter() - start
status = tuner.tuning_status
print(json.dumps({"wall": wall, "completed": status.num_trials_completed,
                  "results": int(status.overall_metric_statistics.count)}))
"""


def figures(label: str, trials: int, wall: float, workers: int) -> float:
    overhead = wall * workers / trials
    print(f"{label}: {trials} trials in {wall:.2f} s -> {trials / wall * 60:.0f} trials/min, "
          f"overhead {overhead:.3f} s per trial ({workers} workers)")
    return overhead


def trial_python(native: bool) -> str | None:
    """The interpreter of both sides' trials with `--same-script` (None: each side's own)."""
    return None if native else getattr(sys, "_base_executable", sys.executable)


def run_ours(folder: Path, trials: int, workers: int, bare: bool, native: bool) -> float:
    from hpo_core.spec import ExperimentSpec
    from hpo_core.store import load_experiment

    script = folder / "ours.py"
    script.write_text(OUR_SCRIPT if native else PLAIN_SCRIPT)
    spec = ExperimentSpec(
        name="local-overhead", metric="loss", mode="min",
        config_space={"x": {"type": "uniform", "lower": 0.0, "upper": 1.0}},
        scheduler="random", backend="local",
        backend_options={"entry_point": str(script), "gpus": None, "python": trial_python(native)},
        stop={"max_trials_started": trials}, n_workers=workers, seed=0,
        results_root=str(folder / "experiments"),
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
    )
    started = time.perf_counter()
    if bare:
        from flows.experiment import build_tuner

        build_tuner(spec).run()
        how = "bare tuner"
    else:
        from flows.tune import run_tune

        run_tune(spec)
        how = "tune flow"
    total = time.perf_counter() - started
    experiment = load_experiment(spec.experiment_path)
    first_start = min(t["start_time"] for t in experiment.state["trials"].values())
    tuning = float(experiment.state["time"]) - first_start  # tuner's clock: first start to end
    statuses = [t["status"] for t in experiment.state["trials"].values()]
    done = statuses.count("completed")
    assert done == trials and len(experiment.results) == 10 * trials, (done, statuses)
    if not bare:
        print(f"tunesmith ({how}): {total:.2f} s in all, of which {total - tuning:.2f} s flow "
              "start-up, tracking and shutdown (once per experiment)")
    return figures(f"tunesmith LocalBackend ({how}, tuning phase)", done, tuning, workers)


def run_syne_tune(folder: Path, trials: int, workers: int, native: bool) -> float:
    from benchmarks._peers import ensure_syne_tune_python, syne_tune_env

    python = ensure_syne_tune_python()
    script = folder / "theirs.py"
    script.write_text(SYNE_TUNE_SCRIPT if native else PLAIN_SCRIPT)
    driver = folder / "syne_tune_driver.py"
    driver.write_text(SYNE_TUNE_DRIVER)
    env = syne_tune_env()
    env["SYNETUNE_FOLDER"] = str(folder / "synetune")
    command = [str(python), str(driver), str(script), str(trials), str(workers)]
    python_for_trials = trial_python(native)
    if python_for_trials:
        command.append(python_for_trials)
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=folder,
                               check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"Syne Tune run failed:\n{completed.stderr[-3000:]}")
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    return figures("syne-tune 0.16 LocalBackend (sleep_time=0.05)", int(out["completed"]),
                   out["wall"], workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--bare", action="store_true", help="the bare tuner instead of the flow")
    parser.add_argument("--same-script", action="store_true",
                        help="both sides run one stdlib-only script with one interpreter")
    parser.add_argument("--skip-synetune", action="store_true")
    args = parser.parse_args()
    bare = args.bare
    if not bare:
        try:
            from benchmarks._flow_setup import prefect_for_flows

            prefect_for_flows()
            import flows.tune  # noqa: F401
        except ImportError as err:
            print(f"flows.tune is not available ({err}); running the bare tuner")
            bare = True
    with tempfile.TemporaryDirectory(prefix="local-overhead-") as tmp:
        folder = Path(tmp)
        ours = run_ours(folder, args.trials, args.workers, bare, not args.same_script)
        if args.skip_synetune:
            return
        theirs = run_syne_tune(folder, args.trials, args.workers, not args.same_script)
    print(f"overhead_ratio_vs_synetune={ours / theirs:.3f}")


if __name__ == "__main__":
    main()
