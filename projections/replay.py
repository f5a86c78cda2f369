"""Rebuilding read models from the topics, blue/green, one projection or all.

A rebuild allocates a new version of the chosen projections and registers it as
"building", so live processors write every new record to it as well as to the
active version. It then reads ``orders``, ``payments`` and ``customers`` from
the earliest offset (or a time) with its own consumer (no consumer group:
nothing it does moves the live processors' offsets) and runs every record
through the same join pipeline the live processors use, its state in memory and
its join messages handed over in-process, so enrichment is re-run too. It writes
only the chosen projections. Application is idempotent and order-independent,
so records that both the rebuild and a live processor apply end up applied once.

The rebuild reads up to end offsets taken after every live processor has
re-read its targets (their cache lives ``targets_ttl_s``): any record past those
offsets is processed by a live processor that already writes to the new
version. Then one update of the ``meta`` document makes the new version active.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
import traceback
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from eventfold.collector import BatchCollector, long_lived_frozen
from eventfold.settings import Settings
from eventfold.topics import source_partitions
from projections.disk_state import DiskState
from projections.joins import OrderLink, OrderState, stored_state
from projections.projector import (
    CUSTOMERS,
    ORDERS,
    FoldedBatch,
    Projector,
    Targets,
    stored_customer,
)
from projections.read_models import DOCUMENTS, PROJECTIONS, ReadModels, Stores, projections_named
from projections.rebuild_status import StatusSaver
from projections.redis_writer import RedisWriter
from schemas.catalog import INTERNAL_TOPICS, TABLE_SIDE
from schemas.codec import CodecError, decode
from stream_processors.records import TRANSIENT_ERRORS

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (records done, records to do)


SHOWN_SKIPPED = 20


@dataclass(frozen=True)
class Skipped:
    """A record a rebuild left out, and why."""

    topic: str
    partition: int
    offset: int
    reason: str

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}@{self.offset}: {self.reason}"


@dataclass
class RebuildResult:
    version: str
    projections: tuple[str, ...]
    previous: dict[str, str]  # projection -> version active before
    records: int = 0
    applied: int = 0
    undecodable: int = 0
    failed: int = 0  # decoded, but the projections cannot take them
    skipped: list[Skipped] = field(default_factory=list)
    """The first ``SHOWN_SKIPPED`` records left out (undecodable or failed): the live
    processors dead-letter them, and a rebuild leaves them out the same way."""
    seconds: float = 0.0
    write_s: float = 0.0  # of which writing the documents and views
    wait_s: float = 0.0  # of which waiting for the live processors to write the version too


FETCH_MAX_WAIT_MS = 20
WRITES_IN_FLIGHT = 2
"""Flushes of a rebuild being written at once. The partition numbers' orders are
disjoint, so their writes commute; each write's Python half (documents, views) runs
on the rebuild's one thread, and with one write in flight the fold waited for
FerretDB's half at each partition number (0.8 s of a 3.4 s rebuild)."""


class TopicReader:
    """Reads every partition of the source topics from the beginning up to given ends."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.consumer = AIOKafkaConsumer(
            **settings.kafka_client(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            # A fetch at the ends waits this long for new records, and the broker answers
            # a connection's requests in order: at aiokafka's 500 ms, the end offsets
            # asked for once the ends were reached came half a second later (measured:
            # 0.47 s of a 3.9 s rebuild). Below the ends, records are always there.
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
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
            {tp: int(moment.timestamp() * 1000) for tp in self.partitions}
        )
        return {tp: found[tp].offset if found.get(tp) else default[tp] for tp in self.partitions}

    async def stop(self) -> None:
        await self.consumer.stop()


async def _apply_partition_batch(
    settings: Settings,
    projector: Projector,
    tp: TopicPartition,
    records: list[ConsumerRecord],
    result: RebuildResult,
) -> None:
    """Apply a partition's records in order. A record the live processors dead-letter
    (undecodable, or one the projections cannot take: ``RecordHandler``) is left out,
    counted and shown, never the end of the rebuild; a store that is unavailable
    still is (retried by the caller, or resumed)."""
    topic = settings.logical_topic(tp.topic)
    for record in records:
        try:
            event = decode(record.value)
        except CodecError as exc:
            result.undecodable += 1
            _skip(result, Skipped(topic, tp.partition, record.offset, f"undecodable: {exc}"))
            continue
        try:
            applied = await projector.apply(event, topic, tp.partition, record.offset)
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # as the live processors' handler: dead-lettered there
            result.failed += 1
            reason = "".join(traceback.format_exception_only(exc)).strip()
            _skip(result, Skipped(topic, tp.partition, record.offset, f"failed: {reason}"))
            continue
        if applied:
            result.applied += 1


def _skip(result: RebuildResult, skipped: Skipped) -> None:
    log.warning("rebuild leaves out %s", skipped)
    if len(result.skipped) < SHOWN_SKIPPED:
        result.skipped.append(skipped)


async def _with_retries(write: Callable[[], Awaitable[None]], within_s: float = 300.0) -> None:
    """Retry a store that is slow or briefly unavailable (timeouts, a contended document
    lock), as the live record handler does; writing again is harmless."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        stop=stop_after_delay(within_s),
        wait=wait_exponential(multiplier=0.05, max=5.0),
        reraise=True,
    ):
        with attempt:
            await write()


