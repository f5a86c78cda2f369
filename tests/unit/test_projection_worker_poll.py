"""What the projection worker takes of a poll (``projection_worker.decoded``): the events
of the types its projections read, the highest offset read per partition, and which
records were undecodable (noted for every projection reading their topic); a record of
a type no projection reads is neither."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from eventfold.settings import Settings
from schemas.codec import encode
from schemas.events import parse_event
from schemas.examples import EXAMPLES
from stream_processors.projection_worker import decoded

SETTINGS = Settings(auth_disabled=True, topic_prefix="t1-")


def record(topic: str, partition: int, offset: int, value: bytes) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        SETTINGS.topic(topic), partition, offset, 0, 0, None, value, None, 0, len(value), []
    )


def test_a_poll_is_split_into_events_skipped_types_and_undecodable_records() -> None:
    placed = encode(parse_event(EXAMPLES["OrderPlaced"]))
    shipped = encode(parse_event(EXAMPLES["OrderShipped"]))
    captured = encode(parse_event(EXAMPLES["PaymentCaptured"]))
    orders = TopicPartition(SETTINGS.topic("orders"), 2)
    payments = TopicPartition(SETTINGS.topic("payments"), 0)
    poll = {
        orders: [
            record("orders", 2, 10, placed),
            record("orders", 2, 11, b"\x00\x01garbage"),  # not ours at all
            record("orders", 2, 12, shipped),  # a type nobody here reads
            record("orders", 2, 13, placed[:-3]),  # a wanted type, truncated
        ],
        payments: [record("payments", 0, 7, captured)],
        TopicPartition(SETTINGS.topic("payments"), 1): [],
    }

    got = decoded(poll, SETTINGS, wanted={"OrderPlaced", "PaymentCaptured"})

    assert [(e.topic, e.partition, e.offset, e.event.type) for e in got.events] == [
        ("orders", 2, 10, "OrderPlaced"),
        ("payments", 0, 7, "PaymentCaptured"),
    ]
    assert got.highest == {"orders:2": 13, "payments:0": 7}
    assert got.undecodable == [("orders", 2, 11), ("orders", 2, 13)]

    every_type = decoded(poll, SETTINGS)
    assert [e.offset for e in every_type.events] == [10, 12, 7]
    assert every_type.undecodable == got.undecodable
