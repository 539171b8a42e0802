"""The one place that starts and ends trial processes on this host.

`launch(args, ...)` starts a command (an argument list, never a shell) so that nothing it starts
can outlive the tuner unnoticed:

- it leads a session and process group of its own (a Ctrl-C in the terminal reaches the tuner,
  which then ends its trials in order);
- it carries `TUNESMITH_PROCESS_TOKEN=<session>.<n>` in its environment, inherited by whatever
  it starts, `setsid` and double forks included: that is how its processes are found later;
- on Linux, it gets `PR_SET_PDEATHSIG` (SIGKILL by default): it dies with the tuner. The signal
  fires when the *thread* that forked it ends, so every launch forks from one long-lived
  thread of this module, never from the caller's (Prefect runs tasks in worker threads);
- the tuner becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant orphaned by a
  double fork or `setsid` is reparented to the tuner, so it stays among the tuner's
  descendants, where `ProcessTree.members()` finds it;
- a watchdog process (`backends/_watchdog.py`, one per tuner process) SIGKILLs every process
  carrying one of this session's tokens once the tuner is gone, however it died;
- a record (pid, create time, process group, host, token, owner) is written to `record_dir`
  right after the launch and removed once the whole tree has ended. `reconcile(paths)` ends
  what the records of a dead session still name (checking create times, so a reused pid is
  never killed) and is what a resumed experiment calls before it launches anything.

`ProcessTree` is the handle: `terminate()` (SIGTERM), `kill()` (SIGKILL), `alive()`,
`end(grace)` (all three, blocking), `exited()` (the main process, without reaping it).
Each signal goes to the process group while the main process is not reaped, and to every
member of the tree found by parentage or by token.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import logging
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

from backends._watchdog import TOKEN_ENV, private_prefix

logger = logging.getLogger(__name__)

__all__ = ["TOKEN_ENV", "ProcessRecord", "ProcessTree", "become_subreaper", "launch",
           "reconcile", "session_id"]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_WATCHDOG = Path(__file__).with_name("_watchdog.py")
_T = TypeVar("_T")


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    return prctl


_prctl = _load_prctl()  # resolved once: the forked child must not import or look anything up


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux); False where that is not possible."""
    return _prctl is not None and _prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


# Run first in the child: ask for `sig` when the parent dies, then become the real command.
# util-linux's `setpriv --pdeathsig` does it in ~5 ms; without it, this Python trampoline
# (`python -I -S -c`, ~60 ms) also gives up if the parent is already gone. (Between the fork
# and the prctl, the watchdog covers a tuner's death: the token is already in the
# environment.) A pre-exec function would do the same in the forked tuner but forbids vfork:
# with Prefect, MLflow and pandas loaded, a launch took ~30-40 ms of the tuner's own time.
_TRAMPOLINE = """\
import ctypes, os, sys
ctypes.CDLL(None).prctl(1, int(sys.argv[2]), 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    os._exit(1)
try:
    os.execvp(sys.argv[3], sys.argv[3:])
except OSError as err:
    print(f"could not start {sys.argv[3]!r}: {err}", file=sys.stderr)
    os._exit(127)
"""


