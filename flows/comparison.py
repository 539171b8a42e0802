"""Running a comparison: methods x tasks x seeds of simulated experiments in parallel processes,
then the tables, plots and report of `hpo_core.comparison` written to a folder.

No Prefect or MLflow here: `flows/compare.py` wraps this in a flow (artifacts, MLflow) and
`tunesmith compare --no-flow` calls it directly. Each run is an ordinary experiment with its
own store (`<results_root>/<name>-<method>-t<task>-s<seed>/`), so every run can be opened with
`tunesmith show` afterwards.
"""

from __future__ import annotations

import _thread
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_core.comparison import Comparison, Run, analyse, format_table, markdown_table, paired_test
from hpo_core.registry import METHODS
from hpo_core.spec import ExperimentSpec, SpecError
from hpo_core.store.files import validate_name

#: seconds between a worker's checks that its parent (`tunesmith compare`) is alive
PARENT_CHECK_INTERVAL = 0.5
_run_active = threading.Event()  # a worker runs `run_one`
_parent_gone = threading.Event()  # a worker's parent died

DEFAULT_BLACKBOX = "yahpo-lcbench"
#: the tasks a comparison on these blackboxes runs when none are given (other blackboxes: their
#: first two tasks)
DEFAULT_TASKS = {"yahpo-lcbench": ["3945", "7593"]}


def comparison_defaults(blackbox: str, tasks: list[str] | None = None, metric: str | None = None,
                        mode: str | None = None) -> tuple[list[str], str, str]:
    """The tasks, metric and mode of a comparison on `blackbox`, each as given or, where None,
    the blackbox's own: `DEFAULT_TASKS` or its first two tasks, its default metric, that
    metric's mode (so `tunesmith compare --blackbox lcbench` runs LCBench's bundled table)."""
    from backends.blackbox import BlackboxError, available_blackboxes, load_blackbox

    if tasks is not None and metric is not None and mode is not None:
        return tasks, metric, mode
    available = available_blackboxes()
    if blackbox not in available:
        raise BlackboxError(f"blackbox: unknown name {blackbox!r}; available: "
                            f"{', '.join(available) or 'none'}")
    known = available[blackbox]
    if tasks is None:
        tasks = [t for t in DEFAULT_TASKS.get(blackbox, []) if t in known] or known[:2]
    task = next((t for t in tasks if t in known), None)
    if task is None:  # none of the tasks given exists: validation names them
        return tasks, metric or "val_accuracy", mode or "max"
    box = load_blackbox(blackbox, task)
    metric = metric or box.default_metric
    return tasks, metric, mode or box.modes.get(metric, "max")


