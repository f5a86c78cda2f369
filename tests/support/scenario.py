"""Helpers of the fault-injection scenarios: publish, wait for catch-up, compare."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from eventfold.settings import Settings
from eventfold.topics import LastOffsets, end_offsets
from producers.client import EventPublisher
from projections.read_models import Stores
from projections.verify import differences, read_source_events, reference_snapshot, stored_snapshot
from schemas.catalog import INTERNAL_TOPICS


async def publish(settings: Settings, events: Sequence[dict[str, Any]], batch: int = 200) -> None:
    async with EventPublisher(settings) as client:
        for start in range(0, len(events), batch):
            await client.publish_many(events[start:start + batch])


async def last_offsets(settings: Settings) -> dict[str, int]:
    """``topic:partition`` -> offset of the last record, for non-empty partitions."""
    return {f"{settings.logical_topic(tp.topic)}:{tp.partition}": end - 1
            for tp, end in (await end_offsets(settings)).items() if end > 0}


async def applied_marks(settings: Settings) -> dict[str, int]:
    stores = Stores(settings)
    try:
        models = await stores.active()
        return await models.applied_marks()
    finally:
        await stores.close()


async def _wait_marks(settings: Settings, ends: dict[str, int], deadline: float) -> None:
    while True:
        marks = await applied_marks(settings)
        behind = {p: (marks.get(p, -1), end) for p, end in ends.items() if marks.get(p, -1) < end}
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not caught up: {behind}")
        await asyncio.sleep(0.2)


async def wait_caught_up(settings: Settings, within_s: float = 180.0) -> None:
    """Until the active read models applied every record published so far, and what
    those records caused on the join's internal topics (as read-your-writes does)."""
    deadline = time.monotonic() + within_s
    await _wait_marks(settings, await last_offsets(settings), deadline)
    reader = LastOffsets(settings)
    try:
        for topic in INTERNAL_TOPICS:
            ends = {f"{topic}:{p}": o for p, o in (await reader(topic)).items()}
            await _wait_marks(settings, ends, deadline)
    finally:
        await reader.close()


async def wait_progress(settings: Settings, at_least: int, within_s: float = 60.0) -> None:
    """Until at least ``at_least`` records have been applied (summed over partitions)."""
    deadline = time.monotonic() + within_s
    while sum(v + 1 for v in (await applied_marks(settings)).values()) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {at_least} records applied after {within_s}s")
        await asyncio.sleep(0.1)


async def read_model_differences(settings: Settings) -> list[str]:
    """The active read models against a reference fold of everything published."""
    source = await read_source_events(settings)
    stores = Stores(settings)
    try:
        actual = await stored_snapshot(await stores.active())
    finally:
        await stores.close()
    return differences(reference_snapshot(source), actual)
