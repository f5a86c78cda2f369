"""Pure tests of the order fold, its view, its Redis contribution and the money helpers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.money import format_money, from_units, text_units, to_units
from projections.order_fold import (
    FACTS_DOC_VERSION,
    OrderFacts,
    apply,
    customer_group,
    customer_of_group,
    empty_facts,
    facts_from_doc,
    facts_to_doc,
    format_timestamp,
    order_rows,
    order_view,
    ranked_measure,
    reference_fold,
)
from schemas.events import Event, parse_event
from tests.support.events import TWO_ITEMS, Items, payment_data, placed_data

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
ORDER = "o-1"
CUSTOMER = {"name": "Ada", "tier": "gold", "country": "DE"}

_ids = iter(range(1, 10**9))


def _envelope(
    type_: str, data: dict[str, Any], at: int, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "type": type_,
        "event_id": event_id or str(uuid.UUID(int=next(_ids))),
        "occurred_at": (T0 + timedelta(minutes=at)).isoformat(),
        "data": data,
    }


def placed(
    at: int = 0,
    *,
    currency: str = "EUR",
    items: Items = TWO_ITEMS,
    order_id: str = ORDER,
    customer_id: str = "c-1",
    event_id: str | None = None,
) -> Event:
    data = placed_data(order_id, customer_id, currency, items)
    return parse_event(_envelope("OrderPlaced", data, at, event_id))


def cancelled(at: int = 0, *, order_id: str = ORDER) -> Event:
    return parse_event(
        _envelope("OrderCancelled", {"order_id": order_id, "reason": "changed mind"}, at)
    )


def shipped(at: int = 0, *, order_id: str = ORDER) -> Event:
    data = {"order_id": order_id, "carrier": "DHL", "tracking_number": "T-1"}
    return parse_event(_envelope("OrderShipped", data, at))


def delivered(at: int = 0, *, order_id: str = ORDER) -> Event:
    return parse_event(_envelope("OrderDelivered", {"order_id": order_id}, at))


def payment(
    type_: str,
    amount: str = "24.98",
    at: int = 0,
    *,
    payment_id: str = "p-1",
    currency: str = "EUR",
    order_id: str = ORDER,
    event_id: str | None = None,
) -> Event:
    data = payment_data(type_, order_id, amount, currency, payment_id)
    return parse_event(_envelope(type_, data, at, event_id))


def fold(events: Iterable[Event], order_id: str = ORDER) -> OrderFacts:
    facts = empty_facts(order_id)
    for event in events:
        facts = apply(facts, event)
    return facts


def view_of(*events: Event) -> dict[str, Any]:
    return order_view(fold(events), CUSTOMER)


def assert_bson_safe(value: object) -> None:
    """Only str/int/bool/list/dict/None, string keys, 64-bit ints."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str, key
            assert_bson_safe(item)
    elif isinstance(value, list):
        for item in value:
            assert_bson_safe(item)
    else:
        assert value is None or type(value) in (str, int, bool), repr(value)
        if type(value) is int:
            assert -(2**63) <= value < 2**63


