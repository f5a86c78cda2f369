"""Projections over HTTP (under ``/v1``): each enabled projection's rows or views, its
rankings, and reports of the built-in ones (a SKU's sales per day, payment-method
health per hour).

Everything is read from the projection's active version (``projections.projection_store``).
A read carrying a consistency token first waits until that version's marks reach the
token's positions in the topics the projection reads; the token's other topics are
none of its business (a projection of orders does not wait for customers). The active
version is looked up again at each poll, so a wait spanning a rebuild's switch is
answered from the version switched to. The answers to a token (422 not a token, 409 not
applied in time or dead-lettered, 503 too many waits) are the query API's own
(``query_api.api``).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from eventfold.consistency import Positions, Runs, highest
from projections.api import GROUP_SEPARATOR, INT64, Documents, Projection, group_key
from projections.builtin.core import JOINED, customers, orders
from projections.builtin.payment_methods import MEASURES, payment_methods
from projections.builtin.sku_sales import ORDERS, REVENUE_PREFIX, UNITS, sku_sales
from projections.money import format_money, from_units
from projections.projection_store import FIRST_VERSION, RedisProjectionStore
from projections.read_models import ReadModels, Stores
from projections.registry import enabled
from projections.view_documents import MongoViewDocuments, ViewDocuments
from query_api.consistency import (
    POLL_INTERVAL_S,
    TokenHeader,
    TokenQuery,
    await_applied,
    missing_positions,
    token_runs,
)
from query_api.models import (
    ORDER_VIEW_FIELDS,
    CustomerView,
    PaymentMethodHealth,
    PaymentMethodHour,
    PaymentMethods,
    PaymentOutcomes,
    ProjectionDocument,
    ProjectionDocuments,
    ProjectionInfo,
    ProjectionKind,
    ProjectionList,
    ProjectionRanking,
    ProjectionRead,
    RankedGroup,
    SkuSales,
    SkuSalesDay,
    SkuSalesFigures,
    invalid_parameter,
)

MAX_DAYS = 366
DEFAULT_DAYS = 30
MAX_HOURS = 31 * 24
DEFAULT_HOURS = 24
HOUR_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}$"
HOUR_FORMAT = "%Y-%m-%dT%H"

TOKEN_DOC = (
    " With a consistency token (`X-Consistency-Token` header or `consistency_token` "
    "parameter), the answer waits (at most `EVENTFOLD_CONSISTENCY_TIMEOUT_S`) until the "
    "projection applied the token's records of the topics it reads (its other topics "
    "are ignored): 409 when it has not by then, or when it dead-lettered one of them."
)
LIST_DOC = (
    "Every projection enabled on this instance (built-in and installed), with its "
    "active version: the core read models `orders` and `customers` (`core`: written by "
    "the processor's join) first. With a consistency token, each registered projection "
    "is waited for as a read of it would be, and the version listed is the one that "
    "applied the token; the core ones are listed with their active version (a read of "
    "them waits)."
)
CORE_DOC = (
    " `orders` and `customers` show what their own endpoints show (`GET "
    "/v1/orders/{order_id}`, `GET /v1/customers/{customer_id}`), and a token's read of "
    "them waits as those do (for every topic of the join)."
)
READ_DOC = (
    "One group's row of a `rows` projection (its measures summed over the entities, "
    "money in integer 1e-4 units), or one entity's view of a `view` projection. A "
    "composite group key joins its parts with `|` (`%7C` in the path): "
    "`SKU-1|2026-12-03`. 404 for a projection that is not enabled, a group without a "
    "row or an entity without a view." + TOKEN_DOC + CORE_DOC
)
RANKING_DOC = (
    "The groups of a `rows` projection with the highest values of one of the measures "
    "it ranks (`Projection.ranked`: the top customers by points), highest first. 404 "
    "for a projection that is not enabled; 422 for a measure it does not rank." + TOKEN_DOC
)
MAX_RANKED = 1000
MAX_DOCUMENTS = 200
PAGE_PARAMETERS = frozenset({"limit", "cursor", "consistency_token"})
DOCUMENTS_DOC = (
    "The views of a projection that keeps them as documents (`Projection.documents`), "
    "in entity key order, a page at a time. Every query parameter other than `limit`, "
    "`cursor` and `consistency_token` filters on a field of the documents: "
    "`?status=flagged&customer_id=c-1` lists those whose `status` is `flagged` and whose "
    "`customer_id` is `c-1`; a field given twice matches either value. A value is "
    "matched as the text given and, where it reads as one, as a number, a boolean "
    "(`true`, `false`) or null. 404 for a projection that is not enabled or keeps no "
    "documents; 422 for a field it does not filter on or a cursor not made here."
    + TOKEN_DOC
    + CORE_DOC
)
SKU_SALES_DOC = (
    "Units, orders and revenue (per currency, decimal strings) of a SKU per UTC day, "
    "from the `sku_sales` projection (orders cancelled or refunded are left out), and "
    "their totals. The range is inclusive: `to` defaults to today (UTC), `from` to 29 "
    f"days before `to` (30 days); at most {MAX_DAYS} days. Days without sales are left "
    "out of `days`. 404 when `sku_sales` is not enabled." + TOKEN_DOC
)
PAYMENT_METHODS_DOC = (
    "Authorized, captured, failed and refunded payments per method per UTC hour, from "
    "the `payment_methods` projection, with each hour's and each method's "
    "`failure_rate` = failed / (captured + failed). The range is inclusive: `to` "
    "defaults to the current hour (UTC), `from` to 23 hours before `to` (24 hours); at "
    f"most {MAX_HOURS} hours (31 days). Hours without outcomes are left out. 404 when "
    "`payment_methods` is not enabled." + TOKEN_DOC
)


@dataclass(frozen=True)
class Token:
    """The caller's consistency token (None without one) and when its wait gives up."""

    runs: Runs | None
    deadline: float


