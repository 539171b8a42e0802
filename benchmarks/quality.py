"""Quality benchmark: tunesmith's HPO methods against Syne Tune 0.16 on the same simulated task.

Every method tunes the bundled LCBench task `blood-transfusion-service-center` (2000 configs x 51
epochs, replayed by the simulated backend; configs off the table get their nearest tabulated
neighbour's curve) with 4 workers for the same simulated budget, for several seeds and two
metrics:

* `error`: validation error, 100 - Train/val_accuracy (quantized: many ties);
* `cross_entropy`: Train/val_cross_entropy (continuous).

Syne Tune's RandomSearch, ASHA, BOHB, TPE, REA and BORE run in the same session, in the peer
venv (`_peers.py`), through `_quality_peer.py`: an in-memory BlackboxTabular whose config lookup
is tunesmith's own nearest-neighbour code, UserBlackboxBackend and SimulatorCallback with a tick
of `--tick` seconds, the same budget and workers.

Regret at time t = best value reported so far (any epoch) - the best value in the table (over
all configs and epochs, so that regret is >= 0: on this task some curves dip below every
final-epoch value). Printed per method and metric: mean and median final regret, mean regret at
25/50/100% of the budget, and the anytime score: the area under the mean regret curve divided by
the budget (time-averaged mean regret). A plot of mean regret vs time with +-1 standard error
bands goes to `benchmarks/out/quality.png`; raw runs to `benchmarks/out/quality_runs.json`.

    python benchmarks/quality.py                      # the full run (10 seeds, 15 min simulated budget)
    python benchmarks/quality.py --seeds 3 --methods asha,bohb,ASHA,BOHB --budget 1800
    python benchmarks/quality.py --from-json benchmarks/out/quality_runs.json   # re-analyze
    python benchmarks/quality.py --from-json ours.json peers.json   # merge runs made apart

The last line is `best_regret_ratio_vs_synetune=<area of our best method / area of Syne Tune's
best method, on cross-entropy>` (below 1: ours is better).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BLACKBOX = ("lcbench", "blood-transfusion-service-center")
#: metric key -> (reported metric, mode, transform to the value whose regret is reported)
METRICS = {
    "error": ("Train/val_accuracy", "max"),
    "cross_entropy": ("Train/val_cross_entropy", "min"),
}
OURS = ["random", "tpe", "rea", "bo", "asha", "asha_promotion", "hyperband", "bohb", "sync_bohb",
        "mobster", "mobster_independent", "hypertune", "dehb", "pasha", "median_stopping", "pbt"]
PEERS = ["RandomSearch", "ASHA", "BOHB", "TPE", "REA", "BORE"]
#: our method -> its Syne Tune namesake
COUNTERPARTS = {"random": "RandomSearch", "asha": "ASHA", "bohb": "BOHB", "tpe": "TPE",
                "rea": "REA"}
SINGLE_FIDELITY = {"random", "tpe", "rea", "bo", "RandomSearch", "TPE", "REA", "BORE"}
#: benchmark settings beyond each method's defaults (the fidelity options are filled in)
OPTIONS: dict[str, dict[str, Any]] = {
    "pbt": {"population_size": 16, "perturbation_interval": 3},
}
GRID_POINTS = 400


# -- runs -----------------------------------------------------------------------------------------
def method_options(name: str, max_t: int) -> dict[str, Any]:
    from hpo_core.registry import METHODS

    params = METHODS[name].option_names()
    options: dict[str, Any] = {}
    if "max_t" in params:
        options["max_t"] = max_t
    if "resource_attr" in params:
        options["resource_attr"] = "epoch"
    return {**options, **OPTIONS.get(name, {})}


_BLACKBOX = None


def _blackbox() -> Any:
    global _BLACKBOX
    if _BLACKBOX is None:
        from backends.blackbox import load_blackbox

        _BLACKBOX = load_blackbox(BLACKBOX[0], task=BLACKBOX[1])
    return _BLACKBOX


def run_ours(method: str, metric_key: str, seed: int, budget: float, workers: int
             ) -> dict[str, Any]:
    """One tunesmith run: (time, value) of the reports within the budget that improved on the
    best value so far."""
    from flows.experiment import assemble
    from hpo_core.spec import ExperimentSpec
    from hpo_core.trial import Decision, Trial, TrialResult
    from hpo_core.tuner import TunerCallback

    logging.disable(logging.WARNING)
    metric, mode = METRICS[metric_key]
    blackbox = _blackbox()
    times: list[float] = []
    values: list[float] = []

    sign = 1.0 if mode == "min" else -1.0

    class Record(TunerCallback):
        """Keeps the reports that improve on the best so far (all the analysis needs)."""

        def on_trial_result(self, trial: Trial, result: TrialResult,
                            decision: Decision) -> None:
            value = result.metrics.get(metric)
            if result.time <= budget and value is not None and (
                    not values or sign * float(value) < sign * values[-1]):
                times.append(float(result.time))
                values.append(float(value))

    started = time.perf_counter()
    spec = ExperimentSpec.from_dict({
        "name": "quality", "metric": metric, "mode": mode, "scheduler": method,
        "scheduler_options": method_options(method, int(blackbox.fidelity_values[-1])),
        "backend": "simulated",
        "backend_options": {"blackbox": BLACKBOX[0], "task": BLACKBOX[1], "objectives": [metric]},
        "stop": {"max_time": budget}, "n_workers": workers, "seed": seed})
    tuner = assemble(spec).tuner([Record()], persist=False)
    tuner.run()
    return {"method": method, "metric": metric, "seed": seed, "times": times, "values": values,
            "num_trials": len(tuner.trials), "seconds": time.perf_counter() - started,
            "peer": False}


def run_peers(jobs: list[dict[str, Any]], budget: float, workers: int, tick: float,
              processes: int) -> list[dict[str, Any]]:
    """Syne Tune runs, `processes` peer-venv subprocesses at once."""
    from benchmarks._peers import ensure_syne_tune_python, syne_tune_env

    python = ensure_syne_tune_python()
    script = Path(__file__).resolve().parent / "_quality_peer.py"
    chunks = [jobs[i::processes] for i in range(processes) if jobs[i::processes]]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="quality-peer-") as tmp:
        procs = []
        for i, chunk in enumerate(chunks):
            request = Path(tmp) / f"request{i}.json"
            result = Path(tmp) / f"result{i}.json"
            request.write_text(json.dumps({
                "repo": str(ROOT), "blackbox": BLACKBOX[0], "task": BLACKBOX[1],
                "budget": budget, "workers": workers, "tick": tick, "jobs": chunk}))
            log = Path(tmp) / f"log{i}.txt"
            with open(log, "w") as stderr:
                proc = subprocess.Popen([str(python), str(script), str(request), str(result)],
                                        env=syne_tune_env(), stdout=subprocess.DEVNULL,
                                        stderr=stderr)
            procs.append((proc, result, log))
        for proc, result, log in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"Syne Tune runs failed (exit {proc.returncode}):\n"
                                   f"{log.read_text()[-3000:]}")
            runs.extend({**r, "peer": True} for r in json.loads(result.read_text()))
    return runs


def run_all(methods: Sequence[str], metric_keys: Sequence[str], seeds: Sequence[int],
            budget: float, workers: int, tick: float, processes: int) -> list[dict[str, Any]]:
    ours = [(m, k, s) for m in methods if m not in PEERS for k in metric_keys for s in seeds]
    peers = [{"method": m, "metric": METRICS[k][0], "mode": METRICS[k][1], "seed": s}
             for m in methods if m in PEERS for k in metric_keys for s in seeds]
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    if ours:
        with ProcessPoolExecutor(max_workers=processes) as pool:
            futures = [pool.submit(run_ours, m, k, s, budget, workers) for m, k, s in ours]
            for done, future in enumerate(as_completed(futures), start=1):
                run = future.result()
                runs.append(run)
                print(f"  [{done}/{len(ours)}] {run['method']} {run['metric']} seed {run['seed']}: "
                      f"{run['seconds']:.1f}s, {run['num_trials']} trials", file=sys.stderr)
    print(f"tunesmith runs: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    if peers:
        started = time.perf_counter()
        runs.extend(run_peers(peers, budget, workers, tick, processes))
        print(f"Syne Tune runs: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return runs


# -- analysis -------------------------------------------------------------------------------------
def reference_values() -> dict[str, float]:
    """Per metric key, the best value of the table (as an error to minimize)."""
    blackbox = _blackbox()
    out = {}
    for key, (metric, _) in METRICS.items():
        values = np.asarray(blackbox.objectives[..., blackbox.objective_index(metric)], float)
        out[key] = float(np.nanmin(to_loss(key, values)))
    return out


def to_loss(key: str, values: np.ndarray) -> np.ndarray:
    """Reported values as the quantity whose regret is measured (error for accuracy)."""
    return 100.0 - values if key == "error" else values


def regret_curve(run: dict[str, Any], key: str, reference: float, grid: np.ndarray) -> np.ndarray:
    """Regret of the best value so far at each time of `grid` (the first value before it)."""
    times = np.asarray(run["times"], float)
    if times.size == 0:
        return np.full(grid.size, np.nan)
    best = np.minimum.accumulate(to_loss(key, np.asarray(run["values"], float)))
    index = np.searchsorted(times, grid, side="right") - 1
    return best[np.clip(index, 0, None)] - reference


def summarize(runs: list[dict[str, Any]], budget: float) -> dict[tuple[str, str], dict[str, Any]]:
    reference = reference_values()
    grid = np.linspace(budget / GRID_POINTS, budget, GRID_POINTS)
    key_of = {metric: key for key, (metric, _) in METRICS.items()}
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        grouped.setdefault((run["method"], key_of[run["metric"]]), []).append(run)
    table = {}
    for (method, key), group in grouped.items():
        curves = np.array([regret_curve(r, key, reference[key], grid) for r in group])
        mean = np.nanmean(curves, axis=0)
        final = curves[:, -1]
        at = {q: float(np.nanmean(curves[:, int(q * GRID_POINTS) - 1])) for q in (0.25, 0.5, 1.0)}
        table[(method, key)] = {
            "method": method, "metric": key, "peer": group[0].get("peer", False),
            "seeds": len(group), "grid": grid, "mean_curve": mean,
            "sem_curve": np.nanstd(curves, axis=0, ddof=1) / math.sqrt(len(group))
            if len(group) > 1 else np.zeros_like(mean),
            "final": final, "final_mean": float(np.nanmean(final)),
            "final_median": float(np.nanmedian(final)), "at": at,
            "area": float(np.nanmean(mean)),  # area under the mean curve / budget
            "areas": np.nanmean(curves, axis=1),  # per seed, for the noise estimate
            "trials": float(np.mean([r["num_trials"] for r in group])),
            "seconds": float(np.mean([r["seconds"] for r in group])),
        }
    return table


def compare(a: np.ndarray, b: np.ndarray) -> str:
    """'better', 'worse' or '~' for sample a vs sample b (lower is better), by Welch's t > 2."""
    if len(a) < 2 or len(b) < 2:
        return "?"
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    diff = float(np.mean(a) - np.mean(b))
    if se == 0:
        return "~" if diff == 0 else ("better" if diff < 0 else "worse")
    t = diff / se
    return "better" if t < -2 else "worse" if t > 2 else "~"


