"""What ``eventfold status`` reports: versions, and per partition the lag of the processors."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from rich.table import Table

from eventfold.settings import Settings
from eventfold.topics import end_offsets
from projections.read_models import META_ID, Stores


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    end_offset: int
    committed: int | None  # the live consumer group's committed offset
    applied: int | None  # highest offset the active version applied

    @property
    def lag(self) -> int:
        return self.end_offset - (self.committed or 0)


@dataclass(frozen=True)
class StatusReport:
    active: str
    building: list[str]
    partitions: list[PartitionStatus]

    def render(self) -> Table:
        table = Table(title=f"active version: {self.active}; rebuilding: "
                            f"{', '.join(self.building) or 'none'}")
        for column in ("topic", "partition", "end offset", "committed", "lag", "applied"):
            table.add_column(column, justify="right" if column != "topic" else "left")
        for p in self.partitions:
            table.add_row(p.topic, str(p.partition), str(p.end_offset),
                          "-" if p.committed is None else str(p.committed), str(p.lag),
                          "-" if p.applied is None else str(p.applied))
        return table


async def gather_status(settings: Settings, stores: Stores) -> StatusReport:
    meta = await stores.meta.find_one({"_id": META_ID}) or {}
    active = await stores.active()
    applied = await active.redis.hgetall(active.key("checkpoints"))
    ends = await end_offsets(settings)
    partitions = list(ends)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        group = f"{settings.topic_prefix}{settings.consumer_group}"
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    rows = []
    for tp in partitions:
        topic = settings.logical_topic(tp.topic)
        meta_offset = committed.get(tp)
        mark = applied.get(f"{topic}:{tp.partition}")
        rows.append(PartitionStatus(
            topic, tp.partition, ends[tp],
            None if meta_offset is None or meta_offset.offset < 0 else meta_offset.offset,
            None if mark is None else int(mark),
        ))
    return StatusReport(str(meta.get("active", await stores.active_version())),
                        list(meta.get("building", [])), rows)
