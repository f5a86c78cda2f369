"""One Kafka record in, read models updated or a dead letter out.

Framework-free so the Faust agents and tests share it. The
policy: a record that cannot be decoded, or whose processing fails for a reason
that retrying will not fix, goes to ``<topic>.dlq`` after bounded retries; an
unavailable dependency (MongoDB, Redis) is retried with backoff for as long as
it takes, so the offset is never committed past what was written.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pymongo.errors import ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventfold.resilience import CircuitBreaker, CircuitOpenError
from projections.projector import ConcurrentUpdateError
from schemas.codec import CodecError

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError, RedisConnectionError,
    RedisTimeoutError, ConcurrentUpdateError, LockError, ConnectionError, TimeoutError,
)


@dataclass(frozen=True)
class Record:
    """A consumed Kafka record, topic given by its logical name (``orders``)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True)
class DeadLetter:
    record: Record
    reason: str
    error: BaseException


class MalformedMessage(ValueError):
    """An internal (JSON) message that does not have the expected shape."""


UNDECODABLE: tuple[type[BaseException], ...] = (CodecError, MalformedMessage)
DeadLetterSink = Callable[[DeadLetter], Awaitable[None]]
Process = Callable[[Record], Awaitable[object]]
"""Decodes a record (raising one of ``UNDECODABLE``) and applies it."""


@dataclass
class RetryPolicy:
    attempts: int = 3  # for errors retrying will not fix: then dead-letter
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 5.0

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff_s, self.initial_backoff_s * 2**attempt)


class RecordHandler:
    """Runs ``process`` on a record under the retry, breaker and dead-letter policy."""

    def __init__(self, process: Process, dead_letter: DeadLetterSink,
                 policy: RetryPolicy | None = None,
                 breaker: CircuitBreaker | None = None) -> None:
        self._process = process
        self._dead_letter = dead_letter
        self._policy = policy or RetryPolicy()
        # Opens after repeated dependency failures: records then wait for the
        # breaker instead of each hammering a store that is down.
        self.breaker = breaker or CircuitBreaker("read-model stores", failure_threshold=5,
                                                 reset_after_s=2.0)

    async def handle(self, record: Record) -> bool:
        """True when applied (or already applied), False when dead-lettered."""
        failures = 0
        transient = 0

        async def process() -> None:
            await self._process(record)

        while True:
            try:
                await self.breaker.call(process, counts_as_failure=TRANSIENT_ERRORS)
                return True
            except UNDECODABLE as exc:
                await self._dead_letter(DeadLetter(record, "undecodable", exc))
                return False
            except CircuitOpenError as exc:
                await asyncio.sleep(max(exc.retry_in_s, self._policy.initial_backoff_s))
            except TRANSIENT_ERRORS as exc:
                delay = self._policy.backoff(transient)
                transient += 1
                log.warning("dependency unavailable at %s:%s@%s (%r); retrying in %.2fs",
                            record.topic, record.partition, record.offset, exc, delay)
                await asyncio.sleep(delay)
            except Exception as exc:  # a bug or a record the projections cannot take
                failures += 1
                if failures >= self._policy.attempts:
                    log.error("dead-lettering %s:%s@%s after %d attempts: %s", record.topic,
                              record.partition, record.offset, failures,
                              "".join(traceback.format_exception_only(exc)).strip())
                    await self._dead_letter(DeadLetter(record, "processing_failed", exc))
                    return False
                await asyncio.sleep(self._policy.backoff(failures))
