"""Producer API against the real broker: what is accepted lands in Kafka, decodable."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from eventfold.settings import Settings
from producers.api import create_app
from schemas.codec import decode
from schemas.events import event_to_json


@pytest.fixture
async def api(topics: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(topics)), base_url="http://producer"
    ) as client:
        yield client


async def read_all(settings: Settings, topic: str) -> list[Any]:
    """Every record of a topic, from the beginning to its current end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        physical = settings.topic(topic)
        parts = [TopicPartition(physical, p) for p in range(settings.topic_partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            batch = await consumer.getmany(timeout_ms=1000)
            for recs in batch.values():
                records += recs
        return records
    finally:
        await consumer.stop()


def placed(order_id: str) -> dict[str, Any]:
    return {
        "type": "OrderPlaced",
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-03-01T10:00:00Z",
        "data": {
            "order_id": order_id,
            "customer_id": "c-9",
            "currency": "EUR",
            "items": [{"sku": "A-1", "quantity": 3, "unit_price": "1.10"}],
        },
    }


async def test_accepted_events_are_in_kafka_with_key_headers_and_avro(
    api: httpx.AsyncClient,
    topics: Settings,
) -> None:
    event = placed("o-77")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await api.post(
        "/v1/events", json=event, headers={"X-Correlation-ID": "corr-1", "traceparent": traceparent}
    )
    assert response.status_code == 202, response.text
    receipt = response.json()["events"][0]
    assert receipt["event_id"] == event["event_id"]

    records = await read_all(topics, "orders")
    assert len(records) == 1
    record = records[0]
    assert (record.partition, record.offset) == (receipt["partition"], receipt["offset"])
    assert record.key == b"o-77"
    assert record.value[:2] == b"\xc3\x01"  # Avro single-object encoding marker
    decoded = event_to_json(decode(record.value))
    assert decoded["event_id"] == event["event_id"]
    assert decoded["occurred_at"].startswith("2026-03-01T10:00:00")
    assert decoded["data"]["order_id"] == "o-77"
    assert decoded["data"]["items"] == [{"sku": "A-1", "quantity": 3, "unit_price": "1.1"}]
    headers = dict(record.headers)
    assert headers["event-type"] == b"OrderPlaced"
    assert headers["event-id"] == event["event_id"].encode()
    assert headers["correlation-id"] == b"corr-1"
    assert headers["traceparent"] == traceparent.encode()


async def test_an_invalid_item_rejects_the_whole_batch_and_publishes_nothing(
    api: httpx.AsyncClient,
    topics: Settings,
) -> None:
    bad = placed("o-2")
    bad["data"]["items"][0]["quantity"] = -1
    response = await api.post("/v1/events", json=[placed("o-1"), bad])
    assert response.status_code == 422
    locs = [e["loc"] for e in response.json()["detail"]]
    assert any(loc[0] == 1 and "quantity" in loc for loc in locs), locs
    assert await read_all(topics, "orders") == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_kafka_unreachable_gives_503_not_a_false_202(settings: Settings) -> None:
    unreachable = settings.model_copy(update={"kafka_port": closed_port(), "kafka_timeout_s": 2.0})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(unreachable)), base_url="http://producer"
    ) as client:
        response = await client.post("/v1/events", json=placed("o-3"))
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert "Kafka" in response.json()["detail"]
