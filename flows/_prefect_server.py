"""Prefect's API for one `tunesmith run`: a server of its own that cannot outlive the command.

Left alone, Prefect starts a temporary server (a uvicorn child process) at the first API call
when no `PREFECT_API_URL` is set, and stops it from an `atexit` hook: a SIGKILL of the command,
or a SIGTERM it does not handle, leaves that server running. So the CLI starts the server
itself, with Prefect's public command (`prefect server start`, without the UI and the
services a one-off run has no use for, as Prefect's temporary server) launched through `backends.processes`: it
dies with the command (PR_SET_PDEATHSIG, and the watchdog), and is stopped at a normal exit
after Prefect has flushed its logs and events (Prefect drains those from `threading`'s exit
hooks, which run before `atexit`'s). `PREFECT_API_URL` points at it for the rest of the run
(Prefect's `refresh_global_settings_context` makes the settings it read at import see it).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.request

from backends import processes

STARTUP_TIMEOUT_ENV = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# The services Prefect's own temporary server leaves out too (it runs the task-run recorder,
# the event persister, triggers and actions); --no-scheduler and --no-late-runs do the rest.
_SERVICES_OFF = {f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in (
    "CANCELLATION_CLEANUP", "FOREMAN", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CLEANUP_RECONCILER")}


def start_prefect_server() -> str | None:
    """Start a server for this process and export its URL, unless Prefect already has an API
    (`PREFECT_API_URL`, from the environment or a profile). Returns the URL, or None."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:
        return None
    timeout = float(os.environ.get(STARTUP_TIMEOUT_ENV) or 90)
    for _ in range(3):  # a port taken between choosing it and binding it: choose another
        url = _try_start(_free_port(), timeout)
        if url is not None:
            os.environ["PREFECT_API_URL"] = url
            refresh_global_settings_context()  # Prefect read the environment at its import
            return url
    raise RuntimeError("could not start a Prefect server for this run (ports taken)")


def _try_start(port: int, timeout: float) -> str | None:
    log = tempfile.TemporaryFile()
    env = {**os.environ, **_SERVICES_OFF, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    tree = processes.launch(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
         str(port), "--no-ui", "--no-scheduler", "--no-late-runs", "--analytics-off"],
        env=env, stdout=log, stderr=log, label="prefect server", death_signal=signal.SIGKILL)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tree.exited():
            tree.end(grace=0)
            log.seek(0)
            output = log.read().decode("utf-8", "replace")
            if "address already in use" in output.lower():
                return None
            raise RuntimeError(f"the Prefect server exited at start: {output[-2000:]}")
        if _healthy(url):
            atexit.register(tree.end, 5.0)
            return url
        time.sleep(0.1)
    tree.end(grace=1.0)
    raise RuntimeError(f"the Prefect server did not answer within {timeout:g}s "
                       f"(set {STARTUP_TIMEOUT_ENV} to wait longer)")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
