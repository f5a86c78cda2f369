"""Query API: the read side over HTTP (``/v1``), served from the active read-model version.

The active versions are kept in memory (``query_api.versions``): a request reads
the meta stamp with its data instead of the meta document from MongoDB.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.types import Receive, Scope, Send

from eventfold.auth import READ, require_scope
from eventfold.consistency import Runs, highest
from eventfold.settings import Settings
from eventfold.topics import LastOffsets
from projections.money import format_money, from_units
from projections.read_models import ORDER_PROJECTION, ReadModels, Stores, order_view_of
from query_api.admin_metrics import STARTED_AT, latency_histogram
from query_api.capacity import RETRY_AFTER_S, Capacity, OverCapacity
from query_api.consistency import (
    DeadLettered,
    NotYetConsistent,
    TokenHeader,
    TokenQuery,
    await_applied,
    token_runs,
    wait_for_positions,
)
from query_api.live import ChangeHub, order_changes
from query_api.models import (
    CustomerView,
    OrderPage,
    OrderView,
    Problem,
    RevenueEntry,
    Stats,
    TopCustomer,
    TopCustomers,
    invalid_parameter,
    public_order,
)
from query_api.operations import mount_operations
from query_api.projections import Token, projection_routes
from query_api.versions import Active, ActiveVersions

Status = Literal["pending", "placed", "paid", "shipped", "delivered", "cancelled", "refunded"]
Id = Annotated[str, Path(min_length=1, max_length=128)]
ORDER_FIELDS = list(ORDER_PROJECTION)
"""What to read of an order document for its view (``read_models.order_view_of``)."""
ORDERS_PATH = "/v1/orders/"
MET = "eventfold.met"
"""Scope key: what the app's shortcut (``QueryAPI``) met reading an order (an exception,
such as the 404): the route raises it again, so the whole stack answers it as it answers
any exception of the endpoint (handlers, error pages, telemetry), without a second read."""
Shortcut = Callable[[Scope, Receive, Send], Awaitable[bool]]


def _encode_cursor(placed_at: str, order_id: str) -> str:
    raw = json.dumps([placed_at, order_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        placed_at, order_id = value
        if not isinstance(placed_at, str) or not isinstance(order_id, str):
            raise TypeError
        return placed_at, order_id
    except (binascii.Error, ValueError, TypeError):
        raise invalid_parameter(
            "query", "cursor", "invalid cursor: pass next_cursor from a previous page"
        ) from None


@dataclass(frozen=True)
class Reading:
    """What a request reads: the active versions (after the caller's token, if any)."""

    active: Active
    positions: Runs | None  # of the token read with
    deadline: float  # of the token's wait

    @property
    def models(self) -> ReadModels:
        return self.active.models


async def consistent(request: Request, runs: Runs, deadline: float) -> Active:
    """The active versions once they applied the token's records (``runs``): looked up
    again at each poll, so a switch during the wait is followed. A token covering a
    record the processors dead-lettered is answered with that (``DeadLettered``), before
    the wait and after it, never with data that lacks its write."""
    versions: ActiveVersions = request.app.state.versions
    stores: Stores = request.app.state.stores
    polled: list[Active] = []

    async def current() -> ReadModels:
        polled[:] = [await versions.current()]
        return polled[0].models

    async def applied() -> list[str]:
        return await wait_for_positions(
            current,
            highest(runs),
            max(0.0, deadline - time.monotonic()),
            request.app.state.last_offsets,
        )

    await await_applied(request, lambda: stores.dead_letters_in(runs), applied)
    return polled[0]


async def _reading(
    request: Request, x_consistency_token: str | None, consistency_token: str | None, checked: bool
) -> Reading:
    versions: ActiveVersions = request.app.state.versions
    stores: Stores = request.app.state.stores
    deadline = time.monotonic() + stores.settings.consistency_timeout_s
    runs = token_runs(x_consistency_token, consistency_token)
    if runs is None:
        active = await (versions.current() if checked else versions.cached())
        return Reading(active, None, deadline)
    return Reading(await consistent(request, runs, deadline), runs, deadline)


async def active_models(
    request: Request, x_consistency_token: TokenHeader = None, consistency_token: TokenQuery = None
) -> ReadModels:
    """The active read models (checked against the meta stamp), once they applied the
    caller's token (if any)."""
    return (await _reading(request, x_consistency_token, consistency_token, True)).models


async def cached_reading(
    request: Request, x_consistency_token: TokenHeader = None, consistency_token: TokenQuery = None
) -> Reading:
    """As ``active_models``, but without a token the versions in memory unchecked: for
    an endpoint reading the stamp in the same round trip as its data
    (``ActiveVersions.hget``)."""
    return await _reading(request, x_consistency_token, consistency_token, False)


async def core_models(request: Request, token: Token) -> ReadModels:
    """The core read models for a ``GET /v1/projections/orders`` or ``customers`` read:
    as ``active_models`` with the token the projection routes read."""
    if token.runs is None:
        return (await request.app.state.versions.current()).models
    return (await consistent(request, token.runs, token.deadline)).models


Models = Annotated[ReadModels, Depends(active_models)]
CachedReading = Annotated[Reading, Depends(cached_reading)]
FastPath = Callable[[Request], Awaitable[Response | None]]


def with_fast_path(fast: FastPath) -> type[APIRoute]:
    """A route class offering each request to ``fast`` first, and to the declared
    endpoint (FastAPI's dependencies and validation) when ``fast`` returns None. The
    route, and so the OpenAPI document, stays as declared."""

    class FastPathRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            declared = super().get_route_handler()

            async def handler(request: Request) -> Response:
                answer = await fast(request)
                return answer if answer is not None else await declared(request)

            return handler

    return FastPathRoute


class QueryAPI(FastAPI):
    """FastAPI offering each request to ``shortcut`` before its middleware stack.

    The order by id is the hot query. Through the stack (server errors, telemetry, body
    limit, the latency middleware, exception handling, the exit stack, the routers' path
    matching, the route) it cost about 40 us of CPU more per request than without it
    (the app called in process: 155 us against 115 us; the whole hello-world request
    takes 50 us). ``shortcut`` answers the plain requests itself (True) and leaves every
    other request to the stack (False)."""

    shortcut: Shortcut | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        shortcut = self.shortcut
        if shortcut is None or not await shortcut(scope, receive, send):
            await super().__call__(scope, receive, send)

    def telemetry_on(self) -> bool:
        """Whether FastAPI's own OpenTelemetry instrumentation records requests (a
        tracer, meter or logger provider is configured): then every request goes
        through it, so none is missing from the traces and metrics."""
        telemetry = getattr(self, "_native_telemetry", None)
        return telemetry is not None and bool(telemetry.enabled())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    stores = Stores(settings)
    versions = ActiveVersions(stores)
    registry = CollectorRegistry()
    requests = Counter(
        "eventfold_query_requests", "Query requests", ["endpoint", "source"], registry=registry
    )

    last_offsets = LastOffsets(settings)
    hub = ChangeHub(stores.redis)
    streams = Capacity("live streams", settings.max_streams, "eventfold_query_streams", registry)
    waits = Capacity(
        "consistency waits",
        settings.max_consistency_waits,
        "eventfold_query_consistency_waits",
        registry,
    )
    Gauge(
        "eventfold_query_redis_connections_limit",
        "Redis connections this instance opens at most (redis_max_connections)",
        registry=registry,
    ).set(settings.redis_max_connections)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.console_history:
            operations.sampler.ensure_started()  # the console's charts show the last hour
        yield
        await operations.close()  # the console's rebuild and chart sampler
        await hub.close()
        await last_offsets.close()
        await stores.close()

    app = QueryAPI(title="Eventfold query API", version="1", lifespan=lifespan)
    app.state.stores = stores
    app.state.versions = versions
    app.state.last_offsets = last_offsets
    app.state.waits = waits

    @app.exception_handler(OverCapacity)
    async def over_capacity(_: Any, exc: OverCapacity) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc)}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)}
        )

    @app.exception_handler(NotYetConsistent)
    async def not_yet(_: Any, exc: NotYetConsistent) -> JSONResponse:
        return JSONResponse(
            {
                "detail": "the read models have not applied the consistency token yet "
                f"(behind on {', '.join(exc.missing)}); retry later",
                "missing": exc.missing,
            },
            status_code=409,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(DeadLettered)
    async def dead_lettered(_: Any, exc: DeadLettered) -> JSONResponse:
        return JSONResponse(
            {
                "detail": f"the consistency token covers {len(exc.letters)} dead-lettered "
                f"record(s), whose writes the read models do not have: {'; '.join(exc.letters)} "
                "('eventfold dlq list' shows them; a re-driven record is a new record, read "
                "it with the token of its re-drive)",
                "dead_letters": exc.letters,
            },
            status_code=409,
        )

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem},
        403: {"model": Problem},
        404: {"model": Problem},
        409: {"model": Problem},
    }
    v1 = APIRouter(
        prefix="/v1", responses=errors, dependencies=[Depends(require_scope(settings, READ))]
    )

    from_redis = requests.labels("order", "redis")
    from_mongo = requests.labels("order", "mongo")
    authorize = require_scope(settings, READ)

    async def read_order(order_id: str, reading: Reading, request: Request) -> Response:
        def key(models: ReadModels) -> str:
            return models.order_key(order_id)

        active, cached = await versions.hget(reading.active, key, "view")
        if active is not reading.active and reading.positions is not None:
            # Switched meanwhile: the new versions must have applied the token too.
            active = await consistent(request, reading.positions, reading.deadline)
            active, cached = await versions.hget(active, key, "view")
        if cached is not None:
            from_redis.inc()
            view = public_order(cached)
            if view.get("status") != "pending":
                # Stored as JSON already: parsed and written by orjson, not validated.
                return Response(orjson.dumps(view), media_type="application/json")
        else:
            from_mongo.inc()
            doc = await active.models.orders.find_one({"_id": order_id}, projection=ORDER_FIELDS)
            if doc is not None and doc.get("status") != "pending":
                return Response(
                    OrderView.model_validate(order_view_of(doc)).model_dump_json(),
                    media_type="application/json",
                )
        raise HTTPException(404, f"order {order_id!r} not found")

    async def get_order(order_id: Id, reading: CachedReading, request: Request) -> Response:
        return await read_order(order_id, reading, request)

    async def get_order_fast(request: Request) -> Response | None:
        """The common ``GET /v1/orders/{order_id}`` (no consistency token, a key that
        is accepted, a valid id) answered without FastAPI's parameter handling, which
        costs about 100 us of CPU for this route's six parameters and two dependencies
        (measured with wrk: more than everything else the request does). None for any
        other request: the declared endpoint answers it, with its validation and
        errors. What the app's shortcut met (``MET``) is raised here."""
        met = request.scope.pop(MET, None)
        if met is not None:
            raise met
        headers = request.headers
        order_id: str = request.path_params["order_id"]
        if (
            "x-consistency-token" in headers
            or "consistency_token" in request.query_params
            or not 1 <= len(order_id) <= 128
        ):
            return None
        try:
            await authorize(
                x_api_key=headers.get("x-api-key"), authorization=headers.get("authorization")
            )
        except HTTPException:
            return None
        return await read_order(order_id, Reading(await versions.cached(), None, 0.0), request)

    histogram = latency_histogram(registry)

    async def order_shortcut(scope: Scope, receive: Receive, send: Send) -> bool:
        """``get_order_fast`` before the middleware stack, for the plainest requests:
        ``GET /v1/orders/{order_id}`` (the route's path, matched as Starlette matches
        it), no query string, no consistency token, an accepted key, no root path, and
        FastAPI's telemetry off. The latency histogram observes it as the latency
        middleware would. An exception (the 404 too) is not answered here: the request
        goes through the stack, whose route raises it (``MET``)."""
        if scope["type"] != "http" or scope["method"] != "GET":
            return False
        if len(app.user_middleware) != middleware_at_start or app.dependency_overrides:
            return False  # the app was changed after it was made: the stack answers all
        path: str = scope["path"]
        order_id = path[len(ORDERS_PATH) :]
        if (
            not path.startswith(ORDERS_PATH)
            or not 1 <= len(order_id) <= 128
            or "/" in order_id
            or scope["query_string"]
            or scope.get("root_path")
            or app.root_path
        ):
            return False
        started = time.perf_counter()
        api_key = authorization = None
        for name, value in scope["headers"]:
            if name == b"x-consistency-token":
                return False
            if name == b"x-api-key" and api_key is None:  # the first, as Headers.get
                api_key = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        if app.telemetry_on():
            return False
        try:
            await authorize(x_api_key=api_key, authorization=authorization)
        except HTTPException:
            return False  # the stack answers 401 or 403
        try:
            request = Request(scope, receive)
            answer = await read_order(
                order_id, Reading(await versions.cached(), None, 0.0), request
            )
        except Exception as exc:
            scope[MET] = exc
            scope[STARTED_AT] = started
            return False
        histogram.observe(time.perf_counter() - started)
        await answer(scope, receive, send)
        return True

    v1.add_api_route(
        "/orders/{order_id}",
        get_order,
        methods=["GET"],
        response_model=OrderView,
        route_class_override=with_fast_path(get_order_fast),
    )

    @v1.get(
        "/orders/{order_id}/events",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "Server-Sent Events: `event: order`, `data:` the "
                "order view (as GET /v1/orders/{order_id}), "
                "first the current one, then each change",
            }
        },
    )
    async def order_events(order_id: Id, request: Request) -> StreamingResponse:
        """Live updates of one order as Server-Sent Events (503 past the instance's cap
        of open streams, ``EVENTFOLD_MAX_STREAMS``)."""
        place = streams.reserve()  # 503 past the cap; counted from now

        async def held() -> AsyncIterator[bytes]:
            try:
                # closed with this body, so the stream leaves the hub at once
                async with aclosing(
                    order_changes(order_id, versions.models, request.is_disconnected, hub)
                ) as changes:
                    async for chunk in changes:
                        yield chunk
            finally:
                place.release()

        body = held()
        # a body that never runs (the client left before the headers were sent) gives
        # its place back when it is collected
        weakref.finalize(body, place.release)
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @v1.get("/orders", response_model=OrderPage)
    async def list_orders(
        m: Models,
        customer_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, Query(max_length=1024)] = None,
    ) -> Any:
        """Newest first (placed_at, then order_id): stable under concurrent inserts."""
        conditions: list[dict[str, Any]] = [{"placed": True}]
        if customer_id is not None:
            conditions.append({"customer_id": customer_id})
        if status is not None:
            conditions.append({"status": status})
        if cursor is not None:
            placed_at, order_id = _decode_cursor(cursor)
            conditions.append(
                {
                    "$or": [
                        {"placed_at": {"$lt": placed_at}},
                        {"placed_at": placed_at, "_id": {"$lt": order_id}},
                    ]
                }
            )
        docs = await m.orders.find(
            {"$and": conditions},
            projection=ORDER_FIELDS,
            sort=[("placed_at", -1), ("_id", -1)],
            limit=limit + 1,
        ).to_list(None)
        requests.labels("orders", "mongo").inc()
        next_cursor = None
        if len(docs) > limit:
            last = docs[limit - 1]
            next_cursor = _encode_cursor(last["placed_at"], last["order_id"])
        return {"items": [order_view_of(d) for d in docs[:limit]], "next_cursor": next_cursor}

    @v1.get("/customers/top", response_model=TopCustomers)
    async def top_customers(
        m: Models,
        currency: Annotated[str, Query(pattern="^[A-Z]{3}$")] = "EUR",
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> Any:
        ranked = [(cid, score) for cid, score in await m.top(currency, limit) if score > 0]
        names = {
            d["_id"]: d.get("name")
            async for d in m.customers.find(
                {"_id": {"$in": [c for c, _ in ranked]}}, projection={"name": 1}
            )
        }
        return {
            "items": [
                TopCustomer(
                    customer_id=cid,
                    name=names.get(cid),
                    lifetime_value=format_money(from_units(int(score))),
                )
                for cid, score in ranked
            ],
            "next_cursor": None,
        }

    @v1.get("/customers/{customer_id}", response_model=CustomerView)
    async def get_customer(customer_id: Id, m: Models) -> Any:
        doc = await m.customers.find_one({"_id": customer_id})
        if doc is None:
            raise HTTPException(404, f"customer {customer_id!r} not found")
        return doc

    @v1.get("/stats", response_model=Stats)
    async def stats(m: Models) -> Any:
        counts = await m.status_counts()
        revenue = await m.revenue()
        entries = []
        for key, units in sorted(revenue.items()):
            day, currency = key.split("|", 1)
            if units:
                entries.append(
                    RevenueEntry(day=day, currency=currency, amount=format_money(from_units(units)))
                )
        return Stats(
            orders_by_status={s: n for s, n in sorted(counts.items()) if n and s != "pending"},
            revenue=entries,
        )

    v1.include_router(projection_routes(stores, core=core_models))
    app.include_router(v1)
    # the operations console (/console) and its admin API (/v1/admin)
    operations = mount_operations(app, settings, stores, histogram)
    app.shortcut = order_shortcut
    middleware_at_start = len(app.user_middleware)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        await stores.redis.ping()
        await stores.db.command("ping")
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
