"""The Faust app: the joins run on changelog-backed tables, the results go to the read models.

Two agents, each owning the keys of its partitions:

* ``project_orders`` consumes the co-partitioned ``orders``, ``payments`` and
  ``order-enrichment`` topics (key order_id) and keeps each order's facts in the
  ``order-state`` table;
* ``project_customers`` consumes the co-partitioned ``customers`` and
  ``order-links`` topics (key customer_id) and keeps each customer's profile and
  order summaries in the ``customer-state`` table.

The order side repartitions order summaries by customer_id into ``order-links``;
the customer side answers with the customer block for each order through
``order-enrichment``. Both tables are backed by compacted changelog topics
(``<app id>-<table>-changelog``), so a worker taking over partitions restores
their state. What is sent and the tables' changelog writes are flushed before
Faust commits the source offset (at-least-once); the join steps and the
document merges make a redelivery change nothing (``projections.joins``).

Run: ``python -m stream_processors.worker`` (``make run`` does it; it runs ``faust worker``
on this app, under jemalloc where the machine has it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import faust
from faust.streams import _current_event
from faust.types import TableT

from eventfold.collector import freeze_long_lived
from eventfold.settings import Settings
from eventfold.topics import ensure_topics, start_group_at_beginning
from projections.projector import Pipeline
from projections.read_models import Stores
from projections.registry import enabled
from schemas.catalog import (
    CUSTOMER_STATE,
    INTERNAL_TOPICS,
    ORDER_ENRICHMENT,
    ORDER_LINKS,
    ORDER_STATE,
    TOPICS,
)
from stream_processors import projection_worker, table_dir
from stream_processors.dead_letters import KafkaDeadLetterSink
from stream_processors.folding import apply_one_with, fold_with
from stream_processors.gathering import Gathering
from stream_processors.live_targets import LiveTargets
from stream_processors.outbox import MESSAGES_HEADER, KafkaOutbox, OutboxRecord, messages_in
from stream_processors.records import (
    TRANSIENT_ERRORS,
    BatchHandler,
    Record,
    RecordHandler,
)
from stream_processors.stall_guard import StallGuard

log = logging.getLogger(__name__)
settings = Settings()
T = TypeVar("T")


PRODUCER_BUFFER_MESSAGES = 10_000
PRODUCER_BACKLOG_MESSAGES = 4_000
"""Records (table changelogs, packed join records) an agent lets wait in Faust's producer
buffer before it folds its next batch. Faust's own limit holds back only its streams'
deliveries, not what a batch writes at its end: while the broker took the changelogs
slower than the batches made them, the buffer grew to 25,000 records and the worker to
480 MB in the first 40,000 orders of the memory benchmark."""


async def producer_ebb(buffer: Any, limit: int) -> None:
    """Return once at most ``limit`` records wait in Faust's producer ``buffer`` (each
    record sent wakes it)."""
    while buffer.size > limit:
        buffer.message_sent.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(buffer.message_sent.wait(), timeout=0.1)


async def drain(buffer: Any) -> None:
    """Return once every record queued in Faust's producer ``buffer`` when it was called
    is handed to aiokafka (whose own flush then waits for the broker).

    Faust's ``ProducerBuffer.flush`` gives up after 0.1 s in which no record was sent
    and returns with records still queued, and its consumer commits the source offsets
    right after it. A record waits that long whenever aiokafka's accumulator is full (a
    catch-up) or the worker's CPU is contended, so an offset could be committed before
    the table changelog writes of its record were in Kafka; after a kill -9 the next
    owner restored state without them and did not read the record again (a customer's
    totals kept an order refunded in a lost write). Raises, as Faust's does, when the
    producer stopped with records queued.

    Not until the buffer is empty: the agents keep queueing while a commit waits, and
    the commit covers only what was acked before it (the buffer is first in, first out;
    a send it does not see counted makes it wait longer, never shorter)."""
    queued = buffer.size
    sent = 0
    while sent < queued and buffer.size:
        sent += await buffer.flush_atmost(queued - sent)


class ProcessorApp(faust.App):
    """The Faust app, preparing Kafka before its consumer starts."""

    async def on_first_start(self) -> None:
        await super().on_first_start()
        # off the event loop: removing the tables of millions of orders takes a while
        if await asyncio.to_thread(table_dir.trust_or_forget, self.conf.tabledir):
            log.warning(
                "the last run on %s did not stop cleanly: its tables are restored from "
                "their changelogs",
                self.conf.tabledir,
            )
        created = await ensure_topics(settings)
        if created:
            log.info("created topics %s", created)
        started = await start_group_at_beginning(
            settings, settings.processor_app_id, (*TOPICS, *INTERNAL_TOPICS)
        )
        if started:
            log.info("committed beginning offsets for %d partitions new to the group", len(started))
        # Faust stops delivering records whenever more than 100 messages (table
        # changelog writes) wait in its producer buffer, a fixed class attribute; a
        # batch writes a few per record, so the agents stalled on it (measured: 18% of
        # a catch-up). The buffer drains into aiokafka's own bounded accumulator.
        buffer: Any = self.producer.buffer
        buffer.max_messages = PRODUCER_BUFFER_MESSAGES
        # the commit's flush must not return while changelog writes are queued (``drain``)
        buffer.flush = functools.partial(drain, buffer)

    async def on_started(self) -> None:
        await super().on_started()
        if enabled(settings):
            self._projections = await projection_worker.spawn()
            self._watching = asyncio.ensure_future(self._watch_projections(self._projections))
        freeze_long_lived()  # what is loaded by now lives as long as the process

    async def _watch_projections(self, child: asyncio.subprocess.Process) -> None:
        """A projection worker that exits takes the processor down (its supervisor
        restarts both), rather than leaving the projections silently behind."""
        code = await child.wait()
        log.error("the projection worker (pid %d) exited with %s", child.pid, code)
        await self.crash(RuntimeError(f"the projection worker exited with {code}"))

    async def on_stop(self) -> None:
        watching = getattr(self, "_watching", None)
        if watching is not None:
            watching.cancel()
        child = getattr(self, "_projections", None)
        if child is not None and child.returncode is None:
            child.terminate()
            try:
                await asyncio.wait_for(child.wait(), timeout=10.0)
            except TimeoutError:
                child.kill()
        await super().on_stop()
        await stall_guard.close()

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        # the tables are closed, and a stop that did not crash flushed their changelogs
        producer = self._producer
        if self.crash_reason is None and (producer is None or producer.buffer.size == 0):
            table_dir.mark_clean_stop(self.conf.tabledir)


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the Kafka security settings (``Settings.kafka_client``)."""
    options = settings.kafka_client()
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            ssl_context=options.get("ssl_context"),
            mechanism=settings.kafka_sasl_mechanism,
        )
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


