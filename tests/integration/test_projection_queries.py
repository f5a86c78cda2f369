"""The projections over HTTP (``query_api.projections``) against a real Redis: the
listing, a group's row and an entity's view, a SKU's sales per day and payment-method
health per hour, checked against sums computed here from the events; their 404s and
422s; and read-your-writes with a consistency token (waiting for the projection's
active version, a rebuild's switch followed, dead letters answered).

The projections' state is written the way the live worker writes it: events applied
through ``projections.applier.Applier`` to a version of each projection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib.metadata import EntryPoint
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import projections.registry as registry
from eventfold.consistency import encode_token, token_of
from eventfold.settings import Settings
from projections.api import JSON, Documents, Projection, Rows
from projections.applier import Applier
from projections.builtin.core import JOINED
from projections.builtin.payment_methods import payment_methods
from projections.builtin.sku_sales import sku_sales
from projections.money import to_units
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from projections.state import Positioned
from query_api.api import create_app
from query_api.projections import ProjectionReads
from schemas.catalog import TOPIC_OF_TYPE
from schemas.events import (
    Event,
    OrderCancelled,
    OrderCancelledData,
    OrderItem,
    OrderPlaced,
    OrderPlacedData,
    PaymentAuthorized,
    PaymentAuthorizedData,
    PaymentCaptured,
    PaymentCapturedData,
    PaymentFailed,
    PaymentFailedData,
    PaymentRefunded,
    PaymentRefundedData,
)
from tests.conftest import eventually

# --- a view projection of our own, registered as a package would register it -----------


def card_initial() -> JSON:
    return {"customer_id": None, "lines": 0, "cancelled": False}


def card_fold(state: dict[str, Any], event: Event) -> JSON:
    if isinstance(event, OrderPlaced):
        state.update(customer_id=event.data.customer_id, lines=len(event.data.items))
    elif isinstance(event, OrderCancelled):
        state["cancelled"] = True
    return state


def card_view(state: dict[str, Any]) -> dict[str, Any] | None:
    if state["customer_id"] is None:
        return None  # cancelled before it was placed: nothing to show yet
    return dict(state)


order_cards = Projection(
    name="order_cards",
    consumes=("OrderPlaced", "OrderCancelled"),
    initial=card_initial,
    fold=card_fold,
    view=card_view,
    documents=Documents(fields=("customer_id", "lines", "cancelled")),
    description="an order's customer and number of lines",
)


# --- a rows projection of our own whose groups are ranked --------------------------------


def lines_initial() -> JSON:
    return {"lines": [], "currency": None, "cancelled": False}


def lines_fold(state: dict[str, Any], event: Event) -> JSON:
    if isinstance(event, OrderPlaced):
        state["lines"] = [[i.sku, i.quantity, str(i.unit_price)] for i in event.data.items]
        state["currency"] = event.data.currency
    elif isinstance(event, OrderCancelled):
        state["cancelled"] = True
    return state


def lines_rows(state: dict[str, Any]) -> Rows:
    rows: dict[str, dict[str, int]] = {}
    if state["cancelled"]:
        return rows
    for sku, quantity, price in state["lines"]:
        row = rows.setdefault(sku, {})
        revenue = f"revenue|{state['currency']}"
        row["units"] = row.get("units", 0) + quantity
        row[revenue] = row.get(revenue, 0) + to_units(Decimal(price) * quantity)
        row["lines"] = row.get("lines", 0) + 1
        row["largest"] = max(row.get("largest", 0), quantity)
    return rows


sku_ranks = Projection(
    name="sku_ranks",
    consumes=("OrderPlaced", "OrderCancelled"),
    initial=lines_initial,
    fold=lines_fold,
    rows=lines_rows,
    ranked=("units", "revenue"),
    maxima=("largest",),
    description="units and revenue per SKU, ranked, and its largest line",
)
ENABLED = {p.name: p for p in (order_cards, payment_methods, sku_ranks, sku_sales)}


# --- the events ----------------------------------------------------------------------


def at(moment: str) -> datetime:
    return datetime.fromisoformat(moment).replace(tzinfo=UTC)


def ago(now: datetime, **delta: float) -> str:
    return (now - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M")


Line = tuple[str, int, str]  # sku, quantity, unit price

ORDERS: list[tuple[str, str, str, list[Line]]] = [
    ("o-1", "2026-03-01T10:00", "EUR", [("A-1", 2, "9.99"), ("B-2", 1, "5.00")]),
    ("o-2", "2026-03-01T23:30", "EUR", [("A-1", 1, "9.99")]),
    ("o-3", "2026-03-03T00:15", "USD", [("A-1", 3, "1.10")]),
    ("o-4", "2026-03-02T12:00", "EUR", [("A-1", 5, "2.00")]),  # cancelled
    ("o-5", "2026-02-27T12:00", "EUR", [("A-1", 1, "7.00")]),  # before the range asked
    ("o-6", "2026-03-03T08:00", "EUR", [("A-1", 1, "1.00"), ("A-1", 2, "1.25")]),
    ("o-7", "2026-03-01T09:00", "EUR", [("C/3", 4, "0.50")]),  # a SKU with a slash
]
CANCELLED = {"o-4"}
# payment id, method (None: never authorized), then (outcome, when) in the order published
PAYMENTS: list[tuple[str, str | None, list[tuple[str, str]]]] = [
    ("p-1", "card", [("authorized", "2026-03-01T10:05"), ("captured", "2026-03-01T10:20")]),
    ("p-2", "card", [("authorized", "2026-03-01T10:30"), ("failed", "2026-03-01T11:10")]),
    (
        "p-3",
        "paypal",
        [
            ("authorized", "2026-03-01T10:40"),
            ("captured", "2026-03-01T11:00"),
            ("refunded", "2026-03-01T15:00"),
        ],
    ),
    ("p-4", None, [("failed", "2026-03-01T11:30")]),
    ("p-5", "card", [("authorized", "2026-02-28T09:00"), ("captured", "2026-03-01T10:59")]),
    ("p-6", "card", [("authorized", "2026-03-02T00:00")]),
]


def placed(order_id: str, when: str, currency: str, lines: Sequence[Line]) -> OrderPlaced:
    items = [OrderItem(sku=s, quantity=q, unit_price=Decimal(p)) for s, q, p in lines]
    data = OrderPlacedData(order_id=order_id, customer_id="c-1", currency=currency, items=items)
    return OrderPlaced(occurred_at=at(when), data=data)


def cancelled(order_id: str, when: str) -> OrderCancelled:
    return OrderCancelled(occurred_at=at(when), data=OrderCancelledData(order_id=order_id))


def outcome(payment_id: str, method: str | None, kind: str, when: str) -> Event:
    ids: dict[str, Any] = {"payment_id": payment_id, "order_id": f"order-of-{payment_id}"}
    money: dict[str, Any] = {"amount": Decimal("10.00"), "currency": "EUR"}
    if kind == "authorized":
        data = PaymentAuthorizedData(**ids, **money, method=str(method))
        return PaymentAuthorized(occurred_at=at(when), data=data)
    if kind == "captured":
        return PaymentCaptured(occurred_at=at(when), data=PaymentCapturedData(**ids, **money))
    if kind == "refunded":
        return PaymentRefunded(occurred_at=at(when), data=PaymentRefundedData(**ids, **money))
    return PaymentFailed(occurred_at=at(when), data=PaymentFailedData(**ids, reason="declined"))


CARDS = {
    order_id: {"customer_id": "c-1", "lines": len(lines), "cancelled": order_id in CANCELLED}
    for order_id, _, _, lines in ORDERS
}
"""The view of each order of the seed in ``order_cards``."""


def seed_events() -> list[Event]:
    events: list[Event] = [placed(*order) for order in ORDERS]
    events += [cancelled(o, "2026-03-02T13:00") for o in sorted(CANCELLED)]
    for payment_id, method, outcomes in PAYMENTS:
        events += [outcome(payment_id, method, kind, when) for kind, when in outcomes]
    return events


# --- what the answers must be, computed from the tables above ------------------------


def two_places(amount: Decimal) -> str:
    return str(amount.quantize(Decimal("0.01")))  # every price above has two places


def expected_sales(sku: str, first: str, last: str) -> dict[str, Any]:
    days: dict[str, dict[str, Any]] = {}
    for order_id, when, currency, lines in ORDERS:
        day = when[:10]
        mine = [(q, Decimal(p)) for s, q, p in lines if s == sku]
        if order_id in CANCELLED or not mine or not first <= day <= last:
            continue
        entry = days.setdefault(day, {"units": 0, "orders": 0, "revenue": {}})
        entry["units"] += sum(q for q, _ in mine)
        entry["orders"] += 1
        revenue = entry["revenue"]
        revenue[currency] = revenue.get(currency, Decimal(0)) + sum(q * p for q, p in mine)
    totals: dict[str, Any] = {"units": 0, "orders": 0, "revenue": {}}
    for entry in days.values():
        totals["units"] += entry["units"]
        totals["orders"] += entry["orders"]
        for currency, amount in entry["revenue"].items():
            totals["revenue"][currency] = totals["revenue"].get(currency, Decimal(0)) + amount

    def shown(entry: dict[str, Any]) -> dict[str, Any]:
        revenue = {c: two_places(a) for c, a in sorted(entry["revenue"].items())}
        return {**entry, "revenue": revenue}

    return {
        "days": [{"day": day, **shown(entry)} for day, entry in sorted(days.items())],
        "totals": shown(totals),
    }


def with_rate(counts: dict[str, int]) -> dict[str, Any]:
    settled = counts["captured"] + counts["failed"]
    return {**counts, "failure_rate": counts["failed"] / settled if settled else None}


def expected_methods(first: str, last: str) -> list[dict[str, Any]]:
    names = ("authorized", "captured", "failed", "refunded")
    hours: dict[str, dict[str, dict[str, int]]] = {}
    for _, method, outcomes in PAYMENTS:
        for kind, when in outcomes:
            hour = when[:13]
            if (method is None and kind != "failed") or not first <= hour <= last:
                continue
            counts = hours.setdefault(method or "unknown", {}).setdefault(
                hour, dict.fromkeys(names, 0)
            )
            counts[kind] += 1
    return [
        {
            "method": method,
            "hours": [{"hour": h, **with_rate(c)} for h, c in sorted(by_hour.items())],
            "totals": with_rate({n: sum(c[n] for c in by_hour.values()) for n in names}),
        }
        for method, by_hour in sorted(hours.items())
    ]


# --- fixtures ------------------------------------------------------------------------


class Log:
    """Events at the positions a topic's partition 0 would give them, in order."""

    def __init__(self) -> None:
        self.records: list[Positioned] = []
        self._next: dict[str, int] = {}

    def add(self, events: Sequence[Event]) -> list[Positioned]:
        added = []
        for event in events:
            topic = TOPIC_OF_TYPE[event.type]
            offset = self._next.get(topic, 0)
            self._next[topic] = offset + 1
            added.append(Positioned(event, topic, 0, offset))
        self.records += added
        return added

    def token(self, records: Sequence[Positioned]) -> str:
        return token_of((r.topic, r.partition, r.offset) for r in records)


