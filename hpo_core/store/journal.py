"""The experiment's journal: an append-only log of what the tuner saw, in segments.

`journal/<k>.jsonl` holds one JSON object per line:

* `{"n": n_workers}`: a session began (its first record), with this many workers;
* `{"s": [trial_id, config, checkpoint_from]}`: a new trial, written before it starts;
* `{"b": [[kind, trial_id, time, metrics, reason], ...]}`: one batch of backend events (one
  `poll()`), written before the scheduler sees any of them; `time` is the experiment's time
  (journals written before 2026-11-30 have a sixth, unused entry per event);
* `{"d": [[index, status, decision], ...]}`: what became of the previous batch's reports
  (written in front of the next record; a resume recomputes it, readers use it);
* `{"x": [exception, is_error]}`: what interrupted the session (its last record; a resume
  ignores it, the views say why the experiment did not end).

Each record reaches the file with one `os.write` (no user-space buffer), so a SIGKILL loses
nothing written; `sync()` (fdatasync, called off the tuner's thread) makes it durable against
a power loss. A snapshot (`state.json`) covers the segments below the one it names; segments
it covers are removed once it is durable. A line cut short (a kill or a full disk mid-write)
can only be the last of its segment, since a new session always starts a new segment; readers
skip it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import Any

from hpo_core.json_encoders import compiled_encoder
from hpo_core.store.files import json_default

logger = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StoreError(RuntimeError):
    """The store could not write (see `StoreFullError`)."""


class StoreFullError(StoreError):
    """No space left where the experiment is stored."""


def store_error(err: OSError, path: Path) -> StoreError:
    """A one-line StoreError for an OSError met while writing `path`."""
    if err.errno in _NO_SPACE:
        return StoreFullError(f"experiment store: no space left on device writing {path}; "
                              "free some space, then resume the experiment")
    return StoreError(f"experiment store: could not write {path}: {err.strerror or err}")


#: `json.dumps(record, separators=(",", ":"), default=json_default)`, its C encoder built once
_ENCODE = compiled_encoder(json.JSONEncoder(separators=(",", ":"), default=json_default))


def encode(record: dict[str, Any]) -> bytes:
    """One journal line."""
    return (_ENCODE(record) + "\n").encode()


def encode_decisions(decisions: list[list[Any]]) -> bytes:
    """The `d` line of a poll's decisions ([index, status, decision]: plain words, no escaping
    needed), formatted directly: it is written once per poll."""
    items = ",".join(f'[{i},"{status}","{decision}"]' for i, status, decision in decisions)
    return f'{{"d":[{items}]}}\n'.encode()


class Journal:
    """The segments of one experiment folder; appends go to the newest one."""

    def __init__(self, folder: Path):
        self.folder = Path(folder) / JOURNAL_DIR
        self.segment: int | None = None
        self._fd: int | None = None
        self._dirty = False

    def segments(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(p.stem) for p in self.folder.glob("*.jsonl") if p.stem.isdigit())

    def path(self, segment: int) -> Path:
        return self.folder / f"{segment:08d}.jsonl"

    def read(self, first: int) -> list[dict[str, Any]]:
        """Every record of the segments from `first` on, in order; `{"end": k}` after the
        records of segment k."""
        records: list[dict[str, Any]] = []
        for segment in self.segments():
            if segment < first:
                continue
            try:
                data = self.path(segment).read_bytes()
            except FileNotFoundError:  # removed by a compaction meanwhile (a reader)
                continue
            for line in data.split(b"\n"):
                if not line:
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    logger.info("journal segment %s: skipping a line cut short", segment)
            records.append({"end": segment})
        return records

    def open(self, segment: int) -> None:
        """Start appending to a new segment (the old one is closed once the new one is open:
        an exception in between leaves one of them to append to)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path(segment)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as err:
            raise store_error(err, path) from None
        old, self._fd, self.segment = self._fd, fd, segment
        if old is not None:
            os.close(old)

    def append(self, data: bytes) -> None:
        """Write `data` (whole records) with as few `write` calls as the kernel allows."""
        if self._fd is None:
            raise StoreError("experiment store: the journal is not open")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as err:
            self.close()  # nothing more goes after a cut line
            raise store_error(err, self.path(self.segment or 0)) from None
        self._dirty = True

    def sync(self) -> None:
        """Make what was appended durable (fdatasync); safe from another thread."""
        fd = self._fd
        if fd is not None and self._dirty:
            self._dirty = False
            try:
                os.fdatasync(fd)
            except OSError:  # closed meanwhile, or the disk is full: the next sync retries
                self._dirty = True

    def remove_below(self, segment: int) -> None:
        for old in self.segments():
            if old < segment:
                self.path(old).unlink(missing_ok=True)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
