"""Query API: the read side over HTTP (``/v1``), served from the active read-model version."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from eventfold.auth import require_scope
from eventfold.consistency import InvalidConsistencyToken, decode_token
from eventfold.settings import Settings
from eventfold.topics import LastOffsets
from projections.money import format_money, from_units
from projections.read_models import ReadModels, Stores
from query_api.consistency import wait_for_positions
from query_api.live import order_changes
from query_api.models import (
    CustomerView,
    OrderPage,
    OrderView,
    Problem,
    RevenueEntry,
    Stats,
    TopCustomer,
    TopCustomers,
)

Status = Literal["pending", "placed", "paid", "shipped", "delivered", "cancelled", "refunded"]
Id = Annotated[str, Path(min_length=1, max_length=128)]
ORDER_FIELDS = {k: 1 for k in OrderView.model_fields}


class NotYetConsistent(Exception):
    def __init__(self, missing: list[str]) -> None:
        self.missing = missing


def _encode_cursor(placed_at: str, order_id: str) -> str:
    raw = json.dumps([placed_at, order_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _invalid(where: str, name: str, msg: str) -> HTTPException:
    """A 422 with the documented body: FastAPI's validation-error list."""
    return HTTPException(422, [{"loc": [where, name], "msg": msg, "type": "value_error"}])


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        placed_at, order_id = value
        if not isinstance(placed_at, str) or not isinstance(order_id, str):
            raise TypeError
        return placed_at, order_id
    except (binascii.Error, ValueError, TypeError):
        raise _invalid("query", "cursor",
                       "invalid cursor: pass next_cursor from a previous page") from None


async def active_models(
    request: Request,
    x_consistency_token: Annotated[str | None, Header()] = None,
    consistency_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> ReadModels:
    """The active read models, once they applied the caller's token (if any)."""
    stores: Stores = request.app.state.stores
    active = await stores.active()
    token = x_consistency_token or consistency_token
    if token:
        try:
            positions = decode_token(token)
        except InvalidConsistencyToken as exc:
            where = (("header", "x-consistency-token") if x_consistency_token
                     else ("query", "consistency_token"))
            raise _invalid(*where, str(exc)) from None
        missing = await wait_for_positions(
            active, positions, stores.settings.consistency_timeout_s,
            request.app.state.last_offsets,
        )
        if missing:
            raise NotYetConsistent(missing)
    return active


Models = Annotated[ReadModels, Depends(active_models)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    stores = Stores(settings)
    registry = CollectorRegistry()
    requests = Counter("eventfold_query_requests", "Query requests", ["endpoint", "source"],
                       registry=registry)

    last_offsets = LastOffsets(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await last_offsets.close()
        await stores.close()

    app = FastAPI(title="Eventfold query API", version="1", lifespan=lifespan)
    app.state.stores = stores
    app.state.last_offsets = last_offsets

    @app.exception_handler(NotYetConsistent)
    async def not_yet(_: Any, exc: NotYetConsistent) -> JSONResponse:
        return JSONResponse(
            {"detail": "the read models have not applied the consistency token yet "
                       f"(behind on {', '.join(exc.missing)}); retry later",
             "missing": exc.missing},
            status_code=409, headers={"Retry-After": "1"},
        )

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem},
        409: {"model": Problem},
    }
    v1 = APIRouter(prefix="/v1", responses=errors,
                   dependencies=[Depends(require_scope(settings, "read"))])

    @v1.get("/orders/{order_id}", response_model=OrderView)
    async def get_order(order_id: Id, m: Models) -> Any:
        cached = await m.redis.hget(m.key(f"order:{order_id}"), "view")
        if cached is not None:
            view = json.loads(cached)
            requests.labels("order", "redis").inc()
        else:
            view = await m.orders.find_one({"_id": order_id}, projection=ORDER_FIELDS)
            requests.labels("order", "mongo").inc()
        if view is None or view.get("status") == "pending":
            raise HTTPException(404, f"order {order_id!r} not found")
        return view

    @v1.get("/orders/{order_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Server-Sent Events: `event: order`, `data:` the "
                                            "order view (as GET /v1/orders/{order_id}), "
                                            "first the current one, then each change"}})
    async def order_events(order_id: Id, request: Request) -> StreamingResponse:
        """Live updates of one order as Server-Sent Events."""
        return StreamingResponse(
            order_changes(order_id, stores.active, request.is_disconnected),
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
            conditions.append({"$or": [{"placed_at": {"$lt": placed_at}},
                                       {"placed_at": placed_at, "_id": {"$lt": order_id}}]})
        docs = await m.orders.find(
            {"$and": conditions}, projection=ORDER_FIELDS,
            sort=[("placed_at", -1), ("_id", -1)], limit=limit + 1,
        ).to_list(None)
        requests.labels("orders", "mongo").inc()
        next_cursor = None
        if len(docs) > limit:
            last = docs[limit - 1]
            next_cursor = _encode_cursor(last["placed_at"], last["order_id"])
        return {"items": docs[:limit], "next_cursor": next_cursor}

    @v1.get("/customers/top", response_model=TopCustomers)
    async def top_customers(
        m: Models,
        currency: Annotated[str, Query(pattern="^[A-Z]{3}$")] = "EUR",
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> Any:
        ranked = [(cid, score) for cid, score in await m.ranking(f"top:{currency}", limit)
                  if score > 0]
        names = {
            d["_id"]: d.get("name")
            async for d in m.customers.find({"_id": {"$in": [c for c, _ in ranked]}},
                                            projection={"name": 1})
        }
        return {"items": [
            TopCustomer(customer_id=cid, name=names.get(cid),
                        lifetime_value=format_money(from_units(int(score))))
            for cid, score in ranked
        ], "next_cursor": None}

    @v1.get("/customers/{customer_id}", response_model=CustomerView)
    async def get_customer(customer_id: Id, m: Models) -> Any:
        doc = await m.customers.find_one({"_id": customer_id})
        if doc is None:
            raise HTTPException(404, f"customer {customer_id!r} not found")
        return doc

    @v1.get("/stats", response_model=Stats)
    async def stats(m: Models) -> Any:
        counts = await m.hash("status_counts")
        revenue = await m.hash("revenue")
        entries = []
        for key, units in sorted(revenue.items()):
            day, currency = key.split("|", 1)
            if int(units):
                entries.append(RevenueEntry(day=day, currency=currency,
                                            amount=format_money(from_units(int(units)))))
        return Stats(
            orders_by_status={s: int(n) for s, n in sorted(counts.items())
                              if int(n) and s != "pending"},
            revenue=entries,
        )

    app.include_router(v1)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        await stores.redis.ping()
        await stores.db.command("ping")
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
