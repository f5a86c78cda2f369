"""Runs the registered projections (``projections.registry``) live: one consumer group
over the source topics they consume, batches of records applied to each projection's
active version (``projections.applier``).

It is a process of its own (``python -m stream_processors.projection_worker``), which
the processor starts as its child and which dies with it: the join's Faust agents keep
a core to themselves (run in their process, the projections took 8 to 12% of the
catch-up's throughput in five A/B runs of the benchmark), and a deployment still has
one processor command to run and scale.

No Faust here: a plain aiokafka consumer in the processor's process, whose position is
taken from the projections' own marks (the tracking records written with their state),
not from Kafka's committed offsets, which it commits only for lag tooling. A partition
assigned to this worker is read from the lowest mark of the projections reading it; a
projection whose active version changes (a rebuild switched it) makes its partitions be
read again from the new version's marks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis

from eventfold.loops import new_event_loop
from eventfold.settings import Settings
from projections.api import Projection
from projections.applier import Applier
from projections.projection_store import ProjectionVersions, VersionRetired
from projections.state import Failure, Positioned, mark_of
from schemas.codec import CodecError, decode, event_type
from stream_processors.dead_letters import KafkaDeadLetterSink
from stream_processors.records import TRANSIENT_ERRORS, DeadLetter, Record
from stream_processors.worker_child import GO, PARENT_ENV

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # prctl(2)
PROJECTIONS_NICENESS = 10
"""The projection worker yields the CPU to the join's agents when both want it: sharing
it evenly on the 2-core benchmark machine, the join's freshness p99 rose from about
0.5 s to 0.8 to 2.5 s at 300 events/s."""
COMMIT_INTERVAL_S = 1.0
RETRY_BACKOFF_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def group_id(settings: Settings) -> str:
    return f"{settings.processor_app_id}-projections"


def group_consumer(settings: Settings) -> AIOKafkaConsumer:
    """A projection worker's consumer of the group. Partition p of every topic goes to
    one worker (range assignment over topics of as many partitions), so an entity's
    events (an order's on orders and payments) have one writer: round-robin, Kafka's
    default, split them between workers (with more than two)."""
    return AIOKafkaConsumer(
        **settings.kafka_client(),
        group_id=group_id(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1024 * 1024,
        partition_assignment_strategy=(RangePartitionAssignor,),
    )


@dataclass(frozen=True)
class Decoded:
    """A poll's records as the projections take them."""

    events: list[Positioned]
    """The decodable events of the wanted types, in offset order per partition."""
    highest: dict[str, int]
    """The highest offset read per partition (``topic:partition``)."""
    undecodable: list[tuple[str, int, int]]
    """(topic, partition, offset) of each record that could not be decoded."""


def decoded(
    records: Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]],
    settings: Settings,
    wanted: Collection[str] | None = None,
) -> Decoded:
    """The events of a poll (of the ``wanted`` types, if given), and which records were
    undecodable: told apart here, as they are read, not by matching every record of the
    poll against the events afterwards (that was a tenth of the worker's CPU)."""
    events: list[Positioned] = []
    highest: dict[str, int] = {}
    undecodable: list[tuple[str, int, int]] = []
    for tp, batch in records.items():
        if not batch:
            continue
        topic = settings.logical_topic(tp.topic)
        for r in batch:
            try:
                if wanted is not None and event_type(r.value) not in wanted:
                    continue
                event = decode(r.value)
            except CodecError:  # the processor's join dead-letters it
                undecodable.append((topic, tp.partition, r.offset))
                continue
            events.append(Positioned(event, topic, tp.partition, r.offset))
        highest[mark_of(topic, tp.partition)] = batch[-1].offset
    return Decoded(events, highest, undecodable)