FLUSH_DOCUMENTS = 20_000
"""Documents a rebuild holds before writing them: each is written once per flush however
many records changed it, so the fewer flushes, the fewer writes (an order's 3 to 4
events and a customer's orders, spread over the topics, fall in one flush). The decoded
states kept in memory are as many (the writer holds a flush's states anyway): with
fewer, the flush's join steps decoded most orders again from disk (measured: 0.8 s of a
3.8 s rebuild of 19,732 records)."""


async def read_until(
    settings: Settings,
    reader: TopicReader,
    projector: Projector,
    ends: dict[TopicPartition, int],
    result: RebuildResult,
    progress: Progress | None,
    total: int,
    batch_records: int = 2000,
    flush_documents: int = FLUSH_DOCUMENTS,
    status: StatusSaver | None = None,
) -> None:
    """Apply every record below ``ends``: the join's table side first, then the streams
    one partition number at a time (``orders`` and ``payments`` of that number together).

    Read in that order, the orders of a partition number are final once it is read:
    their events are all in it, and the profiles they are enriched with are the latest
    (``stream_processors.table_first``). So what those records changed is written then,
    while the next partition number is read and folded (one write in flight), each order
    once; and besides, whenever ``flush_documents`` documents are held. After each write,
    the position reached per partition is saved in the new version's
    ``rebuild_progress`` hash, so a crashed or interrupted rebuild resumes there instead
    of starting over."""
    consumer = reader.consumer
    models = projector.models
    # What each poll's records leave alive is frozen out of the collector's sight, as
    # in the processor: the young generations' collections walked the rebuild's
    # cached states and held documents again and again (two of the middle generation
    # took 100 to 146 ms of a 2 s rebuild, by gc.callbacks; 0.1 ms with this).
    collector = BatchCollector()
    reached: dict[Any, Any] = {}
    writing: deque[asyncio.Future[None]] = deque()  # oldest first

    def table_side(tp: TopicPartition) -> bool:
        return settings.logical_topic(tp.topic) == TABLE_SIDE

    async def behind() -> list[TopicPartition]:
        late = [tp for tp in reader.partitions if await consumer.position(tp) < ends[tp]]
        table = [tp for tp in late if table_side(tp)]
        if table or not late:
            return table
        first = min(tp.partition for tp in late)
        return [tp for tp in late if tp.partition == first]

    def group(partitions: list[TopicPartition]) -> int | None:
        """The partition number being read (None: the table side, or nothing left)."""
        return None if not partitions or table_side(partitions[0]) else partitions[0].partition

    async def write(batch: FoldedBatch, positions: dict[Any, Any]) -> None:
        started = time.monotonic()
        await _with_retries(batch.write)  # before the progress that relies on it
        result.write_s += time.monotonic() - started
        if positions:
            await models.redis.hset(models.progress_key, mapping=positions)

    async def flush(wait: bool, hold_customers: bool = False) -> None:
        while len(writing) >= WRITES_IN_FLIGHT:
            await writing.popleft()
        batch = await projector.pipeline.detach(hold_customers)
        positions = dict(reached)
        reached.clear()
        writing.append(asyncio.ensure_future(write(batch, positions)))
        while wait and writing:
            await writing.popleft()

    try:
        pending = await behind()
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=500, max_records=batch_records)
            jobs = []
            for tp, records in batch.items():
                records = [r for r in records if r.offset < ends[tp]]
                result.records += len(records)
                jobs.append(_apply_partition_batch(settings, projector, tp, records, result))
                if records:
                    reached[_progress_field(settings, tp)] = records[-1].offset + 1
            await asyncio.gather(*jobs)
            collector.after_batch()
            if progress:
                progress(result.records, total)
            if status is not None:
                await status.save(result.records, total)
            read = group(pending)
            pending = await behind()
            writer = projector.pipeline.writer
            if writer.pending >= flush_documents:
                await flush(wait=False)
            elif group(pending) != read:
                # A customer's document changes with the orders of every partition number:
                # written at the end, once, unless too many are held. What resuming needs
                # of them is written before, with the table side: their profiles (their
                # totals are derived again from the orders' documents: ``_preload``).
                # The last partition number's write takes them (it would wait for it).
                hold = (
                    read is not None
                    and bool(pending)
                    and writer.pending_of(CUSTOMERS) <= flush_documents // 4
                )
                await flush(wait=False, hold_customers=hold)
        await flush(wait=True)
    finally:
        if writing:  # failed meanwhile: the writes in flight end first
            await asyncio.wait(writing)
    if status is not None:
        await status.save(result.records, total, final=True)


