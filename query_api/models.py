"""Response models of the query API (they make the OpenAPI document complete)."""

from __future__ import annotations

from typing import Any

import orjson
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