async def caller_token(
    request: Request, x_consistency_token: TokenHeader = None, consistency_token: TokenQuery = None
) -> Token:
    timeout_s: float = request.app.state.stores.settings.consistency_timeout_s
    return Token(token_runs(x_consistency_token, consistency_token), time.monotonic() + timeout_s)


CallerToken = Annotated[Token, Depends(caller_token)]
FromDay = Annotated[
    date | None, Query(alias="from", description="first day, YYYY-MM-DD (UTC), inclusive")
]
ToDay = Annotated[date | None, Query(description="last day, YYYY-MM-DD (UTC), inclusive")]
FromHour = Annotated[
    str | None,
    Query(
        alias="from",
        pattern=HOUR_PATTERN,
        description="first hour, YYYY-MM-DDTHH (UTC), inclusive: 2026-12-03T10",
    ),
]
ToHour = Annotated[
    str | None,
    Query(pattern=HOUR_PATTERN, description="last hour, YYYY-MM-DDTHH (UTC), inclusive"),
]


def kind_of(projection: Projection) -> ProjectionKind:
    return "rows" if projection.rows is not None else "view"


CoreModels = Callable[[Request, Token], Awaitable[ReadModels]]
"""The core read models' active versions for a request, once they applied its token
(``query_api.api``: the same wait as ``GET /v1/orders/{order_id}``)."""


CORE_SHOWN: dict[str, tuple[str, ...]] = {
    orders.name: ORDER_VIEW_FIELDS,
    customers.name: tuple(CustomerView.model_fields),
}
"""What the projection endpoints show of the join's views, and list them by: the fields
their own endpoints answer with (``GET /v1/orders/{order_id}``, ``GET
/v1/customers/{customer_id}``). An order's ledger and a customer's email stay inside."""


def is_core(projection: Projection) -> bool:
    """Whether ``projection`` is one of the join's (its views in the core read models'
    documents), not a registered one (a name a registered projection cannot take)."""
    return projection.name in CORE_SHOWN


