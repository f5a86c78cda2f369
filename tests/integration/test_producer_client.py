"""The Python producer client: validation, retries with backoff, the circuit breaker."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from eventfold.resilience import CircuitBreaker, CircuitOpenError
from eventfold.settings import Settings
from producers.client import EventPublisher, PublishError
from schemas.examples import EXAMPLES
from tests.integration.test_producer_kafka import closed_port, read_all


async def test_publish_dicts_and_read_them_back(topics: Settings) -> None:
    async with EventPublisher(topics) as client:
        result = await client.publish_many([EXAMPLES["OrderPlaced"], EXAMPLES["OrderShipped"]])
    assert [r.offset for r in result.receipts] == [0, 1]  # same order: same partition, in order
    assert len(await read_all(topics, "orders")) == 2


async def test_invalid_event_is_refused_before_anything_is_sent(topics: Settings) -> None:
    bad = {**EXAMPLES["OrderShipped"], "data": {"order_id": "o-1"}}
    async with EventPublisher(topics) as client:
        with pytest.raises(ValidationError):
            await client.publish_many([EXAMPLES["OrderPlaced"], bad])
    assert await read_all(topics, "orders") == []


async def test_unreachable_broker_is_retried_with_backoff_then_the_breaker_opens(
    settings: Settings,
) -> None:
    down = settings.model_copy(
        update={"kafka_port": closed_port(), "kafka_timeout_s": 0.5, "publish_attempts": 3}
    )
    breaker = CircuitBreaker("kafka", failure_threshold=3, reset_after_s=60)
    client = EventPublisher(down, breaker=breaker, initial_backoff_s=0.2)
    started = time.monotonic()
    with pytest.raises(PublishError):
        await client.publish(EXAMPLES["OrderPlaced"])
    # three tries, with two backoff waits between them (0.2 s, then about 0.4 s)
    assert time.monotonic() - started >= 0.2 + 0.4
    # the three failures opened the breaker: the next call fails fast, no connection tried
    with pytest.raises(CircuitOpenError) as raised:
        await client.publish(EXAMPLES["OrderPlaced"])
    assert raised.value.retry_in_s > 0
    await client.stop()