class ProjectionWorker(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        projections: Mapping[str, Projection],
        redis: Redis,
        db: AsyncDatabase[Any] | None = None,
    ) -> None:
        self._settings = settings
        self._projections = dict(projections)
        self.versions = ProjectionVersions(redis, settings.redis_prefix, db)
        self.appliers: dict[str, Applier] = {}
        self._sink = KafkaDeadLetterSink(settings)
        self._consumer: AIOKafkaConsumer | None = None
        self._polled: Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]] = {}
        """The poll being applied (a failing record's bytes go to the dead letters)."""
        self._lock = asyncio.Lock()
        self._versions_read_at = float("-inf")
        self._committed_at = time.monotonic()
        self.applied = 0
        self._reread = False  # read every partition again from the marks before the next batch
        self._wanted = frozenset(t for p in self._projections.values() for t in p.consumes)

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({t for p in self._projections.values() for t in p.topics}))

    async def _dead_letter(self, projection: Projection, failure: Failure) -> None:
        at = failure.at
        raw = next(
            (
                r
                for tp, batch in self._polled.items()
                if tp.partition == at.partition
                and self._settings.logical_topic(tp.topic) == at.topic
                for r in batch
                if r.offset == at.offset
            ),
            None,
        )
        if raw is None:
            return
        record = Record(at.topic, at.partition, at.offset, raw.key, raw.value, list(raw.headers))
        await self._sink(DeadLetter(record, "projection-failed", failure.error, projection.name))
        reason = f"projection {projection.name} failed: {failure.error!r:.400}"
        await self.versions.record_dead_letter(
            projection.name, at.topic, at.partition, at.offset, reason
        )

    async def _appliers_now(self) -> list[str]:
        """Follow the active versions (re-read every ``targets_ttl_s``); the names of
        the projections whose version changed."""
        if time.monotonic() - self._versions_read_at < self._settings.targets_ttl_s:
            return []
        active = await self.versions.active()
        self._versions_read_at = time.monotonic()
        changed = []
        for name, projection in self._projections.items():
            version = active.get(name, "v1")
            held = self.appliers.get(name)
            if held is None or held.version != version:
                applier = Applier(
                    projection,
                    self.versions.store(name, version),
                    self._dead_letter,
                    documents=self.versions.documents(projection, version),
                )
                await applier.start()
                self.appliers[name] = applier
                changed.append(name)
        return changed

    def _seek(self, partitions: Sequence[TopicPartition], names: Sequence[str]) -> None:
        """Read ``partitions`` again from the lowest mark of the projections ``names``."""
        assert self._consumer is not None
        for tp in partitions:
            topic = self._settings.logical_topic(tp.topic)
            mark = mark_of(topic, tp.partition)
            readers = [
                self.appliers[n] for n in names if topic in self.appliers[n].projection.topics
            ]
            if readers:
                self._consumer.seek(tp, min(a.position(mark) for a in readers))

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight ends first
            await self._commit()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        async with self._lock:
            try:
                await self._appliers_now()
                for applier in self.appliers.values():
                    await applier.reset()  # another worker may have written since
                self._seek(assigned, list(self.appliers))
            except TRANSIENT_ERRORS as exc:  # the loop reads the marks again
                log.warning("projections: %r on assignment", exc)
                self._reread = True
                return
            log.info("projections %s: assigned %d partitions", list(self.appliers), len(assigned))

    async def _commit(self) -> None:
        if self._consumer is None:
            return
        with contextlib.suppress(Exception):  # informational only: the marks are the truth
            await self._consumer.commit()
        self._committed_at = time.monotonic()

    async def _note_undecodable(self, undecodable: Sequence[tuple[str, int, int]]) -> None:
        """Records none of the projections could decode (the processor's join dead-letters
        them): noted for each projection reading their topic, so a consistency token
        covering one is answered with that, not with data that lacks it."""
        for topic, partition, offset in undecodable:
            for name, applier in self.appliers.items():
                if topic in applier.projection.topics:
                    await self.versions.record_dead_letter(
                        name, topic, partition, offset, "undecodable"
                    )

    async def _apply(
        self, records: Mapping[TopicPartition, Sequence[ConsumerRecord[Any, Any]]]
    ) -> None:
        poll = decoded(records, self._settings, self._wanted)
        self._polled = records
        try:
            await self._note_undecodable(poll.undecodable)
            for applier in self.appliers.values():
                done = await applier.apply(poll.events, poll.highest)
                self.applied += done.events
        finally:
            self._polled = {}

    async def _resync(self) -> None:
        """After a failed batch: forget what is held, read every partition again from
        the marks."""
        assert self._consumer is not None
        for applier in self.appliers.values():
            await applier.reset()
        self._seek(list(self._consumer.assignment()), list(self.appliers))

    @staticmethod
    async def _start(consumer: AIOKafkaConsumer) -> None:
        """Connect, for as long as the broker takes to come back (it may be restarting)."""
        failures = 0
        while True:
            try:
                await consumer.start()
                return
            except KafkaError as exc:
                wait = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
                failures += 1
                log.warning("projections: Kafka unavailable (%r); again in %.1f s", exc, wait)
                await asyncio.sleep(wait)

    async def run(self) -> None:
        if not self._projections:
            return
        consumer = self._consumer = group_consumer(self._settings)
        await self._start(consumer)
        failures = 0
        try:
            consumer.subscribe([self._settings.topic(t) for t in self.topics], listener=self)
            while True:
                records = await consumer.getmany(
                    timeout_ms=max(self._settings.batch_max_wait_ms, 100),
                    max_records=self._settings.batch_max_records,
                )
                async with self._lock:
                    try:
                        # after a failed batch, or when a rebuild switched a projection to a
                        # new version: read again from the marks (this poll's records too)
                        if self._reread or await self._appliers_now():
                            await self._resync()
                            self._reread = False
                            continue
                        if records:
                            await self._apply(records)
                        failures = 0
                    except VersionRetired as exc:  # a rebuild switched: follow it now
                        log.info("projections: %s; following the switch", exc)
                        self._versions_read_at = float("-inf")
                        self._reread = True
                        continue
                    except (*TRANSIENT_ERRORS, KafkaError) as exc:
                        wait = RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S) - 1)]
                        failures += 1
                        log.warning(
                            "projections: %r; reading again from the marks in %.1f s", exc, wait
                        )
                        await asyncio.sleep(wait)
                        self._reread = True
                        continue
                if time.monotonic() - self._committed_at > COMMIT_INTERVAL_S:
                    await self._commit()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self._sink.close()