def print_table(table: dict[tuple[str, str], dict[str, Any]], metric_keys: Iterable[str]) -> None:
    for key in metric_keys:
        rows = sorted((r for r in table.values() if r["metric"] == key), key=lambda r: r["area"])
        if not rows:
            continue
        print(f"\n== {key} (regret; lower is better) ==")
        print(f"{'method':22s} {'tool':9s} {'seeds':>5s} {'final mean':>10s} {'median':>8s} "
              f"{'@25%':>8s} {'@50%':>8s} {'@100%':>8s} {'area':>8s} {'trials':>7s} {'s/run':>6s}"
              f"  vs Syne Tune namesake (final, area)")
        for r in rows:
            versus = ""
            peer = COUNTERPARTS.get(r["method"])
            if peer and (peer, key) in table:
                p = table[(peer, key)]
                versus = f"  {peer}: {compare(r['final'], p['final'])}, " \
                         f"{compare(r['areas'], p['areas'])}"
            print(f"{r['method']:22s} {'SyneTune' if r['peer'] else 'tunesmith':9s} "
                  f"{r['seeds']:5d} {r['final_mean']:10.4f} {r['final_median']:8.4f} "
                  f"{r['at'][0.25]:8.4f} {r['at'][0.5]:8.4f} {r['at'][1.0]:8.4f} "
                  f"{r['area']:8.4f} {r['trials']:7.0f} {r['seconds']:6.1f}{versus}")