app = ProcessorApp(
    settings.processor_app_id,
    broker=";".join(f"kafka://{b}" for b in settings.bootstrap_servers.split(",")),
    broker_credentials=broker_credentials(settings),
    store="rocksdb://",
    datadir=settings.processor_data_dir,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=settings.topic_replication_factor,
    consumer_auto_offset_reset="earliest",
    # Commits come from Faust's timer, every half second, in a task of their own. Faust
    # also commits every ``broker_commit_every`` acked records from its delivery loop,
    # which stops delivering until the commit is done, and a commit waits until every
    # changelog write queued before it is in Kafka (``drain``): at 100, as it was, the
    # agents waited on commits many times a second. Now that happens once per 10,000
    # records (Faust's default). Freshness p99 in alternated runs: 611 and 773 ms with
    # both changes, 639 to 2,073 ms with a commit every 100 records.
    broker_commit_every=10_000,
    broker_commit_interval=0.5,
    # A worker that dies without leaving the group (SIGKILL, lost host) hands its
    # partitions over after this long.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
    web_enabled=False,
    producer_acks=-1,
    # a few ms of linger lets the batches' changelog and join messages share requests
    producer_linger=0.005,
    producer_compression_type=(
        None if settings.processor_compression == "none" else settings.processor_compression
    ),
    stream_wait_empty=True,
    # What a worker holds of what it fetched and has not applied yet is bounded by the
    # fetch size per partition and the stream buffer's records (see MESSAGES_PER_RECORD).
    consumer_max_fetch_size=1024 * 1024,
    stream_buffer_maxsize=1000,
)


