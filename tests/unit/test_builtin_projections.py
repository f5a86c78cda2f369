"""The built-in projections against an independent fold of a random, realistic event set,
applied through the Applier in different cross-topic interleavings and batch sizes."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from projections.api import Projection
from projections.applier import Applier
from projections.builtin.payment_methods import payment_methods
from projections.builtin.sku_sales import sku_sales
from projections.engine import RowsDict, sum_rows
from projections.projection_store import MemoryProjectionStore, Snapshot
from projections.state import Failure, Positioned
from schemas.events import (
    Event,
    OrderCancelled,
    OrderPlaced,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    parse_event,
)

PARTITIONS = 3
START = datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
SKUS = tuple(f"SKU-{n}" for n in range(1, 9))
CURRENCIES = ("EUR", "USD", "GBP")
METHODS = ("card", "paypal", "sepa_debit", "klarna")
SEEDS = range(6)


# --- a random shop -------------------------------------------------------------------------


@dataclass
class Shop:
    """What happened (each fact once) and the partition logs it was published to."""

    facts: list[Event] = field(default_factory=list)
    logs: dict[tuple[str, int], list[Event]] = field(default_factory=dict)
    features: Counter[str] = field(default_factory=Counter)


def _event(rng: random.Random, type_: str, at: datetime, data: dict[str, Any]) -> Event:
    return parse_event(
        {
            "type": type_,
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "occurred_at": at.isoformat(),
            "data": data,
        }
    )


def _payment_events(
    rng: random.Random, order_id: str, payment_id: str, currency: str, amount: str, at: datetime
) -> tuple[list[Event], str]:
    """One payment's events in the order they happen, and what kind of payment it is."""
    kind = rng.choice(["captured", "captured", "refunded", "declined", "auth_then_failed", "auth"])
    money = {"payment_id": payment_id, "order_id": order_id, "amount": amount, "currency": currency}
    if kind == "declined":  # failed before any authorization: its method is unknown
        reason = {"payment_id": payment_id, "order_id": order_id, "reason": "card declined"}
        return [_event(rng, "PaymentFailed", at, reason)], kind
    events = [_event(rng, "PaymentAuthorized", at, money | {"method": rng.choice(METHODS)})]
    at += timedelta(minutes=rng.randrange(1, 180))
    if kind == "auth_then_failed":
        reason = {"payment_id": payment_id, "order_id": order_id, "reason": "capture failed"}
        events.append(_event(rng, "PaymentFailed", at, reason))
    elif kind in ("captured", "refunded"):
        events.append(_event(rng, "PaymentCaptured", at, money))
        if kind == "refunded":
            at += timedelta(hours=rng.randrange(1, 72))
            events.append(_event(rng, "PaymentRefunded", at, money))
    return events, kind