def plot(table: dict[tuple[str, str], dict[str, Any]], metric_keys: Sequence[str],
         path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in metric_keys if any(r["metric"] == k for r in table.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(8 * len(keys), 6), squeeze=False)
    colors = [cmap(i) for cmap in (plt.get_cmap("tab20"), plt.get_cmap("tab20b"))
              for i in range(cmap.N)]  # their listed colours, in order
    for ax, key in zip(axes[0], keys, strict=True):
        rows = sorted((r for r in table.values() if r["metric"] == key), key=lambda r: r["area"])
        positive = [v for r in rows for v in r["mean_curve"] if v > 0]
        floor = 0.5 * min(positive) if positive else 1e-3  # regret 0 shown at the floor
        for i, r in enumerate(rows):
            color = colors[i % len(colors)]
            label = f"{r['method']} ({'Syne Tune' if r['peer'] else 'tunesmith'})"
            mean = np.maximum(r["mean_curve"], floor)
            ax.plot(r["grid"], mean, "--" if r["peer"] else "-", color=color, label=label,
                    lw=1.8 if r["peer"] or i < 3 else 1.0)
            ax.fill_between(r["grid"], np.maximum(r["mean_curve"] - r["sem_curve"], floor),
                            np.maximum(r["mean_curve"] + r["sem_curve"], floor), color=color,
                            alpha=0.12)
        ax.set_yscale("log")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("mean regret (+- 1 s.e.; 0 drawn at the bottom)")
        ax.set_title(f"LCBench {BLACKBOX[1]}: {key} (legend: best area first)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def best_ratio(table: dict[tuple[str, str], dict[str, Any]], key: str = "cross_entropy"
               ) -> tuple[float, dict[str, Any] | None, dict[str, Any] | None]:
    """Area of our best method / area of Syne Tune's best, with the two rows."""
    ours = [r for r in table.values() if r["metric"] == key and not r["peer"]]
    peers = [r for r in table.values() if r["metric"] == key and r["peer"]]
    if not ours or not peers:
        return math.nan, None, None
    best_ours = min(ours, key=lambda r: r["area"])
    best_peer = min(peers, key=lambda r: r["area"])
    ratio = best_ours["area"] / best_peer["area"] if best_peer["area"] > 0 else math.inf
    return ratio, best_ours, best_peer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per method and metric")
    parser.add_argument("--methods", default=",".join(OURS + PEERS),
                        help="comma-separated; tunesmith names and Syne Tune's " + ",".join(PEERS))
    parser.add_argument("--metrics", default=",".join(METRICS), help="error,cross_entropy")
    parser.add_argument("--budget", type=float, default=900.0, help="simulated seconds")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--tick", type=float, default=0.1, help="Syne Tune simulator tick (s)")
    parser.add_argument("--jobs", type=int, default=2, help="processes running in parallel")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--from-json", type=Path, nargs="+",
                        help="analyze saved runs (several files are merged) instead of running")
    args = parser.parse_args(argv)
    metric_keys = [k for k in args.metrics.split(",") if k]
    unknown = [k for k in metric_keys if k not in METRICS]
    if unknown:
        parser.error(f"--metrics: unknown {unknown}; expected some of {list(METRICS)}")
    if args.from_json:
        saved = [json.loads(path.read_text()) for path in args.from_json]
        budgets = {float(s["budget"]) for s in saved}
        if len(budgets) != 1:
            parser.error(f"--from-json: the files have different budgets {sorted(budgets)}")
        runs, budget = [r for s in saved for r in s["runs"]], budgets.pop()
    else:
        from hpo_core.registry import METHODS

        methods = [m for m in args.methods.split(",") if m]
        bad = [m for m in methods if m not in PEERS and m not in METHODS]
        if bad:
            parser.error(f"--methods: unknown {bad}")
        budget = args.budget
        started = time.perf_counter()
        runs = run_all(methods, metric_keys, list(range(args.seeds)), budget, args.workers,
                       args.tick, args.jobs)
        print(f"total: {time.perf_counter() - started:.0f}s", file=sys.stderr)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "quality_runs.json").write_text(json.dumps({"budget": budget, "runs": runs}))
    table = summarize(runs, budget)
    print(f"LCBench {BLACKBOX[1]}, {args.workers} workers, budget {budget:g} simulated s; "
          f"regret vs the table's best over all configs and epochs")
    print_table(table, metric_keys)
    plot(table, metric_keys, args.out / "quality.png")
    for key in metric_keys:
        ratio, ours, peer = best_ratio(table, key)
        if ours and peer:
            print(f"\nbest on {key} area: tunesmith {ours['method']} ({ours['area']:.4f}), "
                  f"Syne Tune {peer['method']} ({peer['area']:.4f}); ratio {ratio:.3f}; "
                  f"ours vs theirs: final {compare(ours['final'], peer['final'])}, "
                  f"area {compare(ours['areas'], peer['areas'])}")
    ratio, _, _ = best_ratio(table)
    print(f"best_regret_ratio_vs_synetune={ratio:.4f}")


if __name__ == "__main__":
    main()
