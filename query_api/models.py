"""Response models of the query API (they make the OpenAPI document complete)."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import HTTPException
from pydantic import BaseModel, Field


class CustomerBlock(BaseModel):
    name: str | None
    tier: str | None
    country: str | None


class OrderItemView(BaseModel):
    sku: str
    quantity: int
    unit_price: str = Field(description="decimal string")
    line_total: str = Field(description="decimal string")


class PaymentView(BaseModel):
    payment_id: str
    status: str
    amount: str | None = Field(description="decimal string")
    currency: str | None
    method: str | None


class TimelineEntry(BaseModel):
    type: str
    event_id: str
    occurred_at: str


class Anomaly(BaseModel):
    event_id: str
    type: str
    reason: str


class OrderView(BaseModel):
    order_id: str
    customer_id: str | None
    customer: CustomerBlock | None
    currency: str | None
    items: list[OrderItemView]
    total: str
    status: str
    amount_paid: str
    balance_due: str
    payments: list[PaymentView]
    timeline: list[TimelineEntry]
    anomalies: list[Anomaly]
    placed_at: str | None
    updated_at: str | None


ORDER_VIEW_FIELDS = tuple(OrderView.model_fields)


def public_order(view_json: str | bytes) -> dict[str, Any]:
    """An order view as the Redis projection stores it (JSON with internal fields such
    as ``ledger`` and ``placed``) in its public form: the fields of ``OrderView``."""
    view: dict[str, Any] = orjson.loads(view_json)
    return {name: view[name] for name in ORDER_VIEW_FIELDS if name in view}


class OrderPage(BaseModel):
    items: list[OrderView]
    next_cursor: str | None


class CustomerView(BaseModel):
    customer_id: str
    name: str | None = None
    tier: str | None = None
    country: str | None = None
    order_count: int = 0
    lifetime_value: dict[str, str] = Field(
        default_factory=dict, description="currency -> decimal string"
    )
    last_order_at: str | None = None


class TopCustomer(BaseModel):
    customer_id: str
    name: str | None
    lifetime_value: str = Field(description="decimal string, in the requested currency")


class TopCustomers(BaseModel):
    items: list[TopCustomer]
    next_cursor: str | None = None


class RevenueEntry(BaseModel):
    day: str
    currency: str
    amount: str = Field(description="captured - refunded, decimal string")


class Stats(BaseModel):
    orders_by_status: dict[str, int]
    revenue: list[RevenueEntry]


class Problem(BaseModel):
    detail: str


# --- projections (query_api.projections) -------------------------------------------

ProjectionKind = Literal["rows", "view"]


class ProjectionInfo(BaseModel):
    name: str
    kind: ProjectionKind = Field(
        description="rows: numbers per group key; view: one document per entity"
    )
    core: bool = Field(
        default=False,
        description="a core read model (orders, customers), written by the processor's "
        "join: its version moves with the core rebuilds (eventfold replay), and a "
        "consistency token's read waits for every topic the join reads",
    )
    description: str
    consumes: list[str] = Field(description="the event types it folds")
    topics: list[str] = Field(
        description="the source topics it reads: the only positions of a consistency "
        "token its reads wait for"
    )
    version: str = Field(description="the active version (a rebuild makes a new one)")
    ranked: list[str] = Field(
        description="the measures its groups are ranked by (GET /v1/rankings/{name}/"
        "{measure}); a name ranks that measure and each name|..."
    )
    maxima: list[str] = Field(
        description="the measures whose group value is its entities' highest, not their sum"
    )
    minima: list[str] = Field(
        description="the measures whose group value is its entities' lowest, not their sum"
    )
    documents: list[str] | None = Field(
        default=None,
        description="for a projection that keeps its views as documents too (listed at "
        "GET /v1/projections/{name}): the fields a list filters on ([]: any field of the "
        "view); null when it keeps none",
    )


class ProjectionList(BaseModel):
    items: list[ProjectionInfo]


class ProjectionDocument(BaseModel):
    key: str = Field(description="the entity key")
    view: dict[str, Any] = Field(description="the entity's view")


class ProjectionDocuments(BaseModel):
    projection: str
    version: str = Field(description="the version read: the active one")
    items: list[ProjectionDocument] = Field(description="in key order")
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last one"
    )


class ProjectionRead(BaseModel):
    projection: str
    version: str = Field(description="the version read: the active one")
    key: str = Field(description="the group key (rows) or the entity key (view)")
    kind: ProjectionKind
    data: dict[str, Any] = Field(
        description="rows: measure -> the sum over the group's entities (integers, money "
        "in 1e-4 units; a measure that sums to 0 is left out); view: the entity's view"
    )


class RankedGroup(BaseModel):
    group: str = Field(description="the group key")
    value: int = Field(
        description="the group's value of the measure, as its row holds it (an integer: "
        "money in 1e-4 units)"
    )


class ProjectionRanking(BaseModel):
    projection: str
    version: str = Field(description="the version read: the active one")
    measure: str
    items: list[RankedGroup] = Field(
        description="the groups with the highest values, highest first (equal values: "
        "group keys in descending order); groups whose value is 0 are not ranked"
    )


class SkuSalesFigures(BaseModel):
    units: int
    orders: int = Field(description="orders holding the SKU")
    revenue: dict[str, str] = Field(description="currency -> decimal string")


class SkuSalesDay(SkuSalesFigures):
    day: str = Field(description="UTC day, YYYY-MM-DD")


class SkuSales(BaseModel):
    sku: str
    from_day: str = Field(description="first day of the range (inclusive), YYYY-MM-DD")
    to_day: str = Field(description="last day of the range (inclusive), YYYY-MM-DD")
    version: str = Field(description="the version of sku_sales read")
    days: list[SkuSalesDay] = Field(description="the days with sales, oldest first")
    totals: SkuSalesFigures = Field(description="over the whole range")


class PaymentOutcomes(BaseModel):
    authorized: int
    captured: int
    failed: int
    refunded: int
    failure_rate: float | None = Field(
        description="failed / (captured + failed); null when both are 0"
    )


class PaymentMethodHour(PaymentOutcomes):
    hour: str = Field(description="UTC hour, YYYY-MM-DDTHH")


class PaymentMethodHealth(BaseModel):
    method: str = Field(description="as authorized (failures never authorized: unknown)")
    hours: list[PaymentMethodHour] = Field(description="the hours with outcomes, oldest first")
    totals: PaymentOutcomes = Field(description="over the whole range")


class PaymentMethods(BaseModel):
    from_hour: str = Field(description="first hour of the range (inclusive), YYYY-MM-DDTHH")
    to_hour: str = Field(description="last hour of the range (inclusive), YYYY-MM-DDTHH")
    version: str = Field(description="the version of payment_methods read")
    methods: list[PaymentMethodHealth] = Field(
        description="the methods with outcomes in the range, by name"
    )


def invalid_parameter(where: str, name: str, msg: str) -> HTTPException:
    """A 422 with the documented body: FastAPI's validation-error list."""
    return HTTPException(422, [{"loc": [where, name], "msg": msg, "type": "value_error"}])
