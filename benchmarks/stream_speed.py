"""Issue 10's benchmark, "Read side at stream speed": every path of the read side side by
side in one run, on the same stack and the same data, written to
``bench/results/latest.json`` (flat dotted keys under ``figures``).

Phases, in order (each has a scale knob and a time limit, see ``Knobs``; a phase that
runs out of time reports what it reached and says so, it never hangs):

1. ``backlog``: demo-shaped traffic (``benchmarks.traffic``: about 3.7 events per
   order, 20 orders per customer) published to fresh topics before anything reads it.
2. ``bare``: an aiokafka consumer reading the backlog and decoding every value with
   fastavro (``schemas.codec.decode_record``: header, writer schema by fingerprint,
   ``schemaless_reader``), no model validation.
3. ``naive_event``: the sink a user would write first: per event ``find_one`` of the
   order (or customer) document, fold the event in, ``replace_one(upsert=True)``.
4. ``naive_batch``: per poll (``max_records`` 500, Kafka's default ``max.poll.records``)
   one ``find`` of the poll's keys per collection, fold in memory, ``bulk_write`` of
   ``ReplaceOne`` upserts in chunks of ``BULK_CHUNK``.
5. ``catchup``: the live processor (a real ``faust worker``) started on the backlog;
   timed from its "Ready" to every source and internal partition applied (the applied
   marks of every projection cover the end offsets).
6. ``replay``: ``projections.replay.rebuild`` of the same topics, after the catch-up.
7. ``freshness``: publish at a sustained offered rate while the processor runs; per
   event, publish -> its position covered by the applied marks of every projection.
8. ``query``: ``GET /v1/orders/{id}`` with wrk at 4 and 32 connections against the
   query API under uvicorn, alternating with a FastAPI hello-world under the same
   server settings (``benchmarks.hello_app``).
9. ``whale``: one customer's chunk of orders and payments timed when it has a few
   orders and again when it has thousands.
10. ``memory``: a fresh deployment and processor fed 200,000 orders chunk by chunk;
    the processor's VmRSS after each chunk is applied.

Phases 1 to 6, the ones read against each other, run in ``EVENTFOLD_BENCH_ROUNDS``
rounds (3), each on a fresh deployment and the same backlog, so that every pair stays
side by side in time; each figure is the median of the rounds (``merge_rounds``), and
phases 7 to 9 run on the last round's deployment.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import bson
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import ReplaceOne

from benchmarks import cpu, traffic
from benchmarks.measure import percentile
from eventfold.topics import ensure_topics, source_partitions
from producers.client import EventPublisher, Receipt
from projections import replay
from projections.read_models import PROJECTIONS, Stores
from projections.registry import enabled
from projections.verify import differences, read_source_events, reference_snapshot, stored_snapshot
from schemas.catalog import DEAD_LETTER_SOURCES, INTERNAL_TOPICS, TOPICS, dlq_topic
from schemas.codec import decode, decode_record
from schemas.events import Event
from tests.conftest import isolated_settings, settings_env
from tests.support.processes import ProcessorProcess
from tests.support.scenario import wait_projection_caught_up
from tests.support.stack import ROOT, StackPorts

T = TypeVar("T")
RESULTS_DIR = ROOT / "bench" / "results"
SEED = 20260105
PUBLISH_BATCH = 500
POLL_RECORDS = 500  # Kafka's default max.poll.records
BULK_CHUNK = 90
"""Statements per ``bulk_write`` of the naive batch sink. FerretDB 1.24 hangs forever on
one update command whose statements match 100 or more existing documents (each matched
statement holds a pooled connection until the command ends) until the stack's patch for
it lands; below 100 it works either way."""
BATCH_ENV = (
    "EVENTFOLD_BATCH_MAX_RECORDS",
    "EVENTFOLD_BATCH_MAX_WAIT_MS",
    "EVENTFOLD_PROJECTIONS_DISABLED",
)
PHASES = (
    "warmup",
    "bare",
    "naive_event",
    "naive_batch",
    "catchup",
    "replay",
    "freshness",
    "query",
    "whale",
    "verify",
    "memory",
)


def _env(name: str, default: float) -> float:
    return float(os.environ.get(f"EVENTFOLD_BENCH_{name}", default))


@dataclass(frozen=True)
class Knobs:
    """Scale and time limits, from ``EVENTFOLD_BENCH_<NAME>`` variables; defaults are the
    issue's scale."""

    events: int = int(_env("EVENTS", 20_000))  # backlog size (source events)
    warmup_events: int = int(_env("WARMUP_EVENTS", 40_000))  # the warm-up's own backlog
    sink_timeout_s: float = _env("SINK_TIMEOUT_S", 600)  # each naive sink
    start_timeout_s: float = _env("START_TIMEOUT_S", 120)  # a processor's start
    stall_s: float = _env("STALL_S", 120)  # a wait ends after this long without progress
    catchup_timeout_s: float = _env("CATCHUP_TIMEOUT_S", 1800)
    replay_timeout_s: float = _env("REPLAY_TIMEOUT_S", 1800)
    freshness_rate: float = _env("FRESHNESS_RATE", 300)  # offered events/s
    freshness_s: float = _env("FRESHNESS_S", 60)
    freshness_drain_s: float = _env("FRESHNESS_DRAIN_S", 120)  # wait after the last publish
    freshness_poll_ms: float = _env("FRESHNESS_POLL_MS", 5)
    query_s: float = _env("QUERY_S", 10)  # each wrk run
    query_rounds: int = int(_env("QUERY_ROUNDS", 2))
    query_port: int = int(_env("QUERY_PORT", 29280))
    hello_port: int = int(_env("HELLO_PORT", 29281))
    whale_orders: int = int(_env("WHALE_ORDERS", 5000))
    whale_chunk: int = int(_env("WHALE_CHUNK", 100))  # orders per timed chunk
    whale_timeout_s: float = _env("WHALE_TIMEOUT_S", 1800)
    memory_orders: int = int(_env("ORDERS_200K", 200_000))
    memory_timeout_s: float = _env("MEMORY_TIMEOUT_S", 3600)
    # the paired phases (bare to replay) run this many times, each round on a deployment and
    # backlog of its own; the figures are the rounds' medians (see ``merge_rounds``)
    rounds: int = int(_env("ROUNDS", 3))
    # py-spy samples the processor's catch-up and freshness, and the rebuild (this process), into
    # bench/results/profiles/ (a flame graph and the top functions)
    profile: bool = bool(_env("PROFILE", 0))
    phases: tuple[str, ...] = tuple(
        p.strip()
        for p in os.environ.get("EVENTFOLD_BENCH_PHASES", ",".join(PHASES)).split(",")
        if p.strip()
    )