async def apply(
    versions: ProjectionVersions,
    records: Sequence[Positioned],
    version: str = "v1",
    names: Sequence[str] = tuple(ENABLED),
) -> None:
    """Apply ``records`` to ``version`` of the projections ``names`` (every one by
    default), as the live worker does."""
    highest: dict[str, int] = {}
    for r in records:
        highest[r.mark] = max(highest.get(r.mark, -1), r.offset)
    for projection in (ENABLED[n] for n in names):
        applier = Applier(
            projection,
            versions.store(projection.name, version),
            documents=versions.documents(projection, version),
        )
        await applier.start()
        await applier.apply(records, highest)


@pytest.fixture(autouse=True)
def our_projection(monkeypatch: pytest.MonkeyPatch) -> None:
    """``order_cards`` and ``sku_ranks`` installed, as a package's entry points."""
    points = [
        EntryPoint(name, f"{__name__}:{name}", registry.ENTRY_POINT_GROUP)
        for name in ("order_cards", "sku_ranks")
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: points)


@pytest.fixture
async def versions(settings: Settings) -> AsyncIterator[ProjectionVersions]:
    stores = Stores(settings)
    yield ProjectionVersions(stores.redis, settings.redis_prefix, stores.db)
    async for key in stores.redis.scan_iter(match=f"{settings.redis_prefix}*", count=1000):
        await stores.redis.unlink(key)
    await stores.mongo.drop_database(settings.mongo_db)
    await stores.close()


