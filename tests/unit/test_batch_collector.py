"""The processor's garbage collection between batches (``eventfold.collector``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from eventfold.collector import BatchCollector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def _dead_cycle() -> weakref.ref[Node]:
    """A reference cycle that nothing else holds: only a collection frees it."""
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_batch_leaves_its_survivors_frozen() -> None:
    collector = BatchCollector(full_every_s=3600)
    kept = [Node() for _ in range(1000)]
    before = gc.get_freeze_count()
    collector.after_batch()
    assert gc.get_freeze_count() >= before + len(kept)


def test_a_cycle_is_freed_by_the_next_full_collection_not_by_each_batch() -> None:
    collector = BatchCollector(full_every_s=3600)
    cycle = _dead_cycle()
    collector.after_batch()
    assert cycle() is not None  # frozen with the batch's survivors, not collected
    collector = BatchCollector(full_every_s=0.0)
    collector._full_at -= 1.0  # a full collection is due
    collector.after_batch()
    assert cycle() is None
    assert gc.get_freeze_count() > 0  # what survived it is frozen again
