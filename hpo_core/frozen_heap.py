"""Keep a tuner's full garbage collections to the objects it made (`gc.freeze`).

A run allocates a few long-lived objects per trial (the trial, its config, its rung entries),
so CPython's collector runs full collections every so often, and each one walks every object of
the process: the modules imported, the user's data, pandas and numpy (~80,000 objects, ~30 ms
per collection on a simulated run of 5,000 trials). Objects that existed before the run are
moved out of its collections for the run's duration and put back afterwards; garbage among them
is collected then. A process that froze objects itself, or runs with the collector off, is left
as it is.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def frozen_heap() -> Iterator[None]:
    """While the block runs, garbage collections skip the objects that exist when it starts."""
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
