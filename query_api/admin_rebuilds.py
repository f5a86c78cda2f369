"""Rebuilds started from the console: one at a time per query API instance, with the
progress the console shows live.

Why a thread with its own event loop: a rebuild folds tens of thousands of records a
second in Python; on the API's own loop it would hold every query up for as long as
a batch takes. In a thread the loop keeps answering (the interpreter's lock is still
shared, so queries are slower while a rebuild runs, as they are next to
``eventfold replay`` on the same machine). The thread opens its own connections
(``Stores``): a client belongs to the loop that made it.

Its progress is plain fields the thread assigns and the API's loop reads (the live
stream polls them): no object is shared between the two loops.

The rebuild itself is the command line's (``projections.replay.rebuild`` for the core
read models, all chosen ones in one version; ``projections.projection_replay.rebuild``
for each registered projection): the console adds no way of rebuilding of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from eventfold.settings import Settings
from projections.read_models import PROJECTIONS, Stores

log = logging.getLogger(__name__)
State = Literal["running", "switched", "failed", "aborted"]
GRACE_S = 300.0  # the retired version is kept this long (as ``eventfold replay``)


class RebuildBusy(RuntimeError):
    """A rebuild started from this instance is still running."""


@dataclass
class Step:
    """One rebuild: the core read models chosen (together) or one registered projection."""

    projections: list[str]
    state: Literal["waiting", "running", "switched", "failed", "aborted"] = "waiting"
    version: str | None = None
    previous: dict[str, str] = field(default_factory=dict)
    records: int = 0
    total: int = 0
    failed_records: int = 0
    seconds: float = 0.0


@dataclass
class Progress:
    """What the console shows of a rebuild (``GET /v1/admin/rebuilds/current`` and the
    live stream)."""

    id: str
    projections: list[str]
    started_by: str
    correlation_id: str
    started_at: float
    state: State = "running"
    records: int = 0
    total: int = 0
    events_per_s: float = 0.0
    eta_s: float | None = None
    message: str = ""
    steps: list[Step] = field(default_factory=list)
    finished_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan(names: Sequence[str]) -> list[Step]:
    """The steps of a rebuild of ``names`` (all projections when empty): the core read
    models in one step, then one step per registered projection. ValueError for an
    unknown name (naming the known ones)."""
    from eventfold.cli import split_projections
    from projections.registry import registered

    if not names:
        names = [*PROJECTIONS, *registered()]
    core, others = split_projections(names)
    return ([Step(list(core))] if core else []) + [Step([p.name]) for p in others]


class RebuildRunner:
    """The rebuild this instance runs, if any, and the last one's outcome."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.current: Progress | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.current is not None and self.current.state == "running"

    def start(self, steps: list[Step], started_by: str, correlation_id: str) -> Progress:
        if self.running:
            assert self.current is not None
            raise RebuildBusy(f"rebuild {self.current.id} is still running")
        names = [n for s in steps for n in s.projections]
        self.current = Progress(
            uuid.uuid4().hex[:12], names, started_by, correlation_id, time.time(), steps=steps
        )
        progress = self.current
        self._thread = threading.Thread(
            target=self._thread_main, args=(progress,), name=f"rebuild-{progress.id}", daemon=True
        )
        self._thread.start()
        return progress

    def abort(self) -> bool:
        """Cancel the running rebuild (its partial version is dropped); False if none."""
        loop, task = self._loop, self._task
        if not self.running or loop is None or task is None:
            return False
        loop.call_soon_threadsafe(task.cancel)
        return True

    def _thread_main(self, progress: Progress) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._run(progress))
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
        finally:
            self._task = None
            loop.close()
            self._loop = None

    async def _run(self, progress: Progress) -> None:
        stores = Stores(self._settings)
        step: Step | None = None
        try:
            for step in progress.steps:
                step.state = "running"
                await self._step(stores, progress, step)
                step.state = "switched"
            progress.state = "switched"
            progress.message = "; ".join(
                f"{', '.join(s.projections)}: {s.version} active" for s in progress.steps
            )
        except asyncio.CancelledError:
            # The message first: the API's loop reads these fields from another thread,
            # and an "aborted" without it was shown for as long as the drop took.
            progress.message = "nothing switched; dropping the partial version"
            progress.state = "aborted"
            if step is not None:
                step.state = "aborted"
                try:
                    await asyncio.shield(self._drop_partial(stores, step))
                except Exception as exc:
                    progress.message = (
                        "nothing switched; the partial version could not be dropped "
                        f"({type(exc).__name__}: {exc}); `eventfold status` shows it, "
                        "`eventfold drop VERSION` removes it"
                    )
                    log.exception("console rebuild %s: dropping its partial version", progress.id)
                    return
            progress.message = "the partial version was dropped; nothing switched"
        except Exception as exc:
            progress.state = "failed"
            if step is not None:
                step.state = "failed"
            progress.message = f"{type(exc).__name__}: {exc}"
            log.exception("console rebuild %s failed", progress.id)
        finally:
            progress.finished_at = time.time()
            progress.eta_s = None
            with contextlib.suppress(Exception):
                await stores.close()

    async def _step(self, stores: Stores, progress: Progress, step: Step) -> None:
        started = time.monotonic()
        done_before = progress.records

        first: list[tuple[float, int]] = []  # (when, records) of the first report

        def report(done: int, total: int) -> None:
            now = time.monotonic()
            step.records, step.total = done, total
            progress.records = done_before + done
            progress.total = (
                done_before + total + sum(s.total for s in progress.steps if s.state == "waiting")
            )
            # the rate of reading from the first report on (the set-up before it does
            # not count) once that spans half a second; over the whole step before
            first[:] = first or [(now, done)]
            since, at_first = first[0]
            if now - since >= 0.5:
                rate = (done - at_first) / (now - since)
            else:
                rate = done / (now - started) if now > started else 0.0
            progress.events_per_s = round(rate, 1)
            progress.eta_s = round((total - done) / rate, 1) if rate > 0 else None

        if step.projections[0] in PROJECTIONS:
            from projections.replay import rebuild

            result = await rebuild(
                self._settings,
                stores,
                projections=step.projections,
                progress=report,
                grace_s=GRACE_S,
            )
            step.version, step.previous = result.version, dict(result.previous)
            step.failed_records = result.undecodable + result.failed
        else:
            from projections.projection_replay import rebuild as rebuild_registered
            from projections.registry import registered

            projection = registered()[step.projections[0]]
            done = await rebuild_registered(
                self._settings, stores.redis, projection, report, db=stores.db
            )
            step.version, step.previous = done.version, {projection.name: done.previous}
            step.failed_records = done.failed
        step.seconds = round(time.monotonic() - started, 2)

    async def _drop_partial(self, stores: Stores, step: Step) -> None:
        """A cancelled core rebuild leaves its version registered (for ``--resume``):
        from the console, abort means drop it. A registered projection's rebuild drops
        its own on the way out."""
        if step.projections[0] in PROJECTIONS:
            from projections.replay import abort

            await abort(stores)

    def wait_stopped(self, within_s: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(within_s)

    async def close(self) -> None:
        """Abort a running rebuild when the API stops (its version is dropped)."""
        if self.abort():
            await asyncio.to_thread(self.wait_stopped, 30.0)
