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
from dataclasses import dataclass, field

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
    dropped_previous: bool = False
    skipped: list[str] = field(default_factory=list)


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
    result: RebuildResult, progress: Progress | None, total: int,
) -> None:
    """Apply every record below ``ends``; partitions are applied concurrently."""
    consumer = reader.consumer

    async def behind() -> list[TopicPartition]:
        return [tp for tp in reader.partitions if await consumer.position(tp) < ends[tp]]

    pending = await behind()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500, max_records=2000)
        jobs = []
        for tp, records in batch.items():
            records = [r for r in records if r.offset < ends[tp]]
            result.records += len(records)
            jobs.append(_apply_partition_batch(settings, projector, tp, records, result))
        await asyncio.gather(*jobs)
        if progress:
            progress(result.records, total)
        pending = await behind()


async def rebuild(
    settings: Settings, stores: Stores, *, targets_ttl_s: float = 1.0,
    progress: Progress | None = None, drop_previous: bool = True,
) -> RebuildResult:
    """Rebuild every projection into a new version and make it active."""
    started = time.monotonic()
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
        ends = await reader.end_offsets()
        total = sum(ends[tp] - begin[tp] for tp in reader.partitions)
        await read_until(settings, reader, projector, ends, result, progress, total)
        # Live processors re-read their targets within targets_ttl_s; once that has
        # surely happened, records past the then-current ends reach the new version
        # through them.
        await asyncio.sleep(max(0.0, registered_at + 2 * targets_ttl_s - time.monotonic()))
        ends = await reader.end_offsets()
        total = sum(ends[tp] - begin[tp] for tp in reader.partitions)
        await read_until(settings, reader, projector, ends, result, progress, total)
    except BaseException:
        await stores.abandon_build(version)
        raise
    finally:
        await reader.stop()
    result.previous = await stores.activate(version)
    if drop_previous and result.previous != version:
        await asyncio.sleep(2 * targets_ttl_s)  # live processors stop writing to it
        await stores.version(result.previous).drop()
        result.dropped_previous = True
    result.seconds = time.monotonic() - started
    return result