def _setpriv() -> str | None:
    """util-linux's setpriv, if it takes --pdeathsig (checked once)."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        ok = subprocess.run([path, "--pdeathsig", "KILL", "--", "true"], timeout=10,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return None
    return path if ok else None


def _with_death_signal(args: Sequence[str], sig: int) -> list[str]:
    """`args` behind setpriv or the trampoline (Linux), or as they are."""
    if _prctl is None:
        return list(args)
    if _state.setpriv is None:
        _state.setpriv = _setpriv() or ""
    if _state.setpriv:
        return [_state.setpriv, "--pdeathsig", signal.Signals(sig).name.removeprefix("SIG"),
                "--", *args]
    return [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(os.getpid()), str(int(sig)),
            *args]


@dataclass(frozen=True)
class ProcessRecord:
    """What identifies a launched process tree, on disk while it may be alive."""

    pid: int
    create_time: float
    pgid: int
    host: str
    token: str
    owner_pid: int
    owner_create_time: float
    label: str = ""

    @classmethod
    def read(cls, path: Path) -> ProcessRecord:
        return cls(**json.loads(path.read_text()))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)


class ProcessTree:
    """A process started by `launch` and everything it starts (see the module docstring)."""

    def __init__(self, popen: subprocess.Popen[bytes], record: ProcessRecord,
                 record_path: Path | None):
        self.popen = popen
        self.record = record
        self.record_path = record_path
        self._known: dict[int, psutil.Process] = {}  # members seen so far, main excluded

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def token(self) -> str:
        return self.record.token

    def exited(self) -> bool:
        """Whether the main process has exited (without reaping it, where Linux allows)."""
        if self.popen.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.pid,
                             os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped meanwhile by Popen in another thread
            return True
        except AttributeError:  # no waitid (not Linux)
            return self.popen.poll() is not None

    def members(self) -> list[psutil.Process]:
        """The live processes of the tree other than the main one: its descendants, and every
        process carrying its token (a `setsid` or double-forked child) with its descendants."""
        candidates = _descendants() if _state.subreaper else list(psutil.process_iter())
        parents: dict[int, int] = {}
        roots = {self.pid}
        for proc in candidates:
            try:
                parents[proc.pid] = proc.ppid()
                if proc.environ().get(TOKEN_ENV) == self.token:
                    roots.add(proc.pid)
            except (psutil.Error, OSError):
                continue
        found = set(roots)
        while True:  # close over parentage
            more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
            if not more:
                break
            found |= more
        found.discard(self.pid)
        live = [p for p in candidates if p.pid in found and _running(p)]
        self._known.update((p.pid, p) for p in live)
        return live

    def terminate(self) -> bool:
        """SIGTERM to the whole tree; False when nothing of it was alive."""
        return self.send(signal.SIGTERM)

    def kill(self) -> bool:
        """SIGKILL to the whole tree; False when nothing of it was alive."""
        return self.send(signal.SIGKILL)

    def send(self, sig: int) -> bool:
        """`sig` to the process group (while the main process is not reaped, so its id cannot
        have been reused) and to every member; False when nothing was alive."""
        # Members are found before the group is signalled as well as after: once a parent
        # dies, its orphans are reparented while a scan reads parentage, and the scan can miss
        # a `setsid` child whose old parent is already reaped and whose new one not yet read.
        found = {proc.pid: proc for proc in self.members()}
        alive = False
        if self.popen.returncode is None:
            try:
                os.killpg(self.record.pgid, sig)
                alive = True
            except (ProcessLookupError, PermissionError):
                pass
        found.update((proc.pid, proc) for proc in self.members())
        for proc in found.values():
            try:
                proc.send_signal(sig)
                alive = True
            except psutil.Error:
                pass
        self._reap_adopted()
        return alive

    def alive(self) -> bool:
        """Whether the main process or a member seen so far still runs (cheap: no scan)."""
        self._reap_adopted()
        if not self.exited():
            return True
        return any(_running(p) for p in self._known.values())

    def end(self, grace: float = 5.0) -> None:
        """SIGTERM, up to `grace` seconds to exit, SIGKILL, then reap and forget the record.
        Blocks up to `grace` + 2 seconds."""
        deadline = time.monotonic() + grace
        if self.terminate():
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
        self.kill()
        deadline = time.monotonic() + 2.0
        while self.alive() and time.monotonic() < deadline:
            self.kill()
            time.sleep(0.02)
        if self.popen.returncode is None and self.exited():
            self.popen.wait()
        if not self.alive():
            self.forget()

    def forget(self) -> None:
        """Remove the record (call once the tree is gone)."""
        _state.live_tokens.discard(self.token)
        if self.record_path is not None:
            try:
                self.record_path.unlink()
            except FileNotFoundError:
                pass

    def _reap_adopted(self) -> None:
        """Reap members that were reparented to this process (a subreaper) and have exited;
        the main process is left to its Popen."""
        me = os.getpid()
        for pid, proc in list(self._known.items()):
            try:
                if proc.ppid() != me or proc.status() != psutil.STATUS_ZOMBIE:
                    continue
                if not proc.is_running():  # the pid now names another process
                    self._known.pop(pid)
                    continue
                os.waitpid(pid, os.WNOHANG)
            except (psutil.Error, ChildProcessError):
                pass
            if not _running(proc):
                self._known.pop(pid, None)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _descendants() -> list[psutil.Process]:
    """This process's descendants: as a subreaper, every orphan of a tree it launched too."""
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


