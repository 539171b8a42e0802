"""frozen_heap: a run's collections skip the objects that existed before it, only for the run."""

from __future__ import annotations

import gc
import weakref

import pytest

from hpo_core.frozen_heap import frozen_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_objects_before_the_block_are_collected_after_it_not_during_it():
    node = _Node()
    alive = weakref.ref(node)
    with frozen_heap():
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()
        assert alive() is not None  # frozen: full collections skip it
        during = _Node()
        made = weakref.ref(during)
        del during
        gc.collect()
        assert made() is None  # the block's own garbage is collected as usual
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert alive() is None


def test_the_block_unfreezes_on_an_error():
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_objects_itself_keeps_them_frozen():
    gc.freeze()
    try:
        count = gc.get_freeze_count()
        with frozen_heap():
            pass
        # still frozen, and not frozen again: the count only falls, as frozen objects that
        # other threads release are freed
        assert 0 < gc.get_freeze_count() <= count
    finally:
        gc.unfreeze()


def test_with_the_collector_off_nothing_is_frozen():
    gc.disable()
    try:
        with frozen_heap():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()
