"""The worker's collector settings (stream/runtime/memory.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from stream.runtime import memory


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual


def test_startup_objects_leave_full_collections_and_startup_garbage_does_not_stay(unfrozen: None) -> None:
    class Node:
        pass

    kept, garbage = Node(), Node()
    garbage.self = garbage  # type: ignore[attr-defined]  # a cycle only the collector frees
    del garbage
    before = {id(o) for o in gc.get_objects() if isinstance(o, Node)}
    assert len(before) == 2
    memory.freeze_startup_objects()
    assert gc.get_freeze_count() > 0
    assert [o for o in gc.get_objects() if isinstance(o, Node)] == []  # neither is walked now
    gc.unfreeze()
    assert [o for o in gc.get_objects() if isinstance(o, Node)] == [kept]  # the cycle was freed
