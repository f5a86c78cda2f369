"""Operating the dead-letter topics: list what is in ``<topic>.dlq``, re-drive it.

Re-driving publishes a dead letter back to its original topic (same key, same
value bytes, the original headers plus ``dlq-redriven-from``), so the live
processor takes it again, e.g. once a newer schema or a fix is deployed.

Progress is kept where Kafka keeps consumer progress: as the committed offsets
of a dedicated consumer group (``<topic_prefix>eventfold-dlq-redrive``) on the
dlq topics, committed only after Kafka acknowledged the re-published records
(acks=all, idempotent producer). A second run therefore re-drives only dead
letters that arrived since. A record left behind on purpose (``--decodable-only``,
an offset selection) lies below the committed offset, so the offsets of such
records are kept in the commit's metadata (``v1;pending=3,7-9``), and a later
run re-drives them; ``list`` reads the same commit for its "re-driven" flag.

At-least-once, as everything on Kafka: a crash (or a failed commit) after a
re-published record was acknowledged re-drives it once more on the next run,
and two runs at the same time are not fenced from each other. The read models
apply each event_id once, so such a copy changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Collection, Iterable, Sequence
from contextlib import aclosing
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, KafkaTimeoutError
from rich.table import Table

from eventfold.settings import Settings
from schemas.catalog import DEAD_LETTER_SOURCES, DLQ_SUFFIX, INTERNAL_TOPICS, dlq_topic
from schemas.codec import CodecError, decode, decode_record
from schemas.events import event_to_json

REDRIVE_GROUP = "eventfold-dlq-redrive"
REDRIVEN_FROM_HEADER = "dlq-redriven-from"
PROJECTION_HEADER = "dlq-projection"
"""The projection whose fold failed (``dead_letters.dead_letter_headers``); absent when
the processor's join dead-lettered the record."""
DLQ_HEADER_PREFIX = "dlq-"  # headers the dead-letter sink adds; not carried back
PREVIEW_BYTES = 32
# Brokers refuse commit metadata above offset.metadata.max.bytes (default 4096).
MAX_METADATA_CHARS = 3000
_METADATA_VERSION = "v1"
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")

KAFKA_ERRORS: tuple[type[BaseException], ...] = (KafkaError, OSError, TimeoutError)


def redrive_group(settings: Settings) -> str:
    """The consumer group whose committed offsets record the re-drive's progress."""
    return f"{settings.topic_prefix}{REDRIVE_GROUP}"


def source_topic(name: str) -> str:
    """The logical source topic of ``orders`` or ``orders.dlq``; ValueError otherwise."""
    base = name.removesuffix(DLQ_SUFFIX)
    if base not in DEAD_LETTER_SOURCES:
        raise ValueError(
            f"unknown topic {name!r}; known: {', '.join(DEAD_LETTER_SOURCES)} "
            f"(or their {DLQ_SUFFIX} topics)"
        )
    return base


# --- progress: the committed offset and its metadata --------------------------------------


