"""flows._log_thread.LogThread: lines written by its own thread, in order, all out at close()."""

from __future__ import annotations

import logging
import threading

from flows._log_thread import LogThread


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str, str]] = []  # (level, text, thread)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelname, record.getMessage(), record.threadName))


def test_lines_are_written_by_another_thread_in_order_and_all_out_at_close() -> None:
    logger = logging.getLogger("tunesmith.test_log_thread")
    handler = _Lines()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        lines = LogThread(logging.LoggerAdapter(logger, {"run": "r1"}))
        for i in range(200):
            lines.info("trial %d completed", i)
        lines.warning("trial %d failed", 200)
        lines.close()
    finally:
        logger.removeHandler(handler)
    assert [text for _, text, _ in handler.lines] == \
        [f"trial {i} completed" for i in range(200)] + ["trial 200 failed"]
    assert handler.lines[-1][0] == "WARNING"
    assert {thread for _, _, thread in handler.lines} == {"tunesmith-log-lines"}
    assert threading.current_thread().name != "tunesmith-log-lines"


def test_a_log_thread_that_logged_nothing_starts_no_thread() -> None:
    before = threading.active_count()
    LogThread(logging.getLogger("tunesmith.test_log_thread")).close()
    assert threading.active_count() == before