# -- the launching thread, the session and its watchdog ----------------------------------------
class _State:
    """This process's launching thread, session token, watchdog and subreaper status."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: queue.SimpleQueue[tuple[Callable[[], Any], list[Any],
                                               threading.Event]] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.session = uuid.uuid4().hex[:16]
        self.counter = itertools.count()
        self.watchdog_fd: int | None = None
        self.subreaper = False
        self.live_tokens: set[str] = set()  # trees launched here and not forgotten
        self.setpriv: str | None = None  # its path, "" when unusable, None until checked
        self.host = socket.gethostname()
        self.me = psutil.Process()
        self.private: Path | None = None  # `private_dir()`, made on first use

    def call(self, fn: Callable[[], _T]) -> _T:
        """Run `fn` in the long-lived launching thread and return its result."""
        with self.lock:
            if self.thread is None:
                self.subreaper = become_subreaper()
                self.thread = threading.Thread(target=self._serve, name="tunesmith-launcher",
                                               daemon=True)
                self.thread.start()
        if threading.current_thread() is self.thread:
            return fn()
        box: list[Any] = []
        done = threading.Event()
        self.requests.put((fn, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _serve(self) -> None:
        # A child starts with the signal mask of the thread that forked it, and a thread with
        # that of the thread that started it: a trial with SIGTERM blocked would ignore stop.
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        while True:
            fn, box, done = self.requests.get()
            try:
                box.append(fn())
            except BaseException as err:  # noqa: BLE001 - handed back to the caller
                box.append(err)
            done.set()

    def start_watchdog(self) -> None:
        """Start the session's watchdog once (in the launching thread)."""
        if self.watchdog_fd is not None or _prctl is None:
            return
        read_fd, write_fd = os.pipe()
        env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        try:
            subprocess.Popen([sys.executable, "-I", "-S", str(_WATCHDOG), self.session,
                              tempfile.gettempdir()],
                             stdin=read_fd, stdout=subprocess.DEVNULL, env=env,
                             start_new_session=True, close_fds=True)
        except OSError:
            os.close(write_fd)
            logger.warning("could not start the process watchdog", exc_info=True)
            return
        finally:
            os.close(read_fd)
        self.watchdog_fd = write_fd


_state = _State()


def _after_fork_in_child() -> None:
    """A forked copy of the tuner gets a state of its own (no thread, session or watchdog)."""
    global _state
    if _state.watchdog_fd is not None:
        try:
            os.close(_state.watchdog_fd)
        except OSError:
            pass
    _state = _State()


os.register_at_fork(after_in_child=_after_fork_in_child)


def session_id() -> str:
    """This process's session: every token it hands out is `<session>.<n>`."""
    return _state.session


def private_dir() -> Path:
    """This session's folder (mode 0700, in the temporary folder) for files that only this user
    may read and that must not outlive the session, such as a trial's config with its secrets
    resolved: the session's watchdog removes it when this process ends, however it ends (a
    SIGKILL included; `_watchdog.private_prefix`)."""
    _state.call(_state.start_watchdog)  # before the folder: nothing put there outlives us
    with _state.lock:
        if _state.private is None:
            _state.private = Path(tempfile.mkdtemp(prefix=private_prefix(_state.session)))
        return _state.private