@pytest.fixture
async def log(versions: ProjectionVersions) -> Log:
    """The seed applied to v1 of every projection."""
    seeded = Log()
    await apply(versions, seeded.add(seed_events()))
    return seeded


Client = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def client_of(settings: Settings) -> AsyncIterator[Client]:
    """A client of a query API of ``settings`` (changed by keyword arguments)."""
    apps: list[FastAPI] = []
    clients: list[httpx.AsyncClient] = []

    async def make(**changes: Any) -> httpx.AsyncClient:
        app = create_app(settings.model_copy(update={"consistency_timeout_s": 10.0, **changes}))
        apps.append(app)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://query", timeout=30
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
    for app in apps:
        await app.state.stores.close()


@pytest.fixture
async def api(client_of: Client) -> httpx.AsyncClient:
    return await client_of()


def app_of(api: httpx.AsyncClient) -> FastAPI:
    transport = api._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    return app


async def waiting(api: httpx.AsyncClient) -> None:
    """Until a request of ``api`` waits on its consistency token."""
    waits = app_of(api).state.waits

    async def held() -> int:
        return int(waits.held)

    await eventually(held, lambda n: n == 1)


def problem(answer: httpx.Response, status: int) -> str:
    """The message of an error answer (the first one, for a 422's list)."""
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    return str(detail if isinstance(detail, str) else detail[0]["msg"])


# --- the listing and the generic read ---------------------------------------------------


