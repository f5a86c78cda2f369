"""The Kafka topology: which topics exist, with which partitioning and retention.

Created idempotently by every process that needs them (producer API, processors,
replay), so a fresh broker works without a separate set-up step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from eventfold.settings import Settings
from schemas.catalog import INTERNAL_TOPICS, STATE_TABLES, TOPICS, dlq_topic

log = logging.getLogger(__name__)

FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}
A_WEEK = {"retention.ms": str(7 * 24 * 3600 * 1000)}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Source-of-truth topics keep everything forever; `customers` is compacted. The
    internal repartition topics only carry messages between the processors (a rebuild
    never reads them), so a week is plenty."""
    n = settings.topic_partitions
    specs = [
        TopicSpec("orders", n, FOREVER),
        TopicSpec("payments", n, FOREVER),  # co-partitioned with orders: same count, same key
        TopicSpec("customers", n, {"cleanup.policy": "compact", "retention.ms": "-1"}),
        *(TopicSpec(name, n, A_WEEK) for name in INTERNAL_TOPICS),
    ]
    specs += [TopicSpec(dlq_topic(s.name), n, FOREVER) for s in list(specs)]
    physical = [TopicSpec(settings.topic(s.name), s.partitions, s.config) for s in specs]
    # The tables' changelogs too (Faust would create them itself, but a group that joins
    # before a fresh broker serves their metadata is assigned none of their partitions,
    # and every write to the table then fails: seen on a new stack).
    return physical + [
        TopicSpec(changelog_topic(settings, table), n, {"cleanup.policy": "compact"})
        for table in STATE_TABLES
    ]


def changelog_topic(settings: Settings, table: str) -> str:
    """The physical changelog topic of a processor table (Faust's naming)."""
    return f"{settings.processor_app_id}-{table}-changelog"


async def ensure_topics(settings: Settings) -> list[str]:
    """Create missing topics; returns the names created."""
    admin = AIOKafkaAdminClient(
        **settings.kafka_client(),
        request_timeout_ms=int(settings.kafka_timeout_s * 1000),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in topic_specs(settings) if s.name not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=s.config,
            )
            for s in missing
        ]
        try:
            response = await admin.create_topics(
                new, timeout_ms=int(settings.kafka_timeout_s * 1000)
            )
        except TopicAlreadyExistsError:
            return []  # another process won the race; the topics exist as specified
        errors = [
            f"{name}: error {code} {message or ''}".strip()
            for name, code, *rest in response.topic_errors
            for message in [rest[0] if rest else None]
            if code not in (0, TopicAlreadyExistsError.errno)
        ]
        if errors:
            raise RuntimeError("could not create topics: " + "; ".join(errors))
        await _until_visible(admin, [s.name for s in missing], settings.kafka_timeout_s * 3)
        return [s.name for s in missing]
    finally:
        await admin.close()


async def _until_visible(admin: AIOKafkaAdminClient, names: list[str], within_s: float) -> None:
    """Wait until the broker serves metadata (with leaders) for freshly created topics.

    A consumer group that joins before that sees no partitions and, on a new
    broker, may keep an empty assignment; so topic creation returns only once
    the topics can be consumed."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        described = await admin.describe_topics(names)
        ready = all(
            d["error_code"] == 0
            and d["partitions"]
            and all(p["leader"] >= 0 for p in d["partitions"])
            for d in described
        )
        if ready:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topics {names} created but not visible after {within_s}s")
        await asyncio.sleep(0.1)


async def end_offsets(
    settings: Settings, topics: Sequence[str] = TOPICS
) -> dict[TopicPartition, int]:
    """The next offset to be written, per partition of ``topics`` (the source topics)."""
    partitions = await source_partitions(settings, topics)
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(**settings.kafka_client(), group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def start_group_at_beginning(
    settings: Settings, group: str, topics: Sequence[str]
) -> dict[TopicPartition, int]:
    """See ``_start_group_at_beginning``; retried while the broker has no group
    coordinator yet (a fresh broker), and never fatal: without it the processors
    still run, only without this protection for partitions nobody committed yet."""
    try:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(KafkaError),
            wait=wait_fixed(0.5),
            stop=stop_after_delay(settings.kafka_timeout_s * 3),
            reraise=True,
        ):
            with attempt:
                return await _start_group_at_beginning(settings, group, topics)
    except KafkaError as exc:
        log.warning("could not commit beginning offsets for %s: %r", group, exc)
    return {}


async def _start_group_at_beginning(
    settings: Settings, group: str, topics: Sequence[str]
) -> dict[TopicPartition, int]:
    """Commit the beginning offset for every partition of ``topics`` that ``group`` has
    no committed offset for, while the group has no members; returns what it committed.

    Faust drops records it fetched during a rebalance and re-reads them by seeking to
    the committed offset; a partition without one has nothing to seek to, so those
    records were skipped (seen here as a worker taking over partitions that never
    had a commit and processing none of their records). With an offset committed
    up front, every partition can be re-read. Does nothing once members joined
    (they commit as they go); a member that joins meanwhile makes the commit fail,
    which is fine for the same reason."""
    admin = AIOKafkaAdminClient(**settings.kafka_client())
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([group])
        state = described.groups[0][2] if hasattr(described, "groups") else ""
        if state not in ("Empty", "Dead", ""):
            return {}
        partitions = await source_partitions(settings, topics)
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    finally:
        await admin.close()
    missing = [tp for tp in partitions if committed.get(tp) is None or committed[tp].offset < 0]
    if not missing:
        return {}
    consumer = AIOKafkaConsumer(**settings.kafka_client(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(missing)
        beginnings = await consumer.beginning_offsets(missing)
        await consumer.commit({tp: beginnings[tp] for tp in missing})
    except KafkaError:
        return {}  # a member joined meanwhile
    finally:
        await consumer.stop()
    return {tp: beginnings[tp] for tp in missing}


class LastOffsets:
    """The offset of the last record per partition of given topics, from one long-lived
    consumer (opened on first use; the query API asks on every token it is given)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __call__(self, topic: str) -> dict[int, int]:
        """``partition -> last offset`` of logical ``topic`` (empty partitions left out)."""
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **self._settings.kafka_client(),
                group_id=None,
                request_timeout_ms=int(self._settings.kafka_timeout_s * 1000),
            )
            await consumer.start()
            self._consumer = consumer
        physical = self._settings.topic(topic)
        if topic not in self._partitions:
            found = self._consumer.partitions_for_topic(physical)
            if found is None:
                await self._consumer._client.force_metadata_update()
                found = self._consumer.partitions_for_topic(physical) or set()
            self._partitions[topic] = [TopicPartition(physical, p) for p in sorted(found)]
        ends = await self._consumer.end_offsets(self._partitions[topic])
        return {tp.partition: end - 1 for tp, end in ends.items() if end > 0}

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def source_partitions(
    settings: Settings, topics: Sequence[str] = TOPICS
) -> list[TopicPartition]:
    """Every partition of ``topics`` (the source topics: orders, payments, customers),
    as physical names."""
    admin = AIOKafkaAdminClient(**settings.kafka_client())
    await admin.start()
    try:
        described = await admin.describe_topics([settings.topic(t) for t in topics])
    finally:
        await admin.close()
    return [
        TopicPartition(d["topic"], p["partition"])
        for d in described
        if d["error_code"] == 0
        for p in sorted(d["partitions"], key=lambda p: p["partition"])
    ]
