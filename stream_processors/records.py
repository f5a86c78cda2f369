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
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pymongo.errors import ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import LockError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventfold.resilience import CircuitBreaker, CircuitOpenError
from schemas.codec import CodecError

log = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionFailure,
    NetworkTimeout,
    ServerSelectionTimeoutError,
    RedisConnectionError,
    RedisTimeoutError,
    LockError,
    ConnectionError,
    TimeoutError,
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
    projection: str | None = None  # the one projection it failed for (projections.api)


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

    def __init__(
        self,
        process: Process,
        dead_letter: DeadLetterSink,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._process = process
        self._dead_letter = dead_letter
        self.policy = policy or RetryPolicy()
        # Opens after repeated dependency failures: records then wait for the
        # breaker instead of each hammering a store that is down.
        self.breaker = breaker or CircuitBreaker(
            "read-model stores", failure_threshold=5, reset_after_s=2.0
        )

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
                await asyncio.sleep(max(exc.retry_in_s, self.policy.initial_backoff_s))
            except TRANSIENT_ERRORS as exc:
                delay = self.policy.backoff(transient)
                transient += 1
                log.warning(
                    "dependency unavailable at %s:%s@%s (%r); retrying in %.2fs",
                    record.topic,
                    record.partition,
                    record.offset,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
            except Exception as exc:  # a bug or a record the projections cannot take
                failures += 1
                if failures >= self.policy.attempts:
                    log.error(
                        "dead-lettering %s:%s@%s after %d attempts: %s",
                        record.topic,
                        record.partition,
                        record.offset,
                        failures,
                        "".join(traceback.format_exception_only(exc)).strip(),
                    )
                    await self._dead_letter(DeadLetter(record, "processing_failed", exc))
                    return False
                await asyncio.sleep(self.policy.backoff(failures))


@dataclass
class BatchStats:
    """What the batches since the last ``take()`` cost: how many, how large, and the
    seconds spent folding them and writing them (for the processor's log)."""

    batches: int = 0
    records: int = 0
    fold_s: float = 0.0
    write_s: float = 0.0
    slowest_s: float = 0.0  # the longest fold and write of one batch
    slowest_records: int = 0  # and its records

    def add(self, records: int, fold_s: float, write_s: float) -> None:
        self.batches += 1
        self.records += records
        self.fold_s += fold_s
        self.write_s += write_s
        if fold_s + write_s > self.slowest_s:
            self.slowest_s, self.slowest_records = fold_s + write_s, records

    def take(self) -> BatchStats:
        """These figures, and start again from zero."""
        taken = BatchStats(
            self.batches,
            self.records,
            self.fold_s,
            self.write_s,
            self.slowest_s,
            self.slowest_records,
        )
        self.batches, self.records, self.fold_s, self.write_s = 0, 0, 0.0, 0.0
        self.slowest_s, self.slowest_records = 0.0, 0
        return taken

    def __str__(self) -> str:
        per = max(1, self.batches)
        return (
            f"{self.records} records in {self.batches} batches ({self.records / per:.0f} "
            f"per batch), fold {1000 * self.fold_s / per:.1f} ms and write "
            f"{1000 * self.write_s / per:.1f} ms per batch; the slowest "
            f"{1000 * self.slowest_s:.0f} ms for {self.slowest_records} records"
        )


@dataclass
class Folded:
    """A batch of records folded in memory, to be written (``BatchHandler.write``)."""

    records: Sequence[Record]
    batch: Writable
    alone: list[int]  # the records whose fold failed: handled alone after the batch
    fold_s: float


class Writable(Protocol):
    async def write(self) -> None: ...


YIELD_EVERY = 50
"""Records folded between two turns of the event loop. A fold's steps complete without
waiting on anything, so without these turns the batch before, whose write runs meanwhile,
would send nothing between its round trips until the whole batch is folded: its reads
and writes would wait for the fold instead of overlapping with it."""


class BatchHandler:
    """Applies a batch of records: each is folded in memory (``fold``, then the batch is
    detached from the pipeline: ``detach``), then what they changed is written at once
    (``write``), under the policy of ``RecordHandler``.

    A record whose fold fails (undecodable, or one the projections cannot take) is
    left out of the batch and handled alone afterwards, by ``single``, which retries
    it and dead-letters it if need be; so are the later records of its partition, in
    offset order after it, so that no applied mark passes it before it is applied or
    dead-lettered. A write that fails for a dependency is retried
    with backoff behind the breaker for as long as it takes (the writes are merges,
    so writing again is harmless). A write that fails for another reason cannot be
    pinned on one record: the batch is dropped and every record of it goes through
    ``single``, one by one. The caller acks the batch only once ``write`` returned,
    so nothing is committed that was not written. ``lock`` keeps a batch's fold and a
    record applied alone from sharing the pipeline's writer.
    """

    def __init__(
        self,
        fold: Process,
        detach: Callable[[], Awaitable[Writable]],
        single: RecordHandler,
        invalidate: Callable[[], None] = lambda: None,
        lock: asyncio.Lock | None = None,
    ) -> None:
        self._fold = fold
        self._detach = detach
        self._single = single
        self._lock = lock or asyncio.Lock()
        self.invalidate = invalidate
        """Called when the state stores changed under the handler (a rebalance)."""
        self.stats = BatchStats()

    async def handle(
        self, records: Sequence[Record], enter: Callable[[int], object] = lambda i: None
    ) -> None:
        """Fold and write one batch. ``enter(i)`` is called before the i-th record is
        applied (the Faust agent makes it the current event, which its tables'
        changelog partitions follow)."""
        await self.write(await self.fold(records, enter), enter)

    async def fold(
        self, records: Sequence[Record], enter: Callable[[int], object] = lambda i: None
    ) -> Folded:
        alone: list[int] = []
        held_back: set[tuple[str, int]] = set()
        started = time.perf_counter()
        async with self._lock:
            for i, record in enumerate(records):
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)
                if (record.topic, record.partition) in held_back:
                    alone.append(i)
                    continue
                enter(i)
                try:
                    await self._fold(record)
                except Exception:
                    alone.append(i)
                    # The partition's later records go alone after it, in order: the
                    # batch's applied mark must not pass a record that is neither
                    # applied nor dead-lettered yet (a consistency token would take it
                    # as applied).
                    held_back.add((record.topic, record.partition))
            batch = await self._detach()
        return Folded(records, batch, alone, time.perf_counter() - started)

    async def write(self, folded: Folded, enter: Callable[[int], object] = lambda i: None) -> None:
        started = time.perf_counter()
        written = await self._written(folded.batch.write)
        self.stats.add(len(folded.records), folded.fold_s, time.perf_counter() - started)
        alone = folded.alone if written else list(range(len(folded.records)))
        for i in alone:
            enter(i)
            await self._single.handle(folded.records[i])

    async def _written(self, write: Callable[[], Awaitable[None]]) -> bool:
        """Write; False when it failed for a reason retrying will not fix."""
        policy = self._single.policy
        transient = 0
        while True:
            try:
                await self._single.breaker.call(write, counts_as_failure=TRANSIENT_ERRORS)
                return True
            except CircuitOpenError as exc:
                await asyncio.sleep(max(exc.retry_in_s, policy.initial_backoff_s))
            except TRANSIENT_ERRORS as exc:
                delay = policy.backoff(transient)
                transient += 1
                log.warning(
                    "dependency unavailable writing a batch (%r); retrying in %.2fs", exc, delay
                )
                await asyncio.sleep(delay)
            except Exception as exc:
                log.warning(
                    "a batch could not be written (%s); applying its records one by one",
                    "".join(traceback.format_exception_only(exc)).strip(),
                )
                return False
