"""The record handler's policy: dead-letter what retrying won't fix, wait out outages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.errors import AutoReconnect

from eventfold.resilience import BreakerState, CircuitBreaker
from schemas.codec import decode, encode
from schemas.events import parse_event
from schemas.examples import EXAMPLES
from stream_processors.records import (
    BatchHandler,
    DeadLetter,
    Record,
    RecordHandler,
    RetryPolicy,
)

FAST = RetryPolicy(attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)


class ScriptedProjector:
    """Raises the scripted errors in turn, then applies (a stand-in for the store writes)."""

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.applied: list[tuple[str, int, int]] = []

    async def apply(self, event: Any, topic: str, partition: int, offset: int) -> bool:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        self.applied.append((topic, partition, offset))
        return True


def handler_for(
    projector: ScriptedProjector, letters: list[DeadLetter], breaker: CircuitBreaker | None = None
) -> RecordHandler:
    async def process(r: Record) -> None:
        await projector.apply(decode(r.value), r.topic, r.partition, r.offset)

    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    return RecordHandler(process, sink, FAST, breaker)


def record(value: bytes) -> Record:
    return Record("orders", 2, 41, b"o-1", value, [("event-id", b"x")])


VALID = encode(parse_event(EXAMPLES["OrderPlaced"]))


async def test_undecodable_record_is_dead_lettered_without_touching_the_stores() -> None:
    projector = ScriptedProjector([])
    letters: list[DeadLetter] = []
    assert not await handler_for(projector, letters).handle(record(b"\x00garbage"))
    assert [letter.reason for letter in letters] == ["undecodable"]
    assert projector.calls == 0


async def test_a_record_that_keeps_failing_is_dead_lettered_after_bounded_attempts() -> None:
    projector = ScriptedProjector([ValueError("bad")] * 5)
    letters: list[DeadLetter] = []
    assert not await handler_for(projector, letters).handle(record(VALID))
    assert projector.calls == FAST.attempts
    assert letters[0].reason == "processing_failed"
    assert isinstance(letters[0].error, ValueError)


async def test_dependency_outage_is_retried_until_it_passes_and_nothing_is_dead_lettered() -> None:
    projector = ScriptedProjector([AutoReconnect("down")] * 8)
    letters: list[DeadLetter] = []
    breaker = CircuitBreaker("stores", failure_threshold=100)
    assert await handler_for(projector, letters, breaker).handle(record(VALID))
    assert letters == []
    assert projector.applied == [("orders", 2, 41)]
    assert projector.calls == 9


async def test_repeated_outage_opens_the_breaker_and_a_success_closes_it() -> None:
    projector = ScriptedProjector([AutoReconnect("down")] * 3)
    letters: list[DeadLetter] = []
    breaker = CircuitBreaker("stores", failure_threshold=2, reset_after_s=0.01)
    opened: list[BreakerState] = []
    real_failure = breaker.record_failure

    def watch() -> None:
        real_failure()
        opened.append(breaker.state)

    breaker.record_failure = watch  # type: ignore[method-assign]
    assert await handler_for(projector, letters, breaker).handle(record(VALID))
    assert BreakerState.OPEN in opened
    assert breaker.state is BreakerState.CLOSED
    assert letters == []


class ScriptedBatch:
    """A pipeline stand-in: folds records into ``held``; a detached batch's write raises
    the scripted errors in turn before writing what it holds."""

    def __init__(self, flush_errors: Sequence[BaseException] = ()) -> None:
        self.flush_errors = list(flush_errors)
        self.held: list[int] = []
        self.written: list[int] = []
        self.entered: list[int] = []

    async def fold(self, r: Record) -> None:
        decode(r.value)  # raises for an undecodable record
        self.held.append(r.offset)

    async def detach(self) -> Detached:
        held, self.held = self.held, []
        return Detached(self, held)

    async def apply_one(self, r: Record) -> None:
        try:
            await self.fold(r)
        except BaseException:
            self.held = []
            raise
        await (await self.detach()).write()


class Detached:
    def __init__(self, batch: ScriptedBatch, held: list[int]) -> None:
        self.batch, self.held = batch, held

    async def write(self) -> None:
        if self.batch.flush_errors:
            raise self.batch.flush_errors.pop(0)
        self.batch.written += self.held


def batch_of(values: Sequence[bytes]) -> list[Record]:
    return [Record("orders", 2, offset, b"o-1", v) for offset, v in enumerate(values)]


def batch_handler(batch: ScriptedBatch, letters: list[DeadLetter]) -> BatchHandler:
    async def sink(letter: DeadLetter) -> None:
        letters.append(letter)

    single = RecordHandler(
        batch.apply_one,
        sink,
        FAST,
        CircuitBreaker("test", failure_threshold=100, reset_after_s=0.01),
    )
    return BatchHandler(batch.fold, batch.detach, single)


async def test_a_batch_is_written_once_and_a_bad_record_goes_alone_to_the_dead_letters() -> None:
    batch, letters = ScriptedBatch(), []
    records = batch_of([VALID, b"\x00garbage", VALID])
    await batch_handler(batch, letters).handle(records, batch.entered.append)
    assert batch.written == [0, 2]
    assert [(letter.reason, letter.record.offset) for letter in letters] == [("undecodable", 1)]
    # each record entered before it is applied; 2 after 1, which failed in its partition
    assert batch.entered == [0, 1, 1, 2]


async def test_no_record_of_a_partition_is_written_before_an_earlier_one_that_failed() -> None:
    """Issue 11.4: the batch's applied marks would otherwise pass the failed record
    while it waits for its retries, and a consistency token covering it would be
    answered with a view that lacks it. Other partitions keep their batch."""
    batch = ScriptedBatch()
    log: list[tuple[str, int, int]] = []
    records = [
        Record("orders", 0, 0, b"o-1", VALID),
        Record("orders", 1, 0, b"o-2", VALID),
        Record("orders", 0, 1, b"o-1", b"\x00garbage"),
        Record("orders", 1, 1, b"o-2", VALID),
        Record("orders", 0, 2, b"o-1", VALID),
        Record("orders", 0, 3, b"o-1", VALID),
    ]
    by_offset = {(r.partition, r.offset): r for r in records}

    async def fold(r: Record) -> None:
        await batch.fold(r)
        batch.held[-1] = r.partition * 100 + r.offset  # (partition, offset) in one int

    async def sink(letter: DeadLetter) -> None:
        log.append(("dead-lettered", letter.record.partition, letter.record.offset))

    class Logged(Detached):
        async def write(self) -> None:
            await super().write()
            log.extend(("written", held // 100, held % 100) for held in self.held)

    async def detach() -> Detached:
        held, batch.held = batch.held, []
        return Logged(batch, held)

    async def apply_one(r: Record) -> None:
        await fold(r)
        await (await detach()).write()

    single = RecordHandler(
        apply_one, sink, FAST, CircuitBreaker("test", failure_threshold=100, reset_after_s=0.01)
    )
    await BatchHandler(fold, detach, single).handle(records)
    assert log == [
        ("written", 0, 0),  # the batch: what came before the failure, and partition 1
        ("written", 1, 0),
        ("written", 1, 1),
        ("dead-lettered", 0, 1),  # then the failed record, and only then what follows it
        ("written", 0, 2),
        ("written", 0, 3),
    ]
    assert set(by_offset) == {(p, o) for _, p, o in log}


async def test_a_batch_waits_out_a_store_outage_and_writes_everything() -> None:
    batch, letters = ScriptedBatch([AutoReconnect("down")] * 4), []
    await batch_handler(batch, letters).handle(batch_of([VALID] * 3))
    assert batch.written == [0, 1, 2] and letters == []


async def test_a_batch_that_cannot_be_written_is_applied_record_by_record() -> None:
    # The first flush fails for a reason retrying won't fix: the batch is dropped and each
    # record applied alone; here only the first of those fails (three times: dead letter).
    batch, letters = ScriptedBatch([ValueError("cannot show")] * 4), []
    await batch_handler(batch, letters).handle(batch_of([VALID] * 3))
    assert batch.written == [1, 2]
    assert [(letter.reason, letter.record.offset) for letter in letters] == [
        ("processing_failed", 0)
    ]