@dataclass(frozen=True)
class RedriveProgress:
    """How far the re-drive got on one dlq partition.

    Every record below ``watermark`` was handled, and re-driven unless its offset
    is in ``pending`` (sorted, disjoint, half-open ``(start, end)`` ranges, all
    below the watermark): those were left behind on purpose and a later run
    re-drives them.
    """

    watermark: int = 0
    pending: tuple[tuple[int, int], ...] = ()

    def is_redriven(self, offset: int) -> bool:
        return offset < self.watermark and not any(s <= offset < e for s, e in self.pending)

    @property
    def first_needed(self) -> int:
        """The lowest offset a run has to look at."""
        return self.pending[0][0] if self.pending else self.watermark

    def pending_count(self) -> int:
        return sum(e - s for s, e in self.pending)

    def advance(self, offset: int, redriven: bool) -> RedriveProgress:
        """The state once the record at ``offset`` was handled: re-driven or left pending."""
        if offset >= self.watermark:
            pending = list(self.pending)
            if not redriven:
                if pending and pending[-1][1] == self.watermark:  # only a gap in between
                    pending[-1] = (pending[-1][0], offset + 1)
                else:
                    pending.append((offset, offset + 1))
            return RedriveProgress(offset + 1, tuple(pending))
        if not redriven:
            return self
        pending = []
        for s, e in self.pending:
            if s <= offset < e:
                pending += [r for r in ((s, offset), (offset + 1, e)) if r[0] < r[1]]
            else:
                pending.append((s, e))
        return RedriveProgress(self.watermark, tuple(pending))

    def metadata(self) -> str:
        ranges = ",".join(str(s) if e == s + 1 else f"{s}-{e - 1}" for s, e in self.pending)
        return f"{_METADATA_VERSION};pending={ranges}" if ranges else _METADATA_VERSION

    def fits(self) -> bool:
        """Whether the broker takes this as commit metadata."""
        return len(self.metadata()) <= MAX_METADATA_CHARS

    @classmethod
    def from_commit(cls, offset: int | None, metadata: str | None) -> RedriveProgress:
        """Inverse of (``watermark``, :meth:`metadata`); no commit (None or -1) is a fresh start.

        Empty metadata (an offset set by Kafka's own tools) means nothing pending.
        """
        if offset is None or offset < 0:
            return cls()
        text = metadata or ""
        if text in ("", _METADATA_VERSION):
            return cls(offset)
        prefix = f"{_METADATA_VERSION};pending="
        if not text.startswith(prefix):
            raise ValueError(f"unrecognised re-drive progress metadata {text!r}")
        pending: list[tuple[int, int]] = []
        for part in text[len(prefix) :].split(","):
            match = _RANGE.fullmatch(part)
            if match is None:
                raise ValueError(f"bad range {part!r} in re-drive progress metadata {text!r}")
            start = int(match.group(1))
            end = int(match.group(2) or start) + 1
            if end <= start or end > offset or (pending and start < pending[-1][1]):
                raise ValueError(f"inconsistent re-drive progress {text!r} at offset {offset}")
            pending.append((start, end))
        return cls(offset, tuple(pending))


# --- what a dead letter says about itself -----------------------------------------------


def header_text(headers: Iterable[tuple[str, bytes]], name: str) -> str | None:
    """The last value of a header, as text (undecodable bytes escaped)."""
    value = None
    for k, v in headers:
        if k == name:
            value = bytes(v).decode("utf-8", errors="backslashreplace")
    return value


def _header_int(headers: Iterable[tuple[str, bytes]], name: str) -> int | None:
    text = header_text(headers, name)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def dead_letter_ref(dlq: str, partition: int, offset: int) -> str:
    """``orders.dlq:3:17``: how ``dlq-redriven-from`` names a dead letter."""
    return f"{dlq}:{partition}:{offset}"


def redrive_headers(headers: Iterable[tuple[str, bytes]], ref: str) -> list[tuple[str, bytes]]:
    """The original record's headers (the sink's ``dlq-*`` ones dropped) plus where it
    was re-driven from."""
    kept = [(k, bytes(v)) for k, v in headers if not k.startswith(DLQ_HEADER_PREFIX)]
    return [*kept, (REDRIVEN_FROM_HEADER, ref.encode())]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # Decimal, UUID and any other logical type's value


@dataclass(frozen=True)
class Content:
    """A value as the processor sees it (``decodable``) and as a person can read it."""

    decodable: bool
    envelope: dict[str, Any] | None  # the event; or the raw Avro record the models refuse
    decode_error: str | None
    preview_hex: str | None  # the first bytes, when it is not Avro of a known schema at all


def describe_value(value: bytes | None, topic: str | None = None) -> Content:
    """``topic``: the logical source topic; the join's internal topics carry JSON."""
    payload = value or b""
    if topic in INTERNAL_TOPICS:
        try:
            message = json.loads(payload)
        except ValueError as exc:
            return Content(False, None, f"not JSON: {exc}", payload[:PREVIEW_BYTES].hex(" "))
        return Content(
            isinstance(message, dict),
            message if isinstance(message, dict) else None,
            None if isinstance(message, dict) else "not a JSON object",
            None,
        )
    try:
        return Content(True, event_to_json(decode(payload)), None, None)
    except CodecError as exc:
        error = str(exc)
    try:
        writer, record = decode_record(payload)
    except CodecError:
        return Content(False, None, error, payload[:PREVIEW_BYTES].hex(" "))
    return Content(False, {"type": writer.type_name, **_jsonable(record)}, error, None)


