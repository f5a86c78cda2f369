"""The processor's tables on disk are trusted only after a clean stop.

A table write goes to the local RocksDB at once and to its changelog topic a moment
later; the offset of the last changelog write acknowledged is saved in RocksDB, and a
worker that starts again on the same directory reads the changelog from there. After
a kill -9 the local databases hold writes the changelog never got, and reading the
changelog's tail back over them rewinds some keys and not others: a customer's state
older than its order summaries, which the join steps cannot tell from a redelivery
(``projections.joins.CustomerState.pending``). A clean stop flushes every changelog
write first, so local and changelog agree.

So the processor marks a clean stop in its table directory, and at start removes the
directory when the mark is missing: the tables are then restored from their
changelogs alone, which hold a prefix of what the worker wrote, as on a new host
(Kafka Streams wipes its state stores after an unclean stop under exactly-once for
the same reason). The price is a full restore after a crash, not after a restart.
"""

from __future__ import annotations

import shutil
from pathlib import Path

CLEAN_STOP = "clean-stop"


def trust_or_forget(tabledir: Path) -> bool:
    """Call before the tables open. Keeps the tables of a clean stop (and consumes its
    mark, so a crash of this run leaves none); removes any others. True when it
    removed them."""
    marker = tabledir / CLEAN_STOP
    if marker.exists():
        marker.unlink()
        return False
    removed = tabledir.exists() and any(tabledir.iterdir())
    if removed:
        shutil.rmtree(tabledir)
    tabledir.mkdir(parents=True, exist_ok=True)
    return removed


def mark_clean_stop(tabledir: Path) -> None:
    """Call once the tables are closed after a stop that flushed every changelog write."""
    if tabledir.exists():
        (tabledir / CLEAN_STOP).touch()
