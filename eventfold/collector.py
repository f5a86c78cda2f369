"""Keeping Python's cyclic garbage collector out of the hot paths.

A collection of the oldest generation walks every tracked object and stops the
event loop meanwhile. The processor and a rebuild allocate a lot (decoded events,
states, documents) over a heap of long-lived objects (modules, Faust, clients):
measured in the processor, full collections of 100 to 250 ms every few seconds
under load, the slowest batches of both agents at the same moment. What exists
when the work starts lives as long as it does, so it is frozen out of the
collector's sight (``gc.freeze``).

Collecting the young generation less often is a trade of memory for time: a
rebuild (a batch job) takes it, and its collections then showed up as 15% of its
profile; the processor does not, because its stream machinery leaves cyclic
garbage behind every record (Faust's events and messages) that only those
collections free: with a young threshold of 20,000 its memory stood 200 MB
higher (615 MB against about 370 MB with state for 200,000 orders).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

REBUILD_YOUNG_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation during a rebuild
(Python's default: 700)."""


def freeze_long_lived() -> None:
    """Collect, and freeze what is left out of the collector's sight."""
    gc.collect()
    gc.freeze()


@contextmanager
def long_lived_frozen(young_threshold: int = REBUILD_YOUNG_THRESHOLD) -> Iterator[None]:
    """For the duration of the block: what exists is frozen, and the young generation
    is collected every ``young_threshold`` allocations; both undone after it."""
    previous = gc.get_threshold()
    freeze_long_lived()
    gc.set_threshold(max(young_threshold, previous[0]), previous[1], previous[2])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()
