"""Publishing dead letters to ``<topic>.dlq`` with the reason in headers."""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer

from eventfold.settings import Settings
from schemas.catalog import dlq_topic
from stream_processors.records import DeadLetter

ORIGINAL_HEADERS_KEPT = (
    "event-type",
    "event-id",
    "correlation-id",
    "traceparent",
    "content-type",
    "dlq-redriven-from",
)


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The original record's headers plus where it came from and why it failed."""
    r = letter.record
    kept = [(k, v) for k, v in r.headers if k in ORIGINAL_HEADERS_KEPT]
    error = "".join(traceback.format_exception_only(letter.error)).strip()
    return [
        *kept,
        ("dlq-reason", letter.reason.encode()),
        ("dlq-error-type", type(letter.error).__name__.encode()),
        ("dlq-error", error[:4000].encode()),
        ("dlq-original-topic", r.topic.encode()),
        ("dlq-original-partition", str(r.partition).encode()),
        ("dlq-original-offset", str(r.offset).encode()),
        *([("dlq-projection", letter.projection.encode())] if letter.projection else []),
    ]


Register = Callable[[str, int, int, str], Awaitable[None]]
"""Records that a record (topic, partition, offset) was dead-lettered, and why."""


def short_reason(letter: DeadLetter) -> str:
    error = "".join(traceback.format_exception_only(letter.error)).strip()
    return f"{letter.reason}: {error[:500]}"


class KafkaDeadLetterSink:
    """Sends dead letters with acks=all; the caller commits only after this returns.

    ``register`` also records each one where read-your-writes looks (the query API
    answers a consistency token covering it with its reason, never with stale data)."""

    def __init__(self, settings: Settings, register: Register | None = None) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._register = register

    async def __call__(self, letter: DeadLetter) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                **self._settings.kafka_client(),
                acks="all",
                enable_idempotence=True,
                client_id="eventfold-dlq",
            )
            await self._producer.start()
        await self._producer.send_and_wait(
            self._settings.topic(dlq_topic(letter.record.topic)),
            value=letter.record.value,
            key=letter.record.key,
            headers=dead_letter_headers(letter),
        )
        if self._register is not None:
            r = letter.record
            await self._register(r.topic, r.partition, r.offset, short_reason(letter))

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
