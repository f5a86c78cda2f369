"""Python producer client: validated events, Avro-encoded, published with acks=all.

Used by the producer HTTP API and directly by Python services (no HTTP hop)::

    async with EventPublisher(Settings()) as client:
        result = await client.publish({"type": "OrderPlaced", "data": {...}})

Each event goes to its type's topic, keyed by its partition key, with the
headers consumers rely on: event-type, event-id, correlation-id, traceparent.
A publish is retried with exponential backoff (each try bounded by
``kafka_timeout_s``) behind a circuit breaker. A retry after a partial failure
may write an event twice to Kafka; consumers apply each event_id once, which
is what makes the retry safe.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity import wait_exponential_jitter as backoff

from eventfold.consistency import token_of
from eventfold.resilience import CircuitBreaker
from eventfold.settings import Settings
from schemas.codec import encode
from schemas.events import EventBase, parse_events

EventLike = EventBase | Mapping[str, Any]


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

    def __init__(
        self,
        settings: Settings,
        breaker: CircuitBreaker | None = None,
        initial_backoff_s: float = 0.2,
    ) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self.breaker = breaker or CircuitBreaker("kafka", failure_threshold=3, reset_after_s=5.0)
        self._initial_backoff_s = initial_backoff_s

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        async with self._lock:
            if self._producer is not None:
                return
            timeout_ms = int(self._settings.kafka_timeout_s * 1000)
            producer = AIOKafkaProducer(
                **self._settings.kafka_client(),
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

    async def publish(self, event: EventLike, **headers: str | None) -> PublishResult:
        return await self.publish_many([event], **headers)

    async def publish_many(
        self,
        events: Sequence[EventLike],
        *,
        correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> PublishResult:
        """Validate all, then publish all; returns once Kafka acknowledged every event.

        Raises pydantic's ValidationError (nothing published) for an invalid
        event, PublishError when Kafka did not acknowledge them in the tries
        allowed, CircuitOpenError while the breaker is open."""
        validated: Sequence[EventBase] = (
            events
            if all(isinstance(e, EventBase) for e in events)  # type: ignore[assignment]
            else parse_events(list(events))  # errors are located by item index
        )
        correlation_id = correlation_id or str(uuid.uuid4())
        traceparent = traceparent or new_traceparent()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.publish_attempts),
            wait=backoff(
                multiplier=self._initial_backoff_s, max=5.0, jitter=self._initial_backoff_s
            ),
            retry=retry_if_exception_type(PublishError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.breaker.call(
                    lambda: self._send(validated, correlation_id, traceparent),
                    counts_as_failure=(PublishError,),
                )
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def _send(
        self, events: Sequence[EventBase], correlation_id: str, traceparent: str
    ) -> PublishResult:
        await self.start()
        producer = self._producer
        assert producer is not None
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
        token = token_of((r.topic, r.partition, r.offset) for r in receipts)
        return PublishResult(receipts, token)
