"""The admin API under ``/v1/admin``: what the operations console shows and does.

Viewing needs the ``read`` scope, acting (start or abort a rebuild, drop a retired
version, re-drive dead letters) the ``admin`` scope and the cross-site checks of
``query_api.admin_access``. Every action is logged with the key's name and a
correlation id (the caller's ``X-Correlation-ID``, or a new one), which its answer
carries in the same header.

The endpoints call the same functions as the ``eventfold`` command (``status``,
``projections``, ``replay``, ``drop``, ``dlq list`` / ``dlq redrive``): the console is
another face of them, not a second implementation.
"""

# No "from __future__ import annotations": FastAPI resolves the route signatures' local
# Annotated aliases (Viewer, Actor) when the functions are defined.
import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from eventfold.auth import ADMIN
from eventfold.settings import Settings
from projections.overview import ProjectionRow, gather_projections
from projections.read_models import PROJECTIONS, Stores
from projections.rebuild_status import load_status
from query_api.admin_access import (
    CONSOLE_HEADER,
    CORRELATION_HEADER,
    READ,
    Principal,
    correlation_id,
    log_action,
    require,
)
from query_api.admin_metrics import Sampler
from query_api.admin_orders import order_detail
from query_api.admin_rebuilds import RebuildBusy, RebuildRunner, plan
from query_api.live import sse
from query_api.models import Problem, invalid_parameter
from schemas.catalog import DEAD_LETTER_SOURCES, dlq_topic
from stream_processors.dlq_admin import DeadLetterView

DLQ_TOPICS = tuple(dlq_topic(t) for t in DEAD_LETTER_SOURCES)
DlqTopic = Literal[
    "orders.dlq", "payments.dlq", "customers.dlq", "order-links.dlq", "order-enrichment.dlq"
]
REF_PATTERN = r"^[a-z][a-z-]*\.dlq:[0-9]{1,6}:[0-9]{1,19}$"
PROGRESS_POLL_S = 0.25
STREAM_HEARTBEAT_S = 10.0
MAX_LETTERS = 5000
Id = Annotated[str, Path(min_length=1, max_length=128)]
ACTION_HELP = (
    f" Needs the `admin` scope; from a browser session (the console's cookie), or with "
    f"keys off, the `{CONSOLE_HEADER}: 1` header too. Logged with the key's name and "
    f"the correlation id of `{CORRELATION_HEADER}` (generated when absent, and answered)."
)


class RebuildRequest(BaseModel):
    """Which projections to rebuild: core read models (rebuilt together into one new
    version) and registered projections (one new version each); none: all of them."""

    projections: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")]] = Field(
        default_factory=list, max_length=64
    )


class RedriveRequest(BaseModel):
    """Dead letters to re-drive, named as the list names them (``orders.dlq:3:17``)."""

    letters: list[Annotated[str, Field(pattern=REF_PATTERN)]] = Field(min_length=1, max_length=500)


class AdminSession(BaseModel):
    key: str
    scopes: list[str]
    can_act: bool
    auth_disabled: bool


class Admin:
    """What the admin API holds per query API instance: the chart sampler and the
    console's rebuild runner."""

    def __init__(self, settings: Settings, stores: Stores, sampler: Sampler) -> None:
        self.settings = settings
        self.stores = stores
        self.sampler = sampler
        self.runner = RebuildRunner(settings)

    async def close(self) -> None:
        await self.runner.close()
        await self.sampler.close()


async def building_progress(
    settings: Settings, stores: Stores, rows: Sequence[ProjectionRow]
) -> dict[str, dict[str, Any] | None]:
    """How far the rebuild of each projection being built has got, wherever it runs
    (``eventfold replay`` or a console): what it saved (``projections.rebuild_status``);
    None before its first save."""
    versions = stores.projection_versions()
    found: dict[str, dict[str, Any] | None] = {}
    for row in rows:
        if row.building:
            key = (
                stores.version(row.building).status_key
                if row.core
                else versions.status_key(row.name, row.building)
            )
            status = await load_status(stores.redis, key)
            found[row.name] = None if status is None else status.to_json()
    return found


