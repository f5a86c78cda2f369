"""The console's charts: an hour of samples, kept in memory by the query API instance.

Why here: the processors expose no metrics endpoint of their own, but what the charts
show is in Kafka and in this API's own metrics. Every ``SAMPLE_S`` seconds a sample
reads the end offsets of the source and internal topics and the processor's
consumer-group commits on them (lag per partition; events/s in: the end offsets'
growth on the source topics; out: the commits' growth), and the bucket counts of this
API's request-latency histogram (``eventfold_query_request_seconds``, in ``/metrics``
too), whose growth between two samples gives that interval's p50 and p99.

Freshness is estimated as the source topics' lag divided by the rate the processor
takes them at (0 when caught up): the seconds an event published now waits.

Sampling starts with the first console or admin request of the instance (so the many
short-lived instances of a test suite, and an API nobody watches, do not poll Kafka),
and goes on until the instance stops: the history is the last hour of that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import CollectorRegistry, Histogram

from eventfold.settings import Settings
from eventfold.topics import source_partitions
from schemas.catalog import INTERNAL_TOPICS, TOPICS

log = logging.getLogger(__name__)
SAMPLE_S = 5.0
FIRST_INTERVAL_S = 1.0
HISTORY_S = 3600.0
PARTITIONS_TTL_S = 60.0  # topics and partitions are looked up again this often
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
STARTED_AT = "eventfold.started_at"
"""Scope key: when a request was taken (``time.perf_counter()``), set by whatever worked
on it before the stack (the query API's order shortcut) so its time is counted too."""


def latency_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "eventfold_query_request_seconds",
        "Query API requests: seconds until the response starts (a stream's first bytes)",
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )


class LatencyMiddleware:
    """Observes each HTTP request's time to its response start: a pure ASGI wrapper
    (a Starlette ``BaseHTTPMiddleware`` costs tens of microseconds per request, which
    the order endpoint's benchmark would see); live streams count to their first bytes."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = scope.get(STARTED_AT) or time.perf_counter()
        observe = self.histogram.observe

        async def timed(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                observe(time.perf_counter() - started)
            await send(message)

        await self.app(scope, receive, timed)


def bucket_counts(histogram: Histogram) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of each bucket, +Inf last."""
    counts = []
    for metric in histogram.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                counts.append((float(sample.labels["le"]), sample.value))
    return sorted(counts)


