"""Keeping Python's cyclic garbage collector out of the hot paths.

A collection of the oldest generation walks every tracked object and stops the
event loop meanwhile. The processor and a rebuild allocate a lot (decoded events,
states, documents) over a heap of long-lived objects (modules, clients, the cached
states): measured in the processor, full collections of 240 to 365 ms every 10 s
under a steady 300 events/s, each one a stall of every record in flight (most of
the freshness p99). What exists when the work starts lives as long as it does, so
it is frozen out of the collector's sight (``gc.freeze``); the processor also
freezes what survives each batch (``BatchCollector``).

Collecting the young generation less often is a trade of memory for time: a
rebuild (a batch job) takes it, and its collections then showed up as 15% of its
profile.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

REBUILD_YOUNG_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation during a rebuild
(Python's default: 700)."""


PROCESSOR_YOUNG_THRESHOLD = 50_000
"""Allocations between collections of the youngest generation in the processor, whose
batches freeze what they leave alive when they end (``BatchCollector``). A young
collection walks the objects allocated since the last that are still alive; the
fewer collections, the fewer short-lived objects walked before they die. Measured on
the benchmark's catch-up (3 alternated runs): the processor's CPU 2.62 to 2.90 s at
50,000 against 2.91 to 3.05 at 10,000 (63 young collections, 123 ms, by
gc.callbacks), and 10,000 had taken 106 to 145 us an event against 130 to 161 at
Python's default of 700."""


def collect_young_every(allocations: int) -> None:
    """Collect the youngest generation every ``allocations`` allocations (at least)."""
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(allocations, young), middle, old)


def freeze_long_lived() -> None:
    """Collect, and freeze what is left out of the collector's sight."""
    gc.collect()
    gc.freeze()


@contextmanager
def long_lived_frozen(young_threshold: int = REBUILD_YOUNG_THRESHOLD) -> Iterator[None]:
    """For the duration of the block: what exists is frozen, and the young generation
    is collected every ``young_threshold`` allocations; both undone after it."""
    previous = gc.get_threshold()
    # The young generations only: a full collection walks the whole heap of the process
    # the rebuild runs in (300 ms in the benchmark's); what the oldest holds of garbage
    # is frozen with it and collected after the block, once unfrozen.
    gc.collect(1)
    gc.freeze()
    gc.set_threshold(max(young_threshold, previous[0]), previous[1], previous[2])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


class BatchCollector:
    """Between batches: what the batch left alive frozen, so that no collection walks
    the cached states again; every ``full_every_s`` one full collection of everything,
    for cycles frozen or died since. A full collection then stalls the processor once
    per ``full_every_s``, not every few seconds.

    The young generations are not collected between batches: a batch leaves no cyclic
    garbage (refcounting frees what it drops). Measured on the benchmark's catch-up:
    a collection of them after each batch found 0 unreachable objects in each of 11
    batches, and took 12 to 34 ms of each, with the event loop stopped; without it
    the processor used 2.63 to 3.04 CPU-s against 2.76 to 3.37 (4 alternated runs),
    and caught up faster in each pair (median +4%). A cycle a batch does leave (an
    error's traceback) waits for the next full collection."""

    def __init__(self, full_every_s: float = 60.0) -> None:
        self._full_every_s = full_every_s
        self._full_at = time.monotonic()

    def after_batch(self) -> None:
        if time.monotonic() - self._full_at > self._full_every_s:
            gc.unfreeze()
            gc.collect()
            self._full_at = time.monotonic()
        gc.freeze()
