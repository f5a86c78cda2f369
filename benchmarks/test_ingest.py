"""Ingest: ``EventPublisher.publish_many`` against raw aiokafka on the same broker.

The ceiling is an ``AIOKafkaProducer`` configured like the publisher's (acks=all,
idempotent, linger 2 ms) sending the very same bytes (values pre-encoded by the
codec, same keys, same headers) to the same topics, in the same batches of 500
(send all, then wait for every acknowledgement). What separates the two is the
client's own work per event: validation (for envelopes given as dicts), Avro
encoding, header building, the retry/circuit-breaker wrapper. Rounds alternate
ceiling / publisher so a noisy neighbour hits both; the best round of each is
reported (every round is in the JSON line).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.conftest import demo_envelopes
from benchmarks.measure import Figure, Report
from eventfold.settings import Settings
from eventfold.topics import ensure_topics, topic_specs
from producers.client import EventPublisher, new_traceparent
from schemas.codec import encode
from schemas.events import Event, parse_event

ORDERS = 1000  # about 4,900 events
BATCH = 500
ROUNDS = 5

Message = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


@pytest.fixture
async def topics(settings: Settings) -> AsyncIterator[Settings]:
    """This benchmark's topics, deleted afterwards (they hold a few MB)."""
    await ensure_topics(settings)
    yield settings
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([spec.name for spec in topic_specs(settings)])
    finally:
        await admin.close()


def wire_messages(settings: Settings, events: Sequence[Event]) -> list[Message]:
    """Exactly what the publisher sends for ``events``: topic, key, value, headers."""
    correlation_id, traceparent = str(uuid.uuid4()), new_traceparent()
    return [
        (
            settings.topic(e.topic),
            e.key.encode(),
            encode(e),
            [
                ("event-type", e.type.encode()),
                ("event-id", e.event_id.encode()),
                ("correlation-id", correlation_id.encode()),
                ("traceparent", traceparent.encode()),
                ("content-type", b"application/vnd.eventfold.avro-single-object"),
            ],
        )
        for e in events
    ]


async def raw_send(producer: AIOKafkaProducer, messages: Sequence[Message]) -> None:
    for i in range(0, len(messages), BATCH):
        futures = [
            await producer.send(topic, value=value, key=key, headers=headers)
            for topic, key, value, headers in messages[i : i + BATCH]
        ]
        await asyncio.gather(*futures)


async def timed(run: Callable[[], Awaitable[None]], n: int) -> float:
    start = time.perf_counter()
    await run()
    return n / (time.perf_counter() - start)


async def test_publish_many_against_raw_aiokafka(topics: Settings, report: Report) -> None:
    settings = topics
    envelopes: list[dict[str, Any]] = [dict(e) for e in demo_envelopes(ORDERS)]
    events = [parse_event(e) for e in envelopes]
    messages = wire_messages(settings, events)
    n = len(events)

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        client_id="eventfold-bench-ceiling",
    )
    await producer.start()
    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        # warm-up: metadata of every topic, connections, the first batches
        await raw_send(producer, messages[:BATCH])
        await publisher.publish_many(events[:BATCH])

        async def ceiling() -> None:
            await raw_send(producer, messages)

        async def publish(items: Sequence[Any]) -> None:
            for i in range(0, n, BATCH):
                result = await publisher.publish_many(items[i : i + BATCH])
                assert len(result.receipts) == len(items[i : i + BATCH])

        rates: dict[str, list[float]] = {"ceiling": [], "dicts": [], "events": []}
        for _ in range(ROUNDS):
            rates["ceiling"].append(await timed(ceiling, n))
            rates["dicts"].append(await timed(lambda: publish(envelopes), n))
            rates["events"].append(await timed(lambda: publish(events), n))
    finally:
        await publisher.stop()
        await producer.stop()

    best = {k: max(v) for k, v in rates.items()}
    details = {
        "events": n,
        "batch": BATCH,
        "rounds": ROUNDS,
        "all_rounds": {k: [round(x) for x in v] for k, v in rates.items()},
    }
    for name, key in (
        ("ingest publish_many(envelope dicts)", "dicts"),
        ("ingest publish_many(parsed events)", "events"),
    ):
        figure = report.add(
            Figure(
                name,
                best[key],
                "ev/s",
                best["ceiling"],
                "raw aiokafka send, same bytes, acks=all",
                details=details,
            )
        )
        assert figure.ratio > 0
