"""What a person watching an experiment sees: a live status view and one log line per trial.

`StatusView` is a tuner callback in the spirit of Ray Tune's "== Status ==" block: trials
running / paused / completed / stopped early / failed, the best so far, and a table of the
top trials with their configs and values; with several objectives, the Pareto front of the
reports so far and a table of its reports (as `tunesmith show` lists them). On a terminal it
is redrawn in place (rich's `Live`); elsewhere (logs, CI, a Prefect worker) the same block is printed as plain text every `interval`
wall seconds and at the end. `TrialLogLines` logs one line per trial segment that ends:
"trial 3 stopped at epoch 9: val_loss=0.114 (best 0.101 at epoch 6)".

A trial's value is its best report (`hpo_core.trial_value`), as in every other view; a line
of a multi-objective trial gives every objective of its last report.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, NamedTuple, TextIO

import numpy as np
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hpo_core.multiobjective import pareto_mask
from hpo_core.trial import (
    Decision,
    Trial,
    TrialResult,
    TrialStatus,
    counts_text,
    status_text,
    trial_counts,
)
from hpo_core.trial_value import (
    TrialValue,
    format_value,
    is_feasible,
    metric_value,
    no_best,
    report_step,
)
from hpo_core.tuner import Tuner, TunerCallback

ENDINGS = {
    TrialStatus.COMPLETED: "completed (ran to the end)",
    TrialStatus.STOPPED: "stopped early",
    TrialStatus.PAUSED: "paused",
    TrialStatus.FAILED: "failed",
}


def stored_reports(tuner: Tuner) -> list[tuple[int, Mapping[str, Any], int]]:
    """The tuner's store's rows (none without a store), each as (trial, report, its place
    among the trial's reports)."""
    counts: dict[int, int] = {}
    out: list[tuple[int, Mapping[str, Any], int]] = []
    for row in tuner.store.rows() if tuner.store is not None else []:
        trial_id = int(row["trial_id"])
        counts[trial_id] = counts.get(trial_id, 0) + 1
        out.append((trial_id, row, counts[trial_id]))
    return out


def front_rows(tuner: Tuner) -> list[tuple[int, Mapping[str, Any]]]:
    """The store's report rows on the Pareto front of the scheduler's objectives (of trials
    that did not fail; feasible ones, with a constraint), best first in the first objective
    (as `tunesmith show` lists them), each with its place among its trial's reports."""
    scheduler, constraint = tuner.scheduler, tuner.scheduler.constraint
    rows, values = [], []
    for trial_id, row, index in stored_reports(tuner):
        trial = tuner.trials.get(trial_id)
        minimized = scheduler.objective_values(row)
        if trial is not None and trial.status != TrialStatus.FAILED and \
                minimized is not None and is_feasible(row, constraint):
            rows.append((index, row))
            values.append(minimized)
    if not rows:
        return []
    on_front = np.flatnonzero(pareto_mask(values))
    return [rows[i] for i in sorted(on_front, key=lambda i: values[i])]


class _FrontEntry(NamedTuple):
    """A report with every objective: its trial, its step, the values as reported and as
    values to minimize."""

    trial_id: int
    step: Any
    values: tuple[float, ...]
    minimized: tuple[float, ...]


class TrialValues(TunerCallback):
    """Keeps each trial's value (its best report) and its last step as reports come in; with
    `keeps_front`, the candidates for the Pareto front too (several objectives)."""

    keeps_front = False

    def __init__(self) -> None:
        self.tuner: Tuner | None = None
        self.values: dict[int, TrialValue] = {}
        self.last_step: dict[int, Any] = {}
        self.last_value: dict[int, float | None] = {}
        self.last_values: dict[int, tuple[float | None, ...]] = {}
        #: with several objectives, reports with them all (`_FrontEntry`): those on the Pareto
        #: front when it was last asked for, and those that came since
        self._front: list[_FrontEntry] = []
        self._new: list[_FrontEntry] = []
        self._constraint: str | None = None  # the scheduler's (`Scheduler.constraint`)

    def on_tuning_start(self, tuner: Tuner) -> None:
        self.tuner = tuner
        self._constraint = tuner.scheduler.constraint
        for trial_id, row, index in stored_reports(tuner):  # a resumed experiment's
            self._add(trial_id, row, index, float(row.get("time", 0.0)))

    def on_trial_result(self, trial: Trial, result: TrialResult, decision: Decision) -> None:
        self._add(trial.trial_id, result.metrics, trial.num_results, result.time)

    def _add(self, trial_id: int, metrics: Any, index: int, time_: float) -> None:
        tuner = self.tuner
        if tuner is None:
            return
        scheduler = tuner.scheduler
        step = report_step(metrics, index, scheduler.resource_attr)
        value = metric_value(metrics, scheduler.metric)
        self.last_step[trial_id] = step
        self.last_value[trial_id] = value
        feasible = is_feasible(metrics, self._constraint)  # else never the best
        if len(scheduler.metrics) > 1:
            self.last_values[trial_id] = tuple(metric_value(metrics, m)
                                               for m in scheduler.metrics)
            entry = self._front_entry(trial_id, metrics, step) \
                if feasible and self.keeps_front else None
            if entry is not None:
                self._new.append(entry)
        if value is not None and feasible:
            candidate = TrialValue(value, step, time_)
            if candidate.better_than(self.values.get(trial_id), scheduler.mode):
                self.values[trial_id] = candidate

    def _front_entry(self, trial_id: int, metrics: Mapping[str, Any], step: Any
                     ) -> _FrontEntry | None:
        """The report as a candidate for the Pareto front, None if an objective is missing
        or not finite."""
        assert self.tuner is not None
        scheduler = self.tuner.scheduler
        minimized = scheduler.objective_values(metrics)
        if minimized is None:
            return None
        reported = tuple(float(metrics[m]) for m in scheduler.metrics)
        return _FrontEntry(trial_id, step, reported, tuple(minimized))

    def pareto_front(self) -> list[_FrontEntry]:
        """The non-dominated reports of the trials that did not fail (and feasible, with a
        constraint), best first in the first objective: the front last asked for and the
        reports since; all reports again once a trial on it failed (a report only it
        dominated is back on the front)."""
        tuner = self.tuner
        if tuner is None:
            return []
        failed = {tid for tid, t in tuner.trials.items() if t.status == TrialStatus.FAILED}
        candidates = self._front + self._new
        if tuner.store is not None and any(e.trial_id in failed for e in self._front):
            candidates = [entry for index, row in front_rows(tuner) if (
                entry := self._front_entry(int(row["trial_id"]), row, report_step(
                    row, index, tuner.scheduler.resource_attr)))]
        candidates = [e for e in candidates if e.trial_id not in failed]
        front = []
        if candidates:
            mask = pareto_mask([e.minimized for e in candidates])
            front = sorted((e for e, keep in zip(candidates, mask, strict=True) if keep),
                           key=lambda e: e.minimized)
        self._front, self._new = front, []
        return front

    @property
    def step_name(self) -> str:
        resource = self.tuner.scheduler.resource_attr if self.tuner else None
        return resource or "report"


class TrialLogLines(TrialValues):
    """One log line per trial segment that ends, with its decision, step and value."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter[Any]):
        super().__init__()
        self.logger = logger

    def on_trial_complete(self, trial: Trial) -> None:
        self.logger.info(self.line(trial))

    def on_trial_error(self, trial: Trial) -> None:
        self.logger.warning(self.line(trial))

    def line(self, trial: Trial) -> str:
        """`trial 3 stopped at epoch 9: val_loss=0.114 (best 0.101 at epoch 6)`."""
        tid = trial.trial_id
        metric = self.tuner.scheduler.metric if self.tuner else "value"
        ending = ENDINGS.get(trial.status, trial.status.value)
        text = f"trial {tid} {ending}"
        if tid not in self.last_step:
            return text + " before its first report" + (
                f"; {trial.failure_reason}" if trial.failure_reason else "")
        text += f" at {self.step_name} {format_value(self.last_step[tid])}: "
        if tid in self.last_values and self.tuner is not None:  # several objectives
            return text + ", ".join(
                f"{m}={format_value(v)}" for m, v in
                zip(self.tuner.scheduler.metrics, self.last_values[tid], strict=True)) + (
                f"; {trial.failure_reason}" if trial.status == TrialStatus.FAILED
                and trial.failure_reason else "")
        text += f"{metric}={format_value(self.last_value.get(tid))}"
        best = self.values.get(tid)
        if best is not None and (best.step != self.last_step.get(tid)):
            text += f" (best {format_value(best.value)} at {self.step_name} " \
                    f"{format_value(best.step)})"
        if trial.status == TrialStatus.FAILED and trial.failure_reason:
            text += f"; {trial.failure_reason}"
        return text


class StatusView(TrialValues):
    """The experiment's status, redrawn in place on a terminal, printed as text elsewhere.

    Args:
        top: trials in the table (best first).
        interval: wall seconds between redraws (terminal) or printed blocks (not a terminal).
        stream: where to write (default: stdout).
        live: redraw in place; default: whether `stream` is a terminal.
    """

    keeps_front = True

    def __init__(self, top: int = 5, interval: float = 10.0, stream: TextIO | None = None,
                 live: bool | None = None):
        super().__init__()
        self.top = top
        self.interval = interval
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.console = Console(file=self.stream, force_terminal=self.live or None,
                               no_color=not self.live, width=None if self.live else 1000,
                               highlight=False)
        self._live: Live | None = None
        self._last = 0.0

    # -- tuner callback ------------------------------------------------------------------------
    def on_tuning_start(self, tuner: Tuner) -> None:
        super().on_tuning_start(tuner)
        self._last = time.monotonic()
        if self.live:
            self._live = Live(self.render(), console=self.console, auto_refresh=False,
                              transient=False)
            self._live.start()

    def on_trial_result(self, trial: Trial, result: TrialResult, decision: Decision) -> None:
        super().on_trial_result(trial, result, decision)
        self._maybe_show()

    def on_trial_complete(self, trial: Trial) -> None:
        self._maybe_show()

    def on_trial_error(self, trial: Trial) -> None:
        self._maybe_show()

    def on_tuning_end(self, tuner: Tuner) -> None:
        self._show(final=True)
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- drawing ---------------------------------------------------------------------------------
    def _maybe_show(self) -> None:
        interval = min(self.interval, 0.5) if self.live else self.interval
        if time.monotonic() - self._last >= interval:
            self._show()

    def _show(self, final: bool = False) -> None:
        if self.tuner is None:
            return
        self._last = time.monotonic()
        if self._live is not None:
            self._live.update(self.render(final), refresh=True)
        else:
            self.console.print(self.render(final))

    def render(self, final: bool = False) -> Group:
        """The status block: header lines and the top-trials table."""
        tuner = self.tuner
        assert tuner is not None
        scheduler = tuner.scheduler
        counts = trial_counts((t.status for t in tuner.trials.values()), tuner.status.num_results,
                              ended=final)
        title = "== Status ==" if not final else "== Status (final) =="
        lines = [
            Text(title, style="bold"),
            Text(f"{counts_text(counts)}; {counts['results']} reports; "
                 f"experiment time {tuner.now():,.0f} s"
                 + (f"; ended: {tuner.end_reason}" if final and tuner.end_reason else "")),
        ]
        if len(scheduler.metrics) > 1:
            front = self.pareto_front()
            objectives = ", ".join(f"{m} ({mode})"
                                   for m, mode in zip(scheduler.metrics, scheduler.modes,
                                                      strict=True))
            lines.append(Text(f"Pareto front of {objectives}: " + (
                f"{len(front)} reports of {len({e.trial_id for e in front})} trials"
                if front else "none yet: " + no_best("them all", scheduler.constraint))))
            return Group(*lines, self._front_table(tuner, front, final))
        best_id = self._best_trial()
        if best_id is None:
            lines.append(Text(f"best {scheduler.metric} ({scheduler.mode}): none yet: "
                              + no_best(scheduler.metric, scheduler.constraint)))
        else:
            best = self.values[best_id]
            lines.append(Text(f"best {scheduler.metric} ({scheduler.mode}): "
                              f"{format_value(best.value)} (trial {best_id}, "
                              f"{self.step_name} {format_value(best.step)})"))
        return Group(*lines, self._table(tuner, final))

    def _best_trial(self) -> int | None:
        """The best trial that did not fail (a failed one never is, whatever it reported)."""
        ranked = self._ranked()
        return ranked[0] if ranked and not self._failed(ranked[0]) else None

    def _ranked(self) -> list[int]:
        """Trials with a value, best first; failed ones after the others (as `show` lists)."""
        sign = 1.0 if self.tuner is None or self.tuner.scheduler.mode == "min" else -1.0
        return sorted(self.values, key=lambda t: (self._failed(t), sign * self.values[t].value,
                                                  self.values[t].time))

    def _failed(self, trial_id: int) -> bool:
        trial = self.tuner.trials.get(trial_id) if self.tuner is not None else None
        return trial is not None and trial.status == TrialStatus.FAILED

    def _new_table(self, tuner: Tuner, metrics: list[str]) -> tuple[Table, list[str]]:
        """An empty table with the columns: trial, status, `metrics`, steps, the config."""
        table = Table(box=box.SIMPLE_HEAD if self.live else None, show_edge=False,
                      pad_edge=False)
        names = list(tuner.scheduler.config_space.names)[:8]
        for header in ("trial", "status", *metrics, f"at {self.step_name}",
                       f"last {self.step_name}", *names):
            table.add_column(header, justify="right" if header != "status" else "left",
                             no_wrap=True, min_width=9 if header == "status" else None)
        return table, names

    def _front_table(self, tuner: Tuner, front: list[_FrontEntry], final: bool) -> Table:
        table, names = self._new_table(tuner, tuner.scheduler.metrics)
        for trial_id, step, values, _ in front[: self.top]:
            trial = tuner.trials.get(trial_id)
            if trial is None:
                continue
            table.add_row(str(trial_id), status_text(trial.status, final),
                          *(format_value(v) for v in values), format_value(step),
                          format_value(self.last_step.get(trial_id)),
                          *(format_value(trial.config.get(n)) for n in names))
        return table

    def _table(self, tuner: Tuner, final: bool) -> Table:
        table, names = self._new_table(tuner, [tuner.scheduler.metric])
        for trial_id in self._ranked()[: self.top]:
            trial = tuner.trials.get(trial_id)
            if trial is None:
                continue
            value = self.values[trial_id]
            table.add_row(str(trial_id), status_text(trial.status, final),
                          format_value(value.value),
                          format_value(value.step), format_value(self.last_step.get(trial_id)),
                          *(format_value(trial.config.get(n)) for n in names))
        return table


def api_only(run_logger: logging.Logger | logging.LoggerAdapter[Any]
             ) -> logging.Logger | logging.LoggerAdapter[Any]:
    """A logger for the same Prefect run whose lines reach the Prefect API but not the console
    (where the status view is drawn)."""
    from prefect.logging.handlers import APILogHandler

    logger = logging.getLogger("tunesmith.trials")
    if not any(isinstance(h, APILogHandler) for h in logger.handlers):
        logger.addHandler(APILogHandler())
        logger.propagate = False
        logger.setLevel(logging.INFO)
    if isinstance(run_logger, logging.LoggerAdapter):  # a run's logger: keep its run ids
        return type(run_logger)(logger, run_logger.extra)
    return logger