def _progress_field(settings: Settings, tp: TopicPartition) -> str:
    return f"{settings.logical_topic(tp.topic)}:{tp.partition}"


@dataclass
class Workspace:
    """A rebuild's join state on disk (``projections.disk_state``), one store per side
    of the join, under ``EVENTFOLD_REBUILD_DATA_DIR``; removed when the rebuild ends."""

    orders: DiskState
    customers: DiskState

    @staticmethod
    def root(settings: Settings, version: str) -> Path:
        return Path(settings.rebuild_data_dir) / f"{settings.mongo_db}-{version}"

    @classmethod
    def fresh(cls, settings: Settings, version: str) -> Workspace:
        root = cls.root(settings, version)
        shutil.rmtree(root, ignore_errors=True)
        return cls(DiskState(root / ORDERS), DiskState(root / CUSTOMERS))

    def destroy(self) -> None:
        self.orders.destroy()
        self.customers.destroy()
        shutil.rmtree(self.orders.path.parent, ignore_errors=True)


class RebuildInProgress(RuntimeError):
    """Another rebuild holds a version in the making: resume it or abort it first."""


async def abort(stores: Stores) -> list[str]:
    """Abandon and drop every version being rebuilt; returns their names."""
    builds = await stores.building()
    for build in builds:
        await stores.abandon_build(build.version)
        await stores.version(build.version).drop(build.projections)
        shutil.rmtree(Workspace.root(stores.settings, build.version), ignore_errors=True)
    return [b.version for b in builds]


async def _preload(projector: Projector, models: ReadModels) -> None:
    """Resume with the join state a crashed rebuild had written (docs carry it): each
    order's state, and from those the summaries the customer side had applied; each
    customer's profile."""
    pipeline = projector.pipeline
    summaries: dict[str, list[OrderLink]] = defaultdict(list)
    async for doc in models.orders.find({}):
        state = stored_state(doc)
        if state is not None:
            pipeline.orders[doc["_id"]] = state
            link = OrderState.from_doc(state).summary()
            if link is not None:
                summaries[link.customer_id].append(link)
    profiles = {}
    async for doc in models.customers.find({}):
        stored = stored_customer(doc)
        if stored is not None:
            profiles[stored.customer_id] = stored
    customer_ids = set(profiles) | set(summaries)
    for customer_id in customer_ids:
        pipeline.customer_side.restore(
            customer_id, profiles.get(customer_id), summaries.get(customer_id, [])
        )
    # The interrupted rebuild may have held back their documents (``read_until``).
    await pipeline.rewrite_customers(customer_ids)