def random_shop(seed: int, orders: int = 60) -> Shop:
    rng = random.Random(seed)
    shop = Shop()
    timed: dict[tuple[str, int], list[tuple[datetime, int, Event]]] = defaultdict(list)

    def publish(e: Event, partition: int) -> None:
        timed[(e.topic, partition)].append((e.occurred_at, len(shop.facts), e))
        shop.facts.append(e)

    for n in range(orders):
        order_id = f"o-{seed}-{n}"
        partition = rng.randrange(PARTITIONS)  # orders and payments are co-partitioned
        at = START + timedelta(minutes=rng.randrange(4 * 24 * 60))
        currency = rng.choice(CURRENCIES)
        lines = [  # (sku, quantity, unit price); the same SKU twice in an order happens
            (rng.choice(SKUS), rng.randrange(1, 6), Decimal(rng.randrange(1, 20_000)) / 100)
            for _ in range(rng.choice([1, 1, 2, 3, 4]))
        ]
        items = [{"sku": s, "quantity": q, "unit_price": str(p)} for s, q, p in lines]
        total = sum((p * q for _, q, p in lines), Decimal(0))
        if rng.random() < 0.92:
            data = {
                "order_id": order_id,
                "customer_id": f"c-{rng.randrange(15)}",
                "currency": currency,
                "items": items,
            }
            publish(_event(rng, "OrderPlaced", at, data), partition)
            shop.features["placed"] += 1
        else:
            shop.features["payments without an order"] += 1
        if rng.random() < 0.15:
            cancel_at = at + timedelta(minutes=rng.randrange(5, 600))
            data = {"order_id": order_id, "reason": "changed my mind"}
            publish(_event(rng, "OrderCancelled", cancel_at, data), partition)
            shop.features["cancelled"] += 1
        for p in range(rng.choice([0, 1, 1, 1, 2])):
            pay_at = at + timedelta(minutes=rng.randrange(1, 120))
            events, kind = _payment_events(
                rng, order_id, f"p-{order_id}-{p}", currency, str(total), pay_at
            )
            for e in events:
                publish(e, partition)
            shop.features[kind] += 1

    for where, entries in timed.items():
        log = [e for _, _, e in sorted(entries, key=lambda t: (t[0], t[1]))]
        # a few events published again (a producer retry): the same event_id, later
        for e in rng.sample(log, k=max(1, len(log) // 20)):
            log.insert(rng.randrange(log.index(e) + 1, len(log) + 1), e)
            shop.features["re-published"] += 1
        shop.logs[where] = log
    return shop


# --- the expected rows, folded independently ----------------------------------------------


def _kept(rows: dict[str, Counter[str]]) -> RowsDict:
    return {g: {k: v for k, v in c.items() if v} for g, c in rows.items() if any(c.values())}


def expected_sku_sales(facts: Sequence[Event]) -> RowsDict:
    """Per SKU and UTC day of the order: units, orders and revenue (in 1e-4 units per
    currency) of the orders placed and neither cancelled nor refunded."""
    placed = {e.data.order_id: e for e in facts if isinstance(e, OrderPlaced)}
    out = {e.data.order_id for e in facts if isinstance(e, OrderCancelled | PaymentRefunded)}
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for order_id, order in placed.items():
        if order_id in out:
            continue
        day = order.occurred_at.strftime("%Y-%m-%d")
        for item in order.data.items:
            group = f"{item.sku}|{day}"
            rows[group]["units"] += item.quantity
            rows[group][f"revenue:{order.data.currency}"] += int(
                item.unit_price * item.quantity * 10_000
            )
        for sku in {item.sku for item in order.data.items}:
            rows[f"{sku}|{day}"]["orders"] += 1
    return _kept(rows)


PAYMENT_OUTCOMES = {
    PaymentAuthorized: "authorized",
    PaymentCaptured: "captured",
    PaymentFailed: "failed",
    PaymentRefunded: "refunded",
}


def expected_payment_methods(facts: Sequence[Event]) -> RowsDict:
    """Per method (of the payment's authorization; ``unknown`` for a payment never
    authorized) and UTC hour of each outcome: how many payments had that outcome."""
    method = {e.data.payment_id: e.data.method for e in facts if isinstance(e, PaymentAuthorized)}
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    for e in facts:
        outcome = PAYMENT_OUTCOMES.get(type(e))
        if outcome is None:
            continue
        payment_id = e.data.payment_id  # type: ignore[union-attr]
        hour = e.occurred_at.strftime("%Y-%m-%dT%H")
        rows[f"{method.get(payment_id, 'unknown')}|{hour}"][outcome] += 1
    return _kept(rows)


EXPECTED = {"sku_sales": expected_sku_sales, "payment_methods": expected_payment_methods}


# --- reading the logs in different orders -------------------------------------------------


def _positioned(shop: Shop) -> dict[tuple[str, int], list[Positioned]]:
    return {
        (topic, partition): [Positioned(e, topic, partition, o) for o, e in enumerate(log)]
        for (topic, partition), log in shop.logs.items()
    }


def _topic_by_topic(shop: Shop, topics: Sequence[str]) -> list[Positioned]:
    """All of the first topic's partitions (one after another), then the second's."""
    logs = _positioned(shop)
    return [
        p for topic in topics for where in sorted(logs) if where[0] == topic for p in logs[where]
    ]


def orders_first(shop: Shop, rng: random.Random) -> list[Positioned]:
    return _topic_by_topic(shop, ("orders", "payments"))


def payments_first(shop: Shop, rng: random.Random) -> list[Positioned]:
    return _topic_by_topic(shop, ("payments", "orders"))


def interleaved(shop: Shop, rng: random.Random) -> list[Positioned]:
    """Every partition's log in its order, the partitions mixed at random."""
    logs = [list(reversed(log)) for log in _positioned(shop).values()]
    out = []
    while logs:
        log = rng.choice(logs)
        out.append(log.pop())
        if not log:
            logs.remove(log)
    return out


READINGS = {"orders first": orders_first, "payments first": payments_first, "mixed": interleaved}


def batches(read: list[Positioned], rng: random.Random, small: bool) -> list[list[Positioned]]:
    if not small:
        return [read]
    out, i = [], 0
    while i < len(read):
        size = rng.randrange(1, 8)
        out.append(read[i : i + size])
        i += size
    return out


class NoDeadLetters:
    async def __call__(self, projection: Projection, failure: Failure) -> None:
        raise AssertionError(f"{projection.name} dead-lettered {failure.at}: {failure.error!r}")


async def apply_all(projection: Projection, chunks: Sequence[Sequence[Positioned]]) -> Snapshot:
    store = MemoryProjectionStore()
    applier = Applier(projection, store, NoDeadLetters())
    await applier.start()
    for chunk in chunks:
        highest: dict[str, int] = {}
        for p in chunk:
            highest[p.mark] = max(highest.get(p.mark, -1), p.offset)
        await applier.apply(chunk, highest)
    return await store.snapshot()


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_the_random_shop_has_every_feature(seed: int) -> None:
    shop = random_shop(seed)
    for feature in (
        "placed",
        "cancelled",
        "refunded",
        "captured",
        "declined",
        "auth_then_failed",
        "re-published",
    ):
        assert shop.features[feature] > 0, (feature, shop.features)
    assert len({e.occurred_at.date() for e in shop.facts}) >= 4
    assert {e.data.currency for e in shop.facts if isinstance(e, OrderPlaced)} == set(CURRENCIES)
    assert len({e.event_id for e in shop.facts}) == len(shop.facts)


def test_the_independent_folds_see_cancellations_refunds_and_unknown_methods() -> None:
    """The expectations are not trivial: what they take out and what they keep."""
    shop = random_shop(0)
    every_order = expected_sku_sales([e for e in shop.facts if isinstance(e, OrderPlaced)])
    sales = expected_sku_sales(shop.facts)
    assert sales and every_order != sales
    assert sum(r["orders"] for r in sales.values()) < sum(r["orders"] for r in every_order.values())
    methods = expected_payment_methods(shop.facts)
    assert any(g.startswith("unknown|") for g in methods)
    assert all(set(r) == {"failed"} for g, r in methods.items() if g.startswith("unknown|"))
    assert {g.split("|")[0] for g in methods} == {*METHODS, "unknown"}


@pytest.mark.parametrize("projection", [sku_sales, payment_methods], ids=lambda p: p.name)
@pytest.mark.parametrize("seed", SEEDS)
async def test_stored_rows_equal_the_independent_fold_in_every_reading(
    projection: Projection, seed: int
) -> None:
    shop = random_shop(seed)
    expected = EXPECTED[projection.name](shop.facts)
    assert expected
    marks = {
        f"{topic}:{partition}": len(log) - 1
        for (topic, partition), log in shop.logs.items()
        if topic in projection.topics
    }
    shown = None
    for reading, read in READINGS.items():
        for small in (False, True):
            rng = random.Random(f"{seed}-{reading}-{small}")
            snapshot = await apply_all(projection, batches(read(shop, rng), rng, small))
            where = f"{reading}, {'small batches' if small else 'one batch'}"
            assert snapshot.rows == expected, where
            assert sum_rows(snapshot.entities.values()) == snapshot.rows, where
            assert snapshot.marks == marks, where
            # every entity shows the same rows and holds the same events, whatever the order
            now = {k: e.shown for k, e in snapshot.entities.items()}
            assert shown is None or now == shown, where
            shown = now