# --- money ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("9.9900", "9.99"),
        ("10", "10.00"),
        ("1.2345", "1.2345"),
        ("0", "0.00"),
        ("-0.000", "0.00"),
        ("0.5", "0.50"),
        ("-1.50", "-1.50"),
        ("1E+3", "1000.00"),
        ("1.5E-3", "0.0015"),
        ("12345678901234567890123456789.123456", "12345678901234567890123456789.123456"),
    ],
)
def test_format_money(amount: str, text: str) -> None:
    assert format_money(Decimal(amount)) == text


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), 1.5, 10])
def test_format_money_rejects_non_finite_and_non_decimal(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        format_money(bad)


@pytest.mark.parametrize(
    ("amount", "units"),
    [("9.99", 99_900), ("1E+3", 10_000_000), ("-0.0001", -1), ("0", 0), ("1.23450000", 12_345)],
)
def test_to_units_and_back(amount: str, units: int) -> None:
    assert to_units(Decimal(amount)) == units
    assert text_units(amount) == units
    assert text_units(amount) == units  # kept: the same answer again
    assert from_units(units) == Decimal(amount)


@pytest.mark.parametrize("bad", ["0.00001", "1.23456", "922337203685477.5808", "NaN"])
def test_to_units_rejects_what_units_cannot_hold(bad: str) -> None:
    with pytest.raises(ValueError):
        to_units(Decimal(bad))
    for _ in range(2):  # a refusal is not kept as an answer
        with pytest.raises(ValueError):
            text_units(bad)


def test_text_units_refuses_what_is_not_a_number() -> None:
    with pytest.raises(ArithmeticError):
        text_units("12,50")


def test_from_units_is_exact_with_four_fraction_digits() -> None:
    assert str(from_units(99_900)) == "9.9900"
    assert str(from_units(-1)) == "-0.0001"
    with pytest.raises(TypeError):
        from_units(True)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_units_round_trip(units: int) -> None:
    assert to_units(from_units(units)) == units
    assert to_units(Decimal(format_money(from_units(units)))) == units


# --- apply ---------------------------------------------------------------------------------


def test_apply_appends_to_each_stream_in_order() -> None:
    p, c, s = placed(), payment("PaymentCaptured"), shipped()
    facts = fold([c, p, s])
    assert facts == OrderFacts(ORDER, order_events=(p, s), payment_events=(c,))


def test_duplicate_event_id_is_a_no_op_returning_the_same_object() -> None:
    p, c, s = placed(), payment("PaymentCaptured"), shipped()
    facts = fold([p, c, s])
    assert apply(facts, p) is facts
    assert apply(facts, c) is facts
    # a retried publish: same event_id, new offset (and re-serialised)
    assert apply(facts, parse_event(p.model_dump(mode="json"))) is facts
    assert order_view(fold([p, c, s, p, c]), CUSTOMER) == order_view(facts, CUSTOMER)


def test_apply_rejects_other_orders_and_customer_events() -> None:
    with pytest.raises(ValueError, match="o-2"):
        apply(empty_facts(ORDER), placed(order_id="o-2"))
    with pytest.raises(ValueError, match="o-2"):
        apply(empty_facts(ORDER), payment("PaymentCaptured", order_id="o-2"))
    customer = parse_event(
        _envelope(
            "CustomerRegistered",
            {"customer_id": "c-1", "name": "A", "email": "a@x.io", "tier": "t", "country": "DE"},
            0,
        )
    )
    with pytest.raises(ValueError, match="not an order or payment event"):
        apply(empty_facts(ORDER), customer)


def test_reference_fold_groups_by_order_and_skips_customer_events() -> None:
    p1, p2 = placed(order_id="o-1"), placed(order_id="o-2")
    c2 = payment("PaymentCaptured", order_id="o-2")
    customer = parse_event(
        _envelope(
            "CustomerUpdated",
            {"customer_id": "c-1", "name": "A", "email": "a@x.io", "tier": "t", "country": "DE"},
            0,
        )
    )
    folded = reference_fold([c2, p1, customer, p2, p1])
    assert list(folded) == ["o-2", "o-1"]
    assert folded["o-1"] == OrderFacts("o-1", (p1,), ())
    assert folded["o-2"] == OrderFacts("o-2", (p2,), (c2,))


# --- the view ------------------------------------------------------------------------------


def test_happy_path_placed_paid_shipped_delivered() -> None:
    p = placed(0)
    a = payment("PaymentAuthorized", "24.98", 1)
    c = payment("PaymentCaptured", "24.98", 2)
    s = shipped(60)
    d = delivered(24 * 60)
    statuses = [view_of(*[p, a, c, s, d][: n + 1])["status"] for n in range(5)]
    assert statuses == ["placed", "placed", "paid", "shipped", "delivered"]

    view = view_of(p, a, c, s, d)
    assert view == {
        "order_id": ORDER,
        "customer_id": "c-1",
        "customer": CUSTOMER,
        "currency": "EUR",
        "items": [
            {"sku": "A-1", "quantity": 2, "unit_price": "9.99", "line_total": "19.98"},
            {"sku": "B-2", "quantity": 1, "unit_price": "5.00", "line_total": "5.00"},
        ],
        "total": "24.98",
        "status": "delivered",
        "amount_paid": "24.98",
        "balance_due": "0.00",
        "payments": [
            {
                "payment_id": "p-1",
                "status": "captured",
                "amount": "24.98",
                "currency": "EUR",
                "method": "card",
                "captured": "24.98",
                "refunded": "0.00",
            }
        ],
        "timeline": [
            {"type": e.type, "event_id": e.event_id, "occurred_at": t}
            for e, t in [
                (p, "2026-01-01T10:00:00.000000Z"),
                (a, "2026-01-01T10:01:00.000000Z"),
                (c, "2026-01-01T10:02:00.000000Z"),
                (s, "2026-01-01T11:00:00.000000Z"),
                (d, "2026-01-02T10:00:00.000000Z"),
            ]
        ],
        "anomalies": [],
        "ledger": [
            {
                "event_id": c.event_id,
                "type": "PaymentCaptured",
                "payment_id": "p-1",
                "amount": "24.98",
                "currency": "EUR",
                "occurred_at": "2026-01-01T10:02:00.000000Z",
            }
        ],
        "placed_at": "2026-01-01T10:00:00.000000Z",
        "updated_at": "2026-01-02T10:00:00.000000Z",
        "placed": True,
    }
    assert_bson_safe(view)
    assert order_rows(view) == {
        "status": {"delivered": 1},
        "revenue": {"2026-01-01|EUR": 249_800},
        "customer:c-1": {"ltv|EUR": 249_800},
    }


def test_partial_payments_sum_until_paid() -> None:
    p = placed()
    first = view_of(p, payment("PaymentCaptured", "20", 1, payment_id="p-1"))
    assert (first["status"], first["amount_paid"], first["balance_due"]) == (
        "placed",
        "20.00",
        "4.98",
    )
    both = view_of(
        p,
        payment("PaymentCaptured", "20", 1, payment_id="p-2"),
        payment("PaymentCaptured", "5", 2, payment_id="p-1"),
    )
    assert (both["status"], both["amount_paid"], both["balance_due"]) == ("paid", "25.00", "-0.02")
    assert [x["payment_id"] for x in both["payments"]] == ["p-1", "p-2"]


def test_authorization_alone_is_not_payment() -> None:
    view = view_of(placed(), payment("PaymentAuthorized", "24.98", 1))
    assert (view["status"], view["amount_paid"]) == ("placed", "0.00")
    assert view["payments"][0]["status"] == "authorized"
    assert order_rows(view) == {"status": {"placed": 1}}  # no revenue, no lifetime value


def test_failed_payment() -> None:
    view = view_of(
        placed(), payment("PaymentAuthorized", "24.98", 1), payment("PaymentFailed", at=2)
    )
    assert view["status"] == "placed"
    assert view["payments"][0]["status"] == "failed"
    assert view["payments"][0]["amount"] == "24.98"


def test_no_order_placed_is_pending() -> None:
    empty = order_view(empty_facts(ORDER), CUSTOMER)
    assert empty["status"] == "pending"
    assert empty["placed"] is False
    assert (empty["customer_id"], empty["customer"], empty["currency"]) == (None, None, None)
    assert (empty["placed_at"], empty["updated_at"], empty["timeline"]) == (None, None, [])
    assert order_rows(empty) == {"status": {"pending": 1}}


def test_customer_block_holds_only_the_enrichment_fields() -> None:
    facts = fold([placed()])
    assert order_view(facts, None)["customer"] is None
    full = {**CUSTOMER, "customer_id": "c-1", "email": "a@x.io", "_id": "x"}
    assert order_view(facts, full)["customer"] == CUSTOMER


def test_timeline_is_chronological_and_updated_at_is_the_latest_fact() -> None:
    same_minute = [placed(5), shipped(5)]  # tie on occurred_at: event_id decides
    late_payment = payment("PaymentCaptured", at=1)  # happened earlier, arrived later
    view = view_of(*same_minute, late_payment)
    expected = sorted([*same_minute, late_payment], key=lambda e: (e.occurred_at, e.event_id))
    assert [t["event_id"] for t in view["timeline"]] == [e.event_id for e in expected]
    assert view["timeline"][0]["event_id"] == late_payment.event_id
    assert view["updated_at"] == "2026-01-01T10:05:00.000000Z"


def test_format_timestamp_is_canonical_utc() -> None:
    moment = datetime(2026, 1, 1, 12, 30, 1, 5, tzinfo=UTC).astimezone()
    assert format_timestamp(moment) == "2026-01-01T12:30:01.000005Z"
    # the same instant in UTC itself (every decoded event's), at another offset, whole
    assert format_timestamp(datetime(2026, 1, 1, 12, 30, 1, 5, tzinfo=UTC)) == (
        "2026-01-01T12:30:01.000005Z"
    )
    plus_two = timezone(timedelta(hours=2))
    assert format_timestamp(datetime(2026, 1, 1, 14, 30, 1, 5, tzinfo=plus_two)) == (
        "2026-01-01T12:30:01.000005Z"
    )
    assert format_timestamp(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00.000000Z"
    with pytest.raises(ValueError):
        format_timestamp(datetime(2026, 1, 1))  # naive


@given(st.datetimes(timezones=st.just(UTC)))
def test_format_timestamp_writes_every_utc_time_as_isoformat_does(moment: datetime) -> None:
    """The UTC fast path (orjson's formatting, the fraction put back for whole seconds)
    against the reference: ``isoformat`` with microseconds and a Z, over every year,
    whole seconds and single microseconds included."""
    expected = moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    assert format_timestamp(moment) == expected


# --- anomalies -----------------------------------------------------------------------------


ORDER_RULES = [
    # (stream builder, index of the anomaly, reason fragment, final status)
    (lambda: [placed(0), placed(1)], 1, "already placed", "placed"),
    (lambda: [shipped(0), placed(1)], 0, "before OrderPlaced", "placed"),
    (lambda: [cancelled(0), placed(1)], 0, "before OrderPlaced", "placed"),
    (lambda: [placed(0), shipped(1), cancelled(2)], 2, "cancel a shipped", "shipped"),
    (
        lambda: [placed(0), shipped(1), delivered(2), cancelled(3)],
        3,
        "cancel a delivered",
        "delivered",
    ),
    (lambda: [placed(0), cancelled(1), cancelled(2)], 2, "already cancelled", "cancelled"),
    (lambda: [placed(0), cancelled(1), shipped(2)], 2, "ship a cancelled", "cancelled"),
    (lambda: [placed(0), shipped(1), shipped(2)], 2, "already shipped", "shipped"),
    (lambda: [placed(0), cancelled(1), delivered(2)], 2, "deliver a cancelled", "cancelled"),
    (lambda: [placed(0), delivered(1)], 1, "unshipped", "placed"),
    (
        lambda: [placed(0), shipped(1), delivered(2), delivered(3)],
        3,
        "already delivered",
        "delivered",
    ),
]


@pytest.mark.parametrize(("build", "index", "reason", "status"), ORDER_RULES)
def test_orders_stream_anomalies_are_recorded_and_not_applied(
    build: Any, index: int, reason: str, status: str
) -> None:
    events: list[Event] = build()
    view = view_of(*events)
    bad = events[index]
    assert len(view["anomalies"]) == 1
    anomaly = view["anomalies"][0]
    assert (anomaly["event_id"], anomaly["type"]) == (bad.event_id, bad.type)
    assert reason in anomaly["reason"]
    assert view["status"] == status
    # kept in the timeline, not dropped
    assert bad.event_id in [t["event_id"] for t in view["timeline"]]


def test_second_order_placed_does_not_replace_the_first() -> None:
    view = view_of(placed(0), placed(1, currency="USD", items=[("Z", 1, "1")]))
    assert (view["currency"], view["total"], view["placed_at"]) == (
        "EUR",
        "24.98",
        "2026-01-01T10:00:00.000000Z",
    )


def test_refund_exceeding_the_capture_is_an_anomaly() -> None:
    p, c = placed(), payment("PaymentCaptured", "10", 1)
    too_much = payment("PaymentRefunded", "10.01", 2)
    never_captured = payment("PaymentRefunded", "1", 3, payment_id="p-2")
    view = view_of(p, c, too_much, never_captured)
    assert [(a["event_id"], a["type"]) for a in view["anomalies"]] == [
        (too_much.event_id, "PaymentRefunded"),
        (never_captured.event_id, "PaymentRefunded"),
    ]
    assert "exceeds" in view["anomalies"][0]["reason"]
    assert view["amount_paid"] == "10.00"
    assert [x["payment_id"] for x in view["payments"]] == ["p-1"]
    assert order_rows(view)["revenue"] == {"2026-01-01|EUR": 100_000}


def test_refunds_accumulate_per_payment_up_to_the_capture() -> None:
    view = view_of(
        placed(),
        payment("PaymentCaptured", "10", 1),
        payment("PaymentRefunded", "6", 2),
        payment("PaymentRefunded", "4", 3),
        payment("PaymentRefunded", "0.0001", 4),
    )
    assert view["amount_paid"] == "0.00"
    assert [a["reason"] for a in view["anomalies"]] == [
        "refund of 0.0001 exceeds the 0.00 captured and not refunded on payment p-1"
    ]


def test_anomalies_are_in_chronological_order_across_streams() -> None:
    late_ship = shipped(30)
    early_bad_refund = payment("PaymentRefunded", "1", 10)
    view = view_of(placed(0), cancelled(1), late_ship, early_bad_refund)
    assert [a["event_id"] for a in view["anomalies"]] == [
        early_bad_refund.event_id,
        late_ship.event_id,
    ]


# --- refunds and cancellation --------------------------------------------------------------


def test_cancel_then_refund_path() -> None:
    day = 24 * 60
    p = placed(0)
    c = payment("PaymentCaptured", "24.98", 1)
    x = cancelled(2)
    r1 = payment("PaymentRefunded", "4.98", day + 1)
    r2 = payment("PaymentRefunded", "20", 2 * day + 1)

    assert view_of(p, c)["status"] == "paid"
    after_cancel = view_of(p, c, x)
    assert (after_cancel["status"], after_cancel["amount_paid"]) == ("cancelled", "24.98")
    partly = view_of(p, c, x, r1)
    assert (partly["status"], partly["amount_paid"]) == ("cancelled", "20.00")
    assert partly["payments"][0]["status"] == "refunded"
    done = view_of(p, c, x, r1, r2)
    assert (done["status"], done["amount_paid"], done["balance_due"]) == (
        "refunded",
        "0.00",
        "24.98",
    )
    assert order_rows(done) == {
        "status": {"refunded": 1},
        "revenue": {
            "2026-01-01|EUR": 249_800,
            "2026-01-02|EUR": -49_800,
            "2026-01-03|EUR": -200_000,
        },
    }


def test_same_day_capture_and_refund_cancel_out_in_revenue() -> None:
    view = view_of(
        placed(),
        payment("PaymentCaptured", "24.98", 1),
        cancelled(2),
        payment("PaymentRefunded", "24.98", 3),
    )
    assert view["status"] == "refunded"
    assert "revenue" not in order_rows(view)


def test_cancel_without_capture_is_cancelled_not_refunded() -> None:
    assert view_of(placed(), cancelled(1))["status"] == "cancelled"
    authorized_only = view_of(placed(), payment("PaymentAuthorized", at=1), cancelled(2))
    assert authorized_only["status"] == "cancelled"


def test_full_refund_of_a_live_order_goes_back_to_placed() -> None:
    view = view_of(
        placed(), payment("PaymentCaptured", at=1), payment("PaymentRefunded", "24.98", 2)
    )
    assert (view["status"], view["amount_paid"]) == ("placed", "0.00")


# --- convergence across the two streams ----------------------------------------------------


def test_payment_before_order_ends_identical_to_order_before_payment() -> None:
    p, a, c = placed(0), payment("PaymentAuthorized", at=1), payment("PaymentCaptured", at=2)
    early = fold([a, c])
    pending = order_view(early, CUSTOMER)
    assert (pending["status"], pending["amount_paid"], pending["customer"]) == (
        "pending",
        "24.98",
        None,
    )
    assert order_rows(pending) == {
        "status": {"pending": 1},  # no customer yet: no lifetime value
        "revenue": {"2026-01-01|EUR": 249_800},
    }

    payment_first = apply(early, p)
    order_first = fold([p, a, c])
    assert payment_first == order_first
    assert order_view(payment_first, CUSTOMER) == order_view(order_first, CUSTOMER)
    assert order_view(order_first, CUSTOMER)["status"] == "paid"


def test_currency_mismatch_is_judged_whichever_arrives_first() -> None:
    p = placed(0, currency="EUR")
    usd = payment("PaymentCaptured", "24.98", 1, currency="USD")

    provisional = order_view(fold([usd]), CUSTOMER)
    assert (provisional["status"], provisional["anomalies"]) == ("pending", [])
    assert order_rows(provisional)["revenue"] == {"2026-01-01|USD": 249_800}

    order_first = order_view(fold([p, usd]), CUSTOMER)
    payment_first = order_view(fold([usd, p]), CUSTOMER)
    assert order_first == payment_first
    assert [a["event_id"] for a in order_first["anomalies"]] == [usd.event_id]
    assert "USD" in order_first["anomalies"][0]["reason"]
    assert (order_first["status"], order_first["amount_paid"], order_first["payments"]) == (
        "placed",
        "0.00",
        [],
    )
    assert order_rows(order_first) == {"status": {"placed": 1}}


def test_payment_currency_must_not_change_within_a_payment() -> None:
    eur = payment("PaymentCaptured", "10", 1, currency="EUR")
    usd_refund = payment("PaymentRefunded", "10", 2, currency="USD")
    view = order_view(fold([eur, usd_refund]), None)
    assert [a["event_id"] for a in view["anomalies"]] == [usd_refund.event_id]
    assert view["amount_paid"] == "10.00"


# --- property: every interleaving gives the same documents ---------------------------------

AMOUNTS = ["0.0001", "1", "5.50", "10", "24.98"]
CURRENCIES = ["EUR", "USD"]
MINUTES = st.integers(min_value=0, max_value=3 * 24 * 60)


@st.composite
def order_streams(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["placed", "cancelled", "shipped", "delivered"]))
        at = draw(MINUTES)
        if kind == "placed":
            items = draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["A", "B"]),
                        st.integers(1, 3),
                        st.sampled_from(AMOUNTS),
                    ),
                    min_size=1,
                    max_size=2,
                )
            )
            events.append(placed(at, currency=draw(st.sampled_from(CURRENCIES)), items=items))
        else:
            events.append(
                {"cancelled": cancelled, "shipped": shipped, "delivered": delivered}[kind](at)
            )
    return events


