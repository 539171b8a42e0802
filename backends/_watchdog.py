"""The tuner's watchdog: ends every process of a tuner session once the tuner is gone.

Run by `backends.processes` as `python -I -S _watchdog.py <session> <temporary folder>`
(standard library only, so it starts in milliseconds), with a pipe on its stdin whose write end
only the tuner holds. When the tuner exits, however it dies (SIGKILL included), the pipe reads
end-of-file; the watchdog then SIGKILLs every process whose environment carries
`TUNESMITH_PROCESS_TOKEN=<session>.<n>`: trial processes, and whatever they started, even with
`setsid` or a double fork (a process that clears its environment escapes; the next session's
reconcile still finds its record). Then it removes the session's private folders
(`<temporary folder>/tunesmith-<session>-*`: trials' configs with their secrets resolved).
It also acts on SIGTERM, SIGHUP and SIGINT; it runs in a session of its own, so a Ctrl-C in
the terminal reaches the tuner, not it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

TOKEN_ENV = "TUNESMITH_PROCESS_TOKEN"


def session_processes(session: str) -> list[int]:
    """Pids on this host whose environment carries a token of `session` (Linux /proc)."""
    needle = f"{TOKEN_ENV}={session}.".encode()
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read()
        except OSError:  # gone, or not ours to read
            continue
        if (b"\0" + needle) in (b"\0" + environ):
            found.append(int(name))
    return found


def private_prefix(session: str) -> str:
    """The name every private folder of `session` starts with (`processes.private_dir`)."""
    return f"tunesmith-{session}-"


def remove_private(session: str, folder: str) -> None:
    """Remove the session's private folders in `folder`."""
    prefix = private_prefix(session)
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


def end_session(session: str, passes: int = 20) -> int:
    """SIGKILL the session's processes until a scan finds none (a process may fork while it
    is being killed). Returns how many were signalled."""
    killed = 0
    for _ in range(passes):
        pids = session_processes(session)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.05)
    return killed


def main(session: str, folder: str | None = None) -> None:
    def on_signal(*_: object) -> None:
        raise SystemExit

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        while os.read(0, 4096):  # the tuner never writes: this returns b"" when it is gone
            pass
    except (SystemExit, OSError):
        pass
    finally:
        if os.path.isdir("/proc"):
            end_session(session)
        if folder is not None:
            remove_private(session, folder)


if __name__ == "__main__":
    main(*sys.argv[1:3])