@dataclass
class ComparisonPlan:
    """What to run: every method on every task with every seed, for `max_time` simulated s."""

    name: str
    methods: list[str]
    tasks: list[str]
    seeds: list[int]
    metric: str
    mode: str
    max_time: float
    results_root: str
    blackbox: str = DEFAULT_BLACKBOX
    n_workers: int = 4
    backend_options: Mapping[str, Any] | None = None  # e.g. delays
    method_options: Mapping[str, Mapping[str, Any]] | None = None

    def spec(self, method: str, task: str, seed: int) -> dict[str, Any]:
        """The experiment spec of one run (as a dict)."""
        return {
            "name": f"{self.name}-{method}-t{task}-s{seed}",
            "metric": self.metric, "mode": self.mode, "scheduler": method,
            "scheduler_options": dict((self.method_options or {}).get(method, {})),
            "backend": "simulated",
            "backend_options": {**(self.backend_options or {}), "blackbox": self.blackbox,
                                "task": task},
            "stop": {"max_time": self.max_time}, "n_workers": self.n_workers, "seed": seed,
            "results_root": self.results_root,
        }

    def specs(self) -> list[dict[str, Any]]:
        return [self.spec(m, t, s) for t in self.tasks for m in self.methods for s in self.seeds]

    def validate(self) -> None:
        """Bad methods, tasks or options fail here, before anything runs (errors name the
        field)."""
        from flows.experiment import assemble

        validate_name(self.name, "name")
        for field_name, values in (("methods", self.methods), ("tasks", self.tasks),
                                   ("seeds", self.seeds)):
            if not values:
                raise SpecError(f"{field_name}: at least one is needed")
        if not self.max_time > 0:
            raise SpecError(f"max_time: must be > 0 simulated seconds, got {self.max_time!r}")
        several = [m for m in self.methods if m in METHODS and METHODS[m].multi_objective]
        if several:  # it ranks methods by one metric's regret
            raise SpecError(f"methods: a comparison ranks methods on one metric; {several} "
                            "optimize several (compare their Pareto fronts with `show`)")
        for task in self.tasks:
            assemble(ExperimentSpec.from_dict(self.spec(self.methods[0], task,
                                                        self.seeds[0]))).close()
        for method in self.methods:
            ExperimentSpec.from_dict(self.spec(method, self.tasks[0], self.seeds[0]))


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One simulated experiment (in a worker process); its `Run` as a dict."""
    from flows.experiment import build_tuner
    from hpo_core.store.analysis import load_experiment

    logging.disable(logging.WARNING)
    experiment = ExperimentSpec.from_dict(spec)
    # a Ctrl-C interrupts the run (its state is saved); an idle worker ignores it
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    _run_active.set()
    try:
        if _parent_gone.is_set():  # its Ctrl-C came before the handler above
            raise KeyboardInterrupt
        tuner = build_tuner(experiment)
        result = tuner.run()
    finally:
        _run_active.clear()
        signal.signal(signal.SIGINT, previous)
    assert tuner.store is not None  # build_tuner opens the experiment's store
    trajectory = load_experiment(tuner.store.path).trajectory()
    return Run(
        method=spec["scheduler"], task=str(spec["backend_options"]["task"]),
        seed=int(spec["seed"]), times=[float(t) for t in trajectory["time"]],
        values=[float(v) for v in trajectory["best"]], budget=float(spec["stop"]["max_time"]),
        end_time=float(tuner.now()), end_reason=result.reason, num_trials=len(tuner.trials),
    ).to_dict()


def process_pool(processes: int) -> ProcessPoolExecutor:
    """Worker processes for runs (spawned: safe beside the threads of Prefect and MLflow)."""
    return ProcessPoolExecutor(max_workers=max(1, processes),
                               mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(os.getpid(),))


def _worker_init(parent: int) -> None:
    """A worker between runs ignores Ctrl-C (its parent ends the pool); `run_one` takes it.
    It ends with its parent (`_end_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_end_with_parent, args=(parent,), name="end-with-parent",
                     daemon=True).start()


def _end_with_parent(parent: int) -> None:
    """Once the parent is gone (a SIGKILL of `tunesmith compare`), the worker's run is
    interrupted as by one Ctrl-C (it saves its state: the same comparison resumes it) and the
    worker exits, instead of running its run to the end and then waiting for work forever.
    (A parent-death signal would come once per thread of the dead parent: several Ctrl-Cs.)"""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_INTERVAL)
    _parent_gone.set()
    _thread.interrupt_main(signal.SIGINT)  # an idle worker ignores it
    while _run_active.is_set():
        time.sleep(PARENT_CHECK_INTERVAL)
    os._exit(0)


def run_all(plan: ComparisonPlan, processes: int,
            on_done: Callable[[dict[str, Any]], None] | None = None) -> list[Run]:
    """Every run of the plan, `processes` at a time. Interrupted (Ctrl-C, a signal), the runs
    not started are dropped and the running ones are interrupted too (their stores keep their
    state: the same comparison again resumes them), rather than waited for."""
    pool = process_pool(processes)
    try:
        futures: list[Future[dict[str, Any]]] = [pool.submit(run_one, s) for s in plan.specs()]
        runs = []
        for future in futures:
            record = future.result()
            if on_done is not None:
                on_done(record)
            runs.append(Run(**record))
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        _interrupt(multiprocessing.active_children())
        raise
    pool.shutdown()
    return runs


def _interrupt(workers: list[multiprocessing.process.BaseProcess]) -> None:
    """SIGINT to the pool's workers (their runs save their state as after a Ctrl-C), then
    wait for them to exit."""
    for worker in workers:
        if worker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGINT)
    for worker in workers:
        worker.join(timeout=30)


def write_outputs(comparison: Comparison, folder: Path, title: str) -> dict[str, Any]:
    """Tables (CSV), plots (PNG) and a markdown report in `folder`; their paths, the report
    text and the paired test of the two best methods."""
    from hpo_core.comparison_plots import plot_ranks, plot_regret

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "runs": folder / "runs.csv", "per_task": folder / "per_task.csv",
        "summary": folder / "summary.csv", "regret_plot": folder / "regret.png",
        "rank_plot": folder / "ranks.png", "report": folder / "report.md",
    }
    comparison.runs.to_csv(paths["runs"], index=False)
    comparison.per_task.to_csv(paths["per_task"], index=False)
    comparison.overall.to_csv(paths["summary"], index=False)
    plot_regret(comparison, paths["regret_plot"], f"{title}\nmean normalized regret, 95% band")
    plot_ranks(comparison, paths["rank_plot"], f"{title}\naverage rank over tasks and seeds")
    methods = comparison.methods
    test = paired_test(comparison, methods[0], methods[1]) if len(methods) > 1 else None
    lines = [f"# {title}", "", "Normalized regret (0 = the best any run found on the task, 1 = a "
             "typical first report); area = time-average over the budget. Lower is better.", "",
             "## All tasks", "", markdown_table(comparison.overall), ""]
    if test is not None:
        lines += [_test_text(test), ""]
    for task, group in comparison.per_task.groupby("task", sort=True):
        lines += [f"## Task {task}", "", markdown_table(group), ""]
    paths["report"].write_text("\n".join(lines))
    return {"paths": paths, "report": "\n".join(lines), "paired_test": test,
            "text": format_table(comparison.overall)}


def _test_text(test: Mapping[str, Any]) -> str:
    return (f"Paired over {test['pairs']} (task, seed) runs, {test['a']} - {test['b']} "
            f"{test['figure']}: {test['mean_diff']:+.4f} [{test['lo']:+.4f}, {test['hi']:+.4f}] "
            f"(95% CI), Wilcoxon p = {test['p_wilcoxon']:.3g}; {test['a']} better on "
            f"{test['a_better']}, {test['b']} on {test['b_better']}.")


def compare_runs(plan: ComparisonPlan, processes: int = 2,
                 on_done: Callable[[dict[str, Any]], None] | None = None
                 ) -> tuple[Comparison, dict[str, Any]]:
    """Validate, run every run, analyse, write the outputs under
    `<results_root>/<name>-summary/`."""
    plan.validate()
    runs = run_all(plan, processes, on_done)
    comparison = analyse(runs, plan.mode)
    title = (f"{plan.name}: {len(plan.methods)} methods x {len(plan.tasks)} tasks x "
             f"{len(plan.seeds)} seeds, {plan.blackbox} {plan.metric} ({plan.mode})")
    outputs = write_outputs(comparison, Path(plan.results_root) / f"{plan.name}-summary", title)
    return comparison, outputs


def paired_text(test: Mapping[str, Any] | None) -> str:
    return "" if test is None else _test_text(test)