@st.composite
def payment_streams(draw: st.DrawFn) -> list[Event]:
    events: list[Event] = []
    for _ in range(draw(st.integers(0, 8))):
        events.append(
            payment(
                draw(
                    st.sampled_from(
                        ["PaymentAuthorized", "PaymentCaptured", "PaymentFailed", "PaymentRefunded"]
                    )
                ),
                draw(st.sampled_from(AMOUNTS)),
                draw(MINUTES),
                payment_id=draw(st.sampled_from(["p-1", "p-2"])),
                currency=draw(st.sampled_from(CURRENCIES)),
            )
        )
    return events


@st.composite
def with_redeliveries(draw: st.DrawFn, stream: st.SearchStrategy[list[Event]]) -> list[Event]:
    """A stream in which some events are delivered again at a later offset."""
    events = draw(stream)
    for _ in range(draw(st.integers(0, 3)) if events else 0):
        original = draw(st.integers(0, len(events) - 1))
        again = draw(st.integers(original + 1, len(events)))
        events.insert(again, events[original])
    return events


@st.composite
def interleavings(draw: st.DrawFn) -> tuple[list[Event], list[Event], list[Event]]:
    orders = draw(with_redeliveries(order_streams()))
    payments = draw(with_redeliveries(payment_streams()))
    lanes = draw(st.permutations([0] * len(orders) + [1] * len(payments)))
    queues = [iter(orders), iter(payments)]
    return orders, payments, [next(queues[lane]) for lane in lanes]


