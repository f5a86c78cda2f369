"""Pure tests of the customer fold, the enrichment block and the customer view."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest

from projections.customer_fold import (
    CustomerProfile,
    apply_customer,
    customer_view,
    enrichment,
    profile_from_doc,
    profile_to_doc,
)
from projections.order_fold import OrderFacts, apply, empty_facts, order_view
from schemas.events import Event
from tests.support.events import customer_event, event


def order_facts(
    order_id: str,
    *,
    customer_id: str = "c-1",
    currency: str = "EUR",
    placed_at: int | None = 0,
    captures: Iterable[str] = (),
    refunds: Iterable[str] = (),
    cancel: bool = False,
) -> OrderFacts:
    """The facts of an order built from real events."""
    events: list[Event] = []
    if placed_at is not None:
        data = {
            "order_id": order_id,
            "customer_id": customer_id,
            "currency": currency,
            "items": [{"sku": "A", "quantity": 1, "unit_price": "100"}],
        }
        events.append(event("OrderPlaced", data, placed_at))
    if cancel:
        events.append(event("OrderCancelled", {"order_id": order_id}, 500))
    for type_, amounts in (("PaymentCaptured", captures), ("PaymentRefunded", refunds)):
        for amount in amounts:
            data = {"payment_id": "p", "order_id": order_id, "amount": amount}
            events.append(event(type_, {**data, "currency": currency}, 600))
    facts = empty_facts(order_id)
    for e in events:
        facts = apply(facts, e)
    return facts


def order(order_id: str, **kwargs: Any) -> dict[str, Any]:
    return order_view(order_facts(order_id, **kwargs), None)


# --- the profile fold ----------------------------------------------------------------------


def test_latest_customer_event_wins_and_sets_every_field() -> None:
    registered = customer_event("CustomerRegistered", name="Ada", tier="silver", country="DE")
    updated = customer_event(
        "CustomerUpdated", name="Ada L", tier="gold", country="GB", email="adal@example.com"
    )
    profile = apply_customer(apply_customer(None, registered), updated)
    assert profile == CustomerProfile(
        customer_id="c-1",
        name="Ada L",
        email="adal@example.com",
        tier="gold",
        country="GB",
        updated_by=updated.event_id,
    )
    # an Updated without a prior Registered still makes a full profile
    assert apply_customer(None, updated) == profile


def test_redelivered_customer_event_returns_the_same_profile() -> None:
    registered = customer_event()
    profile = apply_customer(None, registered)
    assert apply_customer(profile, registered) is profile


def test_apply_customer_rejects_other_customers_and_non_customer_events() -> None:
    profile = apply_customer(None, customer_event(customer_id="c-1"))
    with pytest.raises(ValueError, match="c-2"):
        apply_customer(profile, customer_event(customer_id="c-2"))
    placed = event(
        "OrderPlaced",
        {
            "order_id": "o-1",
            "customer_id": "c-1",
            "currency": "EUR",
            "items": [{"sku": "A", "quantity": 1, "unit_price": "1"}],
        },
    )
    with pytest.raises(ValueError, match="not a customer event"):
        apply_customer(None, placed)


def test_profile_doc_round_trip() -> None:
    profile = apply_customer(None, customer_event())
    doc = profile_to_doc(profile)
    assert all(type(v) is str for v in doc.values())
    assert profile_from_doc({**json.loads(json.dumps(doc)), "_id": "ignored"}) == profile


# --- enrichment ----------------------------------------------------------------------------


def test_enrichment_is_the_block_embedded_into_orders() -> None:
    old = apply_customer(None, customer_event(tier="silver"))
    new = apply_customer(old, customer_event("CustomerUpdated", tier="gold", country="FR"))
    assert enrichment(new) == {"name": "Ada", "tier": "gold", "country": "FR"}

    facts = order_facts("o-1", captures=["100"])
    before = order_view(facts, enrichment(old))
    after = order_view(facts, enrichment(new))
    assert before["customer"] == {"name": "Ada", "tier": "silver", "country": "DE"}
    assert after["customer"] == enrichment(new)
    # re-enrichment changes the customer block and nothing else
    assert {**before, "customer": None} == {**after, "customer": None}


# --- the customer view ---------------------------------------------------------------------


def test_customer_view_sums_paid_orders_per_currency() -> None:
    profile = apply_customer(None, customer_event(tier="gold"))
    orders = [
        order("o-1", placed_at=0, captures=["100"]),
        order("o-2", placed_at=2 * 24 * 60, captures=["40.5", "9.5"], refunds=["10"]),
        order("o-3", currency="USD", placed_at=60),  # unpaid: counted, no value
        order("o-4", placed_at=30, captures=["100"], refunds=["100"], cancel=True),
        order("o-5", placed_at=None, captures=["7"]),  # pending: payment before its order
    ]
    assert orders[3]["status"] == "refunded"
    assert orders[4]["status"] == "pending"
    assert customer_view("c-1", profile, orders) == {
        "customer_id": "c-1",
        "name": "Ada",
        "tier": "gold",
        "country": "DE",
        "order_count": 4,
        "lifetime_value": {"EUR": "140.00"},
        "last_order_at": "2026-01-03T10:00:00.000000Z",
    }


def test_customer_view_without_profile_or_orders() -> None:
    assert customer_view("c-9", None, []) == {
        "customer_id": "c-9",
        "name": None,
        "tier": None,
        "country": None,
        "order_count": 0,
        "lifetime_value": {},
        "last_order_at": None,
    }


def test_customer_view_is_independent_of_order_sequence() -> None:
    orders = [
        order("o-1", placed_at=5, captures=["1"]),
        order("o-2", currency="USD", placed_at=1, captures=["2"]),
        order("o-3", placed_at=3, captures=["3"]),
    ]
    forward = customer_view("c-1", None, orders)
    assert forward == customer_view("c-1", None, reversed(orders))
    assert forward["lifetime_value"] == {"EUR": "4.00", "USD": "2.00"}
    assert list(forward["lifetime_value"]) == ["EUR", "USD"]
    assert forward["last_order_at"] == "2026-01-01T10:05:00.000000Z"


def test_customer_view_rejects_orders_and_profiles_of_other_customers() -> None:
    with pytest.raises(ValueError, match="c-2"):
        customer_view("c-1", None, [order("o-1", customer_id="c-2")])
    profile = apply_customer(None, customer_event(customer_id="c-2"))
    with pytest.raises(ValueError, match="c-2"):
        customer_view("c-1", profile, [])