class Results:
    """Figures (flat dotted keys), per-phase details, errors; written as JSON."""

    def __init__(self, knobs: Knobs, label: str = "") -> None:
        self.label = label  # "round 2 " for one round's figures, printed with them
        self.figures: dict[str, Any] = {}
        self.details: dict[str, dict[str, Any]] = {}
        self.errors: dict[str, str] = {}
        self.run: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_commit": _git("rev-parse", "HEAD"),
            "git_dirty": bool(_git("status", "--short")),
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "knobs": asdict(knobs),
            "processor_env": {k: os.environ[k] for k in BATCH_ENV if k in os.environ},
        }

    def put(self, phase: str, **figures: Any) -> None:
        for name, value in figures.items():
            self.figures[f"{phase}.{name}"] = _round(value)
        print(
            f"[bench] {self.label}{phase}: "
            + ", ".join(f"{k}={_round(v)}" for k, v in figures.items()),
            flush=True,
        )

    def detail(self, phase: str, **details: Any) -> None:
        self.details.setdefault(phase, {}).update({k: _round(v) for k, v in details.items()})

    def as_dict(self) -> dict[str, Any]:
        return {
            "figures": dict(sorted(self.figures.items())),
            "details": self.details,
            "errors": self.errors,
            "run": self.run,
        }

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.as_dict(), indent=2, default=str) + "\n"
        stamp = self.run["started_at"].replace(":", "").replace("+0000", "Z")
        (directory / f"run-{stamp}.json").write_text(text)
        latest = directory / "latest.json"
        latest.write_text(text)
        return latest


PAIRED = ("bare", "naive_event", "naive_batch", "catchup", "replay")
"""The phases measured against each other (the ratios): run in rounds, alternated."""


def merge_rounds(results: Results, played: Sequence[Results]) -> None:
    """The rounds' figures into ``results``: each figure the median of the rounds that
    have it (a ratio the median of the rounds' own ratios, each of one round's pair, not
    a ratio of medians), every round's values under ``details.rounds``, and the details
    of the last round as those of its phases. The figures of one configuration move by
    20 to 30 % from run to run on a shared 2-core machine, their ratios by up to 40 %:
    one round's ratio says less than the median of three alternated ones."""
    values: dict[str, list[Any]] = {}
    for one in played:
        for key, value in one.figures.items():
            values.setdefault(key, []).append(value)
    for key, found in values.items():
        numbers = [v for v in found if isinstance(v, int | float) and not isinstance(v, bool)]
        results.figures[key] = (
            _round(statistics.median(numbers)) if len(numbers) == len(found) else found[-1]
        )
    seconds = results.details.setdefault("phase_seconds", {})
    for number, one in enumerate(played, 1):
        for name, took in one.details.get("phase_seconds", {}).items():
            seconds[f"{name} {number}"] = took
    results.details.update(
        (phase, info) for phase, info in played[-1].details.items() if phase != "phase_seconds"
    )
    results.detail("rounds", count=len(played), figures=values)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, 3) if abs(value) < 100 else round(value, 1)
    return value


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


async def until(
    probe: Callable[[], Awaitable[tuple[bool, T]]], within_s: float, interval: float = 0.1
) -> tuple[bool, T]:
    """Poll ``probe`` (-> (done, value)) until done or ``within_s`` passed: (done, last value)."""
    deadline = time.monotonic() + within_s
    while True:
        done, value = await probe()
        if done or time.monotonic() > deadline:
            return done, value
        await asyncio.sleep(interval)


def children_rss_mb(pid: int) -> float:
    """VmRSS of a process's children (the processor's projection worker), in MB."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sum(rss_mb(int(c)).get("VmRSS", 0.0) for c in children)


def rss_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, in MB."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) / 1024
    return found


class CpuMeter:
    """The CPU seconds the benchmark's processes use from ``start`` to ``stop``
    (``benchmarks.cpu``), put in a phase's details and printed."""

    def __init__(self, servers: StackPorts) -> None:
        self._ports = cpu.Ports(servers.kafka_port, servers.mongo_port, servers.redis_port)
        self._before: cpu.Snapshot = {}
        self._started = 0.0

    async def start(self) -> None:
        self._before = await asyncio.to_thread(cpu.snapshot, self._ports)
        self._started = time.monotonic()

    async def stop(self, results: Results, phase: str, events: int) -> float:
        """Record what was used for ``events`` events; returns the CPU µs per event."""
        wall = time.monotonic() - self._started
        spent = cpu.used(self._before, await asyncio.to_thread(cpu.snapshot, self._ports))
        per_event = 1e6 * sum(spent.values()) / max(1, events)
        results.detail(phase, cpu_s=spent, cpu_us_per_event=round(per_event))
        print(f"[bench] {phase} {cpu.summary(spent, wall, events)}", flush=True)
        return per_event


# --- a deployment: topics, stores, applied marks ---------------------------------------------


