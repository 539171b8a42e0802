"""Copying a trial's checkpoint folder into another trial's (PBT's exploit step).

The source trial may still be running and writing its checkpoint, and scripts written for other
tools often write it in place (truncate, then write), so a plain copy can catch a half-written
file. `settled_copy` waits until the source looks the same twice `settle` seconds apart,
and holds no empty file just written, copies, and copies again if a file changed meanwhile (a
few tries; then it copies what is there, or for PBT nothing).
Half-written files of `hpo_core.report.save_checkpoint` (`.name.pid.tmp`) are never copied.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from hpo_core.report import is_temporary_checkpoint_file

logger = logging.getLogger(__name__)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under `folder`, by relative path."""
    out: dict[str, tuple[int, int]] = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            try:
                st = path.stat()
            except FileNotFoundError:  # replaced meanwhile
                continue
            out[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def _copy(source: Path, target: Path) -> None:
    shutil.copytree(source, target, dirs_exist_ok=True,
                    ignore=lambda _, names: [n for n in names if is_temporary_checkpoint_file(n)])


#: an empty file modified this recently may be one just truncated, its writer not yet
#: scheduled again; an older one is taken as it is (a marker file)
EMPTY_FILE_SETTLE_SECONDS = 1.0


def settled_copy(source: Path, target: Path, settle: float = 0.05, tries: int = 20,
                 keep_unsettled: bool = True) -> bool:
    """Copy folder `source` into `target` (created); whether `target` now holds a copy (False
    if `source` is no folder).

    The copy starts once two looks at the source, `settle` seconds apart, see the same files
    (sizes and modification times: truncating a file need not change its time) and no empty
    file modified in the last EMPTY_FILE_SETTLE_SECONDS (one just truncated), and is taken
    again if the source changed while it was copied. If it never settles in `tries` looks,
    the copy is kept as it is (`keep_unsettled`), or removed (a copy that may hold a torn file
    is worse than none: PBT then starts the child afresh).
    """
    if not source.is_dir():
        return False
    for _ in range(tries):
        first = _snapshot(source)
        time.sleep(settle)
        before = _snapshot(source)
        recent = time.time_ns() - int(EMPTY_FILE_SETTLE_SECONDS * 1e9)
        if before != first or any(size == 0 and mtime > recent
                                   for size, mtime in before.values()):
            continue  # being written: wait
        _copy(source, target)
        if _snapshot(source) == before:
            return True
    if not keep_unsettled:  # the caller says what happens instead
        shutil.rmtree(target, ignore_errors=True)
        return False
    logger.warning("the checkpoint in %s kept changing while it was copied; copying it as it is",
                   source)
    _copy(source, target)
    return True
