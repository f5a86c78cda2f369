"""Rebuilding and verifying a registered projection (``projections.api``).

A rebuild folds the projection's topics from their beginning into a new version
(``v2``, ``v3``, ...) with the live worker's code path (``Applier``), up to the end
offsets read when it starts, then makes the new version active and drops the old
one. Whatever arrived meanwhile is applied by the live worker: it follows the switch
and reads the partitions again from the new version's marks, so the new version
misses nothing, and a consistency token waits on the new version's marks.

``verify`` folds the topics again in memory, up to the marks of a snapshot of the
active version, and compares entity by entity and row by row; it also checks that
every stored row is the sum of the stored entities' contributions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from eventfold.settings import Settings
from eventfold.topics import source_partitions
from projections.api import Projection
from projections.applier import Applier
from projections.engine import Entity, rankings, sum_rows
from projections.projection_store import (
    MemoryProjectionStore,
    ProjectionVersions,
    RedisProjectionStore,
    Snapshot,
)
from projections.rebuild_status import StatusSaver
from projections.state import mark_of
from projections.view_documents import ViewDocuments
from stream_processors.projection_worker import decoded

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (records done, records to do)
READ_BATCH = 5000
SHOWN_DIFFERENCES = 20


async def read_until(
    settings: Settings,
    topics: Sequence[str],
    ends: Callable[[AIOKafkaConsumer, list[TopicPartition]], Any],
) -> AsyncIterator[tuple[dict[TopicPartition, list[ConsumerRecord[Any, Any]]], int, int]]:
    """Polls of ``topics`` from the beginning up to the (exclusive) end offsets ``ends``
    gives for their partitions, with the records done so far and to do."""
    consumer = AIOKafkaConsumer(
        **settings.kafka_client(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = await source_partitions(settings, topics)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        end: dict[TopicPartition, int] = await ends(consumer, partitions)
        starts = await consumer.beginning_offsets(partitions)
        total = sum(max(0, end[tp] - starts[tp]) for tp in partitions)
        done = 0
        left = {tp for tp in partitions if end[tp] > starts[tp]}
        for tp in set(partitions) - left:
            consumer.pause(tp)
        while left:
            polled = await consumer.getmany(timeout_ms=500, max_records=READ_BATCH)
            batch: dict[TopicPartition, list[ConsumerRecord[Any, Any]]] = {}
            for tp, records in polled.items():
                kept = [r for r in records if r.offset < end[tp]]
                if kept:
                    batch[tp] = kept
                    done += len(kept)
                if records and records[-1].offset >= end[tp] - 1:
                    left.discard(tp)
                    consumer.pause(tp)
            for tp in list(left):  # compacted or deleted records: the position says it
                if await consumer.position(tp) >= end[tp]:
                    left.discard(tp)
                    consumer.pause(tp)
            if batch:
                yield batch, done, total
    finally:
        await consumer.stop()


@dataclass
class ProjectionRebuild:
    name: str
    version: str
    previous: str
    records: int = 0
    events: int = 0
    failed: int = 0  # events its fold raised on (the live worker dead-letters them)
    seconds: float = 0.0


async def rebuild(
    settings: Settings,
    redis: Redis,
    projection: Projection,
    progress: Progress | None = None,
    db: AsyncDatabase[Any] | None = None,
) -> ProjectionRebuild:
    """``db``: where the documents of a projection that keeps them are (MongoDB)."""
    versions = ProjectionVersions(redis, settings.redis_prefix, db)
    version = await versions.begin_build(projection.name)
    applier = Applier(
        projection,
        versions.store(projection.name, version),
        documents=versions.documents(projection, version),
    )
    started = time.perf_counter()
    result = ProjectionRebuild(projection.name, version, await versions.active_of(projection.name))

    async def latest(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> Any:
        return await consumer.end_offsets(partitions)

    status = StatusSaver(redis, versions.status_key(projection.name, version))
    try:
        await applier.start()
        async for batch, done, total in read_until(settings, projection.topics, latest):
            poll = decoded(batch, settings, projection.consumes)
            applied = await applier.apply(poll.events, poll.highest)
            await versions.still_building(projection.name, version)
            result.records = done
            result.events += applied.events
            result.failed += applied.dead_letters
            if progress is not None:
                progress(done, total)
            await status.save(done, total, final=done >= total)
    except BaseException:
        await versions.abandon(projection.name, version)
        raise
    result.previous = await versions.activate(projection.name, version)
    if result.previous != version:
        await versions.drop(projection.name, result.previous)
    result.seconds = time.perf_counter() - started
    return result


SHOWN_GROUPS = 5
"""The groups a difference of a ranking names (it may hold millions)."""


@dataclass
class ProjectionCheck:
    name: str
    version: str
    entities: int = 0
    groups: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not self.differences


async def verify(
    settings: Settings, redis: Redis, projection: Projection, db: AsyncDatabase[Any] | None = None
) -> ProjectionCheck:
    """``db``: where the documents of a projection that keeps them are (MongoDB); they
    are compared with the stored entities' views."""
    versions = ProjectionVersions(redis, settings.redis_prefix, db)
    version = await versions.active_of(projection.name)
    documents = versions.documents(projection, version)
    store = versions.store(projection.name, version)
    snapshot = await store.snapshot()
    fresh = MemoryProjectionStore(version)
    applier = Applier(projection, fresh)
    await applier.start()

    async def marks(consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> Any:
        return {
            tp: snapshot.marks.get(mark_of(settings.logical_topic(tp.topic), tp.partition), -1) + 1
            for tp in partitions
        }

    async for batch, _, _ in read_until(settings, projection.topics, marks):
        poll = decoded(batch, settings, projection.consumes)
        await applier.apply(poll.events, poll.highest)
    expected = await fresh.snapshot()
    check = ProjectionCheck(projection.name, version, len(snapshot.entities), len(snapshot.rows))
    differences = check.differences
    for key in sorted(set(expected.entities) | set(snapshot.entities)):
        want, got = expected.entities.get(key), snapshot.entities.get(key)
        if (want and want.doc) != (got and got.doc):
            differences.append(
                f"entity {key}: stored {got and got.doc} != folded {want and want.doc}"
            )
    for group in sorted(set(expected.rows) | set(snapshot.rows)):
        if expected.rows.get(group) != snapshot.rows.get(group):
            stored, folded = snapshot.rows.get(group), expected.rows.get(group)
            differences.append(f"row {group}: stored {stored} != folded {folded}")
    if sum_rows(snapshot.entities.values(), projection) != snapshot.rows:
        differences.append("the stored rows are not what the stored entities contribute")
    ranked = rankings(snapshot.rows, projection.ranks)
    for measure in sorted(set(ranked) | set(snapshot.ranks)):
        stored, rows = snapshot.ranks.get(measure, {}), ranked.get(measure, {})
        wrong = sorted(g for g in set(stored) | set(rows) if stored.get(g) != rows.get(g))
        if wrong:
            shown = ", ".join(
                f"{g}: {stored.get(g)} against {rows.get(g)}" for g in wrong[:SHOWN_GROUPS]
            )
            more = f" and {len(wrong) - SHOWN_GROUPS} more" if len(wrong) > SHOWN_GROUPS else ""
            differences.append(f"ranking {measure} (stored against the rows): {shown}{more}")
    if documents is not None:
        differences.extend(await documents_differences(store, documents, snapshot))
    if expected.marks != {m: o for m, o in snapshot.marks.items() if o >= 0}:
        differences.append(f"marks: stored {snapshot.marks} != read {expected.marks}")
    del differences[SHOWN_DIFFERENCES:]
    return check


def document_differences(
    entities: Mapping[str, Entity | None], documents: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Key -> how its document is not its stored entity's view."""
    found = {}
    views = {k: e.view for k, e in entities.items() if e is not None and e.view is not None}
    for key in sorted(set(views) | set(documents)):
        view, doc = views.get(key), documents.get(key)
        if view != doc:
            found[key] = f"document {key}: stored {doc} != the entity's view {view}"
    return found


async def documents_differences(
    store: RedisProjectionStore, documents: ViewDocuments, snapshot: Snapshot
) -> list[str]:
    """Where the documents are not the entities' views: read after the snapshot without
    stopping the live worker, and each key found different read again, entity and
    document, under the version's batch lock (a batch written between the two reads
    differs without being a difference)."""
    suspects = list(document_differences(snapshot.entities, await documents.views()))
    if not suspects:
        return []
    async with store.batch_lock():
        again = document_differences(await store.load(suspects), await documents.views(suspects))
    return list(again.values())
