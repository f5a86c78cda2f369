"""The order read model as a pure fold plus a view function.

``OrderFacts`` is everything known about one order: its ``orders``-stream
events and its ``payments``-stream events, each tuple in its own stream order,
deduplicated by ``event_id``. ``apply`` folds one event into the facts;
``order_view`` derives the read-model document from the facts alone, so the
document is the same for every interleaving of the two streams that keeps each
stream's own order (invariant 1) and for a rebuild (invariant 3: no wall-clock
time anywhere). ``order_rows`` derives, from the view, the rows one order
contributes to the Redis aggregates (counts, revenue, lifetime values).

No I/O here; the stream processors and the rebuild engine store the facts
(``facts_to_doc``) and the view next to each other in MongoDB.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from projections.api import Documents, Index, Lookup, group_key, names_measure
from projections.money import exact_arithmetic, format_money, text_units
from schemas.events import (
    Event,
    OrderCancelled,
    OrderDelivered,
    OrderPlaced,
    OrderShipped,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    event_to_json,
    parse_event,
)

ORDER_EVENT_TYPES = (OrderPlaced, OrderCancelled, OrderShipped, OrderDelivered)
PAYMENT_EVENT_TYPES = (PaymentAuthorized, PaymentCaptured, PaymentFailed, PaymentRefunded)

FACTS_DOC_VERSION = 1
"""Version of the ``facts_to_doc`` layout; ``facts_from_doc`` refuses others."""

_ZERO = Decimal(0)


@dataclass(frozen=True)
class OrderFacts:
    """The facts known so far about one order (see the module docstring)."""

    order_id: str
    order_events: tuple[Event, ...] = ()
    payment_events: tuple[Event, ...] = ()

    def event_ids(self) -> set[str]:
        return {e.event_id for e in self.order_events} | {e.event_id for e in self.payment_events}


def empty_facts(order_id: str) -> OrderFacts:
    return OrderFacts(order_id=order_id)


def order_id_of(event: Event) -> str:
    """The order an orders- or payments-stream event belongs to (its Kafka key).

    Raises ValueError for a customer event."""
    if isinstance(event, ORDER_EVENT_TYPES) or isinstance(event, PAYMENT_EVENT_TYPES):
        return event.data.order_id
    raise ValueError(f"{event.type} {event.event_id} is not an order or payment event")


def apply(facts: OrderFacts, event: Event) -> OrderFacts:
    """``facts`` with ``event`` appended to its stream's tuple.

    Returns ``facts`` itself (identity) when the event_id is already among the
    facts, so callers can detect a redelivery as a no-op. Raises ValueError for
    a customer event or an event of another order.
    """
    order_id = order_id_of(event)
    if order_id != facts.order_id:
        raise ValueError(
            f"{event.type} {event.event_id} belongs to order {order_id!r}, not {facts.order_id!r}"
        )
    if event.event_id in facts.event_ids():
        return facts
    return append_new(facts, event)


def append_new(facts: OrderFacts, event: Event) -> OrderFacts:
    """``facts`` with ``event`` appended to its stream's tuple, for a caller that knows
    the event is of this order and not among the facts (``apply`` checks both)."""
    # the constructor, not ``replace``: every event of every order comes through here
    if isinstance(event, ORDER_EVENT_TYPES):
        return OrderFacts(facts.order_id, (*facts.order_events, event), facts.payment_events)
    return OrderFacts(facts.order_id, facts.order_events, (*facts.payment_events, event))


def reference_fold(events: Iterable[Event]) -> dict[str, OrderFacts]:
    """Folds orders- and payments-stream events, in the given order, into facts
    per order_id (in order of first appearance). Customer events are skipped."""
    folded: dict[str, OrderFacts] = {}
    for event in events:
        if not isinstance(event, ORDER_EVENT_TYPES + PAYMENT_EVENT_TYPES):
            continue
        order_id = order_id_of(event)
        folded[order_id] = apply(folded.get(order_id) or empty_facts(order_id), event)
    return folded


# --- storage -------------------------------------------------------------------------------


def facts_to_doc(facts: OrderFacts) -> dict[str, Any]:
    """The facts as a JSON- and BSON-safe document (str/int/bool/list/dict/None only):
    the events as their JSON envelopes (``schemas.events.event_to_json``)."""
    return {
        "version": FACTS_DOC_VERSION,
        "order_id": facts.order_id,
        "order_events": [event_to_json(e) for e in facts.order_events],
        "payment_events": [event_to_json(e) for e in facts.payment_events],
    }


def facts_to_json(facts: OrderFacts) -> dict[str, Any]:
    """``facts_to_doc`` for ``orjson.dumps``, the events already encoded (``encoded``):
    dumped, it is the same JSON as the document."""
    return {
        "version": FACTS_DOC_VERSION,
        "order_id": facts.order_id,
        "order_events": [encoded(e) for e in facts.order_events],
        "payment_events": [encoded(e) for e in facts.payment_events],
    }


def compact(dumped: bytes) -> bytes:
    """A copy of ``orjson.dumps``' output that takes its own size: orjson returns its
    whole write buffer (4 KB at least) under a shorter length, so each result kept for
    long holds 4 KB whatever it says (measured with tracemalloc: 4,098 bytes per
    277-byte envelope, 319 copied). For what is kept, not what is sent at once."""
    return bytes(memoryview(dumped))


ENVELOPES_KEPT = 10_000
_encoded: OrderedDict[str, tuple[weakref.ref[Event], orjson.Fragment]] = OrderedDict()


def encoded(event: Event) -> orjson.Fragment:
    """An event's JSON envelope, encoded once per event object while it is among the
    last ``ENVELOPES_KEPT``: an order's state is stored whole each time it changes (its
    table and its document), and dumping its events again was a tenth of the
    processor's CPU during a catch-up. The envelope is kept for the event object it was
    made from (a weak reference: the cache keeps no event alive), so another event under
    the same id (a producer reusing ids) never gets it. Kept as bytes of their own size:
    10,000 take about 3 MB (``compact``)."""
    kept = _encoded.get(event.event_id)
    if kept is not None and kept[0]() is event:
        return kept[1]
    fragment = orjson.Fragment(compact(orjson.dumps(event_to_json(event))))
    _encoded[event.event_id] = (weakref.ref(event), fragment)
    _encoded.move_to_end(event.event_id)  # the newest last
    if len(_encoded) > ENVELOPES_KEPT:
        # the oldest (a plain dict's first key is found by skipping the deleted ones)
        _encoded.popitem(last=False)
    return fragment


def facts_from_doc(doc: Mapping[str, Any]) -> OrderFacts:
    """Inverse of ``facts_to_doc``; validates every event and each stream's membership."""
    if doc.get("version") != FACTS_DOC_VERSION:
        raise ValueError(f"unsupported facts document version {doc.get('version')!r}")
    order_events = tuple(parse_event(dict(e)) for e in doc["order_events"])
    payment_events = tuple(parse_event(dict(e)) for e in doc["payment_events"])
    if not all(isinstance(e, ORDER_EVENT_TYPES) for e in order_events):
        raise ValueError("order_events holds an event that is not an orders-stream event")
    if not all(isinstance(e, PAYMENT_EVENT_TYPES) for e in payment_events):
        raise ValueError("payment_events holds an event that is not a payments-stream event")
    facts = empty_facts(doc["order_id"])
    for event in order_events + payment_events:
        applied = apply(facts, event)
        if applied is facts:
            raise ValueError(f"duplicate event_id {event.event_id} in the facts document")
        facts = applied
    return facts


