"""Helpers of the fault-injection scenarios: publish, wait for catch-up, compare."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from eventfold.settings import Settings
from eventfold.topics import LastOffsets
from producers.client import EventPublisher
from projections.api import Projection
from projections.projection_replay import verify
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from projections.registry import enabled
from projections.state import mark_of
from projections.verify import differences, read_source_events, reference_snapshot, stored_snapshot
from query_api.consistency import wait_for_positions
from schemas.catalog import TOPICS


async def publish(settings: Settings, events: Sequence[dict[str, Any]], batch: int = 200) -> None:
    async with EventPublisher(settings) as client:
        for start in range(0, len(events), batch):
            await client.publish_many(events[start : start + batch])


async def applied_marks(settings: Settings) -> dict[str, int]:
    stores = Stores(settings)
    try:
        models = await stores.active()
        return await models.applied_marks()
    finally:
        await stores.close()


async def wait_caught_up(settings: Settings, within_s: float = 180.0) -> None:
    """Until the active read models applied every record published so far, and what
    those records caused on the join's internal topics: the wait read-your-writes
    does (``query_api.consistency``), for the end of every source topic."""
    reader = LastOffsets(settings)
    stores = Stores(settings)
    try:
        positions = {topic: await reader(topic) for topic in TOPICS}
        missing = await wait_for_positions(await stores.active(), positions, within_s, reader)
    finally:
        await stores.close()
        await reader.close()
    if missing:
        raise AssertionError(f"not caught up after {within_s}s: behind on {missing}")


async def wait_progress(settings: Settings, at_least: int, within_s: float = 60.0) -> None:
    """Until at least ``at_least`` records have been applied (summed over partitions)."""
    deadline = time.monotonic() + within_s
    while sum(v + 1 for v in (await applied_marks(settings)).values()) < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"fewer than {at_least} records applied after {within_s}s")
        await asyncio.sleep(0.1)


async def read_model_differences(settings: Settings) -> list[str]:
    """The active read models against a reference fold of everything published, and
    each registered projection (``projections.registry``), once it has applied every
    record published, against a fresh fold of its topics."""
    source = await read_source_events(settings)
    stores = Stores(settings)
    try:
        actual = await stored_snapshot(await stores.active())
        found = differences(reference_snapshot(source), actual)
        for projection in enabled(settings).values():
            await wait_projection_caught_up(settings, stores, projection)
            check = await verify(settings, stores.redis, projection, db=stores.db)
            found += [f"{projection.name}: {d}" for d in check.differences]
    finally:
        await stores.close()
    return found


async def wait_projection_caught_up(
    settings: Settings, stores: Stores, projection: Projection, within_s: float = 120.0
) -> None:
    """Until ``projection``'s active version has applied every record of its topics."""
    reader = LastOffsets(settings)
    versions = ProjectionVersions(stores.redis, settings.redis_prefix)
    try:
        ends = {
            mark_of(topic, partition): offset
            for topic in projection.topics
            for partition, offset in (await reader(topic)).items()
            if offset >= 0
        }
        deadline = time.monotonic() + within_s
        while True:
            store = versions.store(projection.name, await versions.active_of(projection.name))
            marks = await store.marks()
            behind = [m for m, o in ends.items() if marks.get(m, -1) < o]
            if not behind:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{projection.name} behind after {within_s}s on {behind}")
            await asyncio.sleep(0.1)
    finally:
        await reader.close()