def _raw_topic(*names: str) -> faust.TopicT:
    return app.topic(
        *(settings.topic(n) for n in names),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )


order_topics = _raw_topic("orders", "payments", ORDER_ENRICHMENT)
customer_topics = _raw_topic("customers", ORDER_LINKS)
links_topic = _raw_topic(ORDER_LINKS)
enrichment_topic = _raw_topic(ORDER_ENRICHMENT)

_JSON: faust.types.SchemaT = faust.Schema(key_serializer="json", value_serializer="json")
# RocksDB (rocksdict) keeps the tables on disk, so state for millions of orders does not
# live in RAM; small write buffers and caches per partition keep the process's memory
# bounded (Faust's defaults are sized for one big table: 64 MB write buffers, 2 GB cache).
_ROCKSDB = {
    "write_buffer_size": 2 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 8 * 1024 * 1024,
    "block_cache_size": 2 * 1024 * 1024,
    "block_cache_compressed_size": 0,
    "max_open_files": 128,
}


def _table(name: str, help: str) -> TableT[Any, Any]:
    """A changelog-backed table on RocksDB, keyed like the agent's partitions."""
    return app.Table(
        name,
        default=None,
        partitions=settings.topic_partitions,
        schema=_JSON,
        options=dict(_ROCKSDB),
        help=help,
    )


order_state = _table(ORDER_STATE, "per order_id: facts with offsets, and the customer block")
customer_state = _table(
    CUSTOMER_STATE,
    "per customer_id: profile and order totals; and under keys of their own, each order's "
    "summary and the customer's order index (projections.joins.CustomerSide)",
)


async def _hand_over(message: OutboxRecord) -> Awaitable[Any]:
    topic, partition, key, value, count = message
    return await topic.send(
        key=key,
        value=value,
        partition=partition,
        headers=[(MESSAGES_HEADER, str(count).encode())],
        force=True,
    )


_stores: Stores | None = None
_targets: LiveTargets | None = None
_handlers: dict[str, tuple[BatchHandler, RecordHandler]] = {}


def stores() -> Stores:
    global _stores
    if _stores is None:
        _stores = Stores(settings)
    return _stores


def handlers(agent: str) -> tuple[BatchHandler, RecordHandler]:
    """The batch handler of an agent and the single-record handler behind it.

    Each agent has a pipeline of its own: a pipeline folds one batch at a time, and
    the two agents' batches run concurrently."""
    if agent not in _handlers:
        outbox = KafkaOutbox(settings.topic_partitions, links_topic, enrichment_topic, _hand_over)
        pipeline = Pipeline(
            order_state,
            customer_state,
            live_targets(),
            outbox.send_link,
            outbox.send_enrichment,
            outbox.detach,
            order_context=_current_event_reentry,
        )
        dead_letters = KafkaDeadLetterSink(settings, stores().record_dead_letter)
        single = RecordHandler(apply_one_with(pipeline), dead_letters)
        _handlers[agent] = (
            BatchHandler(
                fold_with(pipeline), pipeline.detach, single, pipeline.invalidate, pipeline.folding
            ),
            single,
        )
    return _handlers[agent]


def live_targets() -> LiveTargets:
    global _targets
    if _targets is None:
        _targets = LiveTargets(stores(), settings.targets_ttl_s)
    return _targets


def weight(event: Any) -> int:
    """How many join messages a record carries (``Gathering`` bounds batches by them)."""
    return messages_in(event.message.headers)


def to_record(event: Any) -> Record:
    message = event.message
    headers = message.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return Record(
        topic=settings.logical_topic(message.topic),
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=list(headers),
    )


@app.timer(interval=30.0, on_leader=True)
async def drop_retired_versions() -> None:
    """Read-model versions replaced by a rebuild are dropped once their grace period ends."""
    try:
        dropped = await stores().drop_retired()
    except TRANSIENT_ERRORS as exc:  # a store is down: the next tick tries again
        log.warning("could not drop retired versions now: %r", exc)
        return
    if dropped:
        log.info("dropped retired read-model versions %s", dropped)


stall_guard = StallGuard(app, settings)


