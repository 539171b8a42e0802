"""Prefect artifacts of an experiment: live progress, the leaderboard, the final summary.

`ProgressArtifact` is a tuner callback that keeps a progress artifact up to date as trials end
(at most once per `interval` wall seconds, sent by its own thread). `publish_leaderboard` and
`publish_summary` create the table and markdown artifacts at the end; the summary embeds the
incumbent-trajectory plot as a data URI (Prefect artifacts hold no images) and links the
MLflow runs.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from hpo_core.secrets import one_line, redact, spec_secret_names
from hpo_core.store import CONFIG_PREFIX, Experiment
from hpo_core.trial import Trial, counts_text, trial_counts
from hpo_core.trial_value import format_value, no_best, sentence
from hpo_core.tuner import Tuner, TunerCallback

logger = logging.getLogger(__name__)


def artifact_key(name: str, suffix: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) for experiment `name`."""
    key = re.sub(r"[^a-z0-9-]+", "-", f"{name}-{suffix}".lower())
    return re.sub(r"-{2,}", "-", key).strip("-")


def progress_fraction(tuner: Tuner) -> float | None:
    """How far the experiment is towards its nearest stopping limit (0..1), None if unknown."""
    limit, s = tuner.stop_criterion, tuner.status
    ended = s.num_trials_completed + s.num_trials_failed
    fractions = [
        done / total
        for done, total in (
            (s.num_trials_completed, limit.max_trials_completed),
            (ended, limit.max_trials_started),
            (tuner.now(), limit.max_time),
            (s.num_results, limit.max_results),
            (s.total_cost, limit.max_cost),
        )
        if total
    ]
    return min(1.0, max(fractions)) if fractions else None


class ProgressArtifact(TunerCallback):
    """A progress artifact (key `<experiment>-progress`) updated as trials end.

    The tuner only computes the figures; one thread of this callback sends them to the Prefect
    API (the latest pending update; a busy server costs the tuner no wait), and the last one
    has been sent when `on_tuning_end` returns."""

    def __init__(self, name: str, interval: float = 2.0):
        self.key = artifact_key(name, "progress")
        self.interval = interval
        self.artifact_id: UUID | None = None
        self._tuner: Tuner | None = None
        self._last = 0.0
        self._pending: tuple[float, str] | None = None  # the next update to send
        self._ending = False
        self._wake = threading.Condition()
        self._sender: threading.Thread | None = None

    def on_tuning_start(self, tuner: Tuner) -> None:
        self._tuner = tuner
        self._last = time.monotonic()
        first = (100.0 * (progress_fraction(tuner) or 0.0), self._description(tuner))
        context = contextvars.copy_context()  # the flow run's Prefect client settings
        self._sender = threading.Thread(target=context.run, args=(self._send, first),
                                        name=f"tunesmith-progress-{self.key}", daemon=True)
        self._sender.start()

    def on_trial_complete(self, trial: Trial) -> None:
        self._maybe_update()

    def on_trial_error(self, trial: Trial) -> None:
        self._maybe_update()

    def on_tuning_end(self, tuner: Tuner) -> None:
        self._update(100.0 if tuner.end_reason else None, ended=True)
        with self._wake:
            self._ending = True
            self._wake.notify()
        if self._sender is not None:
            self._sender.join(timeout=60)

    def _maybe_update(self) -> None:
        if time.monotonic() - self._last >= self.interval:
            self._update()

    def _update(self, percent: float | None = None, ended: bool = False) -> None:
        tuner = self._tuner
        if tuner is None:
            return
        self._last = time.monotonic()
        if percent is None:
            percent = 100.0 * (progress_fraction(tuner) or 0.0)
        with self._wake:
            self._pending = (percent, self._description(tuner, ended))
            self._wake.notify()

    def _send(self, first: tuple[float, str]) -> None:
        """The sender thread: create the artifact, then send the latest update until the end."""
        percent, description = first
        if not self._call(lambda: setattr(self, "artifact_id", create_progress_artifact(
                percent, key=self.key, description=description))):
            return
        while True:
            with self._wake:
                while self._pending is None and not self._ending:
                    self._wake.wait()
                pending, self._pending = self._pending, None
                ending = self._ending
            if pending is not None and self.artifact_id is not None:
                if not self._call(partial(update_progress_artifact, self.artifact_id,
                                          pending[0], description=pending[1])):
                    return
            if ending and pending is None:
                return

    def _call(self, action: Any) -> bool:
        try:
            action()
        except Exception as err:  # noqa: BLE001 - progress display must not end an experiment
            logger.warning("progress artifact disabled: %s", err)
            self._tuner = None
            return False
        return True

    @staticmethod
    def _description(tuner: Tuner, ended: bool = False) -> str:
        """`12 trials: 3 completed, 9 stopped early; best loss: 0.1` (`ended`: the run is
        over, so trials still marked running were interrupted)."""
        s = tuner.status
        counts = trial_counts((t.status for t in tuner.trials.values()), s.num_results,
                              ended=ended)
        return (f"{counts_text(counts)}; best {tuner.scheduler.metric}: "
                f"{format_value(s.best_value)}")