# --- view ----------------------------------------------------------------------------------


_QUOTED_WITH_FRACTION = len('"2026-01-01T10:00:00.000001Z"')
_QUOTED_WHOLE_SECONDS = len('"2026-01-01T10:00:00Z"')


def format_timestamp(moment: datetime) -> str:
    """The canonical time string of the read models: UTC, microseconds, 'Z'
    (``2026-01-01T10:00:00.000000Z``). Strings of this form sort chronologically.

    A view formats each of its order's events' times each time it is derived (6 % of
    the processor's CPU in a catch-up and of a rebuild's, by py-spy); every decoded
    event's time is in UTC already (``schemas.events``). orjson writes such a time in
    C, leaving the fraction out only for whole seconds: 0.44 us a call, against 1.8 for
    rewriting the ``+00:00`` of ``isoformat``'s (the fallback, for what orjson would
    write otherwise)."""
    if moment.tzinfo is UTC:
        text = orjson.dumps(moment, option=orjson.OPT_UTC_Z)  # with its JSON quotes
        if len(text) == _QUOTED_WITH_FRACTION:
            return text[1:-1].decode()
        if len(text) == _QUOTED_WHOLE_SECONDS:
            return text[1:-2].decode() + ".000000Z"
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
    # isoformat is several times faster than strftime and, naive, writes the same digits
    return _utc(moment).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"occurred_at must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)