class ProjectionReads:
    """The enabled projections of one app, and the version of each a request reads.
    With ``core``, the join's definitions too (``projections.builtin.core``: orders and
    customers), read from their documents in the versions ``core`` gives."""

    def __init__(
        self,
        stores: Stores,
        projections: Mapping[str, Projection],
        core: CoreModels | None = None,
    ) -> None:
        self.versions = stores.projection_versions()
        self.core = core
        joined = {d.name: d for d in JOINED} if core is not None else {}
        self.projections = {**joined, **dict(sorted(projections.items()))}

    def named(self, name: str) -> Projection:
        """The enabled projection ``name``; a 404 naming the enabled ones otherwise."""
        found = self.projections.get(name)
        if found is None:
            raise HTTPException(
                404,
                f"projection {name!r} is not enabled on this instance; enabled: "
                f"{', '.join(self.projections) or 'none'} (see GET /v1/projections)",
            )
        return found

    @staticmethod
    def listed_by(projection: Projection) -> tuple[str, ...] | None:
        """The fields a list of the projection's documents filters on (``[]``: any field
        of the view); None for one that keeps none."""
        shape = projection.documents
        if shape is None:
            return None
        if not is_core(projection):
            return shape.fields
        return tuple(f for f in CORE_SHOWN[projection.name] if shape.filters_on(f))

    @staticmethod
    def shown(projection: Projection, view: Mapping[str, Any]) -> dict[str, Any]:
        """What a read shows of an entity's view."""
        if not is_core(projection):
            return dict(view)
        return {k: view[k] for k in CORE_SHOWN[projection.name] if k in view}

    async def documents(
        self, request: Request, projection: Projection, token: Token
    ) -> tuple[str, ViewDocuments]:
        """The version of ``projection`` a request reads and its documents (the projection
        keeps them)."""
        shape = projection.documents
        assert shape is not None
        if is_core(projection):  # the join's: in the core read models' versions
            models = await self._core(request, token)
            collection = models.db[models.collection(projection.name)]
            return models.versions[projection.name], MongoViewDocuments(collection, shape)
        version = await self.version(request, projection, token)
        documents = self.versions.documents(projection, version)
        assert documents is not None
        return version, documents

    async def _core(self, request: Request, token: Token) -> ReadModels:
        assert self.core is not None  # a core projection is served only with it
        return await self.core(request, token)

    async def listed_version(
        self, request: Request, projection: Projection, token: Token, active: Mapping[str, str]
    ) -> str:
        """The version ``GET /v1/projections`` lists (``active``: the registered ones'
        without a token, read once for all)."""
        if is_core(projection):  # listed as active now: a read of it waits for the token
            now = await self._core(request, Token(None, token.deadline))
            return now.versions[projection.name]
        if token.runs is None:
            return active.get(projection.name, FIRST_VERSION)
        return await self.version(request, projection, token)

    async def version(self, request: Request, projection: Projection, token: Token) -> str:
        """The active version of ``projection``, once it applied the token's records of
        the topics it reads (``await_applied``: 409 if not in time or dead-lettered)."""
        name = projection.name
        runs = {t: parts for t, parts in (token.runs or {}).items() if t in projection.topics}
        if not runs:
            return await self.versions.active_of(name)
        reached: list[str] = []

        async def applied() -> list[str]:
            version, missing = await self._reach(name, highest(runs), token.deadline)
            reached.append(version)
            return missing

        await await_applied(request, lambda: self.versions.dead_letters_in(name, runs), applied)
        return reached[-1]

    async def store(
        self, request: Request, projection: Projection, token: Token
    ) -> RedisProjectionStore:
        return self.versions.store(projection.name, await self.version(request, projection, token))

    async def _reach(
        self, name: str, positions: Positions, deadline: float
    ) -> tuple[str, list[str]]:
        """The active version once its marks reach ``positions``, or at the deadline with
        the partitions still behind. Looked up at each poll: a rebuild may switch it."""
        while True:
            version = await self.versions.active_of(name)
            marks = await self.versions.store(name, version).marks()
            missing = missing_positions(positions, marks)
            if not missing or time.monotonic() >= deadline:
                return version, missing
            await asyncio.sleep(POLL_INTERVAL_S)


async def row_data(store: RedisProjectionStore, name: str, key: str) -> dict[str, Any]:
    (row,) = await store.rows([key])
    if not row:
        raise HTTPException(404, f"projection {name!r} has no row for group {key!r}")
    return dict(row)


async def view_data(store: RedisProjectionStore, name: str, key: str) -> dict[str, Any]:
    entity = (await store.load([key]))[key]
    view = None if entity is None else entity.doc["view"]
    if view is None:
        raise HTTPException(404, f"projection {name!r} has no view of {key!r}")
    return dict(view)


