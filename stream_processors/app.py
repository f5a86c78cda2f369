"""The Faust app: the processor's worker, running the join in batches.

The join runs on a consumer group of its own (``batch_processor``): each worker owns
the same partitions of every source and internal topic, folds what each fetch brings
in memory, applies the join's messages in-process where it owns their key, and writes
every changed document, view and table once per batch before it commits. Faust runs
the worker around it: the command line, logging, signals and lifecycle, and the timers
below (dropping retired read-model versions on the leader only).

Faust's agents and tables are not used. Each record crossed Faust's stream, conductor
and changelog machinery alone, and that was most of the processor's CPU: the same join
on the same backlog caught up at 0.25 to 0.30x the naive batch sink on Faust's agents,
and at about twice that here (README, "Measured"). Faust's own consumer group is named
``<processor group>-worker`` and consumes only Faust's leader-election topic; the
join's group keeps the processor's name (``Settings.processor_app_id``), its committed
offsets and its tables' changelog topics.

Run: ``python -m stream_processors.worker`` (``make run`` does it; it runs ``faust worker``
on this app, under jemalloc where the machine has it).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import faust
from faust.tables import TableManager

from eventfold.collector import (
    PROCESSOR_YOUNG_THRESHOLD,
    collect_young_every,
    freeze_long_lived,
)
from eventfold.settings import Settings
from stream_processors.batch_processor import BatchProcessor
from stream_processors.records import TRANSIENT_ERRORS

log = logging.getLogger(__name__)
STOP_WAIT_S = 60.0
"""How long a stop waits for the batch in flight to be written; past it, the batch is
dropped unwritten and uncommitted (its records are read again) and the stop is not
clean (the tables are restored from their changelogs at the next start)."""
settings = Settings()


class WithoutTablesManager(TableManager):  # type: ignore[misc]
    """Faust's table manager without its wait: it sleeps 1 s at every start
    (``TableManager.on_start``), for tables defined late, before the worker is ready.
    This app defines none (the join keeps its own, ``ChangelogTable``), so a processor
    restarted after a crash was a second late for nothing."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class ProcessorApp(faust.App):
    """The Faust app, running the batch processor from its start to its stop."""

    processor: BatchProcessor | None = None
    _running: asyncio.Future[None] | None = None
    _crashing: asyncio.Future[None] | None = None

    async def on_start(self) -> None:
        """Before Faust's own services start (a second or more): the projection worker
        starts loading meanwhile."""
        await super().on_start()
        if self.processor is None:
            self.processor = BatchProcessor(settings)
            await self.processor.spawn_projections()

    async def on_started(self) -> None:
        await super().on_started()
        if self.processor is None:
            self.processor = BatchProcessor(settings)
        await self.processor.start()
        self._running = asyncio.ensure_future(self.processor.run())
        self._running.add_done_callback(self._ended)
        freeze_long_lived()  # what is loaded by now lives as long as the process
        collect_young_every(PROCESSOR_YOUNG_THRESHOLD)

    def _ended(self, running: asyncio.Future[None]) -> None:
        """The join stopped by itself: a crash takes the worker down (its supervisor
        restarts it)."""
        failed = None if running.cancelled() else running.exception()
        if failed is not None:
            log.error("the join crashed: %r", failed)
            self._crashing = asyncio.ensure_future(self.crash(failed))

    async def on_stop(self) -> None:
        if self.processor is not None:
            await stop_processor(self.processor, self._running, STOP_WAIT_S)
        await super().on_stop()


async def stop_processor(
    processor: BatchProcessor, running: asyncio.Future[None] | None, wait_s: float
) -> None:
    """Stop after the batch in flight, waiting ``wait_s`` at most for it to be written
    (a store that does not answer: the batch is dropped and the stop is not clean), and
    close."""
    processor.stop()
    if running is not None:
        await asyncio.wait([running], timeout=wait_s)
        if not running.done():
            log.warning(
                "the batch in flight is not written after %.0f s: stopping without it", wait_s
            )
            running.cancel()
            await asyncio.wait([running])
    await processor.close()


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's form of the Kafka security settings (``Settings.kafka_client``)."""
    options = settings.kafka_client()
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            ssl_context=options.get("ssl_context"),
            mechanism=settings.kafka_sasl_mechanism,
        )
    if settings.kafka_security_protocol == "SSL":
        return faust.SSLCredentials(options["ssl_context"])
    return None


app = ProcessorApp(
    f"{settings.processor_app_id}-worker",
    broker=";".join(f"kafka://{b}" for b in settings.bootstrap_servers.split(",")),
    broker_credentials=broker_credentials(settings),
    store="memory://",
    TableManager=WithoutTablesManager,
    datadir=settings.processor_data_dir,
    topic_replication_factor=settings.topic_replication_factor,
    # A worker that dies without leaving the group (SIGKILL, lost host) hands its
    # leadership over after this long (the join's own group has the same timeout).
    broker_session_timeout=10.0,
    broker_heartbeat_interval=2.0,
    web_enabled=False,
)


@app.timer(interval=30.0, on_leader=True)
async def drop_retired_versions() -> None:
    """Read-model versions replaced by a rebuild are dropped once their grace period ends."""
    if app.processor is None:
        return
    try:
        dropped = await app.processor.stores.drop_retired()
    except TRANSIENT_ERRORS as exc:  # a store is down: the next tick tries again
        log.warning("could not drop retired versions now: %r", exc)
        return
    if dropped:
        log.info("dropped retired read-model versions %s", dropped)


class GcPauses:
    """The collections of the oldest generation and the longest of them (the event loop
    stands still meanwhile), for the processor's log."""

    def __init__(self) -> None:
        self.count = 0
        self.longest_s = 0.0
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count += 1
            self.longest_s = max(self.longest_s, time.perf_counter() - self._started)

    def take(self) -> str:
        taken = f"{self.count} full collections, the longest {1000 * self.longest_s:.0f} ms"
        self.count, self.longest_s = 0, 0.0
        return taken


gc_pauses = GcPauses()


@app.timer(interval=10.0)
async def log_batches() -> None:
    """What the batches cost in the last interval (nothing when idle)."""
    if app.processor is None:
        return
    taken = app.processor.batches.stats.take()
    if taken.batches:
        log.info("batches: %s; gc: %s", taken, gc_pauses.take())