async def test_the_listing_shows_each_enabled_projection_and_its_active_version(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient, client_of: Client
) -> None:
    answer = await api.get("/v1/projections")
    assert answer.status_code == 200, answer.text
    core = [  # the join's definitions first, read from the core versions
        {
            "name": p.name,
            "kind": "view",
            "core": True,
            "description": p.description,
            "consumes": sorted(p.consumes),
            "topics": list(p.topics),
            "version": "v1",
            "ranked": [],
            "maxima": [],
            "minima": [],
            "documents": list(ProjectionReads.listed_by(p) or ()),
        }
        for p in JOINED
    ]
    assert answer.json() == {
        "items": core
        + [
            {
                "name": p.name,
                "kind": "view" if p is order_cards else "rows",
                "core": False,
                "description": p.description,
                "consumes": sorted(p.consumes),
                "topics": sorted(p.topics),
                "version": "v1",
                "ranked": list(p.ranked),
                "maxima": list(p.maxima),
                "minima": list(p.minima),
                "documents": ["customer_id", "lines", "cancelled"] if p is order_cards else None,
            }
            for p in (order_cards, payment_methods, sku_ranks, sku_sales)
        ]
    }

    version = await versions.begin_build("sku_sales")
    await versions.activate("sku_sales", version)
    listed = (await api.get("/v1/projections")).json()["items"]
    assert {i["name"]: i["version"] for i in listed} == {
        "orders": "v1",
        "customers": "v1",
        "order_cards": "v1",
        "payment_methods": "v1",
        "sku_ranks": "v1",
        "sku_sales": version,
    }

    fewer = await client_of(projections_disabled="sku_sales,order_cards")
    listed = (await fewer.get("/v1/projections")).json()["items"]
    assert [i["name"] for i in listed] == ["orders", "customers", "payment_methods", "sku_ranks"]


async def test_a_group_row_is_its_measures_summed(log: Log, api: httpx.AsyncClient) -> None:
    answer = await api.get("/v1/projections/sku_sales/A-1%7C2026-03-01")  # %7C: "|"
    assert answer.status_code == 200, answer.text
    # o-1 (2 x 9.99) and o-2 (1 x 9.99), in 1e-4 units
    assert answer.json() == {
        "projection": "sku_sales",
        "version": "v1",
        "key": "A-1|2026-03-01",
        "kind": "rows",
        "data": {"units": 3, "orders": 2, "revenue:EUR": 3 * 99_900},
    }
    raw = await api.get("/v1/projections/payment_methods/card|2026-03-01T11")
    assert raw.json()["data"] == {"failed": 1}  # an absent measure is 0
    slashed = await api.get("/v1/projections/sku_sales/C%2F3%7C2026-03-01")
    assert slashed.json()["data"] == {"units": 4, "orders": 1, "revenue:EUR": 20_000}

    cancelled_only = await api.get("/v1/projections/sku_sales/A-1%7C2026-03-02")
    assert problem(cancelled_only, 404) == "projection 'sku_sales' has no row for group " + repr(
        "A-1|2026-03-02"
    )


async def test_an_entity_view_is_served_as_stored(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    answer = await api.get("/v1/projections/order_cards/o-4")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "projection": "order_cards",
        "version": "v1",
        "key": "o-4",
        "kind": "view",
        "data": {"customer_id": "c-1", "lines": 1, "cancelled": True},
    }
    assert problem(await api.get("/v1/projections/order_cards/o-9"), 404) == (
        "projection 'order_cards' has no view of 'o-9'"
    )
    await apply(versions, log.add([cancelled("o-8", "2026-03-04T10:00")]))  # view None
    assert problem(await api.get("/v1/projections/order_cards/o-8"), 404) == (
        "projection 'order_cards' has no view of 'o-8'"
    )