class Deployment:
    """Isolated topics, database and Redis keys on the benchmark stack, with the helpers
    to publish into them and to tell how far the processors have applied them."""

    def __init__(self, servers: StackPorts, logs: Path) -> None:
        self.settings = isolated_settings(servers)
        self.servers = servers
        self.stores = Stores(self.settings)
        self.logs = logs
        self.publisher = EventPublisher(self.settings)
        self._ends = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers, group_id=None
        )
        self.source: list[TopicPartition] = []
        self.internal: list[TopicPartition] = []
        self.dlq: list[TopicPartition] = []
        self.processor: ProcessorProcess | None = None
        self._workers = 0

    async def start(self) -> None:
        await ensure_topics(self.settings)
        self.source = await source_partitions(self.settings, TOPICS)
        self.internal = await source_partitions(self.settings, INTERNAL_TOPICS)
        self.dlq = await source_partitions(
            self.settings, [dlq_topic(t) for t in DEAD_LETTER_SOURCES]
        )
        await self._ends.start()
        await self.publisher.start()

    async def close(self) -> None:
        self.stop_processor()
        await self.publisher.stop()
        await self._ends.stop()
        await self.stores.mongo.drop_database(self.settings.mongo_db)
        redis = self.stores.redis
        keys = [
            k async for k in redis.scan_iter(match=f"{self.settings.redis_prefix}*", count=1000)
        ]
        for i in range(0, len(keys), 1000):
            await redis.delete(*keys[i : i + 1000])
        await self.stores.close()
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.bootstrap_servers)
        await admin.start()
        try:
            mine = [
                t for t in await admin.list_topics() if t.startswith(self.settings.topic_prefix)
            ]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    # publishing
    async def publish(
        self, envelopes: Sequence[dict[str, Any]], batch: int = PUBLISH_BATCH
    ) -> list[Receipt]:
        receipts: list[Receipt] = []
        for i in range(0, len(envelopes), batch):
            receipts += (await self.publisher.publish_many(envelopes[i : i + batch])).receipts
        return receipts

    # how far things are
    def _name(self, tp: TopicPartition) -> str:
        return f"{self.settings.logical_topic(tp.topic)}:{tp.partition}"

    async def ends(self, partitions: Sequence[TopicPartition]) -> dict[str, int]:
        found = await self._ends.end_offsets(list(partitions))
        return {self._name(tp): end for tp, end in found.items()}

    async def marks(self) -> dict[str, int]:
        """``topic:partition`` -> highest offset applied by every projection (active)."""
        return await (await self.stores.active()).applied_marks()

    async def applied(self) -> tuple[bool, int]:
        """(every source and internal partition applied, source records applied)."""
        done, count, _ = await self.progress()
        return done, count

    async def progress(self) -> tuple[bool, int, int]:
        """(every source and internal partition applied, source records applied, records
        applied of every source and internal topic)."""
        ends = await self.ends(self.source + self.internal)
        marks = await self.marks()
        source = {self._name(tp) for tp in self.source}
        applied = {k: min(marks.get(k, -1) + 1, end) for k, end in ends.items()}
        count = sum(v for k, v in applied.items() if k in source)
        if not covered(marks, ends):
            return False, count, sum(applied.values())
        # The internal topics' messages are sent before the mark of the record that
        # caused them is raised; unchanged ends after the marks covered them mean that
        # nothing was on its way.
        internal = {k: v for k, v in ends.items() if k not in source}
        return await self.ends(self.internal) == internal, count, sum(applied.values())

    async def wait(self, within_s: float, stall_s: float, interval: float = 0.1) -> Waited:
        """Wait until every record is applied, at most ``within_s``, and at most ``stall_s``
        without any mark moving (a stuck processor, or a dead-lettered last record)."""
        start = last_move = time.monotonic()
        last = -1
        while True:
            done, count, moved = await self.progress()
            now = time.monotonic()
            if moved != last:
                last, last_move = moved, now
            if done or now - start > within_s or now - last_move > stall_s:
                return Waited(done, count, now - start, not done and now - last_move > stall_s)
            await asyncio.sleep(interval)

    async def dead_letters(self) -> int:
        return sum((await self.ends(self.dlq)).values())

    # the processor
    def start_processor(self, name: str, timeout_s: float) -> ProcessorProcess:
        self._workers += 1
        log_dir = self.logs / f"{name}-{self._workers}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.processor = ProcessorProcess(
            self.settings, settings_env(self.settings), log_dir / "worker.log"
        )
        self.processor.start(timeout_s)
        return self.processor

    async def ensure_processor(self, knobs: Knobs) -> ProcessorProcess:
        if (
            self.processor is None
            or self.processor.proc is None
            or self.processor.proc.poll() is not None
        ):
            await asyncio.to_thread(self.start_processor, "processor", knobs.start_timeout_s)
        assert self.processor is not None
        return self.processor

    def stop_processor(self) -> None:
        if self.processor is not None:
            self.processor.stop()
            self.processor = None


@dataclass(frozen=True)
class Waited:
    done: bool
    applied: int  # source records
    seconds: float
    stalled: bool

    def why(self, within_s: float, stall_s: float) -> str:
        if self.stalled:
            return f"no progress for {stall_s:.0f} s"
        return f"not reached in {within_s:.0f} s"


def covered(marks: dict[str, int], ends: dict[str, int]) -> bool:
    return all(marks.get(k, -1) >= end - 1 for k, end in ends.items() if end > 0)


@asynccontextmanager
async def deployment(servers: StackPorts, logs: Path) -> AsyncIterator[Deployment]:
    d = Deployment(servers, logs)
    await d.start()
    try:
        yield d
    finally:
        await d.close()


# --- the naive sinks -------------------------------------------------------------------------

_STATUS_OF = {
    "OrderPlaced": "placed",
    "PaymentCaptured": "paid",
    "OrderShipped": "shipped",
    "OrderDelivered": "delivered",
    "OrderCancelled": "cancelled",
    "PaymentRefunded": "refunded",
}


def naive_fold(doc: dict[str, Any] | None, event: Event) -> dict[str, Any]:
    """Fold one event into its order (or customer) document, the simplest way."""
    data: Any = event.data
    at = event.occurred_at.isoformat()
    if event.topic == "customers":
        return {"_id": event.key, **data.model_dump(mode="json"), "updated_at": at}
    doc = doc or {"_id": event.key, "status": "pending", "amount_paid": "0", "events": 0}
    doc["events"] += 1
    doc["updated_at"] = at
    if event.type == "OrderPlaced":
        doc.update(
            customer_id=data.customer_id,
            currency=data.currency,
            items=[i.model_dump(mode="json") for i in data.items],
            total=str(sum(i.unit_price * i.quantity for i in data.items)),
        )
        if doc["status"] == "pending":
            doc["status"] = "placed"
        return doc
    if event.type == "PaymentCaptured":
        doc["amount_paid"] = str(Decimal(doc["amount_paid"]) + data.amount)
    elif event.type == "PaymentRefunded":
        doc["amount_paid"] = str(Decimal(doc["amount_paid"]) - data.amount)
    if event.type in _STATUS_OF:
        doc["status"] = _STATUS_OF[event.type]
    return doc


