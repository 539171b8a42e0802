"""A trial's stdout and stderr as artifacts of its MLflow child run (`logs/stdout.txt`, ...).

Real backends keep each trial's output in `trials/<id>/stdout` and `stderr` of the experiment
store. At the end of each segment of the trial (completed, failed, stopped or paused), the last
`MAX_LOG_BYTES` of each file go to the child run, so a failed trial's traceback is one click away
in the MLflow UI. The copy is masked by `hpo_core.secrets.mask_text` (training scripts often
print their config): the trial's secret-named hyperparameters, every known secret value, URL
passwords and AWS access key ids.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_core.secrets import MIN_VALUE_CHARS, mask_text

LOG_FILES = ("stdout", "stderr")
MAX_LOG_BYTES = 2 * 1024 * 1024


@dataclass
class TrialLogs:
    """The output files of one trial, and the values to mask in them."""

    files: list[Path]
    secrets: list[str]


def find_trial_logs(trial_dir: Path, secrets: Iterable[Any]) -> TrialLogs | None:
    """The trial's non-empty output files (None if there are none)."""
    files = [trial_dir / name for name in LOG_FILES
             if (trial_dir / name).is_file() and (trial_dir / name).stat().st_size > 0]
    if not files:
        return None
    values = {str(s) for s in secrets if s is not None and len(str(s)) >= MIN_VALUE_CHARS}
    return TrialLogs(files, sorted(values, key=len, reverse=True))


def upload_trial_logs(client: Any, run_id: str, logs: TrialLogs) -> None:
    """Log masked tails of the files under `logs/` of the run."""
    with tempfile.TemporaryDirectory(prefix="tunesmith-logs-") as folder:
        for path in logs.files:
            Path(folder, f"{path.name}.txt").write_text(mask_text(_tail(path), logs.secrets))
        client.log_artifacts(run_id, folder, "logs")


def _tail(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size > MAX_LOG_BYTES:
            f.seek(size - MAX_LOG_BYTES)
        text = f.read(MAX_LOG_BYTES).decode("utf-8", "replace")
    if size <= MAX_LOG_BYTES:
        return text
    left_out = size - MAX_LOG_BYTES
    return f"[... the first {left_out} bytes are left out ...]\n" + text.split("\n", 1)[-1]