def filter_values(text: str) -> list[Any]:
    """What a query value matches: itself, and the JSON scalar it reads as (``12``,
    ``1.5``, ``true``, ``null``)."""
    values: list[Any] = [text]
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        return values
    if isinstance(parsed, int) and not isinstance(parsed, bool) and not -INT64 <= parsed < INT64:
        return values  # no document holds an integer beyond 64 bits
    if parsed is None or isinstance(parsed, bool | int | float):
        values.append(parsed)
    return values


def document_filters(
    request: Request, name: str, shape: Documents, only: Sequence[str] | None = None
) -> dict[str, list[Any]]:
    """The fields and values a documents list filters on, from the query's parameters;
    422 for one the documents do not filter on (``only``: those of them it may)."""
    filters: dict[str, list[Any]] = {}
    for field, text in request.query_params.multi_items():
        if field in PAGE_PARAMETERS:
            continue
        if not shape.filters_on(field) or (only is not None and field not in only):
            fields = ", ".join(shape.fields if only is None else only) or "a field of the view"
            raise invalid_parameter(
                "query", field, f"projection {name!r} lists its documents by: {fields}"
            )
        filters.setdefault(field, []).extend(filter_values(text))
    return filters


def encode_key_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_key_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
        if not key:
            raise ValueError("empty")
        return key
    except (ValueError, UnicodeDecodeError):
        raise invalid_parameter(
            "query", "cursor", "invalid cursor: pass next_cursor from a previous page"
        ) from None


def checked_range(first: str, last: str, count: int, limit: int, unit: str) -> None:
    """422 for a range (of ``count`` days or hours) ending before it starts, or longer
    than ``limit``."""
    if count < 1:
        raise invalid_parameter("query", "from", f"from ({first}) is after to ({last})")
    if count > limit:
        raise invalid_parameter(
            "query",
            "from",
            f"from {first} to {last} spans {count} {unit}; at most {limit}: narrow the range",
        )


def days_of(first: date | None, last: date | None) -> list[date]:
    """The days of the inclusive range asked for (see ``SKU_SALES_DOC`` for defaults;
    a default ``from`` before year 1 is year 1)."""
    last = last or datetime.now(UTC).date()
    first = first or last - min(timedelta(days=DEFAULT_DAYS - 1), last - date.min)
    count = (last - first).days + 1
    checked_range(first.isoformat(), last.isoformat(), count, MAX_DAYS, "days")
    return [first + timedelta(days=n) for n in range(count)]


def hour_of(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, HOUR_FORMAT)
    except ValueError:
        raise invalid_parameter(
            "query", name, f"{value!r} is not an hour: YYYY-MM-DDTHH (UTC), e.g. 2026-12-03T10"
        ) from None