@settings(max_examples=300, deadline=None)
@given(interleavings())
def test_every_interleaving_yields_the_same_view_and_contribution(
    streams: tuple[list[Event], list[Event], list[Event]],
) -> None:
    orders, payments, mixed = streams
    reference = fold(orders + payments)
    facts = fold(mixed)
    assert facts == reference
    assert fold(payments + orders) == reference

    view = order_view(facts, CUSTOMER)
    assert view == order_view(reference, CUSTOMER)
    contribution = order_rows(view)
    assert contribution == order_rows(order_view(reference, CUSTOMER))

    assert_bson_safe(view)
    assert_bson_safe(contribution)
    assert len(view["timeline"]) == len({e.event_id for e in mixed})
    assert Decimal(view["amount_paid"]) >= 0
    if view["placed"]:
        # every applied payment is in the order currency: revenue sums to ltv
        revenue = contribution.get("revenue", {})
        ltv = contribution.get(f"customer:{view['customer_id']}", {})
        assert sum(revenue.values()) == ltv.get(f"ltv|{view['currency']}", 0)
        assert all(key.endswith("|" + view["currency"]) for key in revenue)


# --- storage -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(interleavings())
def test_facts_doc_round_trip(streams: tuple[list[Event], list[Event], list[Event]]) -> None:
    facts = fold(streams[2])
    doc = facts_to_doc(facts)
    assert_bson_safe(doc)
    restored = facts_from_doc(json.loads(json.dumps(doc)))
    assert restored == facts
    assert facts_to_doc(restored) == doc
    assert order_view(restored, CUSTOMER) == order_view(facts, CUSTOMER)


