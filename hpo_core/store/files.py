"""Files of the experiment store: the layout's names, path-safe names, atomic writes, JSON."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # the whole name (fullmatch)
CONFIG_PREFIX = "config_"
#: the store's own columns of a report row (the rest are what the trial reported)
ROW_COLUMNS = ("trial_id", "time", "status", "decision")
RESULTS_FILE = "results.parquet"
STATE_FILE = "state.json"
SPEC_FILE = "spec.json"
TRANSFER_FILE = "transfer.json"


def validate_name(name: str, field: str = "name") -> str:
    """Check a name used in paths: letters, digits, '.', '_', '-'; no leading dot; <= 128 chars."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise ValueError(
            f"{field}: {name!r} is not a valid name (letters, digits, '.', '_', '-'; "
            "starting with a letter or digit; at most 128 characters)"
        )
    return name


def atomic_write_text(path: Path, text: str, durable: bool = False,
                      mode: int | None = None) -> None:
    """Write a file so that readers see the old or the new content, never a partial one.

    Atomic against a killed process (rename). With `durable`, the file and its folder are also
    fsynced, so the new content survives a power loss once this returns. `mode`: its
    permissions (default: readable by the owner only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode is not None:  # mkstemp's files are private (0600)
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that renames and removals in it are durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporary_files(folder: Path, keep: tuple[str, ...] = ()) -> int:
    """Remove the temporary files (`.<name>.<random>`) a killed writer left in `folder`; call
    only while holding the experiment's lock. Returns how many were removed."""
    removed = 0
    for path in folder.glob(".*"):
        if path.name not in keep and path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def json_default(value: Any) -> Any:
    """`json.dumps` default: numpy scalars and arrays as Python values, anything else as str."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def dumps(data: Any) -> str:
    """JSON as the store writes it: indented, numpy values as plain numbers."""
    return json.dumps(data, indent=1, default=json_default, allow_nan=True)