async def rebuild(
    settings: Settings,
    stores: Stores,
    *,
    projections: Sequence[str] = PROJECTIONS,
    targets_ttl_s: float | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    since: datetime | None = None,
    grace_s: float = 300.0,
    batch_records: int = 2000,
    flush_documents: int = FLUSH_DOCUMENTS,
) -> RebuildResult:
    """Rebuild ``projections`` into a new version and make it active for them.

    ``resume`` continues the version an interrupted rebuild left; ``since``
    starts from the offsets of that time instead of the earliest ones. The
    previous versions are retired and dropped ``grace_s`` later (by the live
    processors, or ``eventfold drop``), so readers still holding them can finish.
    ``targets_ttl_s``: how long live processors trust their targets (the setting's)."""
    if targets_ttl_s is None:
        targets_ttl_s = settings.targets_ttl_s
    started = time.monotonic()
    building = await stores.building()
    if resume and not building:
        raise RebuildInProgress("there is no interrupted rebuild to resume")
    if not resume and building:
        raise RebuildInProgress(
            f"{', '.join(b.version for b in building)} is being rebuilt: "
            "resume it (--resume) or abort it (--abort) first"
        )
    if resume:
        version, chosen = building[0].version, building[0].projections
    else:
        chosen = projections_named(projections)
        version = await stores.begin_build(
            chosen, prepare=lambda allocated: stores.version(allocated).drop(chosen)
        )
    models = stores.version(version)
    if any(p in DOCUMENTS for p in chosen):
        await models.ensure_indexes()
    # The join state lives on disk for the rebuild's duration (memory stays bounded
    # whatever the topics hold); a resumed rebuild starts it again from the documents.
    workspace = Workspace.fresh(settings, version)
    projector = Projector(
        models,
        Targets.of(models, chosen),
        buffered=True,
        state=(workspace.orders, workspace.customers),
        # the join steps of a flush come back to every order it holds
        cache_size=flush_documents,
    )
    # Resuming from saved positions needs the join state of the records before them,
    # which the documents carry; without both document projections, start over.
    resume_at_saved = resume and {ORDERS, CUSTOMERS} <= set(chosen)
    if resume_at_saved:
        await _preload(projector, models)
    reader = TopicReader(settings)
    status = StatusSaver(models.redis, models.status_key)
    result = RebuildResult(
        version=version, projections=tuple(chosen), previous=dict(await stores.active_versions())
    )
    await reader.start()
    try:
        registered_at = time.monotonic()
        begin = await reader.beginning_offsets()
        if since is not None:
            begin = await reader.offsets_for(since, default=await reader.end_offsets())
        if resume_at_saved:
            saved = cast(dict[str, str], await models.redis.hgetall(models.progress_key))
            begin = {
                tp: int(saved.get(_progress_field(settings, tp), begin[tp]))
                for tp in reader.partitions
            }
        for tp in reader.partitions:
            reader.consumer.seek(tp, begin[tp])
        ends = await reader.end_offsets()
        total = sum(max(0, ends[tp] - begin[tp]) for tp in reader.partitions)
        with long_lived_frozen():
            await read_until(
                settings,
                reader,
                projector,
                ends,
                result,
                progress,
                total,
                batch_records,
                flush_documents,
                status,
            )
        # Live processors re-read their targets within targets_ttl_s; once that has
        # surely happened, records past the then-current ends reach the new version
        # through them.
        result.wait_s = max(0.0, registered_at + 2 * targets_ttl_s - time.monotonic())
        await asyncio.sleep(result.wait_s)
        ends = await reader.end_offsets()
        total = sum(max(0, ends[tp] - begin[tp]) for tp in reader.partitions)
        await read_until(
            settings,
            reader,
            projector,
            ends,
            result,
            progress,
            total,
            batch_records,
            flush_documents,
            status,
        )
    finally:
        await reader.stop()  # on any failure the version stays registered: --resume
        workspace.destroy()
    await _carry_internal_marks(stores, version, chosen)
    result.previous = await stores.activate(version)
    retired = {p: v for p, v in result.previous.items() if v != version}
    if retired:
        await stores.retire(retired, drop_after_s=grace_s)
    result.seconds = time.monotonic() - started
    return result


async def _carry_internal_marks(stores: Stores, version: str, chosen: Sequence[str]) -> None:
    """The internal topics' applied marks of the versions being replaced, into the new one.

    The rebuild runs the join in-process, so it has the effect of every internal
    message sent before the live processors started writing the new version;
    read-your-writes waits on these marks (``query_api.consistency``)."""
    active = await stores.active()
    for projection in chosen:
        marks = {
            k: v
            for k, v in (await active.marks(projection)).items()
            if k.split(":")[0] in INTERNAL_TOPICS
        }
        target = stores.version(version)
        writer = RedisWriter(target.redis)
        pipe = writer.pipeline()
        await writer.raise_marks(pipe, [target.checkpoints_key(projection)], marks)
        await pipe.execute()
