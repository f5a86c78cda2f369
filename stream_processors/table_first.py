"""The join's table side read ahead of the streams joined to it, while it is behind.

The ``customers`` topic is the table side of the order-customer join: an order event
joins the customer's profile as of when it is applied, and each profile change is sent
again to every order of the customer already known (``CustomerSide``). A processor
catching up on a backlog (a restart after downtime, a new deployment on old topics)
that read all topics at the same pace would apply most profile changes after the
orders they concern, and rewrite every one of those orders once more per change. Read
first, the profiles are there when the orders come: each order is enriched once, with
the latest profile (the views are the same either way: the newest profile wins).

So on assignment, while a ``customers`` partition is behind the end it had then, the
worker polls its table partitions only (``reading``; Kafka Streams bootstraps its
global tables the same way). The streams' partitions are not paused: the consumer
fetches their first records meanwhile and keeps them (one fetch per partition at
most), so they are there the moment the table side is read. Paused, they were
fetched only once resumed, after the table side's last fetch came back: the broker
holds a fetch of partitions with nothing new for the consumer's fetch wait (half a
second at Kafka's default). The table topic is small next to the streams, so this
costs a catch-up little wait; a worker that is not behind reads everything at once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

log = logging.getLogger(__name__)


class TableSideFirst:
    def __init__(self, consumer: AIOKafkaConsumer, is_table: Callable[[str], bool]) -> None:
        """``is_table(topic)``: whether a (physical) topic is the table side."""
        self._consumer = consumer
        self._is_table = is_table
        self._behind: dict[TopicPartition, int] = {}  # table partition -> end to reach
        self._table: tuple[TopicPartition, ...] = ()
        self._since = 0.0

    @property
    def reading_ahead(self) -> bool:
        return bool(self._behind)

    @property
    def reading(self) -> tuple[TopicPartition, ...]:
        """The partitions to poll: the table side's while it is behind, otherwise none
        named (every partition assigned)."""
        return self._table if self._behind else ()

    async def assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Read the table side alone while a table partition given is behind."""
        self.revoked()
        table = [tp for tp in partitions if self._is_table(tp.topic)]
        if not table:
            return
        ends = await self._consumer.end_offsets(table)
        for tp in table:
            committed = await self._consumer.committed(tp)
            if (committed or 0) < ends[tp]:
                self._behind[tp] = ends[tp]
        if self._behind:
            self._table = tuple(table)
            self._since = time.monotonic()

    async def advanced(self) -> None:
        """Read everything once every table partition reached its end (call after each
        poll)."""
        if not self._behind:
            return
        try:
            for tp in list(self._behind):
                if await self._consumer.position(tp) >= self._behind[tp]:
                    del self._behind[tp]
        except IllegalStateError:  # revoked meanwhile: the next assignment decides
            self.revoked()
            return
        if not self._behind:
            log.info(
                "the table side is read up to its ends in %.1f s: the streams follow",
                time.monotonic() - self._since,
            )
            self._table = ()

    def revoked(self) -> None:
        """Partitions taken away: everything assigned next is read, unless the next
        assignment's table side is behind."""
        self._behind.clear()
        self._table = ()
