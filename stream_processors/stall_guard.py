"""Makes sure every fetched record reaches an agent, re-reading where Faust dropped some.

Seen with faust-streaming 0.15.3 here: when a rebalance interrupts the delivery
of a fetched batch, the consumer can record those messages as read although no
agent got them, or stop iterating the batch after it already sought back to the
committed offsets; and a partition can drop out of the set it fetches from.
Then records nobody processed are left behind: a partition stalls with lag that
never drains, or later records of it are processed with a hole before them (an
OrderDelivered without its OrderPlaced). The e2e test with two workers losing
one reproduced each of these, together about one run in four.

The guard keeps, per partition, the contiguous watermark of what this worker's
agents processed (every offset below it was seen). A record beyond the
watermark reveals a hole: before that record is handled, the guard reads the
hole with a consumer of its own and hands its records to the agent (a seek
would not do: Faust drops re-fetched records below the offsets it already
delivered). While the worker is idle it also compares each partition's end
offset with the watermark, for holes at the end of a partition and partitions
no longer fetched; those it resumes and seeks back (nothing is in flight then).
Processing is idempotent, so re-reading is always safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventfold.settings import Settings
from stream_processors.records import Record

log = logging.getLogger(__name__)


READ_TIMEOUT_S = 30.0


class StallGuard:
    """Call ``seen()`` before each record is handled, ``done()`` after it, and
    ``check()`` every few seconds."""

    def __init__(self, app: Any, settings: Settings, idle_s: float = 5.0) -> None:
        self._app = app
        self._settings = settings
        self._reader: AIOKafkaConsumer | None = None
        self._reader_lock = asyncio.Lock()
        self.filled = 0
        self._in_flight = 0
        self._idle_s = idle_s
        self._last_activity = time.monotonic()
        self._watermark: dict[Any, int] = {}  # tp -> every offset below was processed
        self._suspects: dict[Any, int] = {}
        self.rereads = 0

    def reset(self) -> None:
        """After a rebalance: the committed offsets are the baseline again."""
        self._watermark.clear()
        self._suspects.clear()

    def _mark(self, tp: Any) -> int:
        """The watermark, or after a reset the committed offset (Faust keeps None for a
        committed 0; every partition has a commit, see
        ``eventfold.topics.start_group_at_beginning``)."""
        mark = self._watermark.get(tp)
        if mark is not None:
            return mark
        committed = self._app.consumer._committed_offset.get(tp)
        return 0 if committed is None else int(committed)

    async def seen(
        self, tp: Any, offset: int, handle: Callable[[Record], Awaitable[object]]
    ) -> None:
        """Call before handling the record at ``offset``: hands any hole before it to
        ``handle`` first. The worker counts as busy until ``done()``."""
        self._in_flight += 1
        self._last_activity = time.monotonic()
        mark = self._mark(tp)
        if offset > mark:
            log.warning(
                "%s:%s: records from offset %s to %s were not delivered; reading them directly",
                tp.topic,
                tp.partition,
                mark,
                offset - 1,
            )
            try:
                hole = await asyncio.wait_for(self._read(tp, mark, offset), READ_TIMEOUT_S)
            except Exception as exc:  # Kafka unreachable: the next record or check retries
                log.warning("could not read %s:%s from %s: %r", tp.topic, tp.partition, mark, exc)
                self._watermark[tp] = mark
                return
            for record in hole:
                await handle(record)
                self.filled += 1
        self._watermark[tp] = max(mark, offset + 1)

    def done(self) -> None:
        """Call after handling a record (also when handling failed)."""
        self._in_flight = max(0, self._in_flight - 1)
        self._last_activity = time.monotonic()

    async def _read(self, tp: Any, start: int, end: int) -> list[Record]:
        """The records of ``tp`` in ``[start, end)`` (fewer where compaction removed some)."""
        async with self._reader_lock:
            if self._reader is None:
                self._reader = AIOKafkaConsumer(
                    **self._settings.kafka_client(),
                    group_id=None,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                )
                await self._reader.start()
            reader = self._reader
            part = TopicPartition(tp.topic, tp.partition)
            reader.assign([part])
            reader.seek(part, start)
            found: list[Record] = []
            while await reader.position(part) < end:
                batch = await reader.getmany(part, timeout_ms=1000)
                for r in batch.get(part, []):
                    if r.offset < end:
                        found.append(
                            Record(
                                topic=self._settings.logical_topic(tp.topic),
                                partition=tp.partition,
                                offset=r.offset,
                                key=r.key,
                                value=r.value,
                                headers=list(r.headers or []),
                            )
                        )
            return found

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.stop()
            self._reader = None

    async def _reread(self, tp: Any, offset: int, why: str) -> None:
        log.warning(
            "%s:%s: records from offset %s were not delivered (%s); re-reading",
            tp.topic,
            tp.partition,
            offset,
            why,
        )
        try:
            await self._app.consumer.seek(tp, offset)
            self.rereads += 1
        except Exception as exc:
            log.warning("could not seek %s: %r", tp, exc)

    def _quiet(self) -> bool:
        app = self._app
        return (
            self._in_flight == 0
            and time.monotonic() - self._last_activity >= self._idle_s
            and not app.in_recovery
            and not app.rebalancing
            and app.flow_control.is_active()
        )

    async def check(self) -> None:
        """While idle: a partition whose end is past the watermark, unchanged over two
        checks, is stalled (its records were dropped, or it is no longer fetched).

        Never raises: it runs in a Faust timer, where an exception stops the worker
        (a Kafka restart makes the end offsets unavailable for a while)."""
        try:
            await self._check()
        except Exception as exc:
            self._suspects = {}
            log.warning("stall check skipped: %r", exc)

    async def _check(self) -> None:
        if not self._quiet():
            self._suspects = {}
            return
        consumer = self._app.consumer
        changelogs = self._app.tables.changelog_topics
        tps = [
            tp
            for tp in consumer.assignment()
            if tp.topic not in changelogs and "__assignor" not in tp.topic
        ]
        if not tps:
            return
        ends = await consumer.highwaters(*tps)
        suspects: dict[Any, int] = {}
        for tp in tps:
            mark = self._mark(tp)
            end = ends.get(tp)
            if end is not None and mark < end:
                suspects[tp] = mark
        stalled = {tp: m for tp, m in suspects.items() if self._suspects.get(tp) == m}
        self._suspects = {tp: m for tp, m in suspects.items() if tp not in stalled}
        if stalled and self._quiet():
            consumer.resume_partitions(set(stalled))
            for tp, mark in stalled.items():
                await self._reread(tp, mark, "its end is past it while the worker is idle")
