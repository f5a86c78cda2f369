"""The join's table side read ahead of the streams while it is behind
(``stream_processors.table_first``), against a consumer that keeps positions."""

from __future__ import annotations

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError

from stream_processors.table_first import TableSideFirst

CUSTOMERS = [TopicPartition("customers", p) for p in (0, 1)]
STREAMS = [TopicPartition(t, p) for t in ("orders", "payments") for p in (0, 1)]


class Consumer:
    """What ``TableSideFirst`` uses of an aiokafka consumer."""

    def __init__(
        self, committed: dict[TopicPartition, int | None], ends: dict[TopicPartition, int]
    ):
        self._committed = committed
        self._ends = ends
        self.positions = {tp: c or 0 for tp, c in committed.items()}
        self.paused: set[TopicPartition] = set()
        self.assigned = True

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self._ends[tp] for tp in partitions}

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._committed[tp]

    async def position(self, tp: TopicPartition) -> int:
        if not self.assigned:
            raise IllegalStateError("not assigned")
        return self.positions[tp]

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)


def table_first(consumer: Consumer) -> TableSideFirst:
    return TableSideFirst(consumer, lambda topic: topic == "customers")  # type: ignore[arg-type]


async def test_the_streams_wait_until_every_table_partition_is_read_to_its_end() -> None:
    consumer = Consumer(
        {CUSTOMERS[0]: 5, CUSTOMERS[1]: None, **{tp: 0 for tp in STREAMS}},
        {CUSTOMERS[0]: 9, CUSTOMERS[1]: 4},
    )
    ahead = table_first(consumer)
    await ahead.assigned([*CUSTOMERS, *STREAMS])
    assert set(ahead.reading) == set(CUSTOMERS) and ahead.reading_ahead
    consumer.positions[CUSTOMERS[0]] = 9
    await ahead.advanced()
    assert set(ahead.reading) == set(CUSTOMERS)  # the other table partition is still behind
    consumer.positions[CUSTOMERS[1]] = 4
    await ahead.advanced()
    assert ahead.reading == () and not ahead.reading_ahead  # every partition is read


async def test_the_streams_are_not_paused_but_fetched_meanwhile() -> None:
    """Paused partitions are fetched only once resumed, after the fetch in flight (the
    table side's last, held by the broker while it has nothing new): the streams are
    left to be fetched while the table side is read, and polled once it is."""
    consumer = Consumer({CUSTOMERS[0]: 0, **{tp: 0 for tp in STREAMS}}, {CUSTOMERS[0]: 3})
    ahead = table_first(consumer)
    await ahead.assigned([CUSTOMERS[0], *STREAMS])
    assert ahead.reading == (CUSTOMERS[0],)
    assert consumer.paused == set()


async def test_a_worker_whose_table_side_is_not_behind_reads_everything() -> None:
    consumer = Consumer(
        {CUSTOMERS[0]: 9, CUSTOMERS[1]: 4, **{tp: 0 for tp in STREAMS}},
        {CUSTOMERS[0]: 9, CUSTOMERS[1]: 4},
    )
    ahead = table_first(consumer)
    await ahead.assigned([*CUSTOMERS, *STREAMS])
    assert ahead.reading == () and not ahead.reading_ahead
    await ahead.assigned(STREAMS)  # no table partition at all
    assert ahead.reading == ()


async def test_partitions_revoked_while_reading_ahead_leave_everything_to_read() -> None:
    consumer = Consumer({CUSTOMERS[0]: 0, **{tp: 0 for tp in STREAMS}}, {CUSTOMERS[0]: 3})
    ahead = table_first(consumer)
    await ahead.assigned([CUSTOMERS[0], *STREAMS])
    consumer.assigned = False
    await ahead.advanced()  # the position of a partition no longer assigned
    assert not ahead.reading_ahead and ahead.reading == ()
    await ahead.assigned([CUSTOMERS[0], *STREAMS])
    ahead.revoked()
    assert ahead.reading == ()