def _step(view: DeadLetterView, what: str) -> dict[str, Any]:
    """One line of a dead letter's history."""
    redriven = ", re-driven" if view.redriven else ""
    return {
        "ref": view.ref,
        "timestamp_ms": view.timestamp_ms,
        "what": f"{what} ({view.reason or 'no reason given'}){redriven}",
        "error": view.error,
    }


def letter_history(
    letter: DeadLetterView, views: dict[str, DeadLetterView], most: int = 50
) -> list[dict[str, Any]]:
    """The dead letters ``letter`` was re-driven from (``dlq-redriven-from``), itself,
    and the ones its re-drives became, oldest first."""
    history = [_step(letter, "dead-lettered")]
    earlier = letter.redriven_from
    while earlier in views and len(history) < most:
        history.insert(0, _step(views[earlier], "dead-lettered"))
        earlier = views[earlier].redriven_from
    later = letter.ref
    while len(history) < 2 * most:
        after = next((v for v in views.values() if v.redriven_from == later), None)
        if after is None:
            break
        history.append(_step(after, "dead-lettered again after a re-drive"))
        later = after.ref
    return history


@contextmanager
def kafka_answers(what: str) -> Iterator[None]:
    """A 503 naming what could not be read when Kafka fails (aiokafka's errors are
    RuntimeErrors), never a 500."""
    try:
        yield
    except (OSError, RuntimeError, TimeoutError) as exc:
        raise HTTPException(
            503, f"cannot read {what} from Kafka: {type(exc).__name__}: {exc}"
        ) from None


def _answered(response: Response, correlation: str) -> None:
    response.headers[CORRELATION_HEADER] = correlation


