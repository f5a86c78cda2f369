"""The join's messages are packed into one Kafka record per target partition.

The processor's co-partitioning rests on each packed record landing where a keyed send of
each of its messages would have landed; these tests hold the outbox to that, to the order
of the messages, to the record size limit, and to the reader taking both the packed and
the single-message form."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from projections.joins import SUMMARY_FIELDS, Enrichment, OrderLink
from stream_processors.outbox import (
    MESSAGES_HEADER,
    MESSAGES_PER_RECORD,
    KafkaOutbox,
    OutboxRecord,
    internal_messages,
    messages_in,
)
from stream_processors.records import MalformedMessage, Record

PARTITIONS = 6


def partition_of(key: str) -> int:
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(key.encode(), partitions, partitions))


def link(order_id: str, customer_id: str, facts: int = 1) -> OrderLink:
    summary = dict.fromkeys(SUMMARY_FIELDS) | {"customer_id": customer_id, "placed": True}
    return OrderLink(order_id, facts, summary)


LINKS, ENRICHMENT = "order-links", "order-enrichment"


def outbox() -> KafkaOutbox[str]:
    return KafkaOutbox(PARTITIONS, LINKS, ENRICHMENT)


def unpacked(message: OutboxRecord) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = orjson.loads(message[3])
    return value


async def test_messages_are_packed_per_partition_where_their_keys_hash_to() -> None:
    box = outbox()
    customers = [f"c-{i}" for i in range(40)]
    for i, customer in enumerate(customers):
        await box.send_link(link(f"o-{i}", customer))
    await box.send_enrichment(Enrichment("o-7", {"name": "Ada"}, 3))

    handed = box.take()

    links = [m for m in handed if m[0] == LINKS]
    assert len(links) == len({partition_of(c) for c in customers}) < len(customers)
    seen: list[str] = []
    for _, partition, key, value, count in links:
        docs = orjson.loads(value)
        assert count == len(docs)
        assert {partition_of(d["summary"]["customer_id"]) for d in docs} == {partition}
        assert partition_of(key.decode()) == partition
        seen.extend(d["order_id"] for d in docs)
    # each partition's messages in the order they were sent
    assert sorted(seen, key=lambda o: int(o[2:])) == [f"o-{i}" for i in range(40)]
    for _, _, _, value, _ in links:
        ids = [int(d["order_id"][2:]) for d in orjson.loads(value)]
        assert ids == sorted(ids)
    [enrichment] = [m for m in handed if m[0] == ENRICHMENT]
    assert enrichment[1] == partition_of("o-7") and enrichment[2] == b"o-7"
    assert unpacked(enrichment) == [{"order_id": "o-7", "customer": {"name": "Ada"}, "offset": 3}]


async def test_a_partition_s_messages_are_split_into_records_of_a_bounded_size() -> None:
    box = outbox()
    count = MESSAGES_PER_RECORD * 2 + 1
    for i in range(count):  # a customer update re-enriching a whale's orders
        await box.send_enrichment(Enrichment("o-1", {"name": "Ada"}, i))
    handed = box.take()
    assert [len(unpacked(m)) for m in handed] == [MESSAGES_PER_RECORD] * 2 + [1]
    assert [m[4] for m in handed] == [MESSAGES_PER_RECORD] * 2 + [1]
    offsets = [d["offset"] for m in handed for d in unpacked(m)]
    assert offsets == list(range(count))


async def test_a_take_holds_only_what_was_sent_since_the_last_one() -> None:
    box = outbox()
    await box.send_link(link("o-1", "c-1"))
    first = box.take()
    await box.send_link(link("o-2", "c-1"))
    second = box.take()
    assert [[d["order_id"] for d in unpacked(m)] for m in first + second] == [["o-1"], ["o-2"]]
    assert box.take() == []


def record(topic: str, value: bytes) -> Record:
    return Record(topic, 0, 0, b"k", value)


def test_a_packed_record_and_a_single_message_record_are_both_read() -> None:
    links = [link("o-1", "c-1", 2), link("o-2", "c-1", 1)]
    packed = orjson.dumps([x.to_doc() for x in links])
    assert internal_messages(record("order-links", packed), OrderLink.from_doc) == links
    single = orjson.dumps(links[0].to_doc())
    assert internal_messages(record("order-links", single), OrderLink.from_doc) == links[:1]


@pytest.mark.parametrize("value", [b"[]", b"[1]", b'"x"', b"{not json", b'[{"order_id": "o"}]'])
def test_a_record_that_is_not_join_messages_is_malformed(value: bytes) -> None:
    with pytest.raises(MalformedMessage, match="order-links message"):
        internal_messages(record("order-links", value), OrderLink.from_doc)


@pytest.mark.parametrize(
    ("headers", "weight"),
    [
        ([(MESSAGES_HEADER, b"37")], 37),
        ({MESSAGES_HEADER: b"5"}, 5),
        ([("event-type", b"OrderPlaced")], 1),  # a source record: one event
        (None, 1),
        ([(MESSAGES_HEADER, b"nonsense")], 1),
    ],
)
def test_a_record_weighs_the_messages_its_header_says_it_carries(headers: Any, weight: int) -> None:
    assert messages_in(headers) == weight
