"""Quality on a suite: tunesmith's methods against Syne Tune 0.16 on 10 YAHPO LCBench tasks.

Syne Tune's LCBench protocol: YAHPO Gym's LCBench surrogate (`yahpo-lcbench`, bundled), tasks
3945, 7593, 34539, 126025, 146212, 167104, 167168, 167184, 168330, 189909; 2 simulated hours
per run, 4 workers, metric `val_accuracy` (max), epochs 1-52 as the fidelity (grace period 1,
reduction factor 3 where a method has them). Both tools replay the same surrogate: tunesmith's
simulated backend, and Syne Tune's `UserBlackboxBackend` over a Blackbox that calls tunesmith's
`YahpoBlackbox` (`_quality_suite_peer.py`, in the peer venv of `_peers.py`).

Syne Tune's simulator, by its design, adds the real time its tuner loop and scheduler take to
the simulated clock; tunesmith's clock moves from event to event only. That real time depends on
the machine and its load, so by default the peer runs with that charge off
(`--charge-compute` turns it on) and both tools are compared on simulated time alone. Measured
at a load of 11-20 on 2 cores, its effect was small: Syne Tune's BOHB on task 3945 ran 260
trials with the charge and 295 without (ours: ~1050).

Runs go seed by seed (every method on every task with seed 0, then seed 1, ...), `--jobs`
subprocesses at a time, each a chunk of one method's runs on every task. Before a seed starts,
the script checks that it fits in what is left of `--minutes` (judged by the slowest seed so
far); only complete seeds are analysed, so every method has the same (task, seed) runs.

The analysis is `hpo_core.comparison` (the one `tunesmith compare` uses): regret normalized per
task (0 = the best any run found, 1 = the median first report), its time-average over the
budget (`area`, anytime), final regret, and the rank of each method on each (task, seed), each
with a 95% t-interval over the task x seed runs; then paired tests (our best vs Syne Tune's best,
and namesakes) over the same (task, seed) blocks: mean difference, its 95% interval, Wilcoxon.

    python benchmarks/quality_suite.py                         # full: up to 10 seeds in 60 min
    python benchmarks/quality_suite.py --minutes 10 --tasks 3945,7593 --seeds 2
    python benchmarks/quality_suite.py --from-json benchmarks/out/quality_suite/runs.json
    python benchmarks/quality_suite.py --from-json a.json b.json   # merge runs made apart

The last line is `suite_regret_ratio_vs_synetune=<mean area of our best method / mean area of
Syne Tune's best method>` (below 1: ours is better).
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BLACKBOX = "yahpo-lcbench"
TASKS = ["3945", "7593", "34539", "126025", "146212", "167104", "167168", "167184", "168330",
         "189909"]
METRIC, MODE = "val_accuracy", "max"
OURS = ["random", "asha", "asha_promotion", "hyperband", "bohb", "dehb", "mobster", "hypertune",
        "bo"]
PEERS = ["RandomSearch", "ASHA", "BOHB"]
PEER_CHOICES = ["RandomSearch", "ASHA", "BOHB", "ASHABORE", "TPE", "REA", "BORE"]
NAMESAKES = {"random": "RandomSearch", "asha": "ASHA", "bohb": "BOHB", "tpe": "TPE",
             "rea": "REA", "bore": "BORE"}


# -- one chunk of our runs (a subprocess: `quality_suite.py --worker REQUEST RESULT`) ------------
def run_ours(method: str, task: str, seed: int, budget: float, workers: int) -> dict[str, Any]:
    """One tunesmith run: the reports within the budget that improved on the best so far."""
    from flows.experiment import assemble
    from hpo_core.registry import METHODS
    from hpo_core.spec import ExperimentSpec
    from hpo_core.trial import Decision, Trial, TrialResult
    from hpo_core.tuner import TunerCallback

    times: list[float] = []
    values: list[float] = []

    class Record(TunerCallback):
        def on_trial_result(self, trial: Trial, result: TrialResult,
                            decision: Decision) -> None:
            value = result.metrics.get(METRIC)
            if result.time <= budget and value is not None and (
                    not values or float(value) > values[-1]):
                times.append(float(result.time))
                values.append(float(value))

    # single-fidelity methods see the epoch too (their searchers get it with each result)
    options = {"resource_attr": "epoch"} if "resource_attr" in METHODS[method].option_names() \
        else {}
    spec = ExperimentSpec.from_dict({
        "name": "quality-suite", "metric": METRIC, "mode": MODE, "scheduler": method,
        "scheduler_options": options, "backend": "simulated",
        "backend_options": {"blackbox": BLACKBOX, "task": task, "objectives": [METRIC]},
        "stop": {"max_time": budget}, "n_workers": workers, "seed": seed})
    started = time.perf_counter()
    # the fidelity options (max_t, grace_period) come from the blackbox
    tuner = assemble(spec).tuner([Record()], persist=False)
    result = tuner.run()
    return {"method": method, "task": task, "seed": seed, "times": times, "values": values,
            "budget": budget, "end_time": float(tuner.now()), "end_reason": result.reason,
            "num_trials": len(tuner.trials), "tool": "tunesmith",
            "seconds": time.perf_counter() - started}


def worker(request_path: str, result_path: str) -> None:
    logging.disable(logging.WARNING)
    request = json.loads(Path(request_path).read_text())
    runs = []
    for job in request["jobs"]:
        runs.append(run_ours(job["method"], job["task"], int(job["seed"]),
                             float(request["budget"]), int(request["workers"])))
        Path(result_path).write_text(json.dumps(runs))


# -- scheduling chunks -----------------------------------------------------------------------
def run_chunk(tool: str, method: str, tasks: Sequence[str], seed: int, args: argparse.Namespace,
              tmp: Path) -> list[dict[str, Any]]:
    """One method on every task with one seed, in a subprocess (ours or the peer venv)."""
    stem = f"{tool}-{method}-{tasks[0]}-s{seed}"
    request, result, log = (tmp / f"{stem}.request.json", tmp / f"{stem}.result.json",
                            tmp / f"{stem}.log")
    request.write_text(json.dumps({
        "repo": str(ROOT), "blackbox": BLACKBOX, "metric": METRIC, "mode": MODE,
        "budget": args.budget, "workers": args.workers, "tick": args.tick,
        "charge_compute": args.charge_compute,
        "jobs": [{"method": method, "task": t, "seed": seed} for t in tasks]}))
    if tool == "tunesmith":
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(request),
                   str(result)]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    else:
        from benchmarks._peers import ensure_syne_tune_python, syne_tune_env

        command = [str(ensure_syne_tune_python()),
                   str(Path(__file__).resolve().parent / "_quality_suite_peer.py"),
                   str(request), str(result)]
        env = syne_tune_env()
    with open(log, "w") as stderr:
        code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env).returncode
    if code != 0:
        raise RuntimeError(f"{stem} failed (exit {code}):\n{log.read_text()[-3000:]}")
    return json.loads(result.read_text())


def run_suite(args: argparse.Namespace, methods: list[str], peers: list[str], tasks: list[str]
              ) -> tuple[list[dict[str, Any]], list[int]]:
    """Seeds one after the other while they fit in `--minutes`; the runs of complete seeds."""
    started = time.perf_counter()
    deadline = started + 60.0 * args.minutes
    slowest = 0.0
    runs: list[dict[str, Any]] = []
    done: list[int] = []
    # the slowest chunks first, so the last cores do not wait alone
    cost = {"mobster": 9, "bo": 8, "BOHB": 7, "ASHA": 6, "RandomSearch": 5, "bohb": 4}
    size = args.chunk_tasks or len(tasks)
    groups = [tasks[i:i + size] for i in range(0, len(tasks), size)]
    chunks = sorted([("tunesmith", m, g) for m in methods for g in groups]
                    + [("SyneTune", p, g) for p in peers for g in groups],
                    key=lambda c: -cost.get(c[1], 0))
    with tempfile.TemporaryDirectory(prefix="quality-suite-") as folder, \
            ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            now = time.perf_counter()
            if done and now + slowest > deadline:
                print(f"seed {seed}: not started, the slowest seed took {slowest:.0f}s and "
                      f"{deadline - now:.0f}s are left", file=sys.stderr)
                break
            futures = [pool.submit(run_chunk, tool, m, g, seed, args, Path(folder))
                       for tool, m, g in chunks]
            for future in futures:
                runs.extend(future.result())
            took = time.perf_counter() - now
            slowest = max(slowest, took)
            done.append(seed)
            print(f"seed {seed}: {len(methods) + len(peers)} methods x {len(tasks)} tasks in {took:.0f}s "
                  f"(total {time.perf_counter() - started:.0f}s)", file=sys.stderr)
    return runs, done


# -- the report --------------------------------------------------------------------------------
def report(runs: list[dict[str, Any]], out: Path, header: str) -> None:
    from flows.comparison import paired_text, write_outputs
    from hpo_core.comparison import Run, analyse, format_table, paired_test

    fields = set(inspect.signature(Run).parameters)
    comparison = analyse([Run(**{k: v for k, v in r.items() if k in fields}) for r in runs],
                         MODE)
    write_outputs(comparison, out, header)
    overall = comparison.overall
    print(header)
    print("normalized regret (0 = best any run found on the task, 1 = the median first report);"
          " area = its time-average over the budget; rank among all methods per (task, seed);"
          " mean [95% t-interval] over task x seed runs; lower is better\n")
    print(format_table(overall))
    seconds: dict[str, list[float]] = {}
    for r in runs:
        seconds.setdefault(r["method"], []).append(r.get("seconds", 0.0))
    print("\nwall seconds per run: " + ", ".join(
        f"{m} {sum(s) / len(s):.1f}" for m, s in sorted(seconds.items(), key=lambda i: i[0])))
    ours = overall[overall.tool == "tunesmith"]
    theirs = overall[overall.tool == "SyneTune"]
    if ours.empty or theirs.empty:
        return
    best_ours, best_theirs = ours.iloc[0], theirs.iloc[0]
    print(f"\nbest by mean area: tunesmith {best_ours.method} {best_ours.area:.4f}, "
          f"Syne Tune {best_theirs.method} {best_theirs.area:.4f}")
    for figure in ("area", "final"):
        print(paired_text(paired_test(comparison, best_ours.method, best_theirs.method, figure)))
    print("\nnamesakes (tunesmith - Syne Tune, paired over task x seed):")
    for mine, peer in NAMESAKES.items():
        if mine in set(overall.method) and peer in set(overall.method):
            print("  " + paired_text(paired_test(comparison, mine, peer, "area")))
    per_task = comparison.per_task
    print("\nper task, best mean area of each tool (where Syne Tune's best is lower, we lose):")
    for task, group in per_task.groupby("task", sort=True):
        a = group[group.tool == "tunesmith"].sort_values("area").iloc[0]
        b = group[group.tool == "SyneTune"].sort_values("area").iloc[0]
        verdict = "LOSE" if b.area < a.area else "win"
        print(f"  task {task:>7s}: tunesmith {a.method:15s} {a.area:.4f}   Syne Tune "
              f"{b.method:12s} {b.area:.4f}   {verdict}")
    print(f"\ntables, plots and report: {out}")
    ratio = best_ours.area / best_theirs.area if best_theirs.area > 0 else float("inf")
    print(f"suite_regret_ratio_vs_synetune={ratio:.4f}")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        worker(argv[1], argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join(OURS), help="tunesmith methods")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="Syne Tune methods, some of " + ",".join(PEER_CHOICES))
    parser.add_argument("--seeds", type=int, default=10, help="at most this many seeds")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed, first-seed + 1, ... (to add seeds to saved runs)")
    parser.add_argument("--minutes", type=float, default=60.0,
                        help="wall-clock budget: no seed starts that would not fit")
    parser.add_argument("--budget", type=float, default=7200.0, help="simulated s per run")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tick", type=float, default=0.5,
                        help="Syne Tune simulator tick (simulated s per idle tuner loop)")
    parser.add_argument("--charge-compute", action="store_true",
                        help="Syne Tune's simulator adds its tuner's and scheduler's real time to "
                             "the simulated clock (its default; off here: see the module doc)")
    parser.add_argument("--jobs", type=int, default=2, help="subprocesses at once")
    parser.add_argument("--chunk-tasks", type=int, default=0,
                        help="tasks per subprocess (default: all; smaller balances the jobs)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "quality_suite")
    parser.add_argument("--from-json", type=Path, nargs="+", help="analyse saved runs")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = [json.loads(path.read_text()) for path in args.from_json]
        runs = [r for data in saved for r in (data["runs"] if isinstance(data, dict) else data)]
        seeds = sorted({r["seed"] for r in runs})
        tasks = sorted({r["task"] for r in runs})
    else:
        from hpo_core.registry import METHODS

        methods = [m for m in args.methods.split(",") if m]
        peers = [p for p in args.peers.split(",") if p]
        tasks = [t for t in args.tasks.split(",") if t]
        if bad := [m for m in methods if m not in METHODS]:
            parser.error(f"--methods: unknown {bad}")
        if bad := [p for p in peers if p not in PEER_CHOICES]:
            parser.error(f"--peers: unknown {bad}; expected some of {PEER_CHOICES}")
        if bad := [t for t in tasks if t not in TASKS]:
            parser.error(f"--tasks: {bad} are not among the suite's tasks {TASKS}")
        runs, seeds = run_suite(args, methods, peers, tasks)
        if not seeds:
            parser.error("no seed finished within --minutes")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "runs.json").write_text(json.dumps({"runs": runs}))
    header = (f"YAHPO LCBench ({BLACKBOX}), {len(tasks)} tasks x {len(seeds)} seeds, "
              f"{args.workers} workers, {args.budget:g} simulated s per run, {METRIC} ({MODE})")
    report(runs, args.out, header)


if __name__ == "__main__":
    main()