def quantile(deltas: list[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile of the requests counted in cumulative bucket ``deltas``
    (linear within a bucket, as Prometheus's histogram_quantile); None without any."""
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in deltas:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Sample:
    at: float  # unix seconds
    lag: dict[str, int]  # "topic:partition" -> records not committed by the processor
    events_in: float | None  # per second, on the source topics, since the sample before
    events_out: float | None
    freshness_s: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    requests_per_s: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "lag": self.lag,
            "events_in": self.events_in,
            "events_out": self.events_out,
            "freshness_s": self.freshness_s,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "requests_per_s": self.requests_per_s,
        }


@dataclass
class _Previous:
    at: float
    ends: dict[str, int]
    committed: dict[str, int]
    buckets: list[tuple[float, float]] = field(default_factory=list)


def _rate(now: dict[str, int], before: dict[str, int], seconds: float) -> float:
    grown = sum(max(0, v - before.get(k, v)) for k, v in now.items())
    return grown / seconds if seconds > 0 else 0.0


class Sampler:
    """The ring buffer of samples and the task that fills it."""

    def __init__(
        self, settings: Settings, histogram: Histogram, interval_s: float = SAMPLE_S
    ) -> None:
        self._settings = settings
        self._histogram = histogram
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=int(HISTORY_S / interval_s) + 1)
        self._previous: _Previous | None = None
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._first = asyncio.Event()
        self._partitions: list[TopicPartition] = []
        self._partitions_at = 0.0

    def ensure_started(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="console-sampler")

    async def first_sample(self, within_s: float) -> None:
        """Wait (bounded) for the first two samples, so a console opened on a fresh
        instance has a point and a rate to show."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first.wait(), within_s)

    async def _run(self) -> None:
        taken = 0
        while True:
            try:
                self.samples.append(await self.sample())
                taken += 1
                if taken >= 2:  # the second sample has the first rates
                    self._first.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka away for a while: a gap in the charts
                log.warning("console sample failed: %s: %s", type(exc).__name__, exc)
                await self._disconnect()
            # the second sample soon after the first: a console just opened has rates
            await asyncio.sleep(FIRST_INTERVAL_S if taken == 1 else self.interval_s)

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        if self._consumer is None or self._admin is None:
            options = self._settings.kafka_client()
            consumer = AIOKafkaConsumer(**options, group_id=None, client_id="eventfold-console")
            admin = AIOKafkaAdminClient(
                **options,
                client_id="eventfold-console",
                request_timeout_ms=int(self._settings.kafka_timeout_s * 1000),
            )
            await consumer.start()
            try:
                await admin.start()
            except BaseException:
                await consumer.stop()
                raise
            self._consumer, self._admin = consumer, admin
        return self._consumer, self._admin

    async def _offsets(self) -> tuple[dict[str, int], dict[str, int]]:
        """End offsets and the processor group's committed offsets, ``topic:partition``."""
        settings = self._settings
        consumer, admin = await self._clients()
        if time.monotonic() - self._partitions_at > PARTITIONS_TTL_S or not self._partitions:
            self._partitions = await source_partitions(settings, (*TOPICS, *INTERNAL_TOPICS))
            self._partitions_at = time.monotonic()
        partitions = self._partitions
        if not partitions:
            return {}, {}
        ends = await consumer.end_offsets(partitions)
        commits = await admin.list_consumer_group_offsets(
            settings.processor_app_id, partitions=partitions
        )

        def name(tp: TopicPartition) -> str:
            return f"{settings.logical_topic(tp.topic)}:{tp.partition}"

        committed = {}
        for tp in partitions:
            at = commits.get(tp)
            committed[name(tp)] = at.offset if at is not None and at.offset >= 0 else 0
        return {name(tp): end for tp, end in ends.items()}, committed

    async def sample(self) -> Sample:
        now = time.time()
        ends, committed = await self._offsets()
        buckets = bucket_counts(self._histogram)
        lag = {k: max(0, ends[k] - committed.get(k, 0)) for k in ends}
        before, self._previous = self._previous, _Previous(now, ends, committed, buckets)
        if before is None:
            return Sample(now, lag, None, None, None, None, None, None)
        seconds = now - before.at
        source = {k: v for k, v in ends.items() if k.split(":")[0] in TOPICS}
        done = {k: v for k, v in committed.items() if k.split(":")[0] in TOPICS}
        events_in = _rate(source, before.ends, seconds)
        events_out = _rate(done, before.committed, seconds)
        behind = sum(v for k, v in lag.items() if k.split(":")[0] in TOPICS)
        freshness = 0.0 if behind == 0 else (behind / events_out if events_out > 0 else None)
        earlier = dict(before.buckets)
        deltas = [(b, c - earlier.get(b, 0.0)) for b, c in buckets]
        p50, p99 = quantile(deltas, 0.5), quantile(deltas, 0.99)
        requests = deltas[-1][1] / seconds if deltas and seconds > 0 else None
        return Sample(
            now,
            lag,
            round(events_in, 2),
            round(events_out, 2),
            None if freshness is None else round(freshness, 3),
            None if p50 is None else round(p50 * 1000, 3),
            None if p99 is None else round(p99 * 1000, 3),
            None if requests is None else round(requests, 2),
        )

    async def _disconnect(self) -> None:
        consumer, admin, self._consumer, self._admin = self._consumer, self._admin, None, None
        for client in (consumer, admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await (
                        client.stop() if isinstance(client, AIOKafkaConsumer) else client.close()
                    )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self._disconnect()
