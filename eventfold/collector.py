"""Keeping Python's cyclic garbage collector out of the hot paths.

A collection of the oldest generation walks every tracked object and stops the
event loop meanwhile; the young ones run every 700 allocations by default. The
processor and a rebuild allocate a lot (decoded events, states, documents) over a
heap of long-lived objects (modules, Faust, clients): measured in the processor,
full collections of 100 to 250 ms every few seconds under load, the slowest batches
of both agents at the same moment. What exists when the work starts lives as long
as it does, so it is frozen out of the collector's sight (``gc.freeze``), and the
young generation is collected less often: the states and documents of a batch are
mostly acyclic and freed by reference counting anyway.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (Python's default: 700)."""


def freeze_long_lived(young_threshold: int = YOUNG_THRESHOLD) -> tuple[int, int, int]:
    """Collect, freeze what is left, collect the young generation less often; returns the
    thresholds before."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(young_threshold, previous[0]), previous[1], previous[2])
    return previous


@contextmanager
def long_lived_frozen(young_threshold: int = YOUNG_THRESHOLD) -> Iterator[None]:
    """``freeze_long_lived`` for the duration of the block, undone after it."""
    previous = freeze_long_lived(young_threshold)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
