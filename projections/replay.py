"""Rebuilding read models from the topics, blue/green.

A rebuild allocates a new read-model version and registers it as "building", so
live processors write every new record to it as well as to the active version.
It then reads ``orders``, ``payments`` and ``customers`` from the earliest
offset with its own consumer (no consumer group: nothing it does moves the live
processors' offsets) and applies every record with the same projector the live
processors use. Application is idempotent and order-independent, so records
that both the rebuild and a live processor apply end up applied once.

The rebuild reads up to end offsets taken after every live processor has
re-read its targets (their cache lives ``targets_ttl_s``): any record past those
offsets is processed by a live processor that already writes to the new
version. Then one update of the ``meta`` document makes the new version active.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from eventfold.settings import Settings
from eventfold.topics import source_partitions
from projections.projector import Projector
from projections.read_models import Stores
from schemas.codec import CodecError, decode

Progress = Callable[[int, int], None]  # (records done, records to do)


@dataclass
class RebuildResult:
    version: str
    previous: str
    records: int = 0
    applied: int = 0
    undecodable: int = 0
    seconds: float = 0.0


class TopicReader:
    """Reads every partition of the source topics from the beginning up to given ends."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers, group_id=None,
            enable_auto_commit=False, auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        self.partitions = await source_partitions(self._settings)
        await self.consumer.start()
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)

    async def end_offsets(self) -> dict[TopicPartition, int]:
        return await self.consumer.end_offsets(self.partitions)

    async def beginning_offsets(self) -> dict[TopicPartition, int]:
        return await self.consumer.beginning_offsets(self.partitions)

    async def offsets_for(
        self, moment: datetime, default: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """The first offset at or after ``moment`` per partition (``default`` when none)."""
        found = await self.consumer.offsets_for_times(
            {tp: int(moment.timestamp() * 1000) for tp in self.partitions})
        return {tp: found[tp].offset if found.get(tp) else default[tp] for tp in self.partitions}

    async def stop(self) -> None:
        await self.consumer.stop()


async def _apply_partition_batch(
    settings: Settings, projector: Projector, tp: TopicPartition, records: list[ConsumerRecord],
    result: RebuildResult,
) -> None:
    topic = settings.logical_topic(tp.topic)
    for record in records:
        try:
            event = decode(record.value)
        except CodecError:
            result.undecodable += 1  # the live processors dead-lettered it already
            continue
        if await projector.apply(event, topic, tp.partition, record.offset):
            result.applied += 1


async def read_until(
    settings: Settings, reader: TopicReader, projector: Projector, ends: dict[TopicPartition, int],
    result: RebuildResult, progress: Progress | None, total: int, batch_records: int = 2000,
) -> None:
    """Apply every record below ``ends``; partitions are applied concurrently.

    After each batch the position reached per partition is saved in the new
    version's ``rebuild_progress`` hash, so a crashed or interrupted rebuild
    resumes there instead of starting over."""
    consumer = reader.consumer
    models = projector.models

    async def behind() -> list[TopicPartition]:
        return [tp for tp in reader.partitions if await consumer.position(tp) < ends[tp]]

    pending = await behind()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500, max_records=batch_records)
        jobs = []
        reached: dict[Any, Any] = {}
        for tp, records in batch.items():
            records = [r for r in records if r.offset < ends[tp]]
            result.records += len(records)
            jobs.append(_apply_partition_batch(settings, projector, tp, records, result))
            if records:
                reached[_progress_field(settings, tp)] = records[-1].offset + 1
        await asyncio.gather(*jobs)
        if reached:
            await models.redis.hset(models.key("rebuild_progress"), mapping=reached)
        if progress:
            progress(result.records, total)
        pending = await behind()


def _progress_field(settings: Settings, tp: TopicPartition) -> str:
    return f"{settings.logical_topic(tp.topic)}:{tp.partition}"


class RebuildInProgress(RuntimeError):
    """Another rebuild holds a version in the making: resume it or abort it first."""


async def abort(stores: Stores) -> list[str]:
    """Abandon and drop every version being rebuilt; returns their names."""
    versions = (await stores.targets())[1:]
    for version in versions:
        await stores.abandon_build(version)
        await stores.version(version).drop()
    return versions


async def rebuild(
    settings: Settings, stores: Stores, *, targets_ttl_s: float = 1.0,
    progress: Progress | None = None, resume: bool = False, since: datetime | None = None,
    grace_s: float = 300.0, batch_records: int = 2000,
) -> RebuildResult:
    """Rebuild every projection into a new version and make it active.

    ``resume`` continues the version an interrupted rebuild left; ``since``
    starts from the offsets of that time instead of the earliest ones. The
    previous version is retired and dropped ``grace_s`` later (by the live
    processors, or ``eventfold drop``), so readers still holding it can finish."""
    started = time.monotonic()
    building = (await stores.targets())[1:]
    if resume and not building:
        raise RebuildInProgress("there is no interrupted rebuild to resume")
    if not resume and building:
        raise RebuildInProgress(f"{', '.join(building)} is being rebuilt: resume it "
                                "(--resume) or abort it (--abort) first")
    if resume:
        version = building[0]
        models = stores.version(version)
    else:
        version = await stores.begin_build()
        models = stores.version(version)
        await models.drop()
    await models.ensure_indexes()
    projector = Projector(models)
    reader = TopicReader(settings)
    result = RebuildResult(version=version, previous=await stores.active_version())
    await reader.start()
    try:
        registered_at = time.monotonic()
        begin = await reader.beginning_offsets()
        if since is not None:
            begin = await reader.offsets_for(since, default=await reader.end_offsets())
        if resume:
            saved = await models.hash("rebuild_progress")
            begin = {tp: int(saved.get(_progress_field(settings, tp), begin[tp]))
                     for tp in reader.partitions}
        for tp in reader.partitions:
            reader.consumer.seek(tp, begin[tp])
        ends = await reader.end_offsets()
        total = sum(max(0, ends[tp] - begin[tp]) for tp in reader.partitions)
        await read_until(settings, reader, projector, ends, result, progress, total,
                         batch_records)
        # Live processors re-read their targets within targets_ttl_s; once that has
        # surely happened, records past the then-current ends reach the new version
        # through them.
        await asyncio.sleep(max(0.0, registered_at + 2 * targets_ttl_s - time.monotonic()))
        ends = await reader.end_offsets()
        total = sum(max(0, ends[tp] - begin[tp]) for tp in reader.partitions)
        await read_until(settings, reader, projector, ends, result, progress, total,
                         batch_records)
    finally:
        await reader.stop()  # on any failure the version stays registered: --resume
    result.previous = await stores.activate(version)
    if result.previous != version:
        await stores.retire(result.previous, drop_after_s=grace_s)
    result.seconds = time.monotonic() - started
    return result
