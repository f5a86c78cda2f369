"""Sales per SKU per day: units and revenue per currency, from orders that were placed
and neither cancelled nor refunded.

Folded per order (``order_id``); each order contributes to the group ``SKU|day`` of
each SKU it holds (the day its ``OrderPlaced`` occurred, UTC). A cancellation or any
refund takes the whole order out, whichever order the events arrive in.
"""

from __future__ import annotations

from typing import Any

from projections.api import JSON, Projection, Rows, group_key
from projections.money import to_units
from schemas.events import Event, OrderCancelled, OrderPlaced, PaymentRefunded

UNITS = "units"
ORDERS = "orders"
REVENUE_PREFIX = "revenue:"
"""``revenue:EUR``: revenue in 1e-4 units of the currency (``projections.money``)."""


def initial() -> JSON:
    return {"day": None, "currency": None, "items": {}, "out": False}


def fold(state: dict[str, Any], event: Event) -> JSON:
    if isinstance(event, OrderPlaced):
        items: dict[str, list[Any]] = {}
        for item in event.data.items:
            units, revenue = items.get(item.sku, [0, 0])
            items[item.sku] = [
                units + item.quantity,
                revenue + to_units(item.unit_price * item.quantity),
            ]
        state.update(
            day=event.occurred_at.date().isoformat(), currency=event.data.currency, items=items
        )
    elif isinstance(event, OrderCancelled | PaymentRefunded):
        state["out"] = True
    return state


def rows(state: dict[str, Any]) -> Rows:
    if state["day"] is None or state["out"]:
        return {}
    revenue = REVENUE_PREFIX + state["currency"]
    return {
        group_key(sku, state["day"]): {UNITS: units, ORDERS: 1, revenue: amount}
        for sku, (units, amount) in state["items"].items()
    }


sku_sales = Projection(
    name="sku_sales",
    consumes=("OrderPlaced", "OrderCancelled", "PaymentRefunded"),
    initial=initial,
    fold=fold,
    rows=rows,
    description="units and revenue per SKU per day, cancelled and refunded orders taken out",
)