async def test_a_projections_documents_are_listed_by_their_fields(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    async def keys(**params: Any) -> list[str]:
        answer = await api.get("/v1/projections/order_cards", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["projection"] == "order_cards" and body["version"] == "v1"
        for item in body["items"]:
            (view,) = [view for key, view in CARDS.items() if key == item["key"]]
            assert item["view"] == view
        return [item["key"] for item in body["items"]]

    assert await keys() == sorted(CARDS)
    assert await keys(cancelled="true") == ["o-4"]
    assert await keys(lines=2) == ["o-1", "o-6"]
    assert await keys(lines=[1, 2], cancelled="false", customer_id="c-1") == [
        "o-1",
        "o-2",
        "o-3",
        "o-5",
        "o-6",
        "o-7",
    ]
    assert await keys(customer_id="c-2") == []
    assert await keys(lines=str(2**63)) == []  # no document holds it: matched as text only

    # a page at a time, in key order
    first = (await api.get("/v1/projections/order_cards", params={"limit": 3})).json()
    assert [i["key"] for i in first["items"]] == ["o-1", "o-2", "o-3"]
    cursor = first["next_cursor"]
    rest = (await api.get("/v1/projections/order_cards", params={"cursor": cursor})).json()
    assert [i["key"] for i in rest["items"]] == ["o-4", "o-5", "o-6", "o-7"]
    assert rest["next_cursor"] is None

    # what the list does not filter on, and a cursor not made here
    wrong = await api.get("/v1/projections/order_cards", params={"colour": "red"})
    assert problem(wrong, 422) == (
        "projection 'order_cards' lists its documents by: customer_id, lines, cancelled"
    )
    bad_cursor = await api.get("/v1/projections/order_cards", params={"cursor": "%%%"})
    assert "invalid cursor" in problem(bad_cursor, 422)
    assert problem(await api.get("/v1/projections/sku_sales"), 404) == (
        "projection 'sku_sales' keeps no documents to list; read one entity at"
        " /v1/projections/sku_sales/{key}"
    )
    assert problem(await api.get("/v1/projections/nope"), 404).startswith(
        "projection 'nope' is not enabled"
    )

    # a view gone (cancelled before it was placed) is no document; a token is honoured
    later = log.add([cancelled("o-1", "2026-03-04T10:00"), cancelled("o-8", "2026-03-04T10:00")])
    token = {"consistency_token": log.token(later)}
    listing = asyncio.create_task(api.get("/v1/projections/order_cards", params=token))
    await waiting(api)
    await apply(versions, later)
    answer = await listing
    assert answer.status_code == 200, answer.text
    assert [i["key"] for i in answer.json()["items"] if i["view"]["cancelled"]] == ["o-1", "o-4"]
    assert "o-8" not in [i["key"] for i in answer.json()["items"]]


async def test_an_unknown_or_disabled_projection_is_a_404(
    log: Log, client_of: Client, api: httpx.AsyncClient
) -> None:
    message = problem(await api.get("/v1/projections/nope/x"), 404)
    assert message == (
        "projection 'nope' is not enabled on this instance; enabled: orders, customers, "
        "order_cards, payment_methods, sku_ranks, sku_sales (see GET /v1/projections)"
    )
    none = await client_of(projections_disabled="sku_sales,payment_methods,order_cards,sku_ranks")
    assert "enabled: orders, customers (see" in problem(await none.get("/v1/skus/A-1/sales"), 404)
    assert "'payment_methods' is not enabled" in problem(
        await none.get("/v1/payments/methods"), 404
    )
    assert "'sku_sales' is not enabled" in problem(
        await none.get("/v1/projections/sku_sales/A-1%7C2026-03-01"), 404
    )
    assert "'sku_ranks' is not enabled" in problem(
        await none.get("/v1/rankings/sku_ranks/units"), 404
    )


# --- rankings -------------------------------------------------------------------------


def expected_ranking(measure: str, cancelled: set[str]) -> list[dict[str, Any]]:
    """The SKUs by ``measure`` (units, or revenue|<currency> in 1e-4 units) over the
    orders not cancelled, highest first, equal values by SKU descending."""
    totals: dict[str, int] = {}
    for order_id, _, currency, lines in ORDERS:
        if order_id in cancelled:
            continue
        for sku, quantity, price in lines:
            if measure == "units":
                value = quantity
            elif measure == f"revenue|{currency}":
                value = int(Decimal(price) * quantity * 10_000)
            else:
                value = 0
            totals[sku] = totals.get(sku, 0) + value
    ranked = sorted(((v, k) for k, v in totals.items() if v), reverse=True)
    return [{"group": sku, "value": value} for value, sku in ranked]


async def test_a_ranking_is_its_groups_highest_first(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    answer = await api.get("/v1/rankings/sku_ranks/units")
    assert answer.status_code == 200, answer.text
    units = expected_ranking("units", CANCELLED)
    assert [i["group"] for i in units] == ["A-1", "C/3", "B-2"]  # the seed ranks them so
    assert answer.json() == {
        "projection": "sku_ranks",
        "version": "v1",
        "measure": "units",
        "items": units,
    }
    assert (await api.get("/v1/rankings/sku_ranks/units?limit=2")).json()["items"] == units[:2]
    for currency in ("EUR", "USD"):  # "revenue" ranks each revenue|<currency>
        ranked = await api.get(f"/v1/rankings/sku_ranks/revenue%7C{currency}")
        assert ranked.json()["items"] == expected_ranking(f"revenue|{currency}", CANCELLED)

    # o-1 cancelled: A-1 loses 2 units, and B-2 (o-1 alone) leaves the ranking
    await apply(versions, log.add([cancelled("o-1", "2026-03-05T09:00")]))
    after = (await api.get("/v1/rankings/sku_ranks/units")).json()["items"]
    assert after == expected_ranking("units", CANCELLED | {"o-1"})
    assert [i["group"] for i in after] == ["A-1", "C/3"]


def largest_line(sku: str, cancelled: set[str]) -> int | None:
    found = [q for o, _, _, lines in ORDERS if o not in cancelled for s, q, _ in lines if s == sku]
    return max(found) if found else None


async def test_a_maximum_is_its_entities_highest_and_falls_back(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    row = (await api.get("/v1/projections/sku_ranks/A-1")).json()["data"]
    assert row["largest"] == largest_line("A-1", CANCELLED) == 3  # o-4's 5 was cancelled
    assert row["lines"] == 6  # a sum beside it

    # o-3 (3 of A-1) cancelled: the next largest line takes its place
    await apply(versions, log.add([cancelled("o-3", "2026-03-05T09:00")]))
    row = (await api.get("/v1/projections/sku_ranks/A-1")).json()["data"]
    assert row["largest"] == largest_line("A-1", CANCELLED | {"o-3"}) == 2
    await apply(versions, log.add([cancelled("o-7", "2026-03-05T09:01")]))  # C/3's only
    gone = await api.get("/v1/projections/sku_ranks/C%2F3")
    assert gone.status_code == 404, gone.text  # every measure left with its last order


async def test_a_measure_not_ranked_is_a_422(log: Log, api: httpx.AsyncClient) -> None:
    assert problem(await api.get("/v1/rankings/sku_ranks/lines"), 422) == (
        "projection 'sku_ranks' does not rank 'lines'; it ranks: revenue, units"
        " (a name ranks that measure and each name|...)"
    )
    assert "it ranks: none" in problem(await api.get("/v1/rankings/sku_sales/units"), 422)
    assert "it ranks: none" in problem(await api.get("/v1/rankings/order_cards/lines"), 422)
    assert "'nope' is not enabled" in problem(await api.get("/v1/rankings/nope/units"), 404)
    for limit in ("0", "1001", "x"):
        bad = await api.get("/v1/rankings/sku_ranks/units", params={"limit": limit})
        assert bad.status_code == 422, (limit, bad.text)


# --- a SKU's sales ----------------------------------------------------------------------


async def test_a_sku_sales_are_its_days_with_sales_and_their_totals(
    log: Log, api: httpx.AsyncClient
) -> None:
    answer = await api.get("/v1/skus/A-1/sales", params={"from": "2026-02-28", "to": "2026-03-03"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {
        "sku": "A-1",
        "from_day": "2026-02-28",
        "to_day": "2026-03-03",
        "version": "v1",
        **expected_sales("A-1", "2026-02-28", "2026-03-03"),
    }
    # the same, spelled out: 2 days (03-02's only order was cancelled)
    assert [d["day"] for d in body["days"]] == ["2026-03-01", "2026-03-03"]
    assert body["totals"] == {
        "units": 9,
        "orders": 4,
        "revenue": {"EUR": "33.47", "USD": "3.30"},
    }

    slashed = await api.get(
        "/v1/skus/C%2F3/sales", params={"from": "2026-03-01", "to": "2026-03-01"}
    )
    assert slashed.json()["days"] == [
        {"day": "2026-03-01", "units": 4, "orders": 1, "revenue": {"EUR": "2.00"}}
    ]
    empty = await api.get("/v1/skus/Z-9/sales", params={"from": "2026-03-01", "to": "2026-03-03"})
    assert empty.json()["days"] == []
    assert empty.json()["totals"] == {"units": 0, "orders": 0, "revenue": {}}


async def test_a_sku_sales_default_to_the_last_30_days(
    versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    before = datetime.now(UTC)
    events = [
        placed("o-1", ago(before, days=1), "EUR", [("A-1", 1, "2.00")]),
        placed("o-2", ago(before, days=40), "EUR", [("A-1", 1, "3.00")]),
    ]
    await apply(versions, Log().add(events))
    body = (await api.get("/v1/skus/A-1/sales")).json()
    after = datetime.now(UTC)  # the day may have turned meanwhile
    assert (body["from_day"], body["to_day"]) in {
        ((t - timedelta(days=29)).date().isoformat(), t.date().isoformat()) for t in (before, after)
    }
    assert body["totals"]["revenue"] == {"EUR": "2.00"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from (2026-03-02) is after to (2026-03-01)"),
        (
            {"from": "2025-01-01", "to": "2026-01-02"},
            "from 2025-01-01 to 2026-01-02 spans 367 days; at most 366: narrow the range",
        ),
        ({"from": "2026-02-30"}, "Input should be a valid date"),
        ({"to": "yesterday"}, "Input should be a valid date"),
    ],
)
async def test_a_sku_sales_range_is_checked(
    params: dict[str, str], message: str, api: httpx.AsyncClient
) -> None:
    assert problem(await api.get("/v1/skus/A-1/sales", params=params), 422).startswith(message)


async def test_a_366_day_range_and_a_sku_without_separator_are_the_limits(
    log: Log, api: httpx.AsyncClient
) -> None:
    year = await api.get("/v1/skus/A-1/sales", params={"from": "2025-03-03", "to": "2026-03-03"})
    assert year.status_code == 200, year.text
    assert year.json()["totals"] == expected_sales("A-1", "2025-03-03", "2026-03-03")["totals"]
    assert "pattern" in problem(await api.get("/v1/skus/A%7C1/sales"), 422)


# --- payment methods ---------------------------------------------------------------


async def test_payment_methods_per_hour_with_their_failure_rates(
    log: Log, api: httpx.AsyncClient
) -> None:
    answer = await api.get(
        "/v1/payments/methods", params={"from": "2026-03-01T10", "to": "2026-03-01T12"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {
        "from_hour": "2026-03-01T10",
        "to_hour": "2026-03-01T12",
        "version": "v1",
        "methods": expected_methods("2026-03-01T10", "2026-03-01T12"),
    }
    # spelled out: card captured 2 (p-1, p-5) and failed 1 (p-2) in the range
    card = body["methods"][0]
    assert card["method"] == "card"
    assert card["totals"] == {
        "authorized": 2,
        "captured": 2,
        "failed": 1,
        "refunded": 0,
        "failure_rate": 1 / 3,
    }
    paypal_10 = body["methods"][1]["hours"][0]
    assert paypal_10 == {
        "hour": "2026-03-01T10",
        "authorized": 1,
        "captured": 0,
        "failed": 0,
        "refunded": 0,
        "failure_rate": None,
    }
    assert [m["method"] for m in body["methods"]] == ["card", "paypal", "unknown"]


async def test_payment_methods_default_to_the_last_24_hours(
    versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    before = datetime.now(UTC)
    events = [
        outcome("p-1", "cash", "authorized", ago(before, hours=1)),
        outcome("p-2", "iban", "authorized", ago(before, hours=30)),
    ]
    await apply(versions, Log().add(events))
    body = (await api.get("/v1/payments/methods")).json()
    after = datetime.now(UTC)
    assert (body["from_hour"], body["to_hour"]) in {
        ((t - timedelta(hours=23)).strftime("%Y-%m-%dT%H"), t.strftime("%Y-%m-%dT%H"))
        for t in (before, after)
    }
    assert [m["method"] for m in body["methods"]] == ["cash"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"from": "2026-03-01T12", "to": "2026-03-01T11"},
            "from (2026-03-01T12) is after to (2026-03-01T11)",
        ),
        (
            {"from": "2026-03-01T00", "to": "2026-04-01T00"},
            "from 2026-03-01T00 to 2026-04-01T00 spans 745 hours; at most 744: narrow the range",
        ),
        ({"from": "2026-03-01T24"}, "'2026-03-01T24' is not an hour: YYYY-MM-DDTHH (UTC)"),
        ({"to": "2026-03-01"}, "String should match pattern"),
    ],
)
async def test_a_payment_methods_range_is_checked(
    params: dict[str, str], message: str, api: httpx.AsyncClient
) -> None:
    assert problem(await api.get("/v1/payments/methods", params=params), 422).startswith(message)


# --- consistency tokens -----------------------------------------------------------------


async def test_a_token_within_the_marks_is_answered_and_one_beyond_is_not_yet(
    log: Log, client_of: Client
) -> None:
    api = await client_of(consistency_timeout_s=0.3)
    within = {"consistency_token": log.token(log.records)}
    beyond = {"X-Consistency-Token": encode_token({"orders": {0: 999}})}
    reads = [
        "/v1/projections",
        "/v1/projections/sku_sales/A-1%7C2026-03-01",
        "/v1/skus/A-1/sales?from=2026-03-01&to=2026-03-01",
        "/v1/rankings/sku_ranks/units",
    ]
    for path in reads:
        answer = await api.get(path, params=within)
        assert answer.status_code == 200, (path, answer.text)
        late = await api.get(path, headers=beyond)
        assert late.status_code == 409, (path, late.text)
        assert late.json()["missing"] == ["orders:0"]
        assert late.headers["retry-after"] == "1"
    assert "invalid consistency token" in problem(
        await api.get("/v1/projections", headers={"X-Consistency-Token": "%%%"}), 422
    )


async def test_a_token_waits_only_for_the_topics_the_projection_reads(
    log: Log, client_of: Client
) -> None:
    api = await client_of(consistency_timeout_s=0.3)
    # payment_methods reads payments only; nothing reads customers
    other = {"X-Consistency-Token": encode_token({"orders": {0: 999}, "customers": {0: 5}})}
    answer = await api.get(
        "/v1/payments/methods",
        params={"from": "2026-03-01T10", "to": "2026-03-01T11"},
        headers=other,
    )
    assert answer.status_code == 200, answer.text
    cards = await api.get(
        "/v1/projections/order_cards/o-1",
        headers={"X-Consistency-Token": encode_token({"payments": {0: 999}, "customers": {3: 1}})},
    )
    assert cards.status_code == 200, cards.text


async def test_a_token_waits_for_its_records_to_be_applied(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    (later,) = log.add([placed("o-9", "2026-03-01T12:00", "EUR", [("A-1", 10, "1.00")])])
    token = {"consistency_token": log.token([later])}
    answer = asyncio.create_task(
        api.get("/v1/projections/sku_sales/A-1%7C2026-03-01", params=token)
    )
    await waiting(api)
    await apply(versions, [later])
    read = await answer
    assert read.status_code == 200, read.text
    assert read.json()["data"]["units"] == 3 + 10
    assert app_of(api).state.waits.held == 0


async def test_a_token_wait_follows_a_rebuild_switch(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    """v1 never applies the new order; the rebuilt version does, and is switched to
    while the read waits: it answers from that version."""
    (later,) = log.add([placed("o-9", "2026-03-03T12:00", "EUR", [("A-1", 10, "1.00")])])
    params = {"from": "2026-03-03", "to": "2026-03-03", "consistency_token": log.token([later])}
    answer = asyncio.create_task(api.get("/v1/skus/A-1/sales", params=params))
    await waiting(api)
    version = await versions.begin_build("sku_sales")
    await apply(versions, log.records, version, ["sku_sales"])  # the one being rebuilt
    await versions.activate("sku_sales", version)
    read = await answer
    assert read.status_code == 200, read.text
    assert read.json()["version"] == version
    assert read.json()["totals"]["units"] == 6 + 10


async def test_a_token_covering_a_dead_letter_of_the_projection_says_so(
    log: Log, versions: ProjectionVersions, api: httpx.AsyncClient
) -> None:
    first = log.records[0]
    await versions.record_dead_letter("sku_sales", first.topic, 0, first.offset, "boom")
    token = {"consistency_token": log.token([first])}
    answer = await api.get("/v1/skus/A-1/sales", params=token)
    assert answer.status_code == 409, answer.text
    assert answer.json()["dead_letters"] == [f"orders:0@{first.offset} boom"]
    assert "dead-lettered" in answer.json()["detail"]
    # another projection of the same record did not dead-letter it
    assert (await api.get("/v1/projections/order_cards/o-1", params=token)).status_code == 200


# --- access and the OpenAPI document ----------------------------------------------------


async def test_the_read_scope_applies(log: Log, client_of: Client) -> None:
    api = await client_of(auth_disabled=False, api_keys={"r": ["read"], "w": ["write"]})
    for path in (
        "/v1/projections",
        "/v1/projections/sku_sales/A-1%7C2026-03-01",
        "/v1/skus/A-1/sales",
        "/v1/payments/methods",
        "/v1/rankings/sku_ranks/units",
    ):
        assert (await api.get(path)).status_code == 401, path
        assert (await api.get(path, headers={"X-API-Key": "w"})).status_code == 403, path
        assert (await api.get(path, headers={"X-API-Key": "r"})).status_code == 200, path


async def test_the_openapi_document_describes_the_projection_routes(api: httpx.AsyncClient) -> None:
    doc = (await api.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    routes = {
        "/v1/projections": "ProjectionList",
        "/v1/projections/{name}/{key}": "ProjectionRead",
        "/v1/projections/{name}": "ProjectionDocuments",
        "/v1/skus/{sku}/sales": "SkuSales",
        "/v1/payments/methods": "PaymentMethods",
        "/v1/rankings/{name}/{measure}": "ProjectionRanking",
    }
    for path, model in routes.items():
        get = doc["paths"][path]["get"]
        assert get["description"] and get["summary"], path
        ok = get["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": f"#/components/schemas/{model}"}, path
        assert {"401", "403", "404", "409", "422"} <= set(get["responses"]), path
        names = {p["name"] for p in get["parameters"]}
        assert {"x-consistency-token", "consistency_token"} <= names, path
    for path in ("/v1/skus/{sku}/sales", "/v1/payments/methods"):
        parameters = {p["name"]: p for p in doc["paths"][path]["get"]["parameters"]}
        assert parameters["from"]["description"] and parameters["to"]["description"]
    assert "failure_rate" in schemas["PaymentOutcomes"]["properties"]
    assert schemas["SkuSalesFigures"]["properties"]["revenue"]["description"]
