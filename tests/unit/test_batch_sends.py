"""What a batch sends to Kafka (its join records and its tables' changelog records) is
awaited before its marks; a failed send is a dependency unavailable, and the retried
write sends all of it again, in the same order (``BatchProcessor._detach_sent``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError

from eventfold.settings import Settings
from projections.joins import SUMMARY_FIELDS, OrderLink
from stream_processors.batch_processor import BatchProcessor


class Batch(list[tuple[bytes, Any]]):
    def append_record(self, key: bytes, value: Any, timestamp: None) -> object:
        self.append((key, value))
        return self


class Producer:
    """Records what is sent, a record or a batch of them; ``fail`` sends fail once
    awaited."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, Any]] = []
        self.fail = 0

    async def send(
        self, topic: str, value: bytes, key: bytes, partition: int, headers: Any = None
    ) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, key))
        return self._stored(len(self.sent) - 1)

    def create_batch(self) -> Any:
        batch = Batch()
        return SimpleNamespace(append=batch.append_record, records=batch)

    async def send_batch(self, builder: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        base = len(self.sent)
        self.sent += [(topic, partition, key) for key, _ in builder.records]
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