@dataclass(frozen=True)
class DeadLetterView:
    dlq_topic: str  # logical, e.g. ``orders.dlq``
    dlq_partition: int
    dlq_offset: int
    timestamp_ms: int | None
    original_topic: str | None
    original_partition: int | None
    original_offset: int | None
    reason: str | None
    error_type: str | None
    error: str | None
    event_type: str | None
    event_id: str | None
    correlation_id: str | None
    key: str | None
    value_bytes: int
    decodable: bool
    envelope: dict[str, Any] | None
    decode_error: str | None
    preview_hex: str | None
    redriven: bool
    redriven_from: str | None  # this dead letter came from an earlier re-drive
    projection: str | None = None  # the projection it failed in; None: the processor's join

    @property
    def ref(self) -> str:
        return dead_letter_ref(self.dlq_topic, self.dlq_partition, self.dlq_offset)

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, **asdict(self)}


def dead_letter_view(
    dlq: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    *,
    timestamp_ms: int | None = None,
    redriven: bool = False,
) -> DeadLetterView:
    """What a dead letter's headers and bytes say (``dlq`` is the logical dlq topic)."""
    content = describe_value(value, source_topic(dlq))
    h = headers
    return DeadLetterView(
        dlq_topic=dlq,
        dlq_partition=partition,
        dlq_offset=offset,
        timestamp_ms=timestamp_ms,
        original_topic=header_text(h, "dlq-original-topic"),
        original_partition=_header_int(h, "dlq-original-partition"),
        original_offset=_header_int(h, "dlq-original-offset"),
        reason=header_text(h, "dlq-reason"),
        error_type=header_text(h, "dlq-error-type"),
        error=header_text(h, "dlq-error"),
        event_type=header_text(h, "event-type"),
        event_id=header_text(h, "event-id"),
        correlation_id=header_text(h, "correlation-id"),
        key=None if key is None else key.decode("utf-8", errors="backslashreplace"),
        value_bytes=len(value or b""),
        decodable=content.decodable,
        envelope=content.envelope,
        decode_error=content.decode_error,
        preview_hex=content.preview_hex,
        redriven=redriven,
        redriven_from=header_text(h, REDRIVEN_FROM_HEADER),
        projection=header_text(h, PROJECTION_HEADER),
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def render_table(views: Sequence[DeadLetterView]) -> Table:
    table = Table(
        title=f"dead letters: {len(views)} ({sum(not v.redriven for v in views)} not re-driven)"
    )
    for column in (
        "dead letter",
        "from",
        "reason",
        "failed in",
        "error",
        "event",
        "key",
        "content",
        "re-driven",
    ):
        table.add_column(column)
    for v in views:
        origin = (
            f"{v.original_topic or '?'}:{_or_unknown(v.original_partition)}"
            f"@{_or_unknown(v.original_offset)}"
        )
        # The header is the formatted exception ("KeyError: 'customer'"): its last line.
        error = ((v.error or "").strip().splitlines() or [v.error_type or ""])[-1]
        if v.envelope is not None:
            content = json.dumps(v.envelope.get("data", v.envelope), separators=(",", ":"))
            content = ("" if v.decodable else "[not decodable] ") + content
        else:
            content = f"{v.value_bytes} bytes: {v.preview_hex or ''}"
        table.add_row(
            f"{v.dlq_topic}:{v.dlq_partition}@{v.dlq_offset}",
            origin,
            v.reason or "-",
            v.projection or "join",
            _clip(error, 80) or "-",
            " ".join(x for x in (v.event_type, v.event_id) if x) or "-",
            v.key if v.key is not None else "-",
            _clip(content, 100),
            "yes" if v.redriven else "no",
        )
    return table


# --- reading the dlq topics --------------------------------------------------------------


async def _partitions(admin: AIOKafkaAdminClient, physical: Sequence[str]) -> list[TopicPartition]:
    """Partitions of the topics that exist, in the given topic order."""
    described = {d["topic"]: d for d in await admin.describe_topics(list(physical))}
    return [
        TopicPartition(name, p["partition"])
        for name in physical
        if (d := described.get(name)) is not None and d["error_code"] == 0
        for p in sorted(d["partitions"], key=lambda p: p["partition"])
    ]


async def _progress(
    admin: AIOKafkaAdminClient, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, RedriveProgress]:
    committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    result = {}
    for tp in tps:
        c = committed.get(tp)
        result[tp] = RedriveProgress.from_commit(*((c.offset, c.metadata) if c else (None, None)))
    return result


Batches = AsyncGenerator[list[ConsumerRecord[bytes, bytes]], None]


async def _read_partition(
    consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int, stall_s: float
) -> Batches:
    """The records of ``tp`` in [start, end), in batches; the partition stays assigned
    while the caller handles a batch (so it can commit)."""
    if start >= end:
        return
    consumer.assign([tp])
    consumer.seek(tp, start)
    last_progress = time.monotonic()
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=500, max_records=500)
        records = [r for r in batch.get(tp, []) if r.offset < end]
        if records:
            last_progress = time.monotonic()
            yield records
        elif time.monotonic() - last_progress > stall_s:
            raise KafkaTimeoutError(
                f"no records from {tp.topic}:{tp.partition} at offset "
                f"{await consumer.position(tp)} within {stall_s:.0f}s"
            )


