"""One owner per experiment: a lock file in the experiment folder that names its holder.

`lock.json` holds the holder's host, boot id, pid, process start time and a heartbeat time
(rewritten every `HEARTBEAT_SECONDS` by a daemon thread). A second process that wants the
experiment reads it: a live holder makes it refuse at once (`ExperimentLockedError`, one line
naming the holder); a dead holder's lock is taken over. The holder is dead when, on this host,
its pid is gone, or belongs to a process that started at another time (pid reused), or the host
rebooted; on another host (a shared filesystem), when its heartbeat is older than
`STALE_SECONDS`. Every read-judge-write of the lock file happens under an exclusive `flock` on
`.lock.guard` (held for microseconds), so two takers of a dead holder's lock cannot both win.

Within one process the lock is re-entrant: the CLI takes it before Prefect starts and the
store takes it again inside the flow; the file goes when the last holder releases it.
Readers (`show`, `list`, `load_experiment`) never take it.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_core.store.files import atomic_write_text

logger = logging.getLogger(__name__)

LOCK_FILE = "lock.json"
GUARD_FILE = ".lock.guard"
HEARTBEAT_SECONDS = 10.0
STALE_SECONDS = 60.0


class ExperimentLockedError(RuntimeError):
    """Another live process owns the experiment."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or wants) a lock."""

    host: str
    boot_id: str
    pid: int
    start_time: float | None  # process start, seconds since the epoch (None: unknown)
    token: str

    def to_dict(self, heartbeat: float) -> dict[str, Any]:
        return {"host": self.host, "boot_id": self.boot_id, "pid": self.pid,
                "start_time": self.start_time, "token": self.token, "heartbeat": heartbeat}


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from /proc; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return round(btime + ticks / os.sysconf("SC_CLK_TCK"), 2)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def this_process() -> Holder:
    pid = os.getpid()
    return Holder(socket.gethostname(), _boot_id(), pid, process_start_time(pid),
                  uuid.uuid4().hex)


def holder_is_alive(info: dict[str, Any], now: float | None = None) -> bool:
    """Whether the holder named by a lock file's content still runs."""
    now = time.time() if now is None else now
    same_host = info.get("host") == socket.gethostname()
    if same_host and info.get("boot_id") and info.get("boot_id") != _boot_id():
        return False  # the host rebooted since
    if not same_host:
        return now - float(info.get("heartbeat", 0.0)) < STALE_SECONDS
    pid = int(info.get("pid", -1))
    if pid <= 0 or not _pid_alive(pid):
        return False
    recorded, actual = info.get("start_time"), process_start_time(pid)
    if recorded is not None and actual is not None and abs(float(recorded) - actual) > 1.0:
        return False  # the pid now belongs to another process
    return True


def describe(info: dict[str, Any], now: float | None = None) -> str:
    """'pid 123 on host h (started 2026-11-29 21:50:01 UTC, heartbeat 3 s ago)'."""
    now = time.time() if now is None else now
    start = info.get("start_time")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start)) if start else "?"
    beat = now - float(info.get("heartbeat", now))
    return (f"pid {info.get('pid')} on host {info.get('host')} (started {started}, "
            f"heartbeat {beat:.0f} s ago)")


@contextmanager
def _guard(folder: Path) -> Iterator[None]:
    """The short exclusive section in which a lock file is read, judged and written."""
    fd = os.open(folder / GUARD_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock


def read_lock(folder: Path) -> dict[str, Any] | None:
    """The lock file's content (None: no lock, or not a lock: it is written atomically, so it
    is never cut short). A lock this process may not read counts as held by someone else."""
    path = Path(folder) / LOCK_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except PermissionError:
        raise ExperimentLockedError(f"experiment {Path(folder).name!r} is locked by another "
                                    f"user ({path} is not readable)") from None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_held(folder: Path) -> bool:
    """Whether a live process holds the lock of the experiment in `folder` (one this process
    may not read counts as held)."""
    try:
        info = read_lock(folder)
    except ExperimentLockedError:
        return True
    return info is not None and holder_is_alive(info)


class ExperimentLock:
    """The lock of one experiment folder, as this process holds it (see the module docstring).

    Get instances with `experiment_lock(folder)`: one per folder and process, so that holds
    count up and down across the CLI, the flow and the tuner."""

    def __init__(self, folder: Path, name: str):
        self.folder = Path(folder)
        self.name = name
        self.path = self.folder / LOCK_FILE
        self.holder = this_process()
        self._count = 0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: why the lock is no longer ours: another process took it over (this one was judged
        #: dead); empty while it is ours
        self.lost = ""

    @property
    def held(self) -> bool:
        return self._count > 0

    def acquire(self) -> None:
        """Take the lock (or count one more hold); ExperimentLockedError if a live process has
        it."""
        with self._mutex:
            if self._count == 0:
                self.holder = this_process()  # this process, now (a fork has another pid)
                self.folder.mkdir(parents=True, exist_ok=True)
                with _guard(self.folder):
                    info = read_lock(self.folder)
                    if info is not None and info.get("token") != self.holder.token:
                        if holder_is_alive(info):
                            raise ExperimentLockedError(
                                f"experiment {self.name!r} is in use by {describe(info)}; "
                                "wait for it to end or stop it")
                        logger.warning("taking over the lock of experiment %s from %s, which "
                                       "is no longer running", self.name, describe(info))
                    self._write()
                self.lost = ""
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, daemon=True,
                                                 name=f"lock-{self.name}")
                self._thread.start()
            self._count += 1

    def release(self) -> None:
        """Drop one hold; the last one removes the lock file (if it is still ours)."""
        with self._mutex:
            if self._count == 0:
                return
            self._count -= 1
            if self._count > 0:
                return
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        try:
            with _guard(self.folder):
                info = read_lock(self.folder)
                if info is not None and info.get("token") == self.holder.token:
                    self.path.unlink(missing_ok=True)
        except OSError as err:  # e.g. the folder was removed: nothing left to release
            logger.debug("releasing the lock of %s: %s", self.name, err)

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps(self.holder.to_dict(time.time())), mode=0o644)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if not self.folder.is_dir():
                return  # the experiment was deleted: nothing left to own
            try:
                with _guard(self.folder):
                    info = read_lock(self.folder)
                    if info is not None and info.get("token") != self.holder.token:
                        self.lost = (f"the lock of experiment {self.name!r} was taken over "
                                     f"by {describe(info)}")
                        return
                    self._write()
            except OSError as err:  # a full disk: the next beat tries again
                logger.warning("experiment %s: heartbeat failed: %s", self.name, err)


_LOCKS: dict[Path, ExperimentLock] = {}
_LOCKS_MUTEX = threading.Lock()


def experiment_lock(folder: str | os.PathLike[str]) -> ExperimentLock:
    """This process's lock object for an experiment folder."""
    path = Path(folder).resolve()
    with _LOCKS_MUTEX:
        lock = _LOCKS.get(path)
        if lock is None:
            lock = _LOCKS[path] = ExperimentLock(path, path.name)
        return lock


@atexit.register
def _release_all() -> None:
    for lock in list(_LOCKS.values()):
        while lock.held:
            lock.release()