async def run(settings: Settings) -> None:
    """The registered projections (``projections.registry``), live, until cancelled."""
    from projections.read_models import Stores
    from projections.registry import enabled

    projections = enabled(settings)
    if not projections:
        log.info("projections: none enabled")
        return
    log.info("projections: %s", ", ".join(projections))
    stores = Stores(settings)
    try:
        worker = ProjectionWorker(settings, projections, stores.redis, stores.db)
        if os.environ.get(PARENT_ENV) is not None and not await released():
            return  # the processor stopped before it was ready
        await worker.run()
    finally:
        await stores.close()


async def released() -> bool:
    """Wait for the processor that started this worker to say go (one line on stdin),
    once it has created the topics; False when it closed the pipe without saying it.

    The processor starts this worker first thing, so that loading the projections and
    their libraries (about 0.7 s of one core) overlaps the processor's own start
    instead of its first batches."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        return await reader.readline() == GO
    finally:
        transport.close()


def die_with_parent() -> None:
    """The kernel sends this process SIGKILL when the processor that started it dies,
    however it dies (``kill -9`` included), so no orphan keeps folding. Set here, in the
    child's own startup: a ``preexec_fn`` is not safe in a process with threads."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return  # run on its own
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):  # the processor died before prctl took effect
        os._exit(1)
    os.nice(PROJECTIONS_NICENESS)


def main() -> None:
    die_with_parent()
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )
    loop = new_event_loop()
    task = loop.create_task(run(Settings()))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        loop.run_until_complete(task)
    loop.close()


if __name__ == "__main__":
    main()