def _chronological(event: Event) -> tuple[datetime, str]:
    """Sort key: aware datetimes compare as instants, whatever their offsets."""
    moment = event.occurred_at
    if moment.tzinfo is None or moment.utcoffset() is None:
        _utc(moment)  # raises
    return (moment, event.event_id)


@dataclass
class _Payment:
    payment_id: str
    status: str = ""
    currency: str | None = None
    method: str | None = None
    authorized: Decimal | None = None
    captured: Decimal = _ZERO
    refunded: Decimal = _ZERO
    has_capture: bool = False

    @property
    def paid(self) -> Decimal:
        return self.captured - self.refunded

    def doc(self) -> dict[str, Any]:
        if self.authorized is not None:
            amount: Decimal | None = self.authorized
        elif self.has_capture:
            amount = self.captured
        else:
            amount = None
        return {
            "payment_id": self.payment_id,
            "status": self.status,
            "amount": None if amount is None else format_money(amount),
            "currency": self.currency,
            "method": self.method,
            "captured": format_money(self.captured),
            "refunded": format_money(self.refunded),
        }


@dataclass
class _Judgement:
    """What the walk over the facts decided: applied state and anomalies."""

    placed: OrderPlaced | None = None
    cancelled: bool = False
    shipped: bool = False
    delivered: bool = False
    payments: dict[str, _Payment] = field(default_factory=dict)
    ledger: list[PaymentCaptured | PaymentRefunded] = field(default_factory=list)
    anomalies: list[tuple[Event, str]] = field(default_factory=list)


def _order_rule_violation(j: _Judgement, event: Event) -> str | None:
    """Why ``event`` may not be applied to the orders-stream state so far, or None."""
    if isinstance(event, OrderPlaced):
        if j.placed is not None:
            return f"order already placed by event {j.placed.event_id}"
        return None
    if j.placed is None:
        return f"{event.type} before OrderPlaced"
    if isinstance(event, OrderCancelled):
        if j.delivered:
            return "cannot cancel a delivered order"
        if j.shipped:
            return "cannot cancel a shipped order"
        if j.cancelled:
            return "order already cancelled"
    elif isinstance(event, OrderShipped):
        if j.cancelled:
            return "cannot ship a cancelled order"
        if j.shipped:
            return "order already shipped"
    elif isinstance(event, OrderDelivered):
        if j.cancelled:
            return "cannot deliver a cancelled order"
        if not j.shipped:
            return "cannot deliver an unshipped order"
        if j.delivered:
            return "order already delivered"
    return None


def _payment_rule_violation(j: _Judgement, event: Event) -> str | None:
    """Why ``event`` may not be applied to the payments-stream state so far, or None.

    The order-currency rule is judged only once OrderPlaced is among the facts;
    until then payments are applied provisionally."""
    assert isinstance(event, PAYMENT_EVENT_TYPES)
    payment = j.payments.get(event.data.payment_id)
    currency = None if isinstance(event, PaymentFailed) else event.data.currency
    if currency is not None:
        if j.placed is not None and currency != j.placed.data.currency:
            return (
                f"payment currency {currency} differs from the order currency "
                f"{j.placed.data.currency}"
            )
        if payment is not None and payment.currency not in (None, currency):
            return (
                f"payment currency {currency} differs from the currency {payment.currency} "
                f"of payment {payment.payment_id}"
            )
    if isinstance(event, PaymentRefunded):
        refundable = _ZERO if payment is None else payment.paid
        if event.data.amount > refundable:
            return (
                f"refund of {format_money(event.data.amount)} exceeds the "
                f"{format_money(refundable)} captured and not refunded on payment "
                f"{event.data.payment_id}"
            )
    return None


def _apply_payment(j: _Judgement, event: Event) -> None:
    assert isinstance(event, PAYMENT_EVENT_TYPES)
    payment_id = event.data.payment_id
    payment = j.payments.setdefault(payment_id, _Payment(payment_id))
    if not isinstance(event, PaymentFailed):
        payment.currency = event.data.currency
    if isinstance(event, PaymentAuthorized):
        payment.status = "authorized"
        payment.authorized = event.data.amount
        payment.method = event.data.method
    elif isinstance(event, PaymentCaptured):
        payment.status = "captured"
        payment.captured += event.data.amount
        payment.has_capture = True
        j.ledger.append(event)
    elif isinstance(event, PaymentFailed):
        payment.status = "failed"
    else:
        payment.status = "refunded"
        payment.refunded += event.data.amount
        j.ledger.append(event)


