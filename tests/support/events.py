"""Event builders shared by the unit tests of the folds and joins."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import Event, parse_event

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
_ids = iter(range(1, 10**9))


def event(type_: str, data: dict[str, Any], at: int = 0) -> Event:
    """An event of ``type_``, ``at`` minutes after T0, with a fresh event_id."""
    return parse_event(
        {
            "type": type_,
            "event_id": str(uuid.UUID(int=next(_ids))),
            "occurred_at": (T0 + timedelta(minutes=at)).isoformat(),
            "data": data,
        }
    )


Items = Sequence[tuple[str, int, str]]  # (sku, quantity, unit price)
TWO_ITEMS: Items = (("A-1", 2, "9.99"), ("B-2", 1, "5"))  # 24.98


def placed_data(
    order_id: str, customer_id: str = "c-1", currency: str = "EUR", items: Items = TWO_ITEMS
) -> dict[str, Any]:
    """The data of an OrderPlaced."""
    return {
        "order_id": order_id,
        "customer_id": customer_id,
        "currency": currency,
        "items": [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in items],
    }


def payment_data(
    type_: str, order_id: str, amount: str = "24.98", currency: str = "EUR", payment_id: str = "p-1"
) -> dict[str, Any]:
    """The data of a payment event of ``type_`` (fields as that type has them)."""
    data: dict[str, Any] = {"payment_id": payment_id, "order_id": order_id}
    if type_ == "PaymentFailed":
        data["reason"] = "declined"
    else:
        data.update(amount=amount, currency=currency)
    if type_ == "PaymentAuthorized":
        data["method"] = "card"
    return data


def customer_event(
    type_: str = "CustomerRegistered",
    customer_id: str = "c-1",
    name: str = "Ada",
    tier: str = "silver",
    country: str = "DE",
    email: str | None = None,
) -> Event:
    """A customer event; the email is made from the name unless given."""
    data = {
        "customer_id": customer_id,
        "name": name,
        "email": email or f"{name.lower().replace(' ', '.')}@example.com",
        "tier": tier,
        "country": country,
    }
    return event(type_, data)
