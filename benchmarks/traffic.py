"""Shop traffic for the stream benchmark, shaped like the issue's backlog: about 3.7
events per order, 20 orders per customer, customers registered (and some updated).

``producers.demo.generate`` makes richer traffic (about 4.9 events per order and
about 3 orders per customer): this generator keeps its kinds of events and its
rules (a payment in its order's currency, a refund never above what was
captured, shipping only after payment, about one order in sixteen placed after
its first payment event) but with the issue's proportions, and it is cheap
enough to stream 200,000 orders chunk by chunk. Deterministic for a seed; every
id carries a run tag, so two runs never share a document.

Events of one chunk are published in time order, so the events of different
orders interleave as in real traffic (an order's life spans minutes to days).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
ORDERS_PER_CUSTOMER = 20
CHUNK_ORDERS = 5000
UPDATE_SHARE = 0.08  # a customer update after about one order in twelve

# after OrderPlaced: the steps of the order's life; weight. Mean: 3.56 order events
# per order, plus about 0.13 customer events per order: about 3.7 in all.
SCENARIOS: dict[tuple[str, ...], int] = {
    ("auth", "capture", "ship", "deliver"): 26,
    ("auth", "capture", "ship"): 10,
    ("auth", "capture"): 15,
    ("auth",): 8,
    (): 11,
    ("cancel",): 10,
    ("auth", "fail", "cancel"): 6,
    ("auth", "fail", "auth", "capture"): 8,
    ("auth", "capture", "cancel", "refund"): 6,
}
_COUNTRIES = {"DE": "EUR", "FR": "EUR", "NL": "EUR", "US": "USD", "GB": "GBP"}
_SKUS = (
    ("TEE-BLK-M", "24.90"),
    ("MUG-350", "14.50"),
    ("BOOK-HC", "42.99"),
    ("CABLE-2M", "9.99"),
    ("LAMP-LED", "49.90"),
    ("BACKPACK", "89.95"),
)
_TIERS = ("standard", "silver", "gold")


def _timestamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Emitter:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.scheduled: list[tuple[datetime, int, dict[str, Any]]] = []

    def emit(
        self, type_: str, at: datetime, data: dict[str, Any], publish_at: datetime | None = None
    ) -> None:
        envelope = {
            "type": type_,
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "occurred_at": _timestamp(at),
            "data": data,
        }
        self.scheduled.append((publish_at or at, len(self.scheduled), envelope))

    def in_time_order(self) -> list[dict[str, Any]]:
        return [envelope for _, _, envelope in sorted(self.scheduled)]


def _customer(tag: str, number: int, rng: random.Random) -> dict[str, Any]:
    country = rng.choice(list(_COUNTRIES))
    return {
        "customer_id": f"c-{tag}-{number:07d}",
        "name": f"Customer {number}",
        "email": f"customer{number}@example.com",
        "tier": "standard",
        "country": country,
    }


def order_life(
    out: _Emitter,
    order_id: str,
    customer: dict[str, Any],
    placed_at: datetime,
    steps: tuple[str, ...],
    channel: str = "web",
) -> None:
    """OrderPlaced and the events of ``steps`` for one order."""
    rng = out.rng
    currency = _COUNTRIES[customer["country"]]
    items = [
        {"sku": sku, "quantity": rng.choice((1, 1, 1, 2)), "unit_price": price}
        for sku, price in rng.sample(_SKUS, k=rng.choice((1, 1, 2, 3)))
    ]
    total = sum(Decimal(i["unit_price"]) * i["quantity"] for i in items)
    amount = format(total, "f")
    at = placed_at
    later: list[tuple[str, datetime, dict[str, Any]]] = []
    payment = 0
    payment_id = ""
    for step in steps:
        at += timedelta(seconds=rng.uniform(30, 6 * 3600))
        if step == "auth":
            payment += 1
            payment_id = f"{order_id}-p{payment}"
            later.append(
                (
                    "PaymentAuthorized",
                    at,
                    {
                        "payment_id": payment_id,
                        "order_id": order_id,
                        "amount": amount,
                        "currency": currency,
                        "method": rng.choice(("card", "paypal", "sepa_debit")),
                    },
                )
            )
        elif step == "capture":
            later.append(
                (
                    "PaymentCaptured",
                    at,
                    {
                        "payment_id": payment_id,
                        "order_id": order_id,
                        "amount": amount,
                        "currency": currency,
                    },
                )
            )
        elif step == "fail":
            later.append(
                (
                    "PaymentFailed",
                    at,
                    {"payment_id": payment_id, "order_id": order_id, "reason": "card declined"},
                )
            )
        elif step == "refund":
            later.append(
                (
                    "PaymentRefunded",
                    at,
                    {
                        "payment_id": payment_id,
                        "order_id": order_id,
                        "amount": amount,
                        "currency": currency,
                    },
                )
            )
        elif step == "cancel":
            later.append(
                (
                    "OrderCancelled",
                    at,
                    {"order_id": order_id, "reason": "customer changed their mind"},
                )
            )
        elif step == "ship":
            later.append(
                (
                    "OrderShipped",
                    at,
                    {
                        "order_id": order_id,
                        "carrier": "DHL",
                        "tracking_number": f"T{rng.getrandbits(40)}",
                    },
                )
            )
        elif step == "deliver":
            later.append(("OrderDelivered", at, {"order_id": order_id}))
    placed = {
        "order_id": order_id,
        "customer_id": customer["customer_id"],
        "currency": currency,
        "items": items,
        "channel": channel,
    }
    # about one order in sixteen: OrderPlaced published after its first payment event
    late = bool(later) and later[0][0].startswith("Payment") and rng.random() < 1 / 16
    out.emit(
        "OrderPlaced",
        placed_at,
        placed,
        publish_at=later[0][1] + timedelta(seconds=1) if late else None,
    )
    for type_, moment, data in later:
        out.emit(type_, moment, data)


def shop_chunk(
    seed: int, tag: str, chunk: int, orders: int, orders_per_customer: int = ORDERS_PER_CUSTOMER
) -> list[dict[str, Any]]:
    """Chunk number ``chunk`` of the traffic: ``orders`` orders of their own customers
    (``orders / orders_per_customer`` of them, each registered before its first order),
    envelopes in publish order."""
    rng = random.Random(f"{seed}-{tag}-{chunk}")
    out = _Emitter(rng)
    start = START + timedelta(days=30 * chunk)
    customers = [
        _customer(tag, chunk * 10_000_000 + n, rng)
        for n in range(max(1, round(orders / orders_per_customer)))
    ]
    first_order: dict[str, datetime] = {}
    lives, weights = list(SCENARIOS), list(SCENARIOS.values())
    for number in range(orders):
        placed_at = start + timedelta(seconds=45 * number + rng.uniform(0, 30))
        customer = rng.choice(customers)
        cid = customer["customer_id"]
        if cid not in first_order:
            first_order[cid] = placed_at
            out.emit(
                "CustomerRegistered",
                placed_at - timedelta(seconds=rng.uniform(20, 900)),
                dict(customer),
            )
        order_life(
            out,
            f"o-{tag}-{chunk:03d}-{number:07d}",
            customer,
            placed_at,
            rng.choices(lives, weights)[0],
        )
        if rng.random() < UPDATE_SHARE:
            customer["tier"] = _TIERS[min(2, _TIERS.index(customer["tier"]) + 1)]
            out.emit(
                "CustomerUpdated",
                placed_at + timedelta(seconds=rng.uniform(60, 3600)),
                dict(customer),
            )
    return out.in_time_order()


def shop(
    seed: int, tag: str, orders: int, chunk_orders: int = CHUNK_ORDERS, first_chunk: int = 0
) -> Iterator[list[dict[str, Any]]]:
    """``orders`` orders as successive chunks of at most ``chunk_orders`` orders."""
    chunk = first_chunk
    while orders > 0:
        n = min(orders, chunk_orders)
        yield shop_chunk(seed, tag, chunk, n)
        orders -= n
        chunk += 1


def orders_for_events(events: int) -> int:
    """How many orders give about ``events`` events (3.7 per order), rounded up."""
    return max(1, -(-events * 10 // 37))


def whale_orders(
    seed: int,
    customer: dict[str, Any],
    first: int,
    count: int,
    steps: tuple[str, ...] = ("auth", "capture"),
) -> list[dict[str, Any]]:
    """``count`` orders of one customer (numbers ``first``..), each OrderPlaced plus
    ``steps``; envelopes in publish order."""
    rng = random.Random(f"{seed}-whale-{first}")
    out = _Emitter(rng)
    start = START + timedelta(days=3650)
    for number in range(first, first + count):
        order_life(
            out,
            f"{customer['customer_id']}-o{number:07d}",
            customer,
            start + timedelta(seconds=10 * number),
            steps,
        )
    return out.in_time_order()


def whale_customer(tag: str) -> dict[str, Any]:
    return {
        "customer_id": f"c-{tag}-whale",
        "name": "Whale Customer",
        "email": "whale@example.com",
        "tier": "gold",
        "country": "DE",
    }
