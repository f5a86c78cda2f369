"""The batch processor: the join on a plain Kafka consumer group, one batch at a time.

One consumer per worker reads ``orders``, ``payments``, ``customers`` and the two
internal topics, with Kafka's range assignor: every topic has the same partition count,
so each worker is given the same partition numbers of every topic, and owns both sides
of the join for them. Per batch (one ``getmany``: what arrived, up to
``batch_max_records``):

1. every record is folded in memory by the join steps (``projections.projector.Pipeline``);
   a message for the other side of the join whose key's partition this worker owns is
   applied at once, in-process, as a rebuild does; only the others go through
   ``order-links`` / ``order-enrichment`` (``KafkaOutbox``: one record per partition);
2. the batch's changed states go to the local RocksDB tables and, as one record per key,
   to their changelog topics (``ChangelogTable``); every changed document is written
   once, the Redis views with one pipeline, and the applied marks last, once the
   changelog and internal records are stored;
3. then the batch's offsets are committed.

The next batch is folded while one is written (2 and 3), and written once it is done;
what survives a batch is frozen out of the garbage collector's sight
(``eventfold.collector.BatchCollector``).

A worker that dies mid-batch committed nothing of it: the next owner restores the
tables from their changelogs (a prefix of what was written) and reads the batch again;
the join steps and the document merges make a second application change nothing. A
rebalance waits for the batch in flight (``on_partitions_revoked``) and restores the
partitions given (``on_partitions_assigned``) before any of their records is folded.

This is the engine a rebuild runs (``projections.replay``), on a consumer group: no
stream framework between the fetch and the fold, and the join's two hops through Kafka
only between workers. The Faust app (``stream_processors.app``) runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError

from eventfold.collector import BatchCollector
from eventfold.settings import Settings
from eventfold.topics import changelog_topic, ensure_topics, start_group_at_beginning
from projections.joins import Enrichment, OrderLink
from projections.projector import Pipeline
from projections.read_models import Stores
from projections.registry import enabled
from schemas.catalog import (
    CUSTOMER_STATE,
    INTERNAL_TOPICS,
    ORDER_ENRICHMENT,
    ORDER_LINKS,
    ORDER_STATE,
    TABLE_SIDE,
    TOPICS,
)
from stream_processors import table_dir, worker_child
from stream_processors.changelog_table import ChangelogTable, Changes
from stream_processors.dead_letters import KafkaDeadLetterSink
from stream_processors.folding import apply_one_with, fold_with
from stream_processors.live_targets import LiveTargets
from stream_processors.outbox import MESSAGES_HEADER, KafkaOutbox, OutboxRecord, partition_of
from stream_processors.records import (
    TRANSIENT_ERRORS,
    BatchHandler,
    Folded,
    Record,
    RecordHandler,
)
from stream_processors.table_first import TableSideFirst

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)
FETCH_MAX_WAIT_MS = 100
"""How long the broker holds a fetch of partitions with nothing new (Kafka's default:
500 ms). A fetch in flight is answered before the next one is sent, so partitions
that start being fetched (the streams' ones were paused while the table side was read,
``TableSideFirst``) waited for it: a catch-up stood idle for 0.5 s after reading the
profiles (24 empty polls in a row in the processor's log; 4 at 100 ms). A fetch with
records is answered at once whatever this is. Measured on the benchmark's catch-up, 3
alternated runs: 5,027 to 5,707 events/s against 4,519 to 5,112 at 500 ms."""
READER_RETRY_BACKOFF_MS = 20
"""The changelog reader's wait before it asks again for what it lacks (aiokafka's
default: 100 ms). Its first ``end_offsets`` of a changelog on assignment finds the
topic's metadata unknown, and waited that long for each table: 0.2 s of every start,
measured in the processor's log."""


def customer_of(key: Any) -> str:
    """The customer id a key of the customer side's table belongs to (its partition's):
    the key itself (the customer's state), or its second part (an order summary, a page
    of the order index: ``projections.joins.order_summary_key``)."""
    return key if isinstance(key, str) else str(key[1])


def _nothing() -> None:
    return None


def _no_context() -> Callable[[], object]:
    """The order side's states are stored at detach, to the partition of their key."""
    return _nothing


