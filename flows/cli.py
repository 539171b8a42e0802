"""The `tunesmith` console script: run, demo, resume, list, show, compare.

`run` and `demo` go through the Prefect `tune` flow (tracked in MLflow) unless `--no-flow` is
given, in which case the bare tuner runs the experiment and only the on-disk store is written.
Without a `PREFECT_API_URL`, a flow run starts a Prefect server of its own that ends with it
(`flows._prefect_server`). SIGTERM and SIGHUP end a run as Ctrl-C does: its trials are ended,
its state saved (exit status 128 + the signal's number).
The spec is checked whole (backend and scheduler options included) before Prefect starts.
A user error (`flows.failures.user_error`) is one `error:` line and exit code 2; so is an
experiment that ended with too many failed trials or with every trial failed.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows.failures import user_error
from hpo_core.secrets import MASK, is_secret_name, mask_logs, one_line, redact, spec_secret_names
from hpo_core.spec import ExperimentSpec, SpecError
from hpo_core.store import (
    CONFIG_PREFIX,
    Experiment,
    StoreError,
    experiment_lock,
    load_experiment,
    validate_name,
)
from hpo_core.trial import counts_text, status_text, trial_counts
from hpo_core.trial_value import format_value, no_best

if TYPE_CHECKING:
    import pandas as pd

DEMO_SPEC: dict[str, Any] = {
    "name": "demo-lcbench-asha",
    "metric": "Train/val_cross_entropy",
    "mode": "min",
    "scheduler": "asha",
    "scheduler_options": {"grace_period": 1, "reduction_factor": 3},
    "backend": "simulated",
    "backend_options": {"blackbox": "lcbench", "task": "blood-transfusion-service-center"},
    "stop": {"max_trials_completed": 300},
    "n_workers": 4,
    "seed": 0,
}


def _print_summary(spec: ExperimentSpec, extra: dict[str, Any] | None = None) -> None:
    experiment = load_experiment(spec.experiment_path)
    trials = experiment.trials()
    best_id = experiment.best_trial_id()
    print()
    print(f"experiment   {spec.name}  ({spec.scheduler} on the {spec.backend} backend)")
    print(_counts(experiment, trials, ended=True))  # this process ran it, and is done
    if best_id is None:
        print(f"best         none: {no_best(experiment.metric, experiment.constraint)}")
    else:
        row = trials.set_index("trial_id").loc[best_id]
        print(f"best {experiment.metric} ({experiment.mode}): "
              f"{format_value(experiment.best_value())}  (trial {best_id}, "
              f"{_step_name(experiment)} {format_value(row['best_step'])})")
        best = redact(experiment.best_config() or {}, spec_secret_names(experiment.spec))
        for name, value in best.items():
            print(f"  {name} = {format_value(value)}")
    print(f"results      {experiment.path.resolve()}")
    for key, value in (extra or {}).items():
        print(f"{key:<12} {value}")


def _counts(experiment: Experiment, trials: pd.DataFrame, ended: bool) -> str:
    """`303 trials: 12 completed, 291 stopped early` for `Experiment.trials()` (`ended`: no
    process runs it, so its running trials were interrupted)."""
    statuses = [] if trials.empty else list(trials["status"].fillna("running"))
    return counts_text(trial_counts(statuses, len(experiment.results), ended=ended))


def _step_name(experiment: Experiment) -> str:
    return experiment.resource_attr or "report"


def _run_bare(spec: ExperimentSpec) -> None:
    from flows.experiment import build_tuner
    from flows.failures import check_trials
    from flows.status import StatusView

    tuner = build_tuner(spec, callbacks=[StatusView()])
    result = tuner.run()
    print(f"ended: {result.reason}")
    _print_summary(spec)
    check_trials(tuner, spec.name)


def _run_flow(spec: ExperimentSpec) -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Prefect's temporary server can take over 30 s to start on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from flows._prefect_server import start_prefect_server

    start_prefect_server()
    from flows.tune import run_tune

    outcome = run_tune(spec, status_view=True)
    extra = {
        "prefect run": outcome.get("flow_run_id"),
        "mlflow run": outcome.get("mlflow_parent_run_id"),
        "mlflow url": outcome.get("mlflow_run_url"),
        "mlflow ui": outcome.get("mlflow_ui_command"),
    }
    _print_summary(spec, {k: v for k, v in extra.items() if v})


class Terminated(BaseException):
    """SIGTERM or SIGHUP reached the run (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """SIGTERM and SIGHUP raise `Terminated` in the main thread, so the tuner ends its trials
    and saves its state on the way out (their default action kills the process at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run(spec: ExperimentSpec, use_flow: bool) -> int:
    from flows.experiment import check_spec

    # the backend (a simulated spec's metric too), the method and the store are checked before
    # any flow runs or any folder is made
    check_spec(spec)
    lock = experiment_lock(spec.experiment_path)
    try:
        lock.acquire()  # a second run of the experiment refuses here, before Prefect starts
    except OSError as err:  # a folder that cannot be made there
        raise SpecError(f"spec.results_root: cannot store the experiment in "
                        f"{str(spec.experiment_path)!r}: {err.strerror or err}") from None
    try:
        print(f"running {spec.name}: {spec.scheduler}, {spec.n_workers} workers, stop {spec.stop}")
        with _signals_as_exceptions():
            if use_flow:
                _run_flow(spec)
            else:
                _run_bare(spec)
    except (KeyboardInterrupt, Terminated) as err:
        ended = _end_reason(spec.experiment_path)
        if ended:  # the kill came as it was finishing: nothing is left to resume
            return _interrupted(err, f"after the experiment ended ({ended}); its results "
                                     "are complete")
        return _interrupted(err, f"trials ended, state saved; `tunesmith resume {spec.name}` "
                                 "continues it")
    finally:
        lock.release()
    return 0


def _end_reason(path: Path) -> str | None:
    """Why the experiment at `path` ended, as its state.json says; None if it has not. (Its
    JSON only: reading results.parquet would start pyarrow's threads in a process being
    interrupted, which could abort at exit.)"""
    from hpo_core.store.store import read_state

    try:
        state = read_state(path)
    except (OSError, StoreError):
        return None
    return (state or {}).get("end_reason") or None


def _interrupted(err: KeyboardInterrupt | Terminated, then: str) -> int:
    """One line for a kill (Ctrl-C, SIGTERM, SIGHUP); the exit code a shell gives it."""
    name = "SIGINT" if isinstance(err, KeyboardInterrupt) else str(err)
    print(f"interrupted by {name}: {then}", file=sys.stderr)
    return 128 + (err.signum if isinstance(err, Terminated) else signal.SIGINT)


def _list(root: Path) -> int:
    if root.exists() and not root.is_dir():
        raise SpecError(f"--results-root: {str(root)!r} is not a folder")
    if not root.is_dir():
        print(f"no experiments under {root}")
        return 0
    print(f"{'experiment':<32} {'trials':>7} {'best':>10}  {'ended':<5} {'trial':>6} "
          f"{'failed':>6}  metric")
    for path in sorted(p for p in root.iterdir() if (p / "spec.json").exists()):
        try:
            experiment = load_experiment(path)
        except StoreError as err:  # a damaged experiment: the others are still listed
            print(f"{path.name:<32} {'-':>7} {'-':>10}  {'-':<5} {'-':>6} {'-':>6}  {err}")
            continue
        best_id = experiment.best_trial_id() if experiment.metrics else None
        best = format_value(experiment.best_value()) if best_id is not None else "-"
        metric = ", ".join(experiment.metrics) or "-"
        if len(experiment.metrics) > 1:  # best and trial are the first metric's
            front = experiment.pareto_front()
            metric += f"; Pareto front of {front['trial_id'].nunique() if len(front) else 0} trials"
        ended = "yes" if (experiment.state or {}).get("end_reason") else "no"
        trial = "-" if best_id is None else str(best_id)
        trials = experiment.trials()
        failed = 0 if trials.empty else int((trials["status"] == "failed").sum())
        print(f"{path.name:<32} {experiment.num_trials():>7} {best:>10}  {ended:<5} {trial:>6} "
              f"{failed:>6}  {metric}")
    return 0


def _show(root: Path, name: str, top: int) -> int:
    path = root / validate_name(name, "experiment")
    experiment = load_experiment(path)
    trials = experiment.trials()
    running = experiment.running
    print(f"experiment {name}: {_counts(experiment, trials, ended=not running)}; "
          f"results in {path}")
    print(_how_it_ended(experiment, root, name, running))
    if trials.empty:
        return 0
    failed = trials[trials["status"] == "failed"]
    if not failed.empty and "failure_reason" in failed.columns:
        last = failed.iloc[-1]
        print(f"last failure: trial {int(last['trial_id'])}: {one_line(last['failure_reason'])}")
    metric = experiment.metric
    ranked = experiment.ranked()
    ranked = ranked.dropna(subset=[metric]).head(top) if metric in ranked.columns \
        else ranked.iloc[0:0]  # failed trials have no value
    if ranked.empty:
        print(f"no trial that did not fail reported {metric}")
        return 0
    ranked = _masked_configs(experiment, ranked)
    step = _step_name(experiment)
    table = ranked.rename(columns={"best_step": f"at {step}", "num_reports": "reports"})
    table = table.rename(columns={c: c[len(CONFIG_PREFIX):] for c in experiment.config_columns})
    columns = ["trial_id", "status", metric, f"at {step}", "reports"] + \
        [c[len(CONFIG_PREFIX):] for c in experiment.config_columns]
    table = table[[c for c in columns if c in table.columns]]
    table = table.assign(status=[status_text(s, ended=not running) for s in table["status"]])
    print(table.to_string(index=False, formatters={c: format_value for c in table.columns}))
    if len(experiment.metrics) > 1:
        _print_front(experiment, top)
    print(f"trajectory plot: {experiment.plot_trajectory()}")
    return 0


def _masked_configs(experiment: Experiment, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the config columns of secret hyperparameters masked."""
    names = spec_secret_names(experiment.spec)
    return frame.assign(**{c: MASK for c in experiment.config_columns
                           if is_secret_name(c[len(CONFIG_PREFIX):], names)})


def _print_front(experiment: Experiment, top: int) -> None:
    """A multi-objective experiment's Pareto front: its non-dominated reports (the table above
    ranks by the first metric only)."""
    front = experiment.pareto_front()
    objectives = ", ".join(f"{m} ({d})" for m, d in zip(experiment.metrics, experiment.modes,
                                                       strict=True))
    print(f"Pareto front of {objectives}: {len(front)} reports of "
          f"{front['trial_id'].nunique() if not front.empty else 0} trials"
          + (f", the first {top} by {experiment.metric}" if len(front) > top else ""))
    if front.empty:
        return
    step = experiment.resource_attr
    if step not in front.columns:  # no resource (mo_rea, ehvi): the report's number
        step = "report"
        results = experiment.results
        numbers = results.assign(report=results.groupby("trial_id").cumcount() + 1)
        front = front.merge(numbers[["trial_id", "time", "report"]], on=["trial_id", "time"],
                            how="left")
    configs = experiment.config_columns
    columns = ["trial_id", step, *experiment.metrics, *configs]
    table = _masked_configs(experiment, front.head(top)[columns])
    table = table.rename(columns={c: c[len(CONFIG_PREFIX):] for c in configs})
    print(table.to_string(index=False, formatters={c: format_value for c in table.columns}))


def _how_it_ended(experiment: Experiment, root: Path, name: str, running: bool) -> str:
    """Why it ended; or that it runs now; or whether (and how) it can be resumed."""
    state = experiment.state or {}
    reason = state.get("end_reason")
    if reason and str(reason).startswith("too many failures"):
        return (f"ended: {reason}. To go on, raise max_failures in the spec (null: no limit) "
                "and run it again")
    if reason:
        return f"ended: {reason}"
    if running:
        return "running now"
    if not state:
        return "not started: no state was saved, so there is nothing to resume"
    try:
        from flows.experiment import check_spec

        spec = ExperimentSpec.from_file(experiment.path / "spec.json")
        spec.results_root = str(root)  # where it is now, as `resume` reads it
        check_spec(spec)
    except Exception as err:  # noqa: BLE001 - any reason it cannot run is shown, in one line
        return f"not ended, and it cannot be resumed as it is: {one_line(str(err))}"
    resume = f"`tunesmith resume {name}` continues it" + (
        f" (with --results-root {root})" if str(root) != "experiments" else "")
    last_exit = experiment.last_exit
    if last_exit is not None and last_exit[1]:  # an error: it comes back unless fixed
        return f"stopped by an error: {last_exit[0]}; once its cause is fixed, {resume}"
    return f"interrupted{f' by {last_exit[0]}' if last_exit else ''}: {resume}"


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) the experiment of a spec file (YAML/JSON)")
    run.add_argument("spec", type=Path, help="the experiment's spec file (YAML or JSON)")
    run.add_argument("--no-flow", action="store_true", help="bare tuner: no Prefect, no MLflow")
    run.add_argument("--results-root", help="override spec.results_root")
    demo = sub.add_parser("demo", help="ASHA on the bundled LCBench benchmark, simulated")
    demo.add_argument("--no-flow", action="store_true", help="bare tuner: no Prefect, no MLflow")
    demo.add_argument("--results-root", help="where experiments are stored")
    resume = sub.add_parser("resume", help="resume an experiment from its store")
    resume.add_argument("name", help="the experiment's name (its folder in the results root)")
    resume.add_argument("--results-root", default="experiments",
                        help="where the experiment is stored (default: experiments)")
    resume.add_argument("--no-flow", action="store_true", help="bare tuner: no Prefect, no MLflow")
    listing = sub.add_parser("list", help="experiments in a results root")
    listing.add_argument("--results-root", default="experiments",
                         help="the folder to list (default: experiments)")
    show = sub.add_parser("show", help="the best trials of an experiment")
    show.add_argument("name", help="the experiment's name (its folder in the results root)")
    show.add_argument("--results-root", default="experiments",
                      help="where the experiment is stored (default: experiments)")
    show.add_argument("--top", type=positive_int, default=10, help="trials to list, best first")
    from flows import cli_compare

    cli_compare.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    mask_logs()
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("run", "demo", "resume"):
            if args.command == "run":
                spec = ExperimentSpec.from_file(args.spec)
            elif args.command == "demo":
                spec = ExperimentSpec.from_dict(dict(DEMO_SPEC))
            else:
                path = Path(args.results_root) / validate_name(args.name, "experiment")
                if not (path / "spec.json").exists():
                    raise FileNotFoundError(f"no experiment at {path}")
                spec = ExperimentSpec.from_file(path / "spec.json")
            if args.results_root:
                spec.results_root = args.results_root
                spec.validate()
            return _run(spec, use_flow=not args.no_flow)
        if args.command == "compare":
            from flows import cli_compare

            try:
                with _signals_as_exceptions():
                    return cli_compare.run(args)
            except (KeyboardInterrupt, Terminated) as err:
                return _interrupted(err, "the runs saved their state; the same command again "
                                         "resumes them")
        if args.command == "list":
            return _list(Path(args.results_root))
        return _show(Path(args.results_root), args.name, args.top)
    except StoreError as err:  # e.g. a full disk: the store resumes once there is room
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`tunesmith show x | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    except Exception as err:
        message = user_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
