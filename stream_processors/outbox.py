"""The join's messages of a batch, packed into Kafka records, and read back."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import orjson
from aiokafka.partitioner import DefaultPartitioner

from projections.joins import Enrichment, OrderLink
from stream_processors.records import MalformedMessage, Record

T = TypeVar("T")
Topic = TypeVar("Topic")
OutboxRecord = tuple[Any, int, bytes, bytes, int]  # topic, partition, key, value, count
MESSAGES_HEADER = "eventfold-messages"
"""The number of join messages a packed record carries (``KafkaOutbox``): batches are
bounded by messages, not records (``Gathering``)."""
MESSAGES_PER_RECORD = 100
"""Join messages per Kafka record at most. A record must stay well below the broker's
1 MB message limit (a customer update re-enriches every order of the customer), and
Faust buffers fetched records by count, not size (``stream_buffer_maxsize``, 4,096 per
stream): at 500 messages (about 200 KB) a lagging customer agent's buffer held hundreds
of MB. At 100 the record's own cost is still spread over a hundred messages."""
_PARTITIONER = DefaultPartitioner()


@functools.lru_cache(maxsize=1 << 16)
def partition_of(key: str, partitions: int) -> int:
    """The partition a keyed send of ``key`` goes to (Kafka's default partitioner: a
    murmur2 hash in pure Python, so the recent keys' are kept)."""
    every = list(range(partitions))
    return int(_PARTITIONER(key.encode(), every, every))


class KafkaOutbox(Generic[Topic]):
    """The join's messages of a batch, packed into one Kafka record per target partition
    (a JSON array, in the order they were sent, chunked at ``MESSAGES_PER_RECORD``).

    Packing is what makes the join cheap: a record costs the producer and the consumer
    about the same whether it carries one message or hundreds (its send path on this
    side, its fetch, its stream event and its ack on the other), and a catch-up batch
    sends a link or an enrichment for most of the orders it touches. Each record goes to
    the partition the messages' keys hash to (Kafka's default partitioner, as a keyed
    send would), so the co-partitioning with ``customers`` and ``orders`` holds, and it
    is keyed by its first message's key. The processor takes a batch's records when the
    batch is detached and awaits them before the batch's marks are raised
    (``Pipeline.flush``), so a raised mark means its record's effects are all in Kafka,
    which read-your-writes relies on (``query_api.consistency``)."""

    def __init__(
        self,
        partitions: int,
        links_topic: Topic,
        enrichment_topic: Topic,
    ) -> None:
        self._partitions = partitions
        self.links_topic = links_topic
        self.enrichment_topic = enrichment_topic
        self._held: dict[tuple[Topic, int], tuple[bytes, list[dict[str, Any]]]] = {}

    async def send_link(self, link: OrderLink) -> None:
        self._hold(self.links_topic, link.customer_id, link.to_doc())

    async def send_enrichment(self, message: Enrichment) -> None:
        self._hold(self.enrichment_topic, message.order_id, message.to_doc())

    def _hold(self, topic: Topic, key: str, value: dict[str, Any]) -> None:
        partition = partition_of(key, self._partitions)
        held = self._held.get((topic, partition))
        if held is None:
            self._held[(topic, partition)] = (key.encode(), [value])
        else:
            held[1].append(value)

    def take(self) -> list[OutboxRecord]:
        """The records of the messages sent since the last take (a batch's); the next
        messages belong to the next batch."""
        held, self._held = self._held, {}
        return [
            (topic, partition, key, orjson.dumps(chunk), len(chunk))
            for (topic, partition), (key, values) in held.items()
            for chunk in (
                values[i : i + MESSAGES_PER_RECORD]
                for i in range(0, len(values), MESSAGES_PER_RECORD)
            )
        ]


def internal_messages(record: Record, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """The messages of an ``order-links`` / ``order-enrichment`` record: a JSON array of
    them (``KafkaOutbox``), or one object (as written before they were packed);
    MalformedMessage if it is neither."""
    try:
        doc = orjson.loads(record.value)
        docs = doc if isinstance(doc, list) else [doc]
        if not docs or not all(isinstance(d, dict) for d in docs):
            raise TypeError("not a JSON object or a non-empty array of them")
        return [parse(d) for d in docs]
    except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise MalformedMessage(f"{record.topic} message: {exc}") from exc


def messages_in(headers: Any) -> int:
    """How many messages a record carries: a packed join record says so in a header."""
    items = headers.items() if isinstance(headers, dict) else (headers or ())
    for name, value in items:
        if name == MESSAGES_HEADER:
            try:
                return max(1, int(value))
            except (TypeError, ValueError):
                return 1
    return 1
