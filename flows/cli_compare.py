"""`tunesmith compare`: methods x tasks x seeds on a simulated benchmark, from the terminal.

Through the Prefect `compare` flow (artifacts, MLflow) unless `--no-flow` is given; either way
the tables, plots and report land in `<results-root>/<name>-summary/`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from hpo_core.spec import SpecError


def _list(text: str, field: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise SpecError(f"{field}: give at least one value (comma-separated)")
    return values


def _seeds(text: str) -> list[int]:
    """`3` means seeds 0, 1, 2; `4,7` means seeds 4 and 7."""
    values = _list(text, "--seeds")
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        raise SpecError(f"--seeds: expected a count or comma-separated integers, got {text!r}"
                        ) from None
    if len(numbers) == 1:
        if numbers[0] < 1:
            raise SpecError(f"--seeds: a count must be at least 1, got {numbers[0]}")
        return list(range(numbers[0]))
    return numbers


def add_parser(sub: Any) -> None:
    """The `compare` subcommand's arguments."""
    from flows.cli import positive_int

    parser = sub.add_parser("compare", help="compare methods over tasks and seeds (simulated)",
                            description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="random,asha,bohb", help="comma-separated")
    parser.add_argument("--tasks", help="comma-separated task ids of the blackbox (default: "
                        "3945,7593 on yahpo-lcbench, else its first two tasks)")
    parser.add_argument("--seeds", default="3", help="a count (0..N-1) or comma-separated seeds")
    parser.add_argument("--blackbox", default="yahpo-lcbench",
                        help="a bundled or imported blackbox (default: yahpo-lcbench)")
    parser.add_argument("--metric", help="the objective to compare on (default: the blackbox's "
                        "default metric, e.g. val_accuracy on yahpo-lcbench)")
    parser.add_argument("--mode", choices=["min", "max"],
                        help="min or max (default: the metric's mode on the blackbox)")
    parser.add_argument("--max-time", type=float, default=3600.0,
                        help="simulated seconds per run")
    parser.add_argument("--workers", type=positive_int, default=4, help="trials in flight per run")
    parser.add_argument("--processes", type=positive_int, default=2, help="runs in parallel")
    parser.add_argument("--name", default="compare",
                        help="the summary folder is <name>-summary, each run's experiment "
                        "<name>-<method>-t<task>-s<seed> (default: compare)")
    parser.add_argument("--results-root", default="experiments",
                        help="where the runs and the summary are stored (default: experiments)")
    parser.add_argument("--tracking-uri", help="MLflow (default: sqlite:///mlflow.db)")
    parser.add_argument("--no-flow", action="store_true", help="no Prefect, no MLflow")


def run(args: argparse.Namespace) -> int:
    """Run the comparison and print its table."""
    from flows.comparison import comparison_defaults

    methods, seeds = _list(args.methods, "--methods"), _seeds(args.seeds)
    tasks, metric, mode = comparison_defaults(
        args.blackbox, None if args.tasks is None else _list(args.tasks, "--tasks"),
        args.metric, args.mode)
    options: dict[str, Any] = {
        "methods": methods, "tasks": tasks, "seeds": seeds, "blackbox": args.blackbox,
        "metric": metric, "mode": mode, "max_time": args.max_time, "n_workers": args.workers,
        "name": args.name, "results_root": args.results_root,
    }
    from flows.comparison import ComparisonPlan

    ComparisonPlan(**options).validate()  # bad input is one line, before Prefect starts
    print(f"comparing {', '.join(options['methods'])} on {args.blackbox} tasks "
          f"{', '.join(options['tasks'])}, seeds {options['seeds']}, {metric} ({mode}), "
          f"{args.max_time:g} simulated s each")
    if args.no_flow:
        from flows.comparison import compare_runs, paired_text

        _, outputs = compare_runs(ComparisonPlan(**options), processes=args.processes,
                                  on_done=_progress)
        test, folder, run_id = outputs["paired_test"], outputs["paths"]["report"].parent, None
        text = outputs["text"]
    else:
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
        from flows.compare import compare
        from flows.comparison import paired_text

        outcome = compare(**options, processes=args.processes, tracking_uri=args.tracking_uri)
        test, folder, run_id = outcome["paired_test"], outcome["folder"], outcome["mlflow_run_id"]
        text = outcome["text"]
    print()
    print(text)
    if test is not None:
        print(paired_text(test))
    print(f"tables, plots and report: {folder}")
    if run_id:
        print(f"mlflow run   {run_id}")
    if not args.no_flow:
        print(f"prefect run  {outcome['flow_run_id']}")
    return 0


def _progress(record: dict[str, Any]) -> None:
    print(f"  {record['method']} task {record['task']} seed {record['seed']}: "
          f"{record['num_trials']} trials, ended: {record['end_reason']}", flush=True)
