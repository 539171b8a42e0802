"""Hold back the exceptions that signal handlers raise while the tuner moves a poll's events
into the journal.

A kill (Ctrl-C's KeyboardInterrupt, the CLI's `Terminated` for SIGTERM/SIGHUP, Prefect's
cancellation) arrives as an exception raised by a Python signal handler, which CPython runs in
the main thread at the next bytecode boundary. Raised after a backend took an event off its
queue and before that event reached the journal, it loses the event: no `poll()` returns it
and `drain()` can no longer hand it over (no reordering of Python code closes that gap: CPython
runs a pending handler right after a C call such as `SimpleQueue.get_nowait()` returns, before
its result is even stored). So the tuner installs `guard()` for its run, and wraps each
poll-and-journal in `held()`: a signal that comes inside it is remembered and wakes a poll
that waits for events (`TrialBackend.wake()`), and its handler runs when the block is left,
once the events are journaled.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                if hasattr(signal, name))

_depth = 0  # nesting of held() blocks (main thread only)
_wake: list[Callable[[], None]] = []  # what the innermost held() block wakes
_pending: list[tuple[Callable[[int, FrameType | None], Any], int, FrameType | None]] = []


def _wrap(handler: Callable[[int, FrameType | None], Any]) -> Callable[[int, FrameType | None], Any]:
    def held_handler(signum: int, frame: FrameType | None) -> Any:
        if _depth:
            _pending.append((handler, signum, frame))
            if _wake:
                _wake[-1]()
            return None
        return handler(signum, frame)

    return held_handler


@contextmanager
def guard() -> Iterator[None]:
    """For the tuner's run: the Python handlers of SIGINT, SIGTERM and SIGHUP installed now
    are wrapped so that `held()` can hold them back (in the main thread; elsewhere no signal
    handler runs, and this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    installed = {}
    for sig in SIGNALS:
        current = signal.getsignal(sig)
        if callable(current):
            installed[sig] = (current, _wrap(current))
            signal.signal(sig, installed[sig][1])
    try:
        yield
    finally:
        for sig, (old, ours) in installed.items():
            if signal.getsignal(sig) is ours:  # not replaced meanwhile
                signal.signal(sig, old)


@contextmanager
def held(wake: Callable[[], None] | None = None) -> Iterator[None]:
    """Signals that come inside run their handlers (which may raise) when the block is left
    normally; if it is left by an exception, that one goes on (the run ends with it). `wake`
    is called when a signal is held (it runs in a signal handler: it must be reentrant, as
    `queue.SimpleQueue.put` is), to end a wait inside the block early."""
    global _depth
    _depth += 1
    if wake is not None:
        _wake.append(wake)
    ok = False
    try:
        yield
        ok = True
    finally:
        _depth -= 1
        if wake is not None:
            _wake.pop()
        if not _depth and _pending:
            pending = list(_pending)
            _pending.clear()
            if ok:
                for handler, signum, frame in pending:
                    handler(signum, frame)