class BatchProcessor(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        n = settings.topic_partitions
        self.stores = Stores(settings)
        self.tables_dir = Path(settings.processor_data_dir) / "tables"
        self.forgot = table_dir.trust_or_forget(self.tables_dir)
        self.orders = ChangelogTable(
            self.tables_dir / ORDER_STATE, changelog_topic(settings, ORDER_STATE), n, str
        )
        self.customers = ChangelogTable(
            self.tables_dir / CUSTOMER_STATE,
            changelog_topic(settings, CUSTOMER_STATE),
            n,
            customer_of,
            in_order=True,
        )
        client = settings.kafka_client()
        self._consumer = AIOKafkaConsumer(
            **client,
            group_id=settings.processor_app_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_partition_fetch_bytes=1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        self._reader = AIOKafkaConsumer(  # the changelogs, on assignment
            **client,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            retry_backoff_ms=READER_RETRY_BACKOFF_MS,
        )
        self._producer = AIOKafkaProducer(
            **client,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=256 * 1024,
            compression_type=(
                None if settings.processor_compression == "none" else settings.processor_compression
            ),
        )
        self.outbox: KafkaOutbox[str] = KafkaOutbox(
            n, settings.topic(ORDER_LINKS), settings.topic(ORDER_ENRICHMENT)
        )
        self.targets = LiveTargets(self.stores, settings.targets_ttl_s)
        self.pipeline = Pipeline(
            self.orders,
            self.customers,
            self.targets,
            self._send_link,
            self._send_enrichment,
            self._detach_sent,
            order_context=_no_context,
        )
        self._dead_letters = KafkaDeadLetterSink(settings, self.stores.record_dead_letter)
        single = RecordHandler(apply_one_with(self.pipeline), self._dead_letters)
        self.batches = BatchHandler(
            fold_with(self.pipeline),
            self.pipeline.detach,
            single,
            self.pipeline.invalidate,
            self.pipeline.folding,
        )
        self.owned: frozenset[int] = frozenset()
        """The partition numbers this worker owns (of every topic: range assignor)."""
        table_side = settings.topic(TABLE_SIDE)
        self._table_first = TableSideFirst(self._consumer, lambda topic: topic == table_side)
        self._lock = asyncio.Lock()  # held while a batch is folded, or a rebalance
        self._writing: asyncio.Future[None] | None = None  # the batch being written
        self._collector = BatchCollector()
        self._alone_before = False  # the batch being written left records to apply alone
        self._stopping = asyncio.Event()
        self._crashed: BaseException | None = None
        self._child: worker_child.Child | None = None
        self._watching: asyncio.Future[None] | None = None

    # -- the join's messages: in-process where this worker owns the other side ----------

    async def _send_link(self, link: OrderLink) -> None:
        if partition_of(link.customer_id, self.settings.topic_partitions) in self.owned:
            await self.pipeline.order_link(link)
        else:
            await self.outbox.send_link(link)

    async def _send_enrichment(self, message: Enrichment) -> None:
        if partition_of(message.order_id, self.settings.topic_partitions) in self.owned:
            await self.pipeline.enrichment(message)
        else:
            await self.outbox.send_enrichment(message)

    async def _detach_sent(self) -> Callable[[], Awaitable[None]]:
        """The batch's internal records and its tables' changelog records, and what
        sends them: it returns once all of them are stored, and sends them all again
        when called again after a failure (the join steps take a message twice, and a
        table a write twice, harmlessly). Kafka unavailable is a dependency unavailable:
        the batch's write is retried (``BatchHandler``)."""
        messages = self.outbox.take()
        changes = [(table, table.take()) for table in (self.orders, self.customers)]

        async def sent() -> None:
            try:
                futures = [await self._hand_over(m) for m in messages]
                for table, taken in changes:
                    futures += await self._send_changes(table, taken)
            except KafkaError as exc:
                await asyncio.gather(*futures, return_exceptions=True)  # none unretrieved
                raise ConnectionError(f"Kafka: {exc!r}") from exc
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
            failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if isinstance(failed, KafkaError):
                raise ConnectionError(f"Kafka: {failed!r}") from failed
            if failed is not None:
                raise failed

        return sent

    async def _send_changes(
        self, table: ChangelogTable, changes: Changes
    ) -> list[asyncio.Future[Any]]:
        """A table's changelog records: each partition's in one producer batch, which the
        broker appends whole or not at all, when they fit in one (a send per record
        cost a future, its resolution and the accumulator's bookkeeping each); when
        they do not, every write to the partition in order, over as many
        (``Changes.every``)."""
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for partition, key, value in changes.records:
            by_partition.setdefault(partition, []).append((key, value))
        futures = []
        for partition, items in by_partition.items():
            whole = self._one_batch(items)
            if whole is not None:
                futures.append(await self._submit(table, partition, whole, len(items)))
                continue
            every = changes.every(partition)
            if every is not None:
                items = [(key, value) for _, key, value in every]
            builder, count = self._producer.create_batch(), 0
            for key, value in items:
                if builder.append(key=key, value=value, timestamp=None) is None:  # full
                    futures.append(await self._submit(table, partition, builder, count))
                    builder, count = self._producer.create_batch(), 0
                    builder.append(key=key, value=value, timestamp=None)  # the first fits
                count += 1
            futures.append(await self._submit(table, partition, builder, count))
        return futures

    def _one_batch(self, items: Sequence[tuple[bytes, bytes | None]]) -> Any | None:
        """A producer batch of all of ``items``, or None when they do not fit in one."""
        builder = self._producer.create_batch()
        for key, value in items:
            if builder.append(key=key, value=value, timestamp=None) is None:
                return None
        return builder

    async def _submit(
        self, table: ChangelogTable, partition: int, builder: Any, count: int
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self._producer.send_batch(
            builder, table.topic, partition=partition
        )

        def stored(done: asyncio.Future[Any]) -> None:
            if not done.cancelled() and done.exception() is None:
                table.sent(partition, done.result().offset + count)

        future.add_done_callback(stored)
        return future

    async def _hand_over(self, message: OutboxRecord) -> asyncio.Future[Any]:
        topic, partition, key, value, count = message
        future: asyncio.Future[Any] = await self._producer.send(
            topic,
            value=value,
            key=key,
            partition=partition,
            headers=[(MESSAGES_HEADER, str(count).encode())],
        )
        return future

    # -- the group ---------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:  # the batches in flight are written and committed first
            await self.settle()
            self.owned = frozenset()
            self._table_first.revoked()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            by_topic: dict[str, set[int]] = {}
            for tp in assigned:
                by_topic.setdefault(tp.topic, set()).add(tp.partition)
            owned = set().union(*by_topic.values()) if by_topic else set()
            if any(parts != owned for parts in by_topic.values()):
                log.error("partitions not co-assigned across topics: %s", by_topic)
            started = time.monotonic()
            restored = await self._restore(sorted(owned))
            self.pipeline.invalidate()
            self.owned = frozenset(owned)
            await self._table_first.assigned(assigned)
            log.info(
                "assigned partitions %s; %d changelog records restored in %.1f s",
                sorted(owned),
                restored,
                time.monotonic() - started,
            )

    async def _restore(self, partitions: Sequence[int]) -> int:
        failures = 0
        while True:
            try:
                restored = await self.orders.restore(self._reader, partitions)
                return restored + await self.customers.restore(self._reader, partitions)
            except KafkaError as exc:
                wait = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
                failures += 1
                log.warning("restoring the tables: %r; again in %.1f s", exc, wait)
                await asyncio.sleep(wait)

    # -- the loop ----------------------------------------------------------------------

    async def fold(self, got: Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]) -> None:
        """Fold one batch, then start writing it once the batch before is written (the
        next batch is folded meanwhile); its offsets are committed once it is written."""
        logical = self.settings.logical_topic
        records = [
            Record(logical(tp.topic), tp.partition, r.offset, r.key, r.value, list(r.headers))
            for tp, batch in got.items()
            for r in batch
        ]
        await self._refresh_targets()
        if self._alone_before:
            # The batch before left records out, applied alone once it is written: the
            # later records of their partitions are folded after them, so that a state
            # this batch takes for its changelog includes what they changed.
            await self.settle()
        folded = await self.batches.fold(records)
        await self.settle()
        offsets = {tp: batch[-1].offset + 1 for tp, batch in got.items() if batch}
        self._alone_before = bool(folded.alone)
        self._writing = asyncio.ensure_future(self._write(folded, offsets))

    async def _refresh_targets(self) -> None:
        """The versions to write to, read again when due, for as long as their store
        takes to answer (nothing can be written meanwhile anyway)."""
        failures = 0
        while True:
            try:
                await self.targets.refresh()
                return
            except TRANSIENT_ERRORS as exc:
                wait = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
                failures += 1
                log.warning(
                    "dependency unavailable reading the read-model versions (%r); again in %.1f s",
                    exc,
                    wait,
                )
                await asyncio.sleep(wait)

    async def _write(self, folded: Folded, offsets: dict[TopicPartition, int]) -> None:
        await self.batches.write(folded)
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # a rebalance: the next owner reads them
            log.warning("could not commit a batch's offsets (%r): they are read again", exc)
        self._collector.after_batch()

    async def settle(self) -> None:
        """Wait until the batch being written is written and committed."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def spawn_projections(self) -> None:
        """Take the projection worker (started by the processor's command before Faust
        was imported, or now), if any projection is enabled: it loads what it needs
        meanwhile, and starts reading when ``start`` has created the topics. The app
        calls this as early as it can; ``start`` does if it was not."""
        if self._child is not None:
            return
        child = worker_child.take()
        if not enabled(self.settings):  # it ends by itself: none to run
            await child.wait()
            return
        self._child = child
        self._watching = asyncio.ensure_future(self._watch(child))

    async def start(self) -> None:
        """Prepare Kafka, connect, join the group, let the projection worker start."""
        if self.forgot:
            log.warning(
                "the last run on %s did not stop cleanly: its tables are restored from "
                "their changelogs",
                self.tables_dir,
            )
        created = await ensure_topics(self.settings)
        if created:
            log.info("created topics %s", created)
        topics = (*TOPICS, *INTERNAL_TOPICS)
        started = await start_group_at_beginning(
            self.settings, self.settings.processor_app_id, topics
        )
        if started:
            log.info("committed beginning offsets for %d partitions new to the group", len(started))
        for client in (self._producer, self._reader, self._consumer):
            await _start(client)
        self._consumer.subscribe([self.settings.topic(t) for t in topics], listener=self)
        await self.spawn_projections()
        if self._child is not None:
            self._child.release()

    async def run(self) -> None:
        """Apply batches until ``stop()``; raises what crashed the processor."""
        await self._loop()

    async def _loop(self) -> None:
        wait_ms = self.settings.batch_max_wait_ms
        try:
            while not self._stopping.is_set():
                got = await self._consumer.getmany(
                    *self._table_first.reading,
                    timeout_ms=wait_ms,
                    max_records=self.settings.batch_max_records,
                )
                async with self._lock:
                    if got:
                        await self.fold(got)
                    await self._table_first.advanced()
            async with self._lock:
                await self.settle()
        except BaseException as exc:
            # Whatever stopped the loop mid-batch (a crash, a cancellation): the stop is
            # not clean, and the write in flight is stopped before anything is closed.
            self._crashed = self._crashed or exc
            writing, self._writing = self._writing, None
            if writing is not None and not writing.done():
                writing.cancel()
                await asyncio.wait([writing])
            raise
        if self._crashed is not None:
            raise self._crashed

    def stop(self) -> None:
        """Stop after the batch in flight."""
        self._stopping.set()

    async def _watch(self, child: worker_child.Child) -> None:
        """A projection worker that exits takes the processor down (its supervisor
        restarts both), rather than leaving the projections silently behind."""
        code = await child.wait()
        log.error("the projection worker (pid %d) exited with %s", child.pid, code)
        self._crashed = RuntimeError(f"the projection worker exited with {code}")
        self.stop()

    async def close(self) -> None:
        """Leave the group, flush what was sent, close the tables; a stop with nothing
        unsent and no crash is marked clean, so the next run keeps its tables."""
        clean = (
            self._crashed is None
            and self._writing is None
            and not self.orders.pending
            and not self.customers.pending
        )
        if self._watching is not None:
            self._watching.cancel()
        child = self._child
        if child is not None and child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), timeout=10.0)
            except TimeoutError:
                child.kill()
        with contextlib.suppress(Exception):
            await self._consumer.stop()
        try:
            await self._producer.stop()  # waits for what is in flight
        except Exception:
            clean = False
        with contextlib.suppress(Exception):
            await self._reader.stop()
        await self._dead_letters.close()
        self.orders.close()
        self.customers.close()
        await self.stores.close()
        if clean:
            table_dir.mark_clean_stop(self.tables_dir)


async def _start(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Connect, for as long as the broker takes to come back (it may be restarting)."""
    failures = 0
    while True:
        try:
            await client.start()
            return
        except KafkaError as exc:
            wait = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
            failures += 1
            log.warning("Kafka unavailable (%r); again in %.1f s", exc, wait)
            await asyncio.sleep(wait)
