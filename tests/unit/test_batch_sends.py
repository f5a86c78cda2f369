"""What a batch sends to Kafka (its join records and its tables' changelog records) is
awaited before its marks; a failed send is a dependency unavailable, and the retried
write sends all of it again, in the same order (``BatchProcessor._detach_sent``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

from eventfold.settings import Settings
from projections.joins import (
    SUMMARY_FIELDS,
    OrderLink,
    customer_key,
    order_index_key,
    order_summary_key,
)
from stream_processors.batch_processor import BatchProcessor


class Batch(list[tuple[bytes, Any]]):
    def __init__(self, capacity: int | None = None) -> None:
        super().__init__()
        self.capacity = capacity

    def append_record(self, key: bytes, value: Any, timestamp: None) -> object:
        if self.capacity is not None and len(self) >= self.capacity:
            return None  # full, as aiokafka's builder says (the first record always fits)
        self.append((key, value))
        return self


class Producer:
    """Records what is sent, a record or a batch of them; ``fail`` sends fail once
    awaited."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, Any]] = []
        self.batches: list[tuple[str, int, list[tuple[bytes, Any]]]] = []
        self.fail = 0
        self.capacity: int | None = None  # records per batch

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int, headers: Any = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, key))
        return self._stored(len(self.sent) - 1)

    def create_batch(self) -> Any:
        batch = Batch(self.capacity)
        return SimpleNamespace(append=batch.append_record, records=batch)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        base = len(self.sent)
        self.sent += [(topic, partition, key) for key, _ in builder.records]
        self.batches.append((topic, partition, list(builder.records)))
        return self._stored(base)

    def _stored(self, offset: int) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            done.set_exception(KafkaTimeoutError())
        else:
            done.set_result(SimpleNamespace(offset=offset))
        return done

    async def stop(self) -> None:
        pass


@pytest.fixture
async def processor(tmp_path: Path) -> AsyncIterator[BatchProcessor]:
    settings = Settings(processor_data_dir=str(tmp_path), topic_prefix="t-")
    processor = BatchProcessor(settings)
    await processor._producer.stop()  # never started: only its fake sends
    processor._producer = Producer()  # type: ignore[assignment]
    yield processor
    await processor.close()


async def test_a_failed_send_is_retried_whole_and_the_tables_learn_their_offsets(
    processor: BatchProcessor,
) -> None:
    producer: Producer = processor._producer  # type: ignore[assignment]
    summary = dict.fromkeys(SUMMARY_FIELDS) | {"customer_id": "c-1", "placed": True}
    await processor.outbox.send_link(OrderLink("o-1", 1, summary))
    processor.orders["o-1"] = {"facts": 1}
    processor.customers["c-1"] = {"orders": 1}

    sent = await processor._detach_sent()
    assert producer.sent == []  # nothing goes out before the batch is written

    producer.fail = 1
    with pytest.raises(ConnectionError, match="Kafka"):  # retried by the batch's write
        await sent()
    first = list(producer.sent)
    await sent()

    assert [topic for topic, _, _ in first] == [
        "t-order-links",
        "t-eventfold-processors-order-state-changelog",
        "t-eventfold-processors-customer-state-changelog",
    ]
    assert [key for _, _, key in first] == [b"c-1", b'"o-1"', b'"c-1"']
    assert producer.sent == first + first  # all of it again, in the same order
    # each table learns how far its changelog partition holds it (offsets of the second try)
    assert processor.orders.offsets == {first[1][1]: 5}
    assert processor.customers.offsets == {first[2][1]: 6}
    assert processor.orders.pending == processor.customers.pending == 0


def _customer_steps(processor: BatchProcessor) -> None:
    """Two steps of one customer, as the customer side writes them: its order index,
    its state, an order's summary; the index and the state written twice."""
    customers = processor.customers
    customers[order_index_key("c-1", 0)] = ["o-1"]
    customers[customer_key("c-1")] = {"orders": 1}
    customers[order_summary_key("c-1", "o-1")] = {"facts": 1}
    customers[order_index_key("c-1", 0)] = ["o-1", "o-2"]
    customers[customer_key("c-1")] = {"orders": 2}


def _customer_batches(producer: Producer) -> list[list[tuple[Any, Any]]]:
    return [
        [(orjson.loads(k), orjson.loads(v)) for k, v in records]
        for topic, _, records in producer.batches
        if topic.endswith("customer-state-changelog")
    ]


async def test_a_customer_partition_s_last_values_go_in_one_producer_batch(
    processor: BatchProcessor,
) -> None:
    """One record batch is appended whole or not at all: a crash keeps both steps or
    neither, so each key's last value is enough."""
    producer: Producer = processor._producer  # type: ignore[assignment]
    _customer_steps(processor)
    await (await processor._detach_sent())()
    assert _customer_batches(producer) == [
        [
            (["order", "c-1", "o-1"], {"facts": 1}),
            (["orders", "c-1", 0], ["o-1", "o-2"]),
            ("c-1", {"orders": 2}),
        ]
    ]
    partition = producer.batches[0][1]
    assert processor.customers.offsets == {partition: 3}


async def test_a_customer_partition_s_writes_that_do_not_fit_one_batch_go_every_one_in_order(
    processor: BatchProcessor,
) -> None:
    """Over several record batches, a crash may keep a prefix: of the steps' writes in
    the order written, which a redelivered record completes."""
    producer: Producer = processor._producer  # type: ignore[assignment]
    producer.capacity = 2
    _customer_steps(processor)
    await (await processor._detach_sent())()
    assert _customer_batches(producer) == [
        [(["orders", "c-1", 0], ["o-1"]), ("c-1", {"orders": 1})],
        [(["order", "c-1", "o-1"], {"facts": 1}), (["orders", "c-1", 0], ["o-1", "o-2"])],
        [("c-1", {"orders": 2})],
    ]
    assert processor.customers.get(customer_key("c-1")) == {"orders": 2}
