"""A rebuild leaves out what the live processors dead-letter, and goes on (issue 11)."""

from __future__ import annotations

from typing import Any, cast

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from eventfold.settings import Settings
from projections.projector import Projector
from projections.replay import SHOWN_SKIPPED, RebuildResult, _apply_partition_batch
from schemas.codec import encode
from schemas.events import Event, parse_event
from schemas.examples import EXAMPLES


class Projecting:
    """Takes every event but the ones of a poisoned order, which raise as a fold does."""

    def __init__(self, poisoned: str) -> None:
        self.poisoned = poisoned
        self.applied: list[int] = []

    async def apply(self, event: Event, topic: str, partition: int, offset: int) -> bool:
        if getattr(event.data, "order_id", None) == self.poisoned:
            raise ValueError("the projections cannot take it")
        self.applied.append(offset)
        return True


def record(offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("orders", 0, offset, 0, 0, None, value, None, 0, len(value), [])


def placed(order_id: str) -> bytes:
    return encode(
        parse_event(
            {
                **EXAMPLES["OrderPlaced"],
                "data": {**EXAMPLES["OrderPlaced"]["data"], "order_id": order_id},
            }
        )
    )


async def test_undecodable_and_failed_records_are_counted_shown_and_skipped() -> None:
    projector = Projecting("o-bad")
    result = RebuildResult("v2", ("orders",), {})
    records = [
        record(0, placed("o-1")),
        record(1, b"not avro"),
        record(2, placed("o-bad")),
        record(3, placed("o-2")),
    ]
    await _apply_partition_batch(
        Settings(), cast(Projector, projector), TopicPartition("orders", 0), records, result
    )
    assert projector.applied == [0, 3]
    assert (result.applied, result.undecodable, result.failed) == (2, 1, 1)
    assert [str(s).split(": ")[0:2] for s in result.skipped] == [
        ["orders:0@1", "undecodable"],
        ["orders:0@2", "failed"],
    ]
    assert "the projections cannot take it" in str(result.skipped[1])


async def test_a_store_that_is_down_still_stops_the_batch() -> None:
    class Down(Projecting):
        async def apply(self, *args: Any) -> bool:
            raise ConnectionError("redis is down")

    with pytest.raises(ConnectionError):
        await _apply_partition_batch(
            Settings(),
            cast(Projector, Down("-")),
            TopicPartition("orders", 0),
            [record(0, placed("o-1"))],
            RebuildResult("v2", ("orders",), {}),
        )


async def test_only_the_first_skipped_records_are_kept_to_show() -> None:
    result = RebuildResult("v2", ("orders",), {})
    records = [record(i, b"junk") for i in range(SHOWN_SKIPPED + 5)]
    await _apply_partition_batch(
        Settings(), cast(Projector, Projecting("-")), TopicPartition("orders", 0), records, result
    )
    assert result.undecodable == SHOWN_SKIPPED + 5
    assert len(result.skipped) == SHOWN_SKIPPED
