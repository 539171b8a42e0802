"""A logger whose lines are written by a thread of its own, so that the tuner's loop never waits
on logging: Prefect's console handler (rich) and its API handler take a lock that every task
thread's log lines take too. The lines keep their order; `close()` writes what is left."""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Mapping
from typing import Any

RunLogger = logging.Logger | logging.LoggerAdapter[Any]


class LogThread(logging.LoggerAdapter[RunLogger]):
    """Logs to `target` (a logger or a run's logger adapter) from its own thread."""

    def __init__(self, target: RunLogger):
        super().__init__(target, None)
        self._lines: queue.SimpleQueue[tuple[int, object, tuple[object, ...],
                                             Mapping[str, Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started by the first line

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if self._thread is None:
            context = contextvars.copy_context()  # the flow run's, for Prefect's handlers
            self._thread = threading.Thread(target=context.run, args=(self._write,),
                                            name="tunesmith-log-lines", daemon=True)
            self._thread.start()
        self._lines.put((level, msg, args, kwargs))

    def close(self) -> None:
        """Write the lines still queued, then end the thread."""
        if self._thread is not None:
            self._lines.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def _write(self) -> None:
        while (line := self._lines.get()) is not None:
            level, msg, args, kwargs = line
            self.logger.log(level, msg, *args, **kwargs)