class BacklogReader:
    """Reads the source topics from the beginning up to the ends taken at start."""

    def __init__(self, d: Deployment) -> None:
        self.d = d
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=d.settings.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.ends: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> BacklogReader:
        await self.consumer.start()
        self.consumer.assign(self.d.source)
        await self.consumer.seek_to_beginning(*self.d.source)
        self.ends = dict(await self.consumer.end_offsets(self.d.source))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def polls(
        self,
        deadline: float,
        max_records: int | None = None,
    ) -> AsyncIterator[list[tuple[str, bytes]]]:
        """Each poll's records as (logical topic, value), until the ends or the deadline."""
        while time.monotonic() < deadline:
            pending = [
                tp for tp in self.d.source if await self.consumer.position(tp) < self.ends[tp]
            ]
            if not pending:
                return
            batch = await self.consumer.getmany(*pending, timeout_ms=500, max_records=max_records)
            yield [
                (self.d.settings.logical_topic(tp.topic), r.value)
                for tp, records in batch.items()
                for r in records
                if r.offset < self.ends[tp]
            ]


def _collection_of(topic: str) -> str:
    return "customers" if topic == "customers" else "orders"


async def bare_consumer(d: Deployment, knobs: Knobs, results: Results) -> None:
    """aiokafka + fastavro (raw ``schemaless_reader`` through the codec's header lookup)."""
    n = 0
    async with BacklogReader(d) as reader:
        start = time.perf_counter()
        async for records in reader.polls(time.monotonic() + knobs.sink_timeout_s):
            for _, value in records:
                decode_record(value)
            n += len(records)
        took = time.perf_counter() - start
    # the same with the project's codec (model validation included), for reference
    m = 0
    async with BacklogReader(d) as reader:
        start = time.perf_counter()
        async for records in reader.polls(time.monotonic() + knobs.sink_timeout_s):
            for _, value in records:
                decode(value)
            m += len(records)
        took_codec = time.perf_counter() - start
    results.put(
        "pipeline",
        bare_consumer_events_per_s=n / took,
        bare_consumer_codec_events_per_s=m / took_codec,
    )
    results.detail("bare", events=n, seconds=took, codec_seconds=took_codec)


async def naive_event_sink(d: Deployment, knobs: Knobs, results: Results) -> None:
    db = d.stores.db
    n = 0
    async with BacklogReader(d) as reader:
        total = sum(reader.ends.values())
        start = time.perf_counter()
        async for records in reader.polls(time.monotonic() + knobs.sink_timeout_s):
            for topic, value in records:
                event = decode(value)
                docs = db[f"naive_event_{_collection_of(topic)}"]
                doc = await docs.find_one({"_id": event.key})
                await docs.replace_one({"_id": event.key}, naive_fold(doc, event), upsert=True)
                n += 1
        took = time.perf_counter() - start
    complete = n >= total
    results.put("pipeline", naive_event_events_per_s=n / took)
    results.detail(
        "naive_event",
        events=n,
        of=total,
        complete=complete,
        seconds=took,
        timeout_s=None if complete else knobs.sink_timeout_s,
    )


async def naive_batch_sink(d: Deployment, knobs: Knobs, results: Results) -> None:
    db = d.stores.db
    n = polls = writes = 0
    async with BacklogReader(d) as reader:
        total = sum(reader.ends.values())
        meter = CpuMeter(d.servers)
        await meter.start()
        start = time.perf_counter()
        async for records in reader.polls(
            time.monotonic() + knobs.sink_timeout_s, max_records=POLL_RECORDS
        ):
            events = [(_collection_of(topic), decode(value)) for topic, value in records]
            for collection in ("orders", "customers"):
                mine = [e for c, e in events if c == collection]
                if not mine:
                    continue
                docs = db[f"naive_batch_{collection}"]
                keys = list(dict.fromkeys(e.key for e in mine))
                stored = {doc["_id"]: doc async for doc in docs.find({"_id": {"$in": keys}})}
                for event in mine:
                    stored[event.key] = naive_fold(stored.get(event.key), event)
                ops = [ReplaceOne({"_id": k}, stored[k], upsert=True) for k in keys]
                for i in range(0, len(ops), BULK_CHUNK):
                    await docs.bulk_write(ops[i : i + BULK_CHUNK])
                writes += len(ops)
            n += len(records)
            polls += 1
        took = time.perf_counter() - start
        cpu_per_event = await meter.stop(results, "naive_batch", n)
    complete = n >= total
    results.put("pipeline", naive_batch_cpu_us_per_event=cpu_per_event)
    results.put("pipeline", naive_batch_events_per_s=n / took)
    results.detail(
        "naive_batch",
        events=n,
        of=total,
        complete=complete,
        seconds=took,
        polls=polls,
        documents_written=writes,
        bulk_chunk=BULK_CHUNK,
        timeout_s=None if complete else knobs.sink_timeout_s,
    )
    # sanity: the two sinks folded the same documents
    if (
        complete
        and "naive_event" in results.details
        and results.details["naive_event"].get("complete")
    ):
        for collection in ("orders", "customers"):
            a = await db[f"naive_event_{collection}"].count_documents({})
            b = await db[f"naive_batch_{collection}"].count_documents({})
            assert a == b, f"naive sinks disagree on {collection}: {a} != {b}"


# --- the processor ---------------------------------------------------------------------------


async def warmup(servers: StackPorts, logs: Path, knobs: Knobs, results: Results) -> None:
    """A processor catches up on a backlog of its own first, in a deployment of its own,
    unmeasured: what the processor writes (batches to compacted changelog topics, with
    an idempotent producer) is compiled by the broker's JVM as it comes, and on a
    broker just started the first catch-ups paid for it. Measured on this machine
    (December 4): Kafka took 1.4 to 2.3 CPU-seconds of the first three 20,000-event
    catch-ups after a start, 0.2 to 0.4 once warm, and those catch-ups ran at 2,300 to
    2,900 events/s against 3,500 to 4,480. A deployment's broker has been running; the
    naive sinks only read, which the backlog's publishing and reading warm anyway."""
    async with deployment(servers, logs / "warmup") as d:
        total = 0
        orders = traffic.orders_for_events(knobs.warmup_events)
        for chunk in traffic.shop(SEED, "warmup" + d.settings.mongo_db, orders):
            await d.publish(chunk)
            total += len(chunk)
        meter = CpuMeter(d.servers)
        await meter.start()
        start = time.monotonic()
        try:
            await asyncio.to_thread(d.start_processor, "warmup", knobs.start_timeout_s)
            waited = await d.wait(knobs.catchup_timeout_s, knobs.stall_s, interval=0.2)
        finally:
            d.stop_processor()
        await meter.stop(results, "warmup", total)
        results.detail(
            "warmup", events=total, complete=waited.done, seconds=time.monotonic() - start
        )
        if not waited.done:
            raise RuntimeError(f"the warm-up's processor did not catch up on {total} events")


