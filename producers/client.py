"""Python producer client: validated events, Avro-encoded, published with acks=all.

Used by the producer HTTP API and directly by Python services (no HTTP hop).
Each event goes to its type's topic, keyed by its partition key, with the
headers consumers rely on: event-type, event-id, correlation-id, traceparent.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from eventfold.consistency import encode_token, merge_positions
from eventfold.settings import Settings
from schemas.codec import encode
from schemas.events import Event


class PublishError(RuntimeError):
    """Kafka did not acknowledge the events (unreachable, timed out, refused)."""


@dataclass(frozen=True)
class Receipt:
    """Where Kafka stored one event."""

    event_id: str
    type: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class PublishResult:
    receipts: list[Receipt]
    consistency_token: str


def new_traceparent() -> str:
    """A fresh W3C trace context (version 00, sampled)."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


class EventPublisher:
    """Publishes events to Kafka; idempotent producer, acks=all."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        async with self._lock:
            if self._producer is not None:
                return
            timeout_ms = int(self._settings.kafka_timeout_s * 1000)
            producer = AIOKafkaProducer(
                bootstrap_servers=self._settings.bootstrap_servers,
                acks="all",
                enable_idempotence=True,
                linger_ms=2,
                request_timeout_ms=timeout_ms,
                metadata_max_age_ms=30_000,
                client_id="eventfold-producer",
            )
            try:
                await asyncio.wait_for(producer.start(), self._settings.kafka_timeout_s)
            except (KafkaError, OSError, TimeoutError) as exc:
                await producer.stop()
                where = self._settings.bootstrap_servers
                raise PublishError(f"Kafka unavailable at {where}: {exc!r}") from exc
            self._producer = producer

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await producer.stop()

    async def publish(self, event: Event, **headers: str | None) -> PublishResult:
        return await self.publish_many([event], **headers)

    async def publish_many(
        self, events: Sequence[Event], *, correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> PublishResult:
        """Publish every event; returns only once Kafka acknowledged all of them."""
        await self.start()
        producer = self._producer
        assert producer is not None
        correlation_id = correlation_id or str(uuid.uuid4())
        traceparent = traceparent or new_traceparent()
        try:
            futures = [
                await producer.send(
                    self._settings.topic(event.topic),
                    value=encode(event),
                    key=event.key.encode(),
                    headers=[
                        ("event-type", event.type.encode()),
                        ("event-id", event.event_id.encode()),
                        ("correlation-id", correlation_id.encode()),
                        ("traceparent", traceparent.encode()),
                        ("content-type", b"application/vnd.eventfold.avro-single-object"),
                    ],
                )
                for event in events
            ]
            metadata = await asyncio.wait_for(
                asyncio.gather(*futures), self._settings.kafka_timeout_s
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            raise PublishError(f"Kafka did not acknowledge the events: {exc!r}") from exc
        receipts = [
            Receipt(e.event_id, e.type, e.topic, md.partition, md.offset)
            for e, md in zip(events, metadata, strict=True)
        ]
        token = encode_token(merge_positions((r.topic, r.partition, r.offset) for r in receipts))
        return PublishResult(receipts, token)