def launch(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stdin: int | IO[Any] | None = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pass_fds: Sequence[int] = (),
    record_dir: Path | None = None,
    label: str = "",
    death_signal: int = signal.SIGKILL,
) -> ProcessTree:
    """Start `args` (no shell) as described in the module docstring and return its handle.

    `env` is the child's whole environment (default: this process's); the token is added to
    it. The record goes to `record_dir/<token>.json` before this returns; if it cannot be
    written, the process is killed and the OSError raised (like a failed start).
    """
    if isinstance(args, str | bytes):
        raise TypeError("launch takes an argument list, never a shell command line")
    token = f"{_state.session}.{next(_state.counter)}"
    child_env = dict(os.environ if env is None else env)
    child_env[TOKEN_ENV] = token
    command = args[0] if args else ""
    if cwd is not None and os.sep in command and not os.path.isabs(command):
        command = os.path.join(cwd, command)  # relative to the child's folder, as for Popen
    if args and shutil.which(command, path=child_env.get("PATH", os.defpath)) is None:
        # as Popen would raise it (the command runs behind setpriv or a trampoline)
        raise FileNotFoundError(errno.ENOENT, "no such executable", args[0])

    def start() -> subprocess.Popen[bytes]:
        _state.start_watchdog()
        return subprocess.Popen(
            _with_death_signal(args, death_signal), env=child_env, cwd=cwd, stdin=stdin,
            stdout=stdout, stderr=stderr, pass_fds=tuple(pass_fds), close_fds=True,
            start_new_session=True)

    popen = _state.call(start)
    try:
        create_time = psutil.Process(popen.pid).create_time()
    except psutil.Error:  # exited and reaped already: nothing can be left of it but members
        create_time = 0.0
    record = ProcessRecord(popen.pid, create_time, popen.pid, _state.host, token, os.getpid(),
                           _state.me.create_time(), label)
    tree = ProcessTree(popen, record, None)
    _state.live_tokens.add(token)
    if record_dir is not None:
        path = Path(record_dir) / f"{token}.json"
        try:
            record.write(path)
        except OSError:
            tree.end(grace=0)
            raise
        tree.record_path = path
    return tree


def reconcile(paths: Iterable[Path]) -> list[int]:
    """End what the records at `paths` still name, when they come from a session that is gone:
    the recorded process if its create time matches, and every process carrying the record's
    token. Records of a tree this process still manages, of a live session of another process,
    or of another host, are left alone (with a warning for the last two). Returns the pids of
    the processes it ended; the files of the records it handled are removed."""
    records: dict[str, tuple[Path, ProcessRecord]] = {}
    for path in paths:
        try:
            record = ProcessRecord.read(path)
        except (OSError, ValueError, TypeError):
            logger.warning("ignoring an unreadable process record %s", path)
            continue
        if record.token in _state.live_tokens:
            continue
        if record.host != _state.host:
            logger.warning("process record %s is from host %s: not checked here", path,
                           record.host)
        elif record.owner_pid != os.getpid() and _same_process(record.owner_pid,
                                                                record.owner_create_time):
            logger.warning("process record %s belongs to process %d, which still runs: left "
                           "alone", path, record.owner_pid)
        else:
            records[record.token] = (path, record)
    if not records:
        return []
    victims: dict[int, psutil.Process] = {}
    for _, record in records.values():
        if _same_process(record.pid, record.create_time):
            victims[record.pid] = psutil.Process(record.pid)
    scan = [p for p in psutil.process_iter() if p.pid != os.getpid()]
    for proc in scan:
        try:
            if proc.environ().get(TOKEN_ENV) in records:
                victims[proc.pid] = proc
        except (psutil.Error, OSError):
            continue
    for pid, proc in list(victims.items()):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:  # dead already, only not reaped
                del victims[pid]
        except psutil.Error:
            del victims[pid]
    for proc in victims.values():
        logger.warning("ending process %d left by an earlier session", proc.pid)
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(victims.values()), timeout=2.0)
    for path, _ in records.values():
        path.unlink(missing_ok=True)
    return sorted(victims)


def _same_process(pid: int, create_time: float) -> bool:
    """Whether `pid` still names the process created at `create_time` (not a reused pid)."""
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 0.01
    except psutil.Error:
        return False