@asynccontextmanager
async def profiled(knobs: Knobs, name: str, pid: int, results: Results) -> AsyncIterator[None]:
    """py-spy samples ``pid`` while the block runs (when ``knobs.profile``): a flame graph
    (SVG) and the raw collapsed stacks go to ``bench/results/profiles/``."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not knobs.profile or spy is None:
        yield
        return
    out = RESULTS_DIR / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    procs = [
        await asyncio.create_subprocess_exec(
            *(spy, "record", "--pid", str(pid), "--rate", "200", "--nonblocking"),
            *("--format", fmt, "--output", str(out / f"{name}.{suffix}")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt"))
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)
        results.detail(name, profile=str(out / f"{name}.svg"))


async def redis_calls(d: Deployment) -> Counter[str]:
    """Commands the benchmark stack's Redis has served so far, by command (the stack is
    the benchmark's own: nothing else talks to it)."""
    stats = await d.stores.redis.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


async def mongo_calls() -> Counter[str]:
    """Commands the benchmark stack's FerretDB has served so far, by command (from its
    debug endpoint's metrics; empty when it cannot be read)."""
    port = os.environ.get("EVENTFOLD_BENCH_FERRETDB_DEBUG_PORT", "28189")
    found: Counter[str] = Counter()
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/debug/metrics")).text
    except httpx.HTTPError:
        return found
    for m in re.finditer(
        r'^ferretdb_client_requests_total\{command="(\w+)"[^}]*\} (\d+)', text, re.M
    ):
        found[m.group(1)] += int(m.group(2))
    return found


async def catchup(d: Deployment, knobs: Knobs, results: Results, total: int) -> None:
    calls_before, mongo_before = await redis_calls(d), await mongo_calls()
    spawned = time.monotonic()
    processor = await asyncio.to_thread(d.start_processor, "catchup", knobs.start_timeout_s)
    ready = time.monotonic()
    meter = CpuMeter(d.servers)
    await meter.start()
    _, at_ready = await d.applied()
    assert processor.proc is not None
    async with profiled(knobs, "catchup", processor.proc.pid, results):
        waited = await d.wait(knobs.catchup_timeout_s, knobs.stall_s, interval=0.05)
    done, applied = waited.done, waited.applied
    took = time.monotonic() - ready
    cpu_per_event = await meter.stop(results, "catchup", applied - at_ready)
    results.put("pipeline", catchup_cpu_us_per_event=cpu_per_event)
    assert processor.proc is not None
    memory = rss_mb(processor.proc.pid)
    projected: dict[str, float] = {}
    for projection in enabled(d.settings).values():  # they run in the same process
        await wait_projection_caught_up(d.settings, d.stores, projection, knobs.catchup_timeout_s)
        projected[projection.name] = round(time.monotonic() - ready, 2)
    calls, mongo = await redis_calls(d), await mongo_calls()
    calls.subtract(calls_before)
    mongo.subtract(mongo_before)
    rate = (applied - at_ready) / took if took > 0 else 0.0
    results.put("pipeline", catchup_events_per_s=rate)
    naive = results.figures.get("pipeline.naive_batch_events_per_s")
    per_event = results.figures.get("pipeline.naive_event_events_per_s")
    if naive:
        results.put("pipeline", ratio_to_naive_batch=rate / naive)
    if per_event:
        results.put("pipeline", ratio_to_naive_event=rate / per_event)
    results.detail(
        "catchup",
        events=total,
        applied=applied,
        applied_before_ready=at_ready,
        complete=done,
        seconds_from_ready=took,
        startup_s=ready - spawned,
        events_per_s_from_spawn=applied / (ready - spawned + took),
        rss_mb=memory.get("VmRSS"),
        # the processor's, plus this benchmark's polls (per 50 ms: 3 HGETALL, 1 meta find)
        redis_calls_per_event={
            k: round(v / max(1, applied), 2) for k, v in calls.most_common() if v > 0
        },
        mongo_calls_per_event={
            k: round(v / max(1, applied), 2) for k, v in mongo.most_common() if v > 0
        },
        dead_letters=await d.dead_letters(),
        # the registered projections (projections.registry): seconds from ready until each
        # had applied every record (EVENTFOLD_PROJECTIONS_DISABLED turns them off)
        projections_caught_up_s=projected,
        timeout_s=None if done else knobs.catchup_timeout_s,
        not_reached=None if done else waited.why(knobs.catchup_timeout_s, knobs.stall_s),
    )
    if not done:
        why = waited.why(knobs.catchup_timeout_s, knobs.stall_s)
        print(
            f"[bench] catch-up NOT REACHED ({why}): {applied} of {total} source events applied",
            flush=True,
        )
    dead = results.details["catchup"]["dead_letters"]
    if dead:
        raise RuntimeError(f"the processor dead-lettered {dead} records (see its log)")


async def rebuild(d: Deployment, knobs: Knobs, results: Results) -> None:
    done = [0, 0]

    def progress(records: int, total: int) -> None:
        done[:] = [records, total]

    meter = CpuMeter(d.servers)
    await meter.start()
    start = time.monotonic()
    try:
        async with profiled(knobs, "replay", os.getpid(), results):
            result = await asyncio.wait_for(
                replay.rebuild(d.settings, d.stores, progress=progress), knobs.replay_timeout_s
            )
    except TimeoutError:
        took = time.monotonic() - start
        await replay.abort(d.stores)
        results.put("replay", events_per_s=done[0] / took)
        results.detail(
            "replay",
            records=done[0],
            of=done[1],
            complete=False,
            seconds=took,
            timeout_s=knobs.replay_timeout_s,
        )
        print(
            f"[bench] replay NOT REACHED in {knobs.replay_timeout_s:.0f} s: "
            f"{done[0]} of {done[1]} records",
            flush=True,
        )
    else:
        results.put("replay", events_per_s=result.records / result.seconds)
        results.put("replay", cpu_us_per_event=await meter.stop(results, "replay", result.records))
        results.detail(
            "replay",
            records=result.records,
            applied=result.applied,
            seconds=result.seconds,
            write_s=result.write_s,
            wait_s=result.wait_s,
            version=result.version,
            complete=True,
        )
    naive = results.figures.get("pipeline.naive_batch_events_per_s")
    if naive:
        results.put("replay", ratio_to_naive_batch=results.figures["replay.events_per_s"] / naive)


