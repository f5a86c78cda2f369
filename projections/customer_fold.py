"""The customer read model as a pure fold plus a view function.

``CustomerProfile`` is the latest reference data of one customer from the
(compacted) ``customers`` stream; ``enrichment`` is the block embedded into
that customer's order views; ``customer_view`` summarises the customer's order
views. No I/O here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from projections.api import Documents, Totals
from projections.money import exact_arithmetic, format_money, text_units
from projections.order_fold import CUSTOMER_LOOKUP
from schemas.events import CustomerRegistered, CustomerUpdated, Event

CUSTOMER_EVENT_TYPES = (CustomerRegistered, CustomerUpdated)
CUSTOMER_DOCUMENTS = Documents()
"""A customer view is small and flat: stored as it is, every field its own, read by id."""


def order_contribution(order: Mapping[str, Any]) -> dict[str, Any]:
    """What one order (the fields of its view that ``CUSTOMER_TOTALS`` reads) adds to its
    customer's totals: nothing until it is placed; then one order, its amount paid in
    its currency (1e-4 units; none at zero) and its placement time."""
    if not order.get("placed"):
        return {}
    units = text_units(str(order["amount_paid"]))
    return {
        "order_count": 1,
        "paid": {str(order["currency"]): units} if units else {},
        "last_order_at": order.get("placed_at"),
    }


CUSTOMER_TOTALS = Totals(
    projection="orders",
    key="customer_id",
    reads=("placed", "customer_id", "currency", "amount_paid", "placed_at"),
    measures={"order_count": "sum", "paid": "sum_per_key", "last_order_at": "max"},
    contribution=order_contribution,
)
"""The customer view's totals over its orders, kept as the processor's join applies
each order's summary (its view's ``fields``: ``joins.OrderLink``). An order's
``placed_at`` does not change once placed, so the latest never has to go back."""


@dataclass(frozen=True)
class CustomerProfile:
    customer_id: str
    name: str
    email: str
    tier: str
    country: str
    updated_by: str
    """event_id of the customers-stream event that set these fields."""


def apply_customer(profile: CustomerProfile | None, event: Event) -> CustomerProfile:
    """The profile after ``event``: the latest event in the customers stream wins,
    and CustomerRegistered and CustomerUpdated both set every field.

    Returns ``profile`` itself (identity) when ``event`` is the one that set it
    (a redelivery). Raises ValueError for a non-customer event or one of
    another customer.
    """
    if not isinstance(event, CUSTOMER_EVENT_TYPES):
        raise ValueError(f"{event.type} {event.event_id} is not a customer event")
    data = event.data
    if profile is not None:
        if data.customer_id != profile.customer_id:
            raise ValueError(
                f"{event.type} {event.event_id} belongs to customer {data.customer_id!r}, "
                f"not {profile.customer_id!r}"
            )
        if event.event_id == profile.updated_by:
            return profile
    return CustomerProfile(
        customer_id=data.customer_id,
        name=data.name,
        email=data.email,
        tier=data.tier,
        country=data.country,
        updated_by=event.event_id,
    )


def enrichment(profile: CustomerProfile) -> dict[str, Any]:
    """The ``customer`` block embedded into the customer's order views: the fields the
    orders look up (``order_fold.CUSTOMER_LOOKUP``), which a customer view shows as its
    profile's."""
    return CUSTOMER_LOOKUP.block(profile_to_doc(profile))


_PROFILE_FIELDS = tuple(f.name for f in fields(CustomerProfile))


def profile_to_doc(profile: CustomerProfile) -> dict[str, Any]:
    """The profile as a JSON- and BSON-safe document (all fields are strings; not
    ``asdict``, which copies each value deeply and cost 86 us a profile)."""
    return {name: getattr(profile, name) for name in _PROFILE_FIELDS}


def profile_from_doc(doc: Mapping[str, Any]) -> CustomerProfile:
    """Inverse of ``profile_to_doc``; ignores extra keys such as MongoDB's ``_id``."""
    return CustomerProfile(
        customer_id=doc["customer_id"],
        name=doc["name"],
        email=doc["email"],
        tier=doc["tier"],
        country=doc["country"],
        updated_by=doc["updated_by"],
    )


def customer_view(
    customer_id: str, profile: CustomerProfile | None, orders: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """The customer read-model document from the profile (None when no customer
    event is known yet) and the customer's order views (``order_fold.order_view``).

    Only placed orders count: ``order_count``; ``lifetime_value`` per currency
    (sum of amount_paid as a money string, zero currencies omitted);
    ``last_order_at`` (latest placed_at, or None). Raises ValueError for a
    placed order of another customer.
    """
    if profile is not None and profile.customer_id != customer_id:
        raise ValueError(f"profile of {profile.customer_id!r} given for {customer_id!r}")
    order_count = 0
    paid: dict[str, Decimal] = {}
    last_order_at: str | None = None
    with exact_arithmetic():
        for order in orders:
            if not order["placed"]:
                continue
            if order["customer_id"] != customer_id:
                raise ValueError(
                    f"order {order['order_id']!r} belongs to customer "
                    f"{order['customer_id']!r}, not {customer_id!r}"
                )
            order_count += 1
            currency = order["currency"]
            paid[currency] = paid.get(currency, Decimal(0)) + Decimal(order["amount_paid"])
            # canonical UTC timestamps (order_fold.format_timestamp) sort chronologically
            if last_order_at is None or order["placed_at"] > last_order_at:
                last_order_at = order["placed_at"]
    return {
        "customer_id": customer_id,
        "name": None if profile is None else profile.name,
        "tier": None if profile is None else profile.tier,
        "country": None if profile is None else profile.country,
        "order_count": order_count,
        "lifetime_value": {
            currency: format_money(amount) for currency, amount in sorted(paid.items()) if amount
        },
        "last_order_at": last_order_at,
    }