def admin_routes(admin: Admin) -> APIRouter:
    settings, stores = admin.settings, admin.stores
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem},
        403: {"model": Problem},
    }
    router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=errors)
    Viewer = Annotated[Principal, Depends(require(settings, READ))]
    Actor = Annotated[Principal, Depends(require(settings, ADMIN))]
    action_errors: dict[int | str, dict[str, Any]] = {
        400: {"model": Problem, "description": "A body that is not JSON"},
        409: {"model": Problem},
        415: {"model": Problem},
    }

    @router.get("/session", response_model=AdminSession)
    async def session(who: Viewer) -> AdminSession:
        """The caller's key (its name as logs show it) and scopes: the console disables
        its actions for a key without ``admin``."""
        admin.sampler.ensure_started()
        return AdminSession(
            key=who.name,
            scopes=sorted(who.scopes),
            can_act=who.may(ADMIN),
            auth_disabled=settings.auth_disabled,
        )

    unavailable: dict[int | str, dict[str, Any]] = {503: {"model": Problem}}

    @router.get("/projections", responses=unavailable)
    async def projections(who: Viewer) -> dict[str, Any]:
        """Every projection (core read models and registered ones) with its active
        version, the version being built and its lag; the retired versions kept for
        their grace period; the console's rebuild, if any."""
        admin.sampler.ensure_started()
        try:
            with kafka_answers("the projections' lag"):
                rows, warning = await gather_projections(settings, stores)
        except ValueError as exc:  # a registered projection that does not load
            raise HTTPException(503, str(exc)) from None
        meta = await stores.read_meta()
        current = admin.runner.current
        progress = await building_progress(settings, stores, rows)
        return {
            "projections": [asdict(r) | {"building_progress": progress.get(r.name)} for r in rows],
            "retired": [
                {
                    "version": str(r["version"]),
                    "projections": list(r["projections"]),
                    "drop_after": r.get("drop_after"),
                }
                for r in meta.retired
            ],
            "building": [asdict(b) for b in meta.building],
            "rebuild": None if current is None else current.to_json(),
            "warning": warning,
        }

    @router.post("/rebuilds", status_code=202, responses=action_errors, description=ACTION_HELP)
    async def start_rebuild(
        body: RebuildRequest, who: Actor, request: Request, response: Response
    ) -> dict[str, Any]:
        """Start a rebuild (the one of ``eventfold replay``) in this instance: a new
        version folded from the topics, switched to at the end. Its progress:
        ``GET /v1/admin/rebuilds/current`` and the stream ``/v1/admin/rebuilds/events``.
        409 while another runs."""
        correlation = correlation_id(request)
        _answered(response, correlation)
        try:
            steps = plan(body.projections)
        except ValueError as exc:
            raise invalid_parameter("body", "projections", str(exc)) from None
        building = await stores.building()
        if building and any(n in PROJECTIONS for s in steps for n in s.projections):
            raise HTTPException(
                409, f"{', '.join(b.version for b in building)} is being rebuilt: abort it first"
            )
        try:
            progress = admin.runner.start(steps, who.name, correlation)
        except RebuildBusy as exc:
            raise HTTPException(409, str(exc)) from None
        log_action(who, correlation, "rebuild", f"{progress.id}: {', '.join(progress.projections)}")
        return progress.to_json()

    @router.get("/rebuilds/current")
    async def current_rebuild(who: Viewer) -> dict[str, Any] | None:
        """The console's rebuild in this instance (running or the last one), or null."""
        current = admin.runner.current
        return None if current is None else current.to_json()

    @router.get(
        "/rebuilds/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-Sent Events: `event: progress`, `data:` the rebuild "
                "as GET /v1/admin/rebuilds/current answers it, at each change; the stream "
                "ends once the rebuild has switched, failed or been aborted (at once when "
                "none runs)",
            }
        },
    )
    async def rebuild_events(who: Viewer, request: Request) -> StreamingResponse:
        """The console's rebuild, live."""

        async def stream() -> AsyncIterator[bytes]:
            sent, beat = "", time.monotonic()
            while True:
                current = admin.runner.current
                data = json.dumps(None if current is None else current.to_json())
                if data != sent:
                    yield sse("progress", data)
                    sent, beat = data, time.monotonic()
                elif time.monotonic() - beat > STREAM_HEARTBEAT_S:
                    yield b": heartbeat\n\n"
                    beat = time.monotonic()
                if current is None or current.state != "running":
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(PROGRESS_POLL_S)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @router.delete("/rebuilds/current", responses=action_errors, description=ACTION_HELP)
    async def abort_rebuild(who: Actor, request: Request, response: Response) -> dict[str, Any]:
        """Abort the rebuild in progress: the console's own (cancelled), else any other
        (``eventfold replay --abort``: the version being built is dropped, and the
        rebuild that wrote it fails at its switch); nothing switches."""
        from projections.replay import abort

        correlation = correlation_id(request)
        _answered(response, correlation)
        if admin.runner.abort():
            current = admin.runner.current
            log_action(who, correlation, "abort", f"console rebuild {current and current.id}")
            await asyncio.to_thread(admin.runner.wait_stopped, 30.0)
            return {"aborted": current and current.projections}
        aborted = await abort(stores)
        versions = stores.projection_versions()
        for name, version in (await versions.building()).items():
            await versions.abandon(name, version)
            aborted.append(f"{name} {version}")
        log_action(who, correlation, "abort", ", ".join(aborted) or "nothing in progress")
        return {"aborted": aborted}

    @router.delete(
        "/versions/{version}",
        responses={**action_errors, 404: {"model": Problem}},
        description=ACTION_HELP,
    )
    async def drop_version(
        version: Annotated[str, Path(pattern=r"^v[0-9]{1,9}$")],
        who: Actor,
        request: Request,
        response: Response,
    ) -> dict[str, Any]:
        """Drop a retired version of the core read models now, before its grace period
        is over (``eventfold drop VERSION``). 404 when no retired version has that name
        (an active or building one is never dropped)."""
        correlation = correlation_id(request)
        _answered(response, correlation)
        meta = await stores.read_meta()
        if not any(str(r["version"]) == version for r in meta.retired):
            raise HTTPException(404, f"no retired version {version}")
        dropped = await stores.drop_retired(version=version)
        log_action(who, correlation, "drop", ", ".join(dropped))
        return {"dropped": dropped}

    @router.get("/metrics")
    async def metrics(who: Viewer) -> dict[str, Any]:
        """The samples of the last hour (``query_api.admin_metrics``): lag per
        partition of the source and internal topics, events/s in and out, freshness,
        this instance's HTTP latency."""
        admin.sampler.ensure_started()
        if not admin.sampler.samples:
            await admin.sampler.first_sample(3.0)
        return {
            "interval_s": admin.sampler.interval_s,
            "samples": [s.to_json() for s in admin.sampler.samples],
        }

    @router.get("/dead-letters", responses=unavailable)
    async def dead_letters(
        who: Viewer,
        topic: DlqTopic | None = None,
        projection: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,63}$")] = None,
        state: Literal["pending", "redriven", "all"] = "pending",
        limit: Annotated[int, Query(ge=1, le=MAX_LETTERS)] = 1000,
    ) -> dict[str, Any]:
        """Dead letters (``eventfold dlq list``): decoded content, error, origin, and
        whether they were re-driven; ``state=pending`` (the default): those not
        re-driven yet. ``projection=join``: those the processor's join dead-lettered."""
        from stream_processors.dlq_admin import list_dead_letters

        topics = (topic,) if topic else DEAD_LETTER_SOURCES
        with kafka_answers("the dead letters"):
            views = await list_dead_letters(settings, topics, limit=None)
        chosen = [
            v
            for v in views
            if (projection is None or (v.projection or "join") == projection)
            and (state == "all" or v.redriven == (state == "redriven"))
        ]
        return {
            "items": [v.to_json() for v in chosen[:limit]],
            "total": len(chosen),
            "pending": sum(not v.redriven for v in views),
        }

    @router.get(
        "/dead-letters/{topic}/{partition}/{offset}",
        responses={404: {"model": Problem}, **unavailable},
    )
    async def dead_letter(
        topic: DlqTopic,
        partition: Annotated[int, Path(ge=0, le=999_999)],
        offset: Annotated[int, Path(ge=0, le=2**63 - 1)],
        who: Viewer,
    ) -> dict[str, Any]:
        """One dead letter with its history: the earlier dead letters it was re-driven
        from, and the later ones its re-drives became (when the processor refused it
        again)."""
        from stream_processors.dlq_admin import dead_letter_ref, list_dead_letters

        with kafka_answers("the dead letters"):
            views = {v.ref: v for v in await list_dead_letters(settings, (topic,))}
        ref = dead_letter_ref(topic, partition, offset)
        letter = views.get(ref)
        if letter is None:
            raise HTTPException(404, f"no dead letter {ref}")
        return {**letter.to_json(), "history": letter_history(letter, views)}

    @router.post(
        "/dead-letters/redrive",
        responses={**action_errors, 503: {"model": Problem}},
        description=ACTION_HELP,
    )
    async def redrive_letters(
        body: RedriveRequest, who: Actor, request: Request, response: Response
    ) -> dict[str, Any]:
        """Re-drive the named dead letters to their original topics, once each
        (``eventfold dlq redrive``, with an offset selection). 503 when Kafka failed
        before any was re-driven."""
        from stream_processors.dlq_admin import redrive

        correlation = correlation_id(request)
        _answered(response, correlation)
        chosen: dict[str, set[tuple[int, int]]] = {}
        for ref in dict.fromkeys(body.letters):
            topic, partition, offset = ref.split(":")
            if topic not in DLQ_TOPICS:
                raise invalid_parameter("body", "letters", f"unknown topic {topic}")
            chosen.setdefault(topic, set()).add((int(partition), int(offset)))
        redriven: list[str] = []
        not_found: list[str] = []
        already = 0
        error = None
        for topic, offsets in chosen.items():
            result = await redrive(settings, topic=topic, only_offsets=offsets)
            redriven += [r.ref for r in result.redriven]
            not_found += result.not_found
            already += result.already_redriven
            error = error or result.error
        log_action(
            who,
            correlation,
            "redrive",
            f"{', '.join(redriven) or 'none'}" + (f"; Kafka failed: {error}" if error else ""),
        )
        if error and not redriven:
            raise HTTPException(503, f"Kafka failed: {error}")
        return {
            "redriven": redriven,
            "already_redriven": already,
            "not_found": not_found,
            "error": error,
        }

    @router.get("/orders/{order_id}", responses={404: {"model": Problem}, **unavailable})
    async def order(order_id: Id, who: Viewer) -> dict[str, Any]:
        """An order as the active read models hold it: its view (as
        ``GET /v1/orders/{order_id}``), its timeline, and the Kafka records of its
        events (topic, partition, offset, headers, decoded content)."""
        with kafka_answers("the order's records"):
            found = await order_detail(settings, await stores.active(), order_id)
        if found is None:
            raise HTTPException(404, f"order {order_id!r} not found")
        return found

    return router