async def freshness(d: Deployment, knobs: Knobs, results: Results) -> None:
    """Publish at ``freshness_rate`` for ``freshness_s``; per event, the time from its
    publish call to the first poll of the applied marks (every projection) covering it."""
    processor = await d.ensure_processor(knobs)
    await d.wait(knobs.catchup_timeout_s, knobs.stall_s)  # from a quiet processor
    assert processor.proc is not None
    async with profiled(knobs, "freshness", processor.proc.pid, results):
        await offer_load(d, knobs, results)


async def offer_load(d: Deployment, knobs: Knobs, results: Results) -> None:
    """The freshness phase's load and its measurement (``freshness``)."""
    models = await d.stores.active()
    keys = [models.checkpoints_key(p) for p in PROJECTIONS]
    redis = d.stores.redis
    wanted = int(knobs.freshness_rate * knobs.freshness_s)
    envelopes = [
        e
        for chunk in traffic.shop(
            SEED, "fresh" + d.settings.mongo_db, traffic.orders_for_events(wanted) + 10
        )
        for e in chunk
    ][:wanted]
    pending: dict[str, deque[tuple[int, float]]] = {}
    latencies: list[float] = []
    publishing = True

    async def watch() -> None:
        while publishing or any(pending.values()):
            pipe = redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            found = await pipe.execute()
            now = time.perf_counter()
            marks = {k: min(int(m.get(k, -1)) for m in found) for k in found[0]}
            for name, queue in pending.items():
                mark = marks.get(name, -1)
                while queue and queue[0][0] <= mark:
                    latencies.append(now - queue.popleft()[1])
            await asyncio.sleep(knobs.freshness_poll_ms / 1000)

    watcher = asyncio.create_task(watch())
    per_call = max(1, round(knobs.freshness_rate * 0.02))  # one publish call per ~20 ms
    start = time.perf_counter()
    sent = 0
    try:
        while sent < len(envelopes):
            # event i is due at start + i / rate
            due = min(len(envelopes), int((time.perf_counter() - start) * knobs.freshness_rate) + 1)
            if due - sent >= per_call or due == len(envelopes):
                at = time.perf_counter()
                result = await d.publisher.publish_many(envelopes[sent:due])
                for r in result.receipts:
                    pending.setdefault(f"{r.topic}:{r.partition}", deque()).append((r.offset, at))
                sent = due
            else:
                await asyncio.sleep(
                    max(
                        0.001,
                        start + (sent + per_call) / knobs.freshness_rate - time.perf_counter(),
                    )
                )
        offered_s = time.perf_counter() - start
        publishing = False
        try:
            await asyncio.wait_for(asyncio.shield(watcher), knobs.freshness_drain_s)
        except TimeoutError:
            pass
    finally:
        publishing = False
        end = time.perf_counter()
        watcher.cancel()
    unseen = [end - at for queue in pending.values() for _, at in queue]
    samples = latencies + unseen
    p = {q: percentile(samples, q) * 1000 for q in (50, 99)}
    results.put("pipeline", freshness_p50_ms=p[50], freshness_p99_ms=p[99])
    results.detail(
        "freshness",
        events=sent,
        offered_rate=knobs.freshness_rate,
        achieved_publish_rate=sent / offered_s,
        seconds=offered_s,
        visible=len(latencies),
        not_visible=len(unseen),
        not_visible_within_s=knobs.freshness_drain_s if unseen else None,
        lower_bound=bool(unseen),
        max_ms=max(samples) * 1000 if samples else None,
        poll_ms=knobs.freshness_poll_ms,
    )
    if unseen:
        print(
            f"[bench] freshness: {len(unseen)} of {sent} events NOT VISIBLE within "
            f"{knobs.freshness_drain_s:.0f} s after the last publish; percentiles are lower "
            "bounds",
            flush=True,
        )


# --- queries ---------------------------------------------------------------------------------

