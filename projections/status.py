"""What ``eventfold status`` reports: versions, and per partition the lag of the processors."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Group
from rich.table import Table

from eventfold.settings import Settings
from eventfold.topics import end_offsets
from projections.read_models import PROJECTIONS, Build, Stores
from schemas.catalog import INTERNAL_TOPICS, TOPICS


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    end_offset: int
    committed: int | None  # the live consumer group's committed offset
    applied: dict[str, int | None]  # projection -> highest offset its active version applied

    @property
    def lag(self) -> int:
        return self.end_offset - (self.committed or 0)


@dataclass(frozen=True)
class StatusReport:
    active: dict[str, str]  # projection -> active version
    building: list[Build]
    partitions: list[PartitionStatus]

    def render(self) -> Group:
        versions = Table(title="projections")
        for column in ("projection", "active version", "being rebuilt"):
            versions.add_column(column)
        for projection in PROJECTIONS:
            rebuilding = [b.version for b in self.building if projection in b.projections]
            versions.add_row(projection, self.active[projection], ", ".join(rebuilding) or "-")
        lag = Table(title="lag per partition (applied: highest offset in the active version)")
        for column in (
            "topic",
            "partition",
            "end offset",
            "committed",
            "lag",
            *(f"applied: {p}" for p in PROJECTIONS),
        ):
            lag.add_column(column, justify="right" if column != "topic" else "left")
        for p in self.partitions:
            lag.add_row(
                p.topic,
                str(p.partition),
                str(p.end_offset),
                "-" if p.committed is None else str(p.committed),
                str(p.lag),
                *("-" if p.applied[x] is None else str(p.applied[x]) for x in PROJECTIONS),
            )
        return Group(versions, lag)


async def gather_status(settings: Settings, stores: Stores) -> StatusReport:
    meta = await stores.read_meta()
    active = await stores.active()
    applied = {p: await active.marks(p) for p in PROJECTIONS}
    ends = await end_offsets(settings, (*TOPICS, *INTERNAL_TOPICS))
    partitions = list(ends)
    admin = AIOKafkaAdminClient(**settings.kafka_client())
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(
            settings.processor_app_id, partitions=partitions
        )
    finally:
        await admin.close()
    rows = []
    for tp in partitions:
        topic = settings.logical_topic(tp.topic)
        meta_offset = committed.get(tp)
        field = f"{topic}:{tp.partition}"
        rows.append(
            PartitionStatus(
                topic,
                tp.partition,
                ends[tp],
                None if meta_offset is None or meta_offset.offset < 0 else meta_offset.offset,
                {p: applied[p].get(field) for p in PROJECTIONS},
            )
        )
    return StatusReport(dict(meta.active), list(meta.building), rows)
