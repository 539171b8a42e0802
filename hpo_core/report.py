"""The training-script side of tunesmith, and the parser of what scripts print.

In a training script::

    from hpo_core.report import get_config, report, load_checkpoint, save_checkpoint

    config = get_config()                     # from TUNESMITH_CONFIG or --name value arguments
    state = load_checkpoint() or {"epoch": 0} # resume after a pause
    for epoch in range(state["epoch"] + 1, config["epochs"] + 1):
        ...
        save_checkpoint({"epoch": epoch, ...})
        report(epoch=epoch, val_loss=loss)    # prints: [tunesmith]: {"epoch": 3, "val_loss": 0.41}

Lines in Syne Tune's format (``[tune-metric]: {...}``) are parsed too, so Syne Tune scripts run
unchanged. This module imports only the standard library: every trial pays for importing it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PREFIX = "[tunesmith]:"
SYNE_TUNE_PREFIX = "[tune-metric]:"
PREFIXES = (PREFIX, SYNE_TUNE_PREFIX)
CONFIG_ENV = "TUNESMITH_CONFIG"
CHECKPOINT_ENV = "TUNESMITH_CHECKPOINT_DIR"
TRIAL_ID_ENV = "TUNESMITH_TRIAL_ID"

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """numpy / torch scalars to Python numbers without importing either."""
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    return str(value)


def format_report(metrics: dict[str, Any]) -> str:
    """The line `report(**metrics)` prints."""
    return f"{PREFIX} {json.dumps(metrics, default=_plain, allow_nan=True)}"


def report(**metrics: Any) -> None:
    """Report metrics of the current trial (one JSON line on stdout, flushed at once)."""
    line = format_report(metrics) + "\n"
    sys.stdout.write(line)
    sys.stdout.flush()


class Reporter:
    """Callable reporter, for scripts written as `report = Reporter(); report(epoch=1, ...)`."""

    def __call__(self, **metrics: Any) -> None:
        report(**metrics)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def get_config(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The trial's hyperparameters: the JSON file named by TUNESMITH_CONFIG, updated with
    `--name value` arguments (values parsed as JSON where they parse, else kept as strings)."""
    config: dict[str, Any] = {}
    path = os.environ.get(CONFIG_ENV)
    if path:
        config.update(json.loads(Path(path).read_text()))
    args = list(sys.argv[1:] if argv is None else argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg[2:].partition("=")
            if eq:
                config[name] = _parse_value(value)
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                config[name] = _parse_value(args[i + 1])
                i += 1
            else:
                config[name] = True
        i += 1
    return config


def trial_id() -> int | None:
    value = os.environ.get(TRIAL_ID_ENV)
    return int(value) if value else None


def checkpoint_dir() -> Path | None:
    """The folder where this trial keeps its checkpoint (kept across pause and resume)."""
    value = os.environ.get(CHECKPOINT_ENV)
    if not value:
        return None
    path = Path(value)
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_checkpoint(state: Any, filename: str = "checkpoint.json") -> Path | None:
    """Save `state` atomically in the checkpoint dir (JSON for .json names, else pickle).

    Returns the path, or None when the script runs outside tunesmith (no checkpoint dir)."""
    folder = checkpoint_dir()
    if folder is None:
        return None
    target = folder / filename
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.")
    with os.fdopen(fd, "wb") as f:
        if filename.endswith(".json"):
            f.write(json.dumps(state, default=_plain).encode())
        else:
            pickle.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


def load_checkpoint(filename: str = "checkpoint.json") -> Any | None:
    """The state last saved with `save_checkpoint`, or None if there is none."""
    folder = checkpoint_dir()
    if folder is None or not (folder / filename).exists():
        return None
    data = (folder / filename).read_bytes()
    return json.loads(data) if filename.endswith(".json") else pickle.loads(data)  # noqa: S301


class MalformedReport(ValueError):
    """A line with a report prefix whose payload is not a JSON object of metrics."""


def parse_report_line(line: str) -> dict[str, Any] | None:
    """Metrics of one output line, None for lines that are not reports.

    Raises MalformedReport for a report line whose payload is not a JSON object."""
    stripped = line.strip()
    for prefix in PREFIXES:
        position = stripped.find(prefix)
        if position != -1:
            payload = stripped[position + len(prefix):].strip()
            try:
                metrics = json.loads(payload)
            except ValueError as err:
                raise MalformedReport(f"not JSON: {payload[:200]!r}") from err
            if not isinstance(metrics, dict):
                raise MalformedReport(f"not a JSON object: {payload[:200]!r}")
            return metrics
    return None


def is_finite_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    return False


class ReportParser:
    """Incremental parser of a trial's output: feed it chunks, get the reports in them.

    Partial lines are kept until their end arrives; malformed report lines are skipped with a
    warning (counted in `num_malformed`) and never raise."""

    def __init__(self, source: str = "trial"):
        self.source = source
        self._partial = ""
        self.num_malformed = 0

    def feed(self, chunk: str) -> list[dict[str, Any]]:
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        return self._parse(lines)

    def flush(self) -> list[dict[str, Any]]:
        """Parse what is left once the output has ended (a last line without newline)."""
        rest, self._partial = self._partial, ""
        return self._parse([rest]) if rest else []

    def _parse(self, lines: list[str]) -> list[dict[str, Any]]:
        reports = []
        for line in lines:
            if "]:" not in line:
                continue
            try:
                metrics = parse_report_line(line)
            except MalformedReport as err:
                self.num_malformed += 1
                logger.warning("%s: skipped a malformed report line (%s)", self.source, err)
                continue
            if metrics is not None:
                reports.append(metrics)
        return reports