@dataclass
class _Session:
    admin: AIOKafkaAdminClient
    consumer: AIOKafkaConsumer
    tps: list[TopicPartition]
    progress: dict[TopicPartition, RedriveProgress]
    begins: dict[TopicPartition, int]
    ends: dict[TopicPartition, int]


async def _open(settings: Settings, topics: Sequence[str], group_id: str | None) -> _Session:
    admin = AIOKafkaAdminClient(
        **settings.kafka_client(),
        request_timeout_ms=int(settings.kafka_timeout_s * 1000),
    )
    consumer = AIOKafkaConsumer(
        **settings.kafka_client(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="eventfold-dlq-admin",
    )
    try:
        await admin.start()
        await consumer.start()
        tps = await _partitions(admin, [settings.topic(dlq_topic(t)) for t in topics])
        progress = await _progress(admin, redrive_group(settings), tps) if tps else {}
        begins = await consumer.beginning_offsets(tps) if tps else {}
        ends = await consumer.end_offsets(tps) if tps else {}
    except BaseException:
        await _close(admin, consumer)
        raise
    return _Session(admin, consumer, tps, progress, begins, ends)


async def _close(admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer) -> None:
    for stop in (consumer.stop, admin.close):
        try:
            await stop()
        except Exception:  # closing after a failure: the failure is what matters
            pass


async def list_dead_letters(
    settings: Settings,
    topics: Sequence[str] = DEAD_LETTER_SOURCES,
    limit: int | None = None,
    projection: str | None = None,
) -> list[DeadLetterView]:
    """Every dead letter of the given source topics' dlq topics (up to their current end),
    by topic, partition and offset; the first ``limit`` of them when given. ``projection``:
    only those that failed in that projection (the ``dlq-projection`` header)."""
    topics = [source_topic(t) for t in topics]
    s = await _open(settings, topics, group_id=None)
    views: list[DeadLetterView] = []
    try:
        for tp in s.tps:
            if limit is not None and len(views) >= limit:
                break
            logical = settings.logical_topic(tp.topic)
            progress = s.progress[tp]
            reader = _read_partition(
                s.consumer, tp, s.begins[tp], s.ends[tp], settings.kafka_timeout_s
            )
            async with aclosing(reader) as batches:
                async for records in batches:
                    views += [
                        dead_letter_view(
                            logical,
                            r.partition,
                            r.offset,
                            r.key,
                            r.value,
                            list(r.headers),
                            timestamp_ms=r.timestamp,
                            redriven=progress.is_redriven(r.offset),
                        )
                        for r in records
                        if projection is None
                        or header_text(list(r.headers), PROJECTION_HEADER) == projection
                    ]
                    if limit is not None and len(views) >= limit:
                        break
    finally:
        await _close(s.admin, s.consumer)
    return views if limit is None else views[:limit]


# --- re-driving ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RedrivenLetter:
    ref: str  # where it was in the dlq
    topic: str  # the original topic it went back to
    key: str | None
    event_type: str | None
    decodable: bool
    partition: int | None = None  # where it landed (None in a dry run)
    offset: int | None = None


@dataclass(frozen=True)
class SkippedLetter:
    ref: str
    why: str


@dataclass
class RedriveResult:
    dry_run: bool = False
    decodable_only: bool = False
    redriven: list[RedrivenLetter] = field(default_factory=list)
    skipped: list[SkippedLetter] = field(default_factory=list)  # left pending for a later run
    already_redriven: int = 0  # dead letters an earlier run re-drove, not sent again
    not_found: list[str] = field(default_factory=list)  # selected offsets that do not exist
    error: str | None = None  # Kafka failed; what is listed above was done (and committed)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def undecodable(self) -> list[RedrivenLetter]:
        return [r for r in self.redriven if not r.decodable]

    def render(self) -> str:
        verb = "would re-drive" if self.dry_run else "re-drove"
        per_topic: dict[str, int] = {}
        for r in self.redriven:
            per_topic[r.topic] = per_topic.get(r.topic, 0) + 1
        lines = [
            f"{'dry run: ' if self.dry_run else ''}{verb} {len(self.redriven)} dead "
            f"letter(s)"
            + (
                " (" + ", ".join(f"{t}: {n}" for t, n in per_topic.items()) + ")"
                if per_topic
                else ""
            )
        ]
        if self.undecodable:
            lines.append(
                f"{len(self.undecodable)} of them cannot be decoded with the schemas this "
                "command knows; the processor will dead-letter them again unless it runs a "
                "fix (a newer schema) by now: " + ", ".join(r.ref for r in self.undecodable)
            )
        if self.skipped:
            lines.append(
                f"left in the DLQ for a later re-drive: {len(self.skipped)} ("
                + "; ".join(f"{s.ref}: {s.why}" for s in self.skipped[:20])
                + ("; …" if len(self.skipped) > 20 else "")
                + ")"
            )
        if self.already_redriven:
            lines.append(
                f"{self.already_redriven} dead letter(s) re-driven by earlier runs "
                "were not sent again"
            )
        if self.not_found:
            lines.append(f"not found: {', '.join(self.not_found)}")
        if self.error:
            lines.append(
                f"Kafka failed: {self.error}; what was re-driven before is recorded, "
                "run again to continue"
            )
        return "\n".join(lines)


async def redrive(
    settings: Settings,
    topic: str | None = None,
    only_offsets: Collection[tuple[int, int]] | None = None,
    dry_run: bool = False,
    decodable_only: bool = False,
) -> RedriveResult:
    """Re-publish the dead letters not yet re-driven to their original topics.

    ``topic`` is a source topic (``orders``) or its dlq (``orders.dlq``), all when None.
    ``only_offsets`` selects ``(partition, offset)`` pairs of that topic's dlq (needs
    ``topic``). ``decodable_only`` leaves the records this command cannot decode in the
    DLQ (pending, so a later run re-drives them). ``dry_run`` publishes and commits nothing.

    Never raises for Kafka failures: they end the run with ``error`` set, and the
    result lists what was re-driven (and committed) before.
    """
    if only_offsets is not None and topic is None:
        raise ValueError("only_offsets needs a topic")
    topics = [source_topic(topic)] if topic is not None else list(DEAD_LETTER_SOURCES)
    result = RedriveResult(dry_run=dry_run, decodable_only=decodable_only)
    group = None if dry_run else redrive_group(settings)
    try:
        s = await _open(settings, topics, group_id=group)
    except KAFKA_ERRORS as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    producer = None
    try:
        if not dry_run:
            producer = AIOKafkaProducer(
                **settings.kafka_client(),
                acks="all",
                enable_idempotence=True,
                client_id="eventfold-dlq-redrive",
                request_timeout_ms=int(settings.kafka_timeout_s * 1000),
            )
            await producer.start()
        partition_counts: dict[str, int] = {}
        for tp in s.tps:
            selection = None
            if only_offsets is not None:
                selection = {o for p, o in only_offsets if p == tp.partition}
                if not selection:
                    continue
            await _redrive_partition(
                settings, s, tp, producer, selection, decodable_only, partition_counts, result
            )
    except KAFKA_ERRORS as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if producer is not None:
            try:
                await producer.stop()
            except Exception:  # the failure that got us here is what matters
                pass
        await _close(s.admin, s.consumer)
    return result


@dataclass
class _Partition:
    """One dlq partition being re-driven."""

    tp: TopicPartition
    dlq: str  # logical dlq topic
    target: str  # physical original topic
    target_partitions: int
    selection: set[int] | None
    state: RedriveProgress


async def _redrive_partition(
    settings: Settings,
    s: _Session,
    tp: TopicPartition,
    producer: AIOKafkaProducer | None,
    selection: set[int] | None,
    decodable_only: bool,
    partition_counts: dict[str, int],
    result: RedriveResult,
) -> None:
    dlq = settings.logical_topic(tp.topic)
    target = settings.topic(source_topic(dlq))
    state = s.progress[tp]
    begin, end = s.begins[tp], s.ends[tp]
    if selection is not None:
        result.not_found += [
            dead_letter_ref(dlq, tp.partition, o) for o in sorted(selection) if not begin <= o < end
        ]
        selection = {o for o in selection if begin <= o < end}
        result.already_redriven += sum(state.is_redriven(o) for o in selection)
        selection = {o for o in selection if not state.is_redriven(o)}
        if not selection:
            return
        end = max(selection) + 1
    else:
        result.already_redriven += max(0, min(state.watermark, end) - begin) - sum(
            max(0, min(e, end) - max(st, begin)) for st, e in state.pending
        )
    if target not in partition_counts and producer is not None:
        partition_counts[target] = len(await producer.partitions_for(target))
    part = _Partition(tp, dlq, target, partition_counts.get(target, 0), selection, state)
    reader = _read_partition(
        s.consumer, tp, max(begin, state.first_needed), end, settings.kafka_timeout_s
    )
    async with aclosing(reader) as batches:
        async for records in batches:
            if not await _redrive_batch(
                s.consumer, producer, part, records, decodable_only, result
            ):
                return


def _why_not(
    record: ConsumerRecord[bytes, bytes], content: Content, part: _Partition, decodable_only: bool
) -> str | None:
    """Why a record not yet re-driven stays in the DLQ this time; None to re-drive it."""
    if part.selection is not None and record.offset not in part.selection:
        return "not selected"
    if record.value is None:
        return "no value (a tombstone would delete the key on a compacted topic)"
    if decodable_only and not content.decodable:
        return f"not decodable (--decodable-only): {content.decode_error}"
    return None


async def _redrive_batch(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer | None,
    part: _Partition,
    records: list[ConsumerRecord[bytes, bytes]],
    decodable_only: bool,
    result: RedriveResult,
) -> bool:
    """Re-drive one batch and commit what Kafka acknowledged (progress in ``part.state``).

    False when this partition stops here. Raises the first failed send, after committing
    what was acknowledged before it."""
    planned = part.state
    sends: dict[int, tuple[RedrivenLetter, asyncio.Future[Any] | None]] = {}
    skips: list[int] = []
    go_on = True
    for r in records:
        if planned.is_redriven(r.offset):
            continue
        ref = dead_letter_ref(part.dlq, part.tp.partition, r.offset)
        headers = list(r.headers)
        content = describe_value(r.value, source_topic(part.dlq))
        why = _why_not(r, content, part, decodable_only)
        candidate = planned.advance(r.offset, redriven=why is None)
        if not candidate.fits():
            result.skipped.append(
                SkippedLetter(
                    ref,
                    "stopped here: too many records left behind in this partition to "
                    "record; re-drive without --decodable-only or an offset selection",
                )
            )
            go_on = False
            break
        planned = candidate
        if why is not None:
            if part.selection is None:
                result.skipped.append(SkippedLetter(ref, why))
            skips.append(r.offset)
            continue
        letter = RedrivenLetter(
            ref,
            source_topic(part.dlq),
            None if r.key is None else r.key.decode("utf-8", "replace"),
            header_text(headers, "event-type"),
            content.decodable,
        )
        future = None
        if producer is not None:
            original = _header_int(headers, "dlq-original-partition")
            partition = (
                original
                if original is not None and 0 <= original < part.target_partitions
                else None
            )
            future = await producer.send(
                part.target,
                value=r.value,
                key=r.key,
                partition=partition,
                headers=redrive_headers(headers, ref),
            )
        sends[r.offset] = (letter, future)
    # Apply, in offset order, what Kafka acknowledged; stop at the first failure.
    acked = part.state
    failure: BaseException | None = None
    for offset in sorted([*sends, *skips]):
        if offset in sends:
            letter, future = sends[offset]
            if future is not None:
                try:
                    meta = await future
                except KAFKA_ERRORS as exc:
                    failure = exc
                    break
                letter = RedrivenLetter(
                    letter.ref,
                    letter.topic,
                    letter.key,
                    letter.event_type,
                    letter.decodable,
                    meta.partition,
                    meta.offset,
                )
            result.redriven.append(letter)
        acked = acked.advance(offset, redriven=offset in sends)
    if producer is not None and acked != part.state:
        await consumer.commit({part.tp: (acked.watermark, acked.metadata())})
    part.state = acked
    if failure is not None:
        raise failure
    return go_on
