"""An order as the console shows it: the read-model document, its timeline, and the
Kafka records behind it (topic, partition, offset, headers, decoded content).

Why the records can be found without a scan: the order's stored join state
(``_state``, ``projections.joins.OrderState``) keeps the offset each event was first
seen at, the event type names its topic (``schemas.catalog.TOPIC_OF_TYPE``), and the
key names the partition (the producers' default partitioner, murmur2 of the
order_id, the same on ``orders`` and ``payments``, which are co-partitioned). Each
record is then read at its offset and checked against the event id it should hold.
A document without a state (an older layout) gets its records from a bounded scan of
the tail of its partitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from eventfold.settings import Settings
from eventfold.topics import source_partitions
from projections.builtin.core import orders
from projections.joins import stored_state
from projections.read_models import ORDER_PROJECTION, ReadModels, order_view_of
from schemas.catalog import TOPIC_OF_TYPE
from schemas.codec import CodecError, decode
from schemas.events import event_to_json

ORDER_TOPICS = orders.topics
"""The topics an order's events are on (its definition's, ``builtin.core``)."""
TAIL_SCAN = 5000
"""Records read at most per partition when the document holds no offsets."""


@dataclass(frozen=True)
class EventRecord:
    event_id: str | None
    type: str | None
    topic: str
    partition: int
    offset: int | None  # None: not found where the state says it was
    timestamp_ms: int | None
    headers: dict[str, str]
    content: dict[str, Any] | None
    note: str | None = None


def _headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    return {k: bytes(v).decode("utf-8", "backslashreplace") for k, v in record.headers}


def _event_record(
    settings: Settings, record: ConsumerRecord[bytes, bytes], note: str | None = None
) -> EventRecord:
    headers = _headers(record)
    try:
        content: dict[str, Any] | None = event_to_json(decode(record.value or b""))
    except CodecError as exc:
        content, note = None, f"undecodable: {exc}"
    return EventRecord(
        event_id=(content or {}).get("event_id") or headers.get("event-id"),
        type=(content or {}).get("type") or headers.get("event-type"),
        topic=settings.logical_topic(record.topic),
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        headers=headers,
        content=content,
        note=note,
    )


async def _read_at(
    consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> ConsumerRecord[bytes, bytes] | None:
    consumer.seek(tp, offset)
    for _ in range(3):  # an empty fetch can come before the data
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
        for record in batch.get(tp, []):
            return record if record.offset == offset else None
    return None


async def _scan_tail(
    consumer: AIOKafkaConsumer, tp: TopicPartition, key: bytes
) -> list[ConsumerRecord[bytes, bytes]]:
    begin = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    consumer.seek(tp, max(begin, end - TAIL_SCAN))
    found = []
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1000)
        if not batch:
            break
        found += [r for r in batch.get(tp, []) if r.key == key and r.offset < end]
    return found


async def order_records(
    settings: Settings,
    order_id: str,
    timeline: Sequence[Mapping[str, Any]],
    offsets: Mapping[str, int],
) -> list[EventRecord]:
    """The Kafka records of the order's events, in timeline order."""
    key = order_id.encode()
    consumer = AIOKafkaConsumer(
        **settings.kafka_client(), group_id=None, enable_auto_commit=False, client_id="console"
    )
    await consumer.start()
    try:
        partitioner = DefaultPartitioner()
        where: dict[str, TopicPartition] = {}
        every = await source_partitions(settings, ORDER_TOPICS)
        for topic in ORDER_TOPICS:
            physical = settings.topic(topic)
            parts = [tp.partition for tp in every if tp.topic == physical]
            where[topic] = TopicPartition(physical, partitioner(key, parts, parts))
        consumer.assign(list(where.values()))
        out: list[EventRecord] = []
        if not offsets:
            for tp in where.values():
                out += [_event_record(settings, r) for r in await _scan_tail(consumer, tp, key)]
            rank = {str(e.get("event_id")): i for i, e in enumerate(timeline)}
            return sorted(out, key=lambda r: rank.get(r.event_id or "", len(rank)))
        for entry in timeline:
            event_id, kind = str(entry.get("event_id")), str(entry.get("type"))
            topic = TOPIC_OF_TYPE.get(kind, ORDER_TOPICS[0])
            tp = where.get(topic, where[ORDER_TOPICS[0]])
            offset = offsets.get(event_id)
            record = None if offset is None else await _read_at(consumer, tp, offset)
            if record is None:
                out.append(
                    EventRecord(
                        event_id,
                        kind,
                        topic,
                        tp.partition,
                        None,
                        None,
                        {},
                        None,
                        "no record at the offset the order's state names",
                    )
                )
                continue
            found = _event_record(settings, record)
            if found.event_id != event_id:
                found = EventRecord(**{**asdict(found), "note": f"holds {found.event_id}"})
            out.append(found)
        return out
    finally:
        await consumer.stop()


async def order_detail(
    settings: Settings, models: ReadModels, order_id: str
) -> dict[str, Any] | None:
    """The order's view, its timeline and its records; None when no document holds it."""
    doc = await models.orders.find_one({"_id": order_id}, projection=[*ORDER_PROJECTION, "_state"])
    if doc is None:
        return None
    view = order_view_of(doc)
    state = stored_state(doc) or {}
    offsets = {str(k): int(v) for k, v in dict(state.get("offsets", {})).items()}
    timeline = list(view.get("timeline", []))
    records = await order_records(settings, order_id, timeline, offsets)
    return {
        "order_id": order_id,
        "version": models.version,
        "document": view,
        "timeline": timeline,
        "events": [asdict(r) for r in records],
    }