@app.on_partitions_assigned.connect
async def reset_stall_guard(*args: Any, **kwargs: Any) -> None:
    stall_guard.reset()
    for batches, _ in _handlers.values():
        batches.invalidate()


class GcPauses:
    """The collections of the oldest generation and the longest of them (the event loop
    stands still meanwhile), for the processor's log."""

    def __init__(self) -> None:
        self.count = 0
        self.longest_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.longest_s = max(self.longest_s, time.perf_counter() - self._started)

    def take(self) -> str:
        taken = f"{self.count} full collections, the longest {1000 * self.longest_s:.0f} ms"
        self.count, self.longest_s = 0, 0.0
        return taken


gc_pauses = GcPauses()


@app.timer(interval=10.0)
async def log_batches() -> None:
    """What the agents' batches cost in the last interval (nothing when idle)."""
    busy = False
    for agent, (batches, _) in _handlers.items():
        taken = batches.stats.take()
        if taken.batches:
            busy = True
            log.info("%s: %s", agent, taken)
    if busy:
        log.info("gc: %s", gc_pauses.take())


@app.timer(interval=3.0)
async def guard_against_stalled_partitions() -> None:
    await stall_guard.check()


def _make_current(event: Any) -> None:
    """Make ``event`` Faust's current event, as its stream iteration does for each event:
    a table write goes to the changelog partition of the current event's partition, so
    each record of a batch (of several partitions) is applied as the current event."""
    _current_event.set(weakref.ref(event))


def _current_event_reentry() -> Callable[[], object]:
    """Re-enters the current event (an order's state is stored at the end of its batch,
    to the changelog partition of the record that changed it last)."""
    return functools.partial(_current_event.set, _current_event.get())


def _make_current_of(events: Sequence[Any], i: int) -> None:
    _make_current(events[i])


async def project(agent: str, stream: faust.StreamT[bytes]) -> None:
    """Apply records in batches, then ack them. The stream's records are gathered
    (``noack_take``, up to ``batch_max_records`` or ``batch_max_wait_ms``) into a
    ``Gathering`` as they come, while a task of its own applies everything gathered
    each time it is done with the batch before (``apply_batches``). Acks are manual
    (``noack_take`` leaves them to us), so records whose batch is cut short (the worker
    stopped mid-way) are not committed and their partition's next owner reads them
    again."""
    manual = stream.noack()  # type: ignore[attr-defined]  # Stream has it, StreamT not
    gathered: Gathering[Any] = Gathering(settings.batch_max_records, weight)
    applier = asyncio.ensure_future(apply_batches(agent, manual, gathered))
    consumer = asyncio.current_task()

    def stop_consuming(done: asyncio.Future[None]) -> None:
        """An applier that failed stops the agent at once, even while it waits for records."""
        if not done.cancelled() and done.exception() is not None and consumer is not None:
            consumer.cancel()

    applier.add_done_callback(stop_consuming)
    try:
        async for events in manual.noack_take(
            settings.batch_max_records, within=settings.batch_max_wait_ms / 1000
        ):
            await gathered.put(events, applier)
    except asyncio.CancelledError:
        failed = applier.exception() if applier.done() and not applier.cancelled() else None
        if failed is not None:
            raise failed from None
        raise
    finally:
        if not applier.done():
            applier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await applier


async def apply_batches(agent: str, manual: Any, gathered: Gathering[Any]) -> None:
    """Apply what ``gathered`` holds, batch after batch, and ack each batch once it is
    written."""
    batches, single = handlers(agent)
    while True:
        events = await gathered.take()
        seen = 0
        try:
            for event in events:
                _make_current(event)
                seen += 1
                await stall_guard.seen(event.message.tp, event.message.offset, single.handle)
            await batches.handle(
                [to_record(e) for e in events], functools.partial(_make_current_of, events)
            )
        finally:
            for _ in range(seen):
                stall_guard.done()
        for event in events:
            await manual.ack(event)
        await producer_ebb(app.producer.buffer, PRODUCER_BACKLOG_MESSAGES)


@app.agent(order_topics)
async def project_orders(stream: faust.StreamT[bytes]) -> None:
    await project("orders", stream)


@app.agent(customer_topics)
async def project_customers(stream: faust.StreamT[bytes]) -> None:
    await project("customers", stream)