def _judge(facts: OrderFacts) -> _Judgement:
    j = _Judgement()
    for event in facts.order_events:
        reason = _order_rule_violation(j, event)
        if reason is not None:
            j.anomalies.append((event, reason))
        elif isinstance(event, OrderPlaced):
            j.placed = event
        elif isinstance(event, OrderCancelled):
            j.cancelled = True
        elif isinstance(event, OrderShipped):
            j.shipped = True
        elif isinstance(event, OrderDelivered):
            j.delivered = True
    for event in facts.payment_events:
        reason = _payment_rule_violation(j, event)
        if reason is not None:
            j.anomalies.append((event, reason))
        else:
            _apply_payment(j, event)
    return j


def _status(j: _Judgement, total: Decimal, amount_paid: Decimal) -> str:
    has_capture = any(p.has_capture for p in j.payments.values())
    if j.placed is None:
        return "pending"
    if j.cancelled:
        return "refunded" if has_capture and amount_paid == _ZERO else "cancelled"
    if j.delivered:
        return "delivered"
    if j.shipped:
        return "shipped"
    if has_capture and amount_paid >= total:
        return "paid"
    return "placed"


CUSTOMER_LOOKUP = Lookup(
    projection="customers", key="customer_id", fields=("name", "tier", "country"), into="customer"
)
"""An order shows its customer's name, tier and country (``customer``), found by its
``customer_id``: the enrichment the customer side sends (``customer_fold.enrichment``)."""


