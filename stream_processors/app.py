"""The Faust app: consumes orders, payments and customers, folds them into the read models.

``orders`` and ``payments`` are co-partitioned (same key, same partition count)
and consumed by one agent, so one worker owns every event of an order. The
``customers`` stream (compacted reference data) has its own agent; its changes
re-enrich the customer's orders. Offsets are committed by Faust only after the
agent has finished with a record (written, or dead-lettered).

Run: ``faust -A stream_processors.app worker`` (``make run`` does it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import faust

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from projections.projector import Projector
from projections.read_models import Stores
from stream_processors.dead_letters import KafkaDeadLetterSink
from stream_processors.records import TRANSIENT_ERRORS, Record, RecordHandler

log = logging.getLogger(__name__)
settings = Settings()

app = faust.App(
    f"{settings.topic_prefix}{settings.consumer_group}",
    broker=f"kafka://{settings.bootstrap_servers}",
    store="memory://",
    datadir=settings.processor_data_dir,
    topic_partitions=settings.topic_partitions,
    topic_replication_factor=1,
    consumer_auto_offset_reset="earliest",
    broker_commit_every=100,
    broker_commit_interval=0.5,
    # A worker that dies without leaving the group (SIGKILL, lost host) hands its
    # partitions over after this long.
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
    web_enabled=False,
    producer_acks=-1,
    stream_wait_empty=True,
)

order_streams = app.topic(
    settings.topic("orders"), settings.topic("payments"),
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
)
customer_stream = app.topic(
    settings.topic("customers"),
    key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
)


class Targets:
    """The read-model versions records are written to (re-read every second)."""

    def __init__(self, stores: Stores, ttl_s: float = 1.0) -> None:
        self._stores = stores
        self._ttl_s = ttl_s
        self._cached: list[Projector] = []
        self._versions: tuple[str, ...] = ()
        self._read_at = float("-inf")

    async def __call__(self) -> Sequence[Projector]:
        if time.monotonic() - self._read_at > self._ttl_s:
            versions = tuple(await self._stores.targets())
            if versions != self._versions:
                projectors = [Projector(self._stores.version(v)) for v in versions]
                for p in projectors:
                    await p.models.ensure_indexes()
                self._cached, self._versions = projectors, versions
            self._read_at = time.monotonic()
        return self._cached


_stores: Stores | None = None
_handler: RecordHandler | None = None


def stores() -> Stores:
    global _stores
    if _stores is None:
        _stores = Stores(settings)
    return _stores


def handler() -> RecordHandler:
    global _handler
    if _handler is None:
        _handler = RecordHandler(Targets(stores()), KafkaDeadLetterSink(settings))
    return _handler


def to_record(event: Any) -> Record:
    message = event.message
    headers = message.headers or []
    if isinstance(headers, dict):
        headers = list(headers.items())
    return Record(
        topic=settings.logical_topic(message.topic), partition=message.partition,
        offset=message.offset, key=message.key, value=message.value, headers=list(headers),
    )


@app.task
async def create_topics() -> None:
    created = await ensure_topics(settings)
    if created:
        log.info("created topics %s", created)


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


@app.agent(order_streams)
async def project_orders(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await handler().handle(to_record(event))


@app.agent(customer_stream)
async def project_customers(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await handler().handle(to_record(event))