_WRK_SCRIPT = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
"""


def _uvicorn(app: str, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """One server, the same settings for the query API and the hello-world."""
    uvicorn = Path(sys.executable).parent / "uvicorn"
    out = log.open("ab")
    return subprocess.Popen(
        [
            str(uvicorn),
            "--factory",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _duration_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p = {q: re.search(rf"^\s+{q}%\s+(\S+)", output, re.M) for q in (50, 99)}
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:(.*)", output)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "p50_ms": _duration_ms(p[50].group(1)) if p[50] else None,
        "p99_ms": _duration_ms(p[99].group(1)) if p[99] else None,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else None,
    }


async def _wrk(
    url: str, paths: Sequence[str], connections: int, seconds: float, script_dir: Path
) -> dict[str, Any]:
    script = script_dir / f"paths-{abs(hash(tuple(paths))) % 10**8}.lua"
    if not script.exists():
        script.write_text(_WRK_SCRIPT % ",".join(json.dumps(p) for p in paths))
    proc = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    return parse_wrk(out.decode(errors="replace"))


async def _until_serving(url: str, within_s: float = 30.0) -> None:
    async def probe() -> tuple[bool, int]:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                status = (await client.get(url)).status_code
        except httpx.HTTPError:
            return False, 0
        return status == 200, status

    served, status = await until(probe, within_s, 0.2)
    if not served:
        raise RuntimeError(f"{url} not serving in {within_s} s (last status {status})")


async def queries(d: Deployment, knobs: Knobs, results: Results, order_ids: list[str]) -> None:
    if shutil.which("wrk") is None:
        raise RuntimeError(
            "wrk is not installed (make bench installs it: benchmarks/ensure_wrk.sh)"
        )
    models = await d.stores.active()
    ids = [
        i
        for i in order_ids[:2000]
        if await models.redis.hexists(models.order_key(i), "view")
        or await models.orders.find_one({"_id": i, "placed": True}, projection={"_id": 1})
    ]
    if not ids:
        raise RuntimeError("no projected order to query (the catch-up applied none)")
    logs = d.logs / "query"
    logs.mkdir(parents=True, exist_ok=True)
    env = settings_env(d.settings)
    api = _uvicorn("query_api.api:create_app", knobs.query_port, env, logs / "query-api.log")
    hello = _uvicorn("benchmarks.hello_app:create_app", knobs.hello_port, env, logs / "hello.log")
    targets = {
        "order": (f"http://127.0.0.1:{knobs.query_port}", [f"/v1/orders/{i}" for i in ids]),
        "hello": (f"http://127.0.0.1:{knobs.hello_port}", ["/hello"]),
    }
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        await _until_serving(targets["order"][0] + targets["order"][1][0])
        await _until_serving(targets["hello"][0] + "/hello")
        for url, paths in targets.values():  # warm-up
            await _wrk(url, paths, 4, 2, logs)
        for _ in range(knobs.query_rounds):
            for connections in (4, 32):
                for name, (url, paths) in targets.items():  # alternating
                    runs.setdefault(f"{name}_c{connections}", []).append(
                        await _wrk(url, paths, connections, knobs.query_s, logs)
                    )
    finally:
        _stop(api)
        _stop(hello)
    best = {k: max(v, key=lambda r: r["rps"]) for k, v in runs.items()}
    for c in (4, 32):
        order, ref = best[f"order_c{c}"], best[f"hello_c{c}"]
        results.put(
            "query",
            **{
                f"order_rps_c{c}": order["rps"],
                f"hello_rps_c{c}": ref["rps"],
                f"ratio_to_hello_c{c}": order["rps"] / ref["rps"] if ref["rps"] else 0.0,
                f"order_p99_ms_c{c}": order["p99_ms"],
                f"hello_p99_ms_c{c}": ref["p99_ms"],
            },
        )
    failed = {k: [r["non_2xx"] for r in v] for k, v in runs.items() if any(r["non_2xx"] for r in v)}
    results.detail(
        "query",
        orders=len(ids),
        seconds_per_run=knobs.query_s,
        rounds=knobs.query_rounds,
        runs=runs,
        non_2xx=failed or None,
        server="uvicorn --factory, 1 process, --no-access-log, loop/http auto",
        uvloop=_importable("uvloop"),
        httptools=_importable("httptools"),
    )
    if failed:
        raise RuntimeError(f"wrk saw non-2xx answers: {failed}")


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --- whale -----------------------------------------------------------------------------------


async def whale(d: Deployment, knobs: Knobs, results: Results) -> None:
    """A chunk of ``whale_chunk`` orders (OrderPlaced, PaymentAuthorized, PaymentCaptured)
    of one customer, timed from publish to applied (internal topics included) when the
    customer has 5 orders, and again when it has ``whale_orders``. In between, the
    customer is grown with OrderPlaced events only."""
    await d.ensure_processor(knobs)
    await d.wait(knobs.catchup_timeout_s, knobs.stall_s)
    customer = traffic.whale_customer(d.settings.mongo_db)
    chunk, target = knobs.whale_chunk, knobs.whale_orders
    timing: dict[str, Any] = {}

    async def timed(name: str, envelopes: list[dict[str, Any]], within_s: float) -> bool:
        start = time.monotonic()
        await d.publish(envelopes)
        done = (await d.wait(within_s, knobs.stall_s, interval=0.02)).done
        timing[f"{name}_s"] = time.monotonic() - start
        timing[f"{name}_events"] = len(envelopes)
        timing[f"{name}_complete"] = done
        doc = await (await d.stores.active()).customers.find_one({"_id": customer["customer_id"]})
        timing[f"{name}_customer_doc_kb"] = len(bson.encode(doc)) / 1024 if doc else None
        return done

    budget = time.monotonic() + knobs.whale_timeout_s
    registered = {"type": "CustomerRegistered", "data": customer}
    await timed(
        "warm_up", [registered, *traffic.whale_orders(SEED, customer, 0, 5)], knobs.whale_timeout_s
    )
    await timed("first", traffic.whale_orders(SEED, customer, 5, chunk), knobs.whale_timeout_s)
    have = 5 + chunk
    fill_to = max(have, target)
    fill_started = time.monotonic()
    while have < fill_to and time.monotonic() < budget:  # grow, 1,000 orders at a time
        n = min(1000, fill_to - have)
        done = await timed(
            "fill",
            traffic.whale_orders(SEED, customer, have, n, steps=()),
            budget - time.monotonic(),
        )
        if not done:
            break
        have += n
    timing["fill_total_s"] = time.monotonic() - fill_started
    last_done = await timed(
        "last",
        traffic.whale_orders(SEED, customer, have, chunk),
        max(60.0, budget - time.monotonic()),
    )
    cost = timing["last_s"] / timing["first_s"]
    results.put("whale", last_to_first_cost=cost, orders_before_last_chunk=have)
    results.detail(
        "whale",
        chunk_orders=chunk,
        orders_target=target,
        orders_reached=have,
        complete=have >= fill_to and last_done,
        **{k: v for k, v in timing.items() if not k.startswith("fill_") or k == "fill_total_s"},
    )
    if have < fill_to:
        print(
            f"[bench] whale: grown to {have} orders only (target {target}) in "
            f"{knobs.whale_timeout_s:.0f} s",
            flush=True,
        )


# --- memory ----------------------------------------------------------------------------------


async def verify_read_models(d: Deployment, knobs: Knobs, results: Results) -> None:
    """``eventfold verify`` after the run's traffic (the backlog, the rebuild, freshness,
    the whale): the active read models against a fresh fold of every event published,
    once the processor has applied everything."""
    await d.ensure_processor(knobs)
    waited = await d.wait(knobs.catchup_timeout_s, knobs.stall_s)
    start = time.monotonic()
    source = await read_source_events(d.settings)
    found = differences(reference_snapshot(source), await stored_snapshot(await d.stores.active()))
    results.put("verify", differences=len(found))
    results.detail(
        "verify",
        caught_up=waited.done,
        seconds=time.monotonic() - start,
        events=sum(len(events) for events in source.streams.values()),
        first_differences=found[:10],
    )
    if found:
        raise RuntimeError(f"verify found {len(found)} differences, first: {found[0]}")


async def memory(servers: StackPorts, logs: Path, knobs: Knobs, results: Results) -> None:
    """A fresh deployment and processor; ``memory_orders`` orders of demo-shaped traffic,
    chunk by chunk, each applied before the processor's VmRSS is read."""
    target = knobs.memory_orders
    chunk_orders = max(500, -(-target // 10))
    reached = 0
    samples: list[dict[str, Any]] = []
    async with deployment(servers, logs / "memory") as d:
        processor = await asyncio.to_thread(d.start_processor, "memory", knobs.start_timeout_s)
        assert processor.proc is not None
        pid = processor.proc.pid
        empty = rss_mb(pid)
        start = time.monotonic()
        deadline = start + knobs.memory_timeout_s
        events = 0
        stalled = False
        for chunk in traffic.shop(SEED, "mem" + d.settings.mongo_db, target, chunk_orders):
            await d.publish(chunk)
            waited = await d.wait(max(1.0, deadline - time.monotonic()), knobs.stall_s, 0.5)
            if not waited.done:
                stalled = waited.stalled
                break
            events += len(chunk)
            reached += sum(1 for e in chunk if e["type"] == "OrderPlaced")
            samples.append(
                {
                    "orders": reached,
                    "events": events,
                    "seconds": round(time.monotonic() - start, 1),
                    **rss_mb(pid),
                }
            )
            print(
                f"[bench] memory: {reached} orders applied, VmRSS {samples[-1]['VmRSS']:.0f} MB",
                flush=True,
            )
        final = rss_mb(pid)
        projections = children_rss_mb(pid)
        dead = await d.dead_letters()
    results.put(
        "memory",
        processor_rss_mb_200k_orders=final["VmRSS"],
        # the registered projections' worker, a child process of the processor
        projections_rss_mb_200k_orders=projections,
        orders_reached=reached,
        processor_rss_mb_empty=empty["VmRSS"],
    )
    per_order = ((final["VmRSS"] - empty["VmRSS"]) * 1024 / reached) if reached else None
    results.detail(
        "memory",
        orders_target=target,
        orders_reached=reached,
        complete=reached >= target,
        peak_mb=final["VmHWM"],
        kb_per_order=per_order,
        samples=samples,
        dead_letters=dead,
        timeout_s=None if reached >= target else knobs.memory_timeout_s,
        not_reached=None
        if reached >= target
        else f"no progress for {knobs.stall_s:.0f} s"
        if stalled
        else f"not reached in {knobs.memory_timeout_s:.0f} s",
    )
    if reached < target:
        print(
            f"[bench] memory: NOT REACHED: {reached} of {target} orders applied "
            f"({results.details['memory']['not_reached']})",
            flush=True,
        )
    if dead:
        raise RuntimeError(f"the processor dead-lettered {dead} records (see its log)")


# --- the run ---------------------------------------------------------------------------------


async def backlog(d: Deployment, knobs: Knobs, results: Results) -> tuple[int, list[str]]:
    """Publish the backlog (traffic of the same shape in every round): at least
    ``knobs.events`` events (a round's orders give 3.6 to 3.7 each: a short one is topped
    up with more shoppers); its events and order ids."""
    order_ids: list[str] = []
    start = time.monotonic()
    total = customers = orders = 0
    while total < knobs.events:
        more = traffic.orders_for_events(knobs.events - total)
        tag = d.settings.mongo_db if not orders else f"{d.settings.mongo_db}+{orders}"
        for chunk in traffic.shop(SEED, tag, more):
            await d.publish(chunk)
            total += len(chunk)
            order_ids += [e["data"]["order_id"] for e in chunk if e["type"] == "OrderPlaced"]
            customers += sum(1 for e in chunk if e["type"] == "CustomerRegistered")
        orders += more
    results.detail(
        "backlog",
        events=total,
        orders=orders,
        customers=customers,
        publish_s=time.monotonic() - start,
        topics=d.settings.topic_prefix,
    )
    print(f"[bench] {results.label}backlog: {total} events, {orders} orders", flush=True)
    return total, order_ids


async def run(
    servers: StackPorts, knobs: Knobs | None = None, results_dir: Path = RESULTS_DIR
) -> Results:
    knobs = knobs or Knobs()
    results = Results(knobs)
    logs = results_dir / "logs" / results.run["started_at"].replace(":", "")
    wanted = set(knobs.phases)

    async def phase(
        name: str, work: Callable[[], Awaitable[None]], into: Results = results
    ) -> None:
        if name not in wanted:
            return
        print(f"\n[bench] --- {into.label}{name}", flush=True)
        start = time.monotonic()
        try:
            await work()
        except Exception as exc:  # reported, and the run goes on with the next phase
            failed = f"{into.label}{name}"
            results.errors[failed] = f"{type(exc).__name__}: {exc}"
            print(f"[bench] {failed} FAILED: {results.errors[failed]}", flush=True)
        into.detail("phase_seconds", **{name: time.monotonic() - start})
        results.write(results_dir)

    await phase("warmup", lambda: warmup(servers, logs, knobs, results))
    rounds = max(1, knobs.rounds) if wanted & set(PAIRED) else 1
    played: list[Results] = []
    for number in range(1, rounds + 1):
        one = results if rounds == 1 else Results(knobs, label=f"round {number} ")
        last = number == rounds
        async with deployment(servers, logs / ("main" if number == 1 else f"main-{number}")) as d:
            total, order_ids = await backlog(d, knobs, one)
            try:
                await phase("bare", partial(bare_consumer, d, knobs, one), one)
                await phase("naive_event", partial(naive_event_sink, d, knobs, one), one)
                await phase("naive_batch", partial(naive_batch_sink, d, knobs, one), one)
                await phase("catchup", partial(catchup, d, knobs, one, total), one)
                await phase("replay", partial(rebuild, d, knobs, one), one)
                if one is not results:
                    played.append(one)
                    merge_rounds(results, played)
                    results.write(results_dir)
                if not last:
                    continue
                await phase("freshness", partial(freshness, d, knobs, results))
                await phase("query", partial(queries, d, knobs, results, order_ids))
                await phase("whale", partial(whale, d, knobs, results))
                await phase("verify", partial(verify_read_models, d, knobs, results))
            finally:
                d.stop_processor()
    await phase("memory", lambda: memory(servers, logs, knobs, results))
    results.run["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results.write(results_dir)
    return results


def phases_run(results: Results) -> Iterable[str]:
    return results.details.get("phase_seconds", {}).keys()