def leaderboard(experiment: Experiment, top: int = 10) -> list[dict[str, Any]]:
    """The `top` trials by their value (best report, `hpo_core.trial_value`): rank, trial,
    status, value, the step it came at, number of reports, config."""
    metric = experiment.metric
    ranked = experiment.ranked()
    if ranked.empty or metric not in ranked.columns:
        return []
    step = f"at {experiment.resource_attr or 'report'}"
    rows = []
    top_rows = ranked.dropna(subset=[metric]).head(top).to_dict(orient="records")
    for rank, row in enumerate(top_rows, start=1):
        entry: dict[str, Any] = {
            "rank": rank,
            "trial_id": int(row["trial_id"]),
            "status": str(row["status"]),
            metric: _rounded(row[metric]),
            step: _whole(_plain(row["best_step"])),
            "num_reports": int(row["num_reports"]),
        }
        config = {c[len(CONFIG_PREFIX):]: _rounded(_plain(row[c]))
                  for c in experiment.config_columns}
        entry.update(redact(config, spec_secret_names(experiment.spec)))
        rows.append(entry)
    return rows


def publish_leaderboard(name: str, experiment: Experiment, top: int = 10) -> UUID:
    """A table artifact (key `<experiment>-leaderboard`) of the top configs."""
    rows = leaderboard(experiment, top)
    artifact_id = create_table_artifact(
        rows or [{"trial_id": None, "note": no_best(experiment.metric, experiment.constraint)}],
        key=artifact_key(name, "leaderboard"),
        description=f"Top {len(rows)} configs of {name} by {experiment.metric} "
                    f"({experiment.mode})",
    )
    assert isinstance(artifact_id, UUID)  # called sync: Prefect's dispatch types it sync-or-async
    return artifact_id


def summary_markdown(name: str, experiment: Experiment, outcome: Mapping[str, Any],
                     plot: Path | None = None, curves: Path | None = None) -> str:
    """The end-of-experiment report: best config and value, counts, MLflow links, the plot."""
    metric, mode = experiment.metric, experiment.mode
    lines = [f"# Experiment `{name}`", ""]
    best = outcome.get("best_config")
    if best is None:
        lines += [f"**{sentence(no_best(metric, experiment.constraint))}.**", ""]
    else:
        lines += [
            f"**Best {metric}** ({mode}): `{format_value(outcome.get('best_value'))}` "
            f"(trial {outcome.get('best_trial_id')}, its best report at "
            f"{outcome.get('best_step_name', 'step')} {format_value(outcome.get('best_step'))})",
            "",
            "| hyperparameter | value |",
            "|---|---|",
            *[f"| {k} | `{format_value(_plain(v))}` |" for k, v in best.items()],
            "",
        ]
    counts = outcome.get("counts", {})
    lines += [
        f"**Trials:** {counts_text(counts)}; {counts.get('results', 0)} reports; "
        f"ended: {outcome.get('reason')}",
        "",
        *([f"**Last failure:** {one_line(outcome['last_failure'])}", ""]
          if outcome.get("last_failure") else []),
        f"**Method:** {outcome.get('scheduler')} on the {outcome.get('backend')} backend; "
        f"results in `{outcome.get('store_path')}`",
        "",
    ]
    if outcome.get("mlflow_parent_run_id"):
        lines += [
            f"**MLflow:** [parent run]({outcome.get('mlflow_run_url')})"
            + (f", [best trial]({outcome['mlflow_best_run_url']})"
               if outcome.get("mlflow_best_run_url") else "")
            + f"; start the UI with `{outcome.get('mlflow_ui_command')}`",
            "",
        ]
    elif outcome.get("mlflow_error"):
        lines += [f"**MLflow:** not tracked ({outcome['mlflow_error']})", ""]
    for title, image in (("Incumbent trajectory", plot), ("Learning curves", curves)):
        if image is not None and image.exists():
            data = base64.b64encode(image.read_bytes()).decode("ascii")
            lines += [f"## {title}", "", f"![{image.stem}](data:image/png;base64,{data})", ""]
    return "\n".join(lines)


def publish_summary(name: str, experiment: Experiment, outcome: Mapping[str, Any],
                    plot: Path | None = None, curves: Path | None = None) -> UUID:
    """A markdown artifact (key `<experiment>-summary`)."""
    artifact_id = create_markdown_artifact(
        summary_markdown(name, experiment, outcome, plot, curves),
        key=artifact_key(name, "summary"),
        description=f"Summary of experiment {name}",
    )
    assert isinstance(artifact_id, UUID)  # called sync: Prefect's dispatch types it sync-or-async
    return artifact_id


def _whole(value: Any) -> Any:
    """A whole float (an epoch read back from a frame with gaps) as an int."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _rounded(value: Any) -> Any:
    """Floats to 4 significant digits (what the tables show); other values as they are."""
    return float(format_value(value)) if isinstance(value, float) and value == value else value


def _plain(value: Any) -> Any:
    """A JSON-friendly scalar (numpy numbers to Python ones; other objects to text)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return json.dumps(value, default=str)