def customer_block(placed: bool, customer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The order view's ``customer`` field: the only part of it the customer block sets
    (``with_customer_block`` relies on that)."""
    if not placed or customer is None:
        return None
    return CUSTOMER_LOOKUP.block(customer)


def with_customer_block(view: Mapping[str, Any], customer: Mapping[str, Any]) -> dict[str, Any]:
    """``order_view(facts, customer)`` from ``view``, the view of the same facts with
    another block: an enrichment changes one field, so the rest is not derived again."""
    return {**view, CUSTOMER_LOOKUP.into: customer_block(bool(view.get("placed")), customer)}


def order_view(facts: OrderFacts, customer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The order read-model document: a pure function of ``facts`` and the
    customer's enrichment block (``customer_fold.enrichment``), JSON- and
    BSON-safe (money as ``format_money`` strings, times as ``format_timestamp``).

    Besides the documented fields it carries ``ledger``: the applied
    PaymentCaptured/PaymentRefunded events ({event_id, type, payment_id,
    amount, currency, occurred_at}) in (occurred_at, event_id) order, from
    which ``order_rows`` derives revenue per day.
    """
    with exact_arithmetic():
        j = _judge(facts)
        placed = j.placed
        items: list[dict[str, Any]] = []
        total = _ZERO
        if placed is not None:
            for item in placed.data.items:
                line_total = item.quantity * item.unit_price
                total += line_total
                items.append(
                    {
                        "sku": item.sku,
                        "quantity": item.quantity,
                        "unit_price": format_money(item.unit_price),
                        "line_total": format_money(line_total),
                    }
                )
        amount_paid = sum((p.paid for p in j.payments.values()), _ZERO)
        balance_due = total - amount_paid
    all_events = sorted(facts.order_events + facts.payment_events, key=_chronological)
    anomalies = sorted(j.anomalies, key=lambda anomaly: _chronological(anomaly[0]))
    return {
        "order_id": facts.order_id,
        "customer_id": None if placed is None else placed.data.customer_id,
        CUSTOMER_LOOKUP.into: customer_block(placed is not None, customer),
        "currency": None if placed is None else placed.data.currency,
        "items": items,
        "total": format_money(total),
        "status": _status(j, total, amount_paid),
        "amount_paid": format_money(amount_paid),
        "balance_due": format_money(balance_due),
        "payments": [j.payments[pid].doc() for pid in sorted(j.payments)],
        "timeline": [
            {
                "type": e.type,
                "event_id": e.event_id,
                "occurred_at": format_timestamp(e.occurred_at),
            }
            for e in all_events
        ],
        "anomalies": [
            {"event_id": e.event_id, "type": e.type, "reason": reason} for e, reason in anomalies
        ],
        "ledger": [
            {
                "event_id": e.event_id,
                "type": e.type,
                "payment_id": e.data.payment_id,
                "amount": format_money(e.data.amount),
                "currency": e.data.currency,
                "occurred_at": format_timestamp(e.occurred_at),
            }
            for e in sorted(j.ledger, key=_chronological)
        ],
        "placed_at": None if placed is None else format_timestamp(placed.occurred_at),
        "updated_at": format_timestamp(all_events[-1].occurred_at) if all_events else None,
        "placed": placed is not None,
    }


ORDER_QUERY_FIELDS: tuple[str, ...] = ("order_id", "customer_id", "status", "placed_at", "placed")
"""The order view's fields stored as fields of their own in an order document: the ones
queries filter and sort on, and the indexes cover. The rest of the view (items,
payments, timeline, ledger, ...) is stored as one JSON string, ``_view``: an order's
nested view, stored whole, made its writes the largest cost of a batch
(``Documents``)."""
ORDER_INDEXES: tuple[Index, ...] = (
    (("customer_id", 1), ("placed_at", -1)),
    (("status", 1), ("placed_at", -1)),
    (("placed_at", -1), ("_id", -1)),
)
"""The order list's filters and order (``GET /v1/orders?customer_id=&status=``), newest
first."""
ORDER_DOCUMENTS = Documents(fields=ORDER_QUERY_FIELDS, indexes=ORDER_INDEXES)
"""How order views are stored: listed by customer and status from the documents (by id,
the query API reads the hot cache in Redis first)."""


STATUS_GROUP = "status"
"""The order aggregates' row of counts: a status -> its orders (``order_rows``)."""
REVENUE_GROUP = "revenue"
"""The row of revenue: ``YYYY-MM-DD|CUR`` -> captured minus refunded that UTC day, in
1e-4 units."""
CUSTOMER_GROUP = "customer:"
"""A customer's row (this, then its id): ``ltv|CUR`` -> its orders' amount_paid. A
customer id may be any text, so its groups are told from the two above by this prefix."""
LIFETIME_VALUE = "ltv"
ORDER_RANKED = (LIFETIME_VALUE,)
"""The aggregates' ranked measures: each ``ltv|CUR`` ranks the customers (the
top-customers leaderboard of that currency)."""


def ranked_measure(measure: str) -> bool:
    """Whether the aggregates keep ``measure`` ranked (``ORDER_RANKED``)."""
    return names_measure(ORDER_RANKED, measure)


def customer_group(customer_id: str) -> str:
    return CUSTOMER_GROUP + customer_id


def customer_of_group(group: str) -> str:
    """The customer id of a ``customer_group``."""
    return group.removeprefix(CUSTOMER_GROUP)


def lifetime_value_measure(currency: str) -> str:
    return group_key(LIFETIME_VALUE, currency)


def order_rows(view: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """What one order contributes to the Redis aggregates, as ``projections.api.Rows``
    (a writer replaces the order's previous rows by these, and adds the difference to
    each group's sums):

    - ``STATUS_GROUP``: {its status: 1} (``pending`` before its OrderPlaced);
    - ``REVENUE_GROUP``: {"YYYY-MM-DD|CUR": units} captured - refunded per UTC day of
      the payment event and its currency, applied payment events only, zero
      entries omitted (the group too, with none);
    - ``customer_group(customer_id)``: {"ltv|CUR": units} the order's amount_paid in its
      currency, omitted when zero or pending.

    Units are integer 1e-4 units (``money.to_units``). Needs only the view
    (its ``ledger``), so the rows of a stored document can be recomputed from that
    document.
    """
    revenue: dict[str, int] = {}
    for entry in view["ledger"]:
        key = group_key(entry["occurred_at"][:10], entry["currency"])
        units = text_units(entry["amount"])
        sign = -1 if entry["type"] == "PaymentRefunded" else 1
        revenue[key] = revenue.get(key, 0) + sign * units
    rows: dict[str, dict[str, int]] = {STATUS_GROUP: {view["status"]: 1}}
    revenue = {key: units for key, units in sorted(revenue.items()) if units}
    if revenue:
        rows[REVENUE_GROUP] = revenue
    if view["placed"]:
        paid = text_units(view["amount_paid"])
        if paid:
            rows[customer_group(view["customer_id"])] = {
                lifetime_value_measure(view["currency"]): paid
            }
    return rows
