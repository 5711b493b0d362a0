"""base/heap.py: what is alive when a process is built is kept out of full garbage collections
(they held every thread of the main process 42-69 ms: a fall alerted that much later), and is
still freed when no longer used."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from base.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.peer: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_the_startup_heap_is_left_out_of_full_collections(unfrozen: None) -> None:
    built = [_Node() for _ in range(1000)]  # what the process holds from its start
    frozen = freeze_startup_heap()
    assert frozen >= len(built)
    tracked = {id(o) for o in gc.get_objects(generation=2)}
    assert not any(id(n) in tracked for n in built), "a full collection would walk them"
    later = _Node()  # made after: collected as ever
    assert any(o is later for o in gc.get_objects())


def test_what_is_frozen_is_still_freed_when_no_longer_used(unfrozen: None) -> None:
    node = _Node()
    gone = weakref.ref(node)
    freeze_startup_heap()
    del node
    assert gone() is None


def test_garbage_cycles_made_before_are_collected_not_frozen(unfrozen: None) -> None:
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    gone = weakref.ref(a)
    del a, b
    freeze_startup_heap()
    assert gone() is None