def hours_of(first: str | None, last: str | None) -> tuple[str, str]:
    """The first and last hour (``YYYY-MM-DDTHH``) of the inclusive range asked for
    (see ``PAYMENT_METHODS_DOC`` for defaults)."""
    now = datetime.now(UTC).replace(tzinfo=None, minute=0, second=0, microsecond=0)
    end = hour_of(last, "to") or now
    start = hour_of(first, "from") or end - min(
        timedelta(hours=DEFAULT_HOURS - 1), end - datetime.min
    )
    # isoformat, not strftime: years below 1000 zero-padded too, so strings compare as hours
    first, last = start.isoformat(timespec="hours"), end.isoformat(timespec="hours")
    checked_range(first, last, (end - start) // timedelta(hours=1) + 1, MAX_HOURS, "hours")
    return first, last


def revenue_of(row: Mapping[str, int]) -> dict[str, int]:
    return {
        m.removeprefix(REVENUE_PREFIX): v for m, v in row.items() if m.startswith(REVENUE_PREFIX)
    }


def money(revenue: Mapping[str, int]) -> dict[str, str]:
    return {
        currency: format_money(from_units(units)) for currency, units in sorted(revenue.items())
    }


def sku_sales_of(
    sku: str, days: Sequence[date], rows: Sequence[Mapping[str, int]], version: str
) -> SkuSales:
    """The report of ``rows`` (one per day of ``days``; empty: no sales)."""
    listed = []
    units = orders = 0
    revenue: dict[str, int] = {}
    for day, row in zip(days, rows, strict=True):
        if not row:
            continue
        day_revenue = revenue_of(row)
        listed.append(
            SkuSalesDay(
                day=day.isoformat(),
                units=row.get(UNITS, 0),
                orders=row.get(ORDERS, 0),
                revenue=money(day_revenue),
            )
        )
        units += row.get(UNITS, 0)
        orders += row.get(ORDERS, 0)
        for currency, amount in day_revenue.items():
            revenue[currency] = revenue.get(currency, 0) + amount
    return SkuSales(
        sku=sku,
        from_day=days[0].isoformat(),
        to_day=days[-1].isoformat(),
        version=version,
        days=listed,
        totals=SkuSalesFigures(units=units, orders=orders, revenue=money(revenue)),
    )


def outcomes_of(row: Mapping[str, int]) -> dict[str, Any]:
    """A row's counts (an outcome absent is 0) and its failure rate."""
    counts: dict[str, Any] = {m: row.get(m, 0) for m in MEASURES}
    settled = counts["captured"] + counts["failed"]
    counts["failure_rate"] = counts["failed"] / settled if settled else None
    return counts


def in_hours(groups: Sequence[str], first: str, last: str) -> list[tuple[str, str, str]]:
    """(method, hour, group) of the groups ``method|hour`` within the inclusive range."""
    chosen = []
    for group in groups:
        method, separator, hour = group.rpartition(GROUP_SEPARATOR)
        if separator and first <= hour <= last:
            chosen.append((method, hour, group))
    return chosen


def method_health(
    chosen: Sequence[tuple[str, str, str]], rows: Sequence[Mapping[str, int]]
) -> list[PaymentMethodHealth]:
    """Per method (by name): its hours with outcomes (oldest first) and its totals."""
    hours: dict[str, list[PaymentMethodHour]] = {}
    totals: dict[str, dict[str, int]] = {}
    for (method, hour, _), row in sorted(zip(chosen, rows, strict=True)):
        if not row:
            continue
        hours.setdefault(method, []).append(PaymentMethodHour(hour=hour, **outcomes_of(row)))
        total = totals.setdefault(method, {})
        for measure in MEASURES:
            total[measure] = total.get(measure, 0) + row.get(measure, 0)
    return [
        PaymentMethodHealth(
            method=method, hours=listed, totals=PaymentOutcomes(**outcomes_of(totals[method]))
        )
        for method, listed in hours.items()
    ]


def projection_routes(
    stores: Stores,
    projections: Mapping[str, Projection] | None = None,
    core: CoreModels | None = None,
) -> APIRouter:
    """The routes, to include in the ``/v1`` router (its read scope applies). Serves
    ``projections``, by default those enabled by the settings (``projections.registry``),
    and with ``core`` the join's order and customer definitions, read from their
    documents (``GET /v1/projections/customers?tier=gold``)."""
    reads = ProjectionReads(
        stores, enabled(stores.settings) if projections is None else projections, core
    )
    router = APIRouter(tags=["projections"])

    @router.get(
        "/projections",
        response_model=ProjectionList,
        summary="The enabled projections",
        description=LIST_DOC,
    )
    async def list_projections(request: Request, token: CallerToken) -> ProjectionList:
        active = await reads.versions.active() if token.runs is None else {}
        items = []
        for name, projection in reads.projections.items():
            version = await reads.listed_version(request, projection, token, active)
            items.append(
                ProjectionInfo(
                    name=name,
                    kind=kind_of(projection),
                    core=is_core(projection),
                    description=projection.description,
                    consumes=list(projection.consumes),
                    topics=list(projection.topics),
                    version=version,
                    ranked=list(projection.ranked),
                    maxima=list(projection.maxima),
                    minima=list(projection.minima),
                    documents=None
                    if (listed := reads.listed_by(projection)) is None
                    else list(listed),
                )
            )
        return ProjectionList(items=items)

    @router.get(
        "/projections/{name}",
        response_model=ProjectionDocuments,
        summary="A projection's documents, filtered by their fields",
        description=DOCUMENTS_DOC,
    )
    async def list_documents(
        request: Request,
        name: str,
        token: CallerToken,
        limit: Annotated[int, Query(ge=1, le=MAX_DOCUMENTS)] = 50,
        cursor: Annotated[
            str | None, Query(max_length=1024, description="next_cursor of the page before")
        ] = None,
    ) -> ProjectionDocuments:
        projection = reads.named(name)
        shape = projection.documents
        if shape is None:
            raise HTTPException(
                404,
                f"projection {name!r} keeps no documents to list; read one entity at"
                f" /v1/projections/{name}/{{key}}",
            )
        only = reads.listed_by(projection) if is_core(projection) else None
        filters = document_filters(request, name, shape, only)
        after = None if cursor is None else decode_key_cursor(cursor)
        version, documents = await reads.documents(request, projection, token)
        found = await documents.find(filters, after, limit + 1)
        page = found[:limit]
        return ProjectionDocuments(
            projection=name,
            version=version,
            items=[ProjectionDocument(key=k, view=reads.shown(projection, v)) for k, v in page],
            next_cursor=encode_key_cursor(page[-1][0]) if len(found) > limit else None,
        )

    @router.get(
        "/projections/{name}/{key:path}",
        response_model=ProjectionRead,
        summary="A group's row or an entity's view",
        description=READ_DOC,
    )
    async def read_projection(
        request: Request,
        name: str,
        key: Annotated[str, Path(min_length=1, max_length=512)],
        token: CallerToken,
    ) -> ProjectionRead:
        projection = reads.named(name)
        if is_core(projection):  # the join's: its document's view
            version, documents = await reads.documents(request, projection, token)
            view = (await documents.views([key])).get(key)
            if view is None:
                raise HTTPException(404, f"projection {name!r} has no view of {key!r}")
            return ProjectionRead(
                projection=name,
                version=version,
                key=key,
                kind="view",
                data=reads.shown(projection, view),
            )
        store = await reads.store(request, projection, token)
        read = row_data if projection.rows is not None else view_data
        return ProjectionRead(
            projection=name,
            version=store.version,
            key=key,
            kind=kind_of(projection),
            data=await read(store, name, key),
        )

    @router.get(
        "/rankings/{name}/{measure:path}",
        response_model=ProjectionRanking,
        summary="The groups ranked by a measure",
        description=RANKING_DOC,
    )
    async def ranking(
        request: Request,
        name: str,
        measure: Annotated[str, Path(min_length=1, max_length=512)],
        token: CallerToken,
        limit: Annotated[int, Query(ge=1, le=MAX_RANKED)] = 10,
    ) -> ProjectionRanking:
        projection = reads.named(name)
        if not projection.ranks(measure):
            ranked = ", ".join(projection.ranked) or "none"
            raise invalid_parameter(
                "path",
                "measure",
                f"projection {name!r} does not rank {measure!r}; it ranks: {ranked}"
                f" (a name ranks that measure and each name{GROUP_SEPARATOR}...)",
            )
        store = await reads.store(request, projection, token)
        return ProjectionRanking(
            projection=name,
            version=store.version,
            measure=measure,
            items=[RankedGroup(group=g, value=v) for g, v in await store.top(measure, limit)],
        )

    @router.get(
        "/skus/{sku:path}/sales",
        response_model=SkuSales,
        summary="A SKU's sales per day",
        description=SKU_SALES_DOC,
    )
    async def sku_sales_report(
        request: Request,
        sku: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^|]+$")],
        token: CallerToken,
        from_: FromDay = None,
        to: ToDay = None,
    ) -> SkuSales:
        days = days_of(from_, to)
        store = await reads.store(request, reads.named(sku_sales.name), token)
        rows = await store.rows([group_key(sku, day.isoformat()) for day in days])
        return sku_sales_of(sku, days, rows, store.version)

    @router.get(
        "/payments/methods",
        response_model=PaymentMethods,
        summary="Payment-method health per hour",
        description=PAYMENT_METHODS_DOC,
    )
    async def payment_methods_report(
        request: Request,
        token: CallerToken,
        from_: FromHour = None,
        to: ToHour = None,
    ) -> PaymentMethods:
        first, last = hours_of(from_, to)
        store = await reads.store(request, reads.named(payment_methods.name), token)
        # The methods are not known beforehand: list the groups once, read the range's
        # rows in one pipeline (a few methods x at most 744 hours).
        chosen = in_hours(await store.groups(), first, last)
        rows = await store.rows([group for _, _, group in chosen])
        return PaymentMethods(
            from_hour=first,
            to_hour=last,
            version=store.version,
            methods=method_health(chosen, rows),
        )

    return router