def test_facts_doc_layout_and_validation() -> None:
    p, c = placed(), payment("PaymentCaptured", "9.9900")
    doc = facts_to_doc(fold([p, c]))
    assert doc["version"] == FACTS_DOC_VERSION
    assert doc["order_id"] == ORDER
    assert doc["payment_events"][0]["data"]["amount"] == "9.99"
    assert doc["order_events"][0]["occurred_at"] == "2026-01-01T10:00:00Z"

    with pytest.raises(ValueError, match="version"):
        facts_from_doc({**doc, "version": 99})
    with pytest.raises(ValueError, match="payments-stream"):
        facts_from_doc({**doc, "payment_events": doc["order_events"]})
    with pytest.raises(ValueError, match="duplicate"):
        facts_from_doc({**doc, "order_events": doc["order_events"] * 2})
    with pytest.raises(ValueError, match="belongs to order"):
        facts_from_doc({**doc, "order_id": "o-2"})


@pytest.mark.parametrize("customer_id", ["status", "revenue", "a|b", "customer:x", "c-1"])
def test_a_customer_s_lifetime_value_is_a_row_of_its_own(customer_id: str) -> None:
    view = view_of(placed(customer_id=customer_id), payment("PaymentCaptured", "24.98", 1))
    rows = order_rows(view)
    assert rows[customer_group(customer_id)] == {"ltv|EUR": 249_800}
    assert customer_of_group(customer_group(customer_id)) == customer_id
    assert rows["status"] == {"paid": 1}  # a customer named "status" is not the counts
    assert ranked_measure("ltv|EUR") and not ranked_measure("2026-01-01|EUR")
