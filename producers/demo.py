"""Demo traffic: a deterministic, coherent stream of realistic shop events.

``generate(seed, orders)`` is a pure function: the same seed and order count
give the same envelopes (event ids and times included), in publish order. It
simulates a shop: customers register (and later some update their tier, e-mail
or name), place orders of 1-4 catalogue items priced in their country's
currency (EUR, USD or GBP, exact decimal strings), pay (authorize, then
capture; some payments fail and are retried with another method, some are
never retried and the order is cancelled), get their parcels shipped and
delivered, cancel before paying, cancel after paying and get refunded (in one
or two refunds), or return an item after delivery (a partial refund). A
few orders are left in flight (awaiting payment, authorized, paid, shipped).

Every event is valid for ``schemas.events`` and the stream breaks none of the
read model's rules: a payment is in its order's currency, a refund never
exceeds what its payment captured, an order ships only after it is paid and is
delivered only after it ships, a cancelled order never ships. Each order's own
events are published in the order they happened, except that for about one
order in sixteen the OrderPlaced arrives late, after its payment events (a
slow upstream): the read models must converge anyway.

``run_demo`` publishes that stream to Kafka at a chosen rate (token bucket,
one batch in flight at a time).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import unicodedata
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from eventfold.settings import Settings
from producers.client import EventPublisher
from producers.jsonl import PUBLISH_FAILURES, Progress, Publisher
from schemas.events import Event, parse_event

DEFAULT_START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
"""Where the demo's clock starts when no other start is given (keeps ``generate`` pure):
the first order is placed shortly after it (its customer registers shortly before)."""

MAX_BATCH = 500

# --- reference data ---------------------------------------------------------------------

_CURRENCY_OF_COUNTRY = {
    "GB": "GBP",
    "US": "USD",
    "DE": "EUR",
    "FR": "EUR",
    "NL": "EUR",
    "ES": "EUR",
    "IT": "EUR",
    "IE": "EUR",
    "AT": "EUR",
    "BE": "EUR",
}
_COUNTRY_WEIGHTS = {
    "GB": 18,
    "US": 24,
    "DE": 16,
    "FR": 11,
    "NL": 7,
    "ES": 7,
    "IT": 7,
    "IE": 4,
    "AT": 3,
    "BE": 3,
}
_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "GB": (
        ("Oliver", "Amelia", "Harry", "Isla", "George", "Ava", "Jack", "Freya"),
        ("Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Hughes"),
    ),
    "IE": (
        ("Seán", "Aoife", "Conor", "Niamh", "Cian", "Saoirse"),
        ("Murphy", "Kelly", "O'Sullivan", "Walsh", "Byrne", "Ryan"),
    ),
    "US": (
        ("Liam", "Olivia", "Noah", "Emma", "James", "Sophia", "Lucas", "Mia"),
        ("Johnson", "Garcia", "Miller", "Davis", "Martinez", "Lee", "Walker", "Young"),
    ),
    "DE": (
        ("Lukas", "Mia", "Leon", "Emma", "Finn", "Hannah", "Jonas", "Lea"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Wagner", "Becker"),
    ),
    "AT": (
        ("Tobias", "Anna", "Florian", "Lena", "Maximilian", "Sophie"),
        ("Gruber", "Huber", "Bauer", "Pichler", "Steiner", "Moser"),
    ),
    "FR": (
        ("Gabriel", "Louise", "Raphaël", "Jade", "Arthur", "Chloé", "Hugo", "Léa"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand"),
    ),
    "BE": (
        ("Noah", "Olivia", "Arthur", "Emma", "Louis", "Elena"),
        ("Peeters", "Janssens", "Maes", "Jacobs", "Dupont", "Lambert"),
    ),
    "NL": (
        ("Daan", "Emma", "Sem", "Julia", "Lucas", "Tess"),
        ("de Jong", "Jansen", "de Vries", "van Dijk", "Bakker", "Visser"),
    ),
    "ES": (
        ("Hugo", "Lucía", "Martín", "Sofía", "Pablo", "Martina"),
        ("García", "Fernández", "López", "Martínez", "Sánchez", "Pérez"),
    ),
    "IT": (
        ("Leonardo", "Sofia", "Francesco", "Giulia", "Alessandro", "Aurora"),
        ("Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano"),
    ),
}
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com")
_TIERS = ("standard", "silver", "gold")

# sku, list price in EUR
_CATALOGUE: tuple[tuple[str, str], ...] = (
    ("TEE-ORGANIC-BLK-M", "24.90"),
    ("HOODIE-GRY-L", "59.00"),
    ("SOCKS-MERINO-3PK", "19.95"),
    ("MUG-ENAMEL-350", "14.50"),
    ("BOTTLE-STEEL-750", "22.50"),
    ("COFFEE-BEANS-1KG", "27.80"),
    ("NOTEBOOK-A5-DOT", "6.95"),
    ("PEN-GEL-10PK", "8.49"),
    ("BOOK-DDD-HC", "42.99"),
    ("USB-C-CABLE-2M", "9.99"),
    ("CHARGER-65W", "39.00"),
    ("KBD-MECH-75", "129.00"),
    ("MOUSE-WIRELESS", "34.90"),
    ("HEADPHONES-ANC", "199.00"),
    ("MONITOR-27-QHD", "329.00"),
    ("LAMP-DESK-LED", "49.90"),
    ("BACKPACK-24L", "89.95"),
    ("CHAIR-ERGO-MESH", "449.00"),
    ("PLANT-POT-CER", "17.40"),
    ("CANDLE-SOY-200", "12.00"),
)
_FX = {"EUR": Decimal(1), "USD": Decimal("1.09"), "GBP": Decimal("0.86")}
_METHODS = {"card": 58, "paypal": 17, "apple_pay": 9, "google_pay": 5, "sepa_debit": 6, "klarna": 5}
_FAILURES = (
    "card declined",
    "insufficient funds",
    "3-D Secure authentication failed",
    "card expired",
    "issuer unavailable",
    "suspected fraud",
)
_CARRIERS = {
    "GB": ("Royal Mail", "DPD", "Evri"),
    "IE": ("An Post", "DPD"),
    "US": ("UPS", "USPS", "FedEx"),
    "DE": ("DHL", "Hermes", "DPD"),
    "AT": ("Post AG", "DHL"),
    "FR": ("Colissimo", "Chronopost", "DPD"),
    "BE": ("bpost", "DHL"),
    "NL": ("PostNL", "DHL"),
    "ES": ("Correos", "SEUR"),
    "IT": ("Poste Italiane", "BRT"),
}
_CANCEL_UNPAID = (
    "customer changed their mind",
    "ordered by mistake",
    "found a better price elsewhere",
    "delivery date too late",
)
_CANCEL_PAID = (
    "item out of stock",
    "customer changed their mind",
    "address could not be verified",
    "duplicate order",
)

# scenario, weight: how an order's life goes
_SCENARIOS = {
    "delivered": 44,
    "shipped": 9,
    "paid": 6,
    "authorized": 3,
    "awaiting_payment": 3,
    "retried": 9,
    "failed_cancelled": 4,
    "cancelled_unpaid": 7,
    "cancelled_refunded": 9,
    "returned": 6,
}
_OUT_OF_ORDER_SHARE = 1 / 16


def _localised_price(list_price: str, currency: str) -> Decimal:
    """The catalogue price in ``currency``: converted, then rounded up to a .99 ending."""
    eur = Decimal(list_price)
    if currency == "EUR":
        return eur
    return (eur * _FX[currency]).to_integral_value(ROUND_CEILING) - Decimal("0.01")


def _money(amount: Decimal) -> str:
    return format(amount.quantize(Decimal("0.01")), "f")


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in ascii_text.lower() if c.isalnum())


# --- the simulation -------------------------------------------------------------------------


@dataclass
class _Customer:
    customer_id: str
    first: str
    last: str
    email: str
    tier: str
    country: str
    last_change: datetime
    orders: int = 0

    def data(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "name": f"{self.first} {self.last}",
            "email": self.email,
            "tier": self.tier,
            "country": self.country,
        }


@dataclass(order=True)
class _Scheduled:
    publish_at: datetime
    seq: int
    envelope: dict[str, Any] = field(compare=False)


class _Shop:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.run = f"{rng.getrandbits(24):06x}"  # keeps ids of different seeds apart
        self.customers: list[_Customer] = []
        self.events: list[_Scheduled] = []

    # helpers
    def _seconds(self, low: float, high: float) -> timedelta:
        return timedelta(seconds=self.rng.uniform(low, high))

    def _pick(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), weights=list(weights.values()))[0]

    def emit(
        self, type_: str, at: datetime, data: dict[str, Any], publish_at: datetime | None = None
    ) -> None:
        envelope = {
            "type": type_,
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "occurred_at": _timestamp(at),
            "data": data,
        }
        self.events.append(_Scheduled(publish_at or at, len(self.events), envelope))

    # customers
    def customer_for_order(self, at: datetime) -> _Customer:
        if not self.customers or self.rng.random() < 0.35:
            return self.register(at - self._seconds(20, 900))
        # returning customers: the ones who ordered more come back more
        weights = [1 + c.orders for c in self.customers]
        return self.rng.choices(self.customers, weights=weights)[0]

    def register(self, at: datetime) -> _Customer:
        country = self._pick(_COUNTRY_WEIGHTS)
        firsts, lasts = _NAMES[country]
        first, last = self.rng.choice(firsts), self.rng.choice(lasts)
        number = len(self.customers) + 1
        customer = _Customer(
            customer_id=f"c-{self.run}-{number:05d}",
            first=first,
            last=last,
            email=self._email(first, last),
            tier="standard" if self.rng.random() < 0.85 else "silver",
            country=country,
            last_change=at,
        )
        self.customers.append(customer)
        self.emit("CustomerRegistered", at, customer.data())
        return customer

    def _email(self, first: str, last: str) -> str:
        style = self.rng.randrange(3)
        local = {
            0: f"{_slug(first)}.{_slug(last)}",
            1: f"{_slug(first)[0]}{_slug(last)}",
            2: f"{_slug(first)}{self.rng.randrange(1, 99)}",
        }[style]
        return f"{local}@{self.rng.choice(_EMAIL_DOMAINS)}"

    def maybe_update(self, customer: _Customer, after: datetime) -> None:
        """Sometimes the customer changes tier, e-mail or name a while after an order.
        A customer's updates are emitted in time order, so the latest one is the truth."""
        if self.rng.random() >= 0.08:
            return
        at = max(
            after + self._seconds(3600, 72 * 3600), customer.last_change + timedelta(seconds=1)
        )
        change = self.rng.random()
        if change < 0.55 and customer.tier != "gold":
            customer.tier = _TIERS[_TIERS.index(customer.tier) + 1]
        elif change < 0.85:
            customer.email = self._email(customer.first, customer.last)
        else:
            customer.last = self.rng.choice(_NAMES[customer.country][1])
            customer.email = self._email(customer.first, customer.last)
        customer.last_change = at
        self.emit("CustomerUpdated", at, customer.data())

    # orders
    def order(self, number: int, placed_at: datetime) -> None:
        rng = self.rng
        customer = self.customer_for_order(placed_at)
        customer.orders += 1
        currency = _CURRENCY_OF_COUNTRY[customer.country]
        order_id = f"o-{self.run}-{number + 1:06d}"
        items = []
        for sku, list_price in rng.sample(
            _CATALOGUE, k=rng.choices((1, 2, 3, 4), (50, 30, 13, 7))[0]
        ):
            price = _localised_price(list_price, currency)
            most = 6 if price < 15 else 3 if price < 60 else 1
            quantity = min(most, rng.choices((1, 2, 3, 4, 6), (75, 16, 5, 2, 2))[0])
            items.append({"sku": sku, "quantity": quantity, "unit_price": _money(price)})
        placed: dict[str, Any] = {
            "order_id": order_id,
            "customer_id": customer.customer_id,
            "currency": currency,
            "items": items,
        }
        if rng.random() < 0.9:  # older clients send OrderPlaced v1, without a channel
            placed["channel"] = self._pick({"web": 55, "ios": 20, "android": 17, "phone": 8})

        order = _Order(self, order_id, currency, items, customer.country)
        scenario = self._pick(_SCENARIOS)
        order.live(scenario, placed_at)
        placed_publish_at = placed_at
        if order.first_capture is not None and rng.random() < _OUT_OF_ORDER_SHARE:
            # the OrderPlaced arrives late, right after the capture and before anything
            # else happens to the order on the orders stream
            placed_publish_at = order.first_capture + self._seconds(0.2, 5)
        self.emit("OrderPlaced", placed_at, placed, publish_at=placed_publish_at)
        order.flush()
        self.maybe_update(customer, placed_at)


class _Order:
    """One order's events after OrderPlaced, decided by its scenario."""

    def __init__(
        self, shop: _Shop, order_id: str, currency: str, items: list[dict[str, Any]], country: str
    ) -> None:
        self.shop = shop
        self.order_id = order_id
        self.currency = currency
        self.items = items
        self.total = sum((Decimal(i["unit_price"]) * i["quantity"] for i in items), Decimal(0))
        self.country = country
        self.payments = 0
        self.first_capture: datetime | None = None
        self.pending: list[tuple[str, datetime, dict[str, Any]]] = []

    def _event(self, type_: str, at: datetime, **data: Any) -> None:
        self.pending.append((type_, at, {"order_id": self.order_id, **data}))

    def _payment_id(self) -> str:
        self.payments += 1
        return f"pay-{self.order_id.removeprefix('o-')}-{self.payments}"

    def _authorize(self, at: datetime, method: str) -> str:
        payment_id = self._payment_id()
        self._event(
            "PaymentAuthorized",
            at,
            payment_id=payment_id,
            amount=_money(self.total),
            currency=self.currency,
            method=method,
        )
        return payment_id

    def _pay(self, at: datetime, method: str) -> tuple[str, datetime]:
        """Authorize then capture the total; returns the payment id and capture time."""
        payment_id = self._authorize(at, method)
        captured_at = at + self.shop._seconds(2, 900)
        self._event(
            "PaymentCaptured",
            captured_at,
            payment_id=payment_id,
            amount=_money(self.total),
            currency=self.currency,
        )
        if self.first_capture is None:
            self.first_capture = captured_at
        return payment_id, captured_at

    def _fail(self, at: datetime, method: str) -> datetime:
        """A payment that fails (sometimes after its authorization, the same payment);
        returns when."""
        if self.shop.rng.random() < 0.3:  # authorized, then the capture is refused
            payment_id = self._authorize(at, method)
            at += self.shop._seconds(5, 600)
        else:
            payment_id = self._payment_id()
        self._event(
            "PaymentFailed", at, payment_id=payment_id, reason=self.shop.rng.choice(_FAILURES)
        )
        return at

    def _ship(self, after: datetime, deliver: bool) -> datetime:
        rng = self.shop.rng
        carrier = rng.choice(_CARRIERS[self.country])
        tracking = f"{_slug(carrier)[:2].upper()}{rng.randrange(10**9, 10**10)}"
        shipped_at = after + self.shop._seconds(2 * 3600, 36 * 3600)
        self._event("OrderShipped", shipped_at, carrier=carrier, tracking_number=tracking)
        if not deliver:
            return shipped_at
        delivered_at = shipped_at + self.shop._seconds(18 * 3600, 96 * 3600)
        self._event("OrderDelivered", delivered_at)
        return delivered_at

    def _refund(self, payment_id: str, at: datetime, amount: Decimal, split: bool) -> None:
        parts = [amount]
        if split and amount >= Decimal("2"):
            first = (amount * Decimal(self.shop.rng.randrange(20, 80)) / 100).quantize(
                Decimal("0.01")
            )
            parts = [first, amount - first]
        for part in parts:
            at += self.shop._seconds(300, 48 * 3600)
            self._event(
                "PaymentRefunded",
                at,
                payment_id=payment_id,
                amount=_money(part),
                currency=self.currency,
            )

    def live(self, scenario: str, placed_at: datetime) -> None:
        shop, rng = self.shop, self.shop.rng
        method = shop._pick(_METHODS)
        first_try = placed_at + shop._seconds(3, 40)
        if scenario == "awaiting_payment":
            return
        if scenario == "authorized":
            self._authorize(first_try, method)
            return
        if scenario == "cancelled_unpaid":
            self._event(
                "OrderCancelled",
                placed_at + shop._seconds(120, 6 * 3600),
                reason=rng.choice(_CANCEL_UNPAID),
            )
            return
        if scenario == "failed_cancelled":
            failed_at = self._fail(first_try, method)
            self._event(
                "OrderCancelled",
                failed_at + shop._seconds(3600, 24 * 3600),
                reason="payment failed",
            )
            return
        if scenario == "retried":
            failed_at = self._fail(first_try, method)
            other = [m for m in _METHODS if m != method]
            payment_id, paid_at = self._pay(failed_at + shop._seconds(30, 1800), rng.choice(other))
            scenario = rng.choice(("delivered", "delivered", "shipped", "paid"))
        else:
            payment_id, paid_at = self._pay(first_try, method)
        if scenario == "paid":
            return
        if scenario == "cancelled_refunded":
            cancelled_at = paid_at + shop._seconds(600, 20 * 3600)
            self._event("OrderCancelled", cancelled_at, reason=rng.choice(_CANCEL_PAID))
            self._refund(payment_id, cancelled_at, self.total, split=rng.random() < 0.25)
            return
        done_at = self._ship(paid_at, deliver=scenario != "shipped")
        if scenario == "returned":
            # some units of one line come back: refund them (less than was captured)
            item = rng.choice(self.items)
            units = rng.randint(1, item["quantity"])
            amount = Decimal(item["unit_price"]) * units
            self._refund(
                payment_id, done_at + shop._seconds(86400, 14 * 86400), amount, split=False
            )

    def flush(self) -> None:
        for type_, at, data in self.pending:
            self.shop.emit(type_, at, data)


def generate(seed: int, orders: int, *, start: datetime = DEFAULT_START) -> list[dict[str, Any]]:
    """The demo stream of ``orders`` orders (with their customers, payments, shipments,
    cancellations and refunds) as JSON envelopes, in publish order. Pure: the same
    arguments give the same list."""
    if orders < 0:
        raise ValueError("orders must not be negative")
    if start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    shop = _Shop(random.Random(seed))
    placed_at = start
    for number in range(orders):
        placed_at += timedelta(seconds=shop.rng.expovariate(1 / 45))  # ~80 orders an hour
        shop.order(number, placed_at)
    return [scheduled.envelope for scheduled in sorted(shop.events)]


# --- publishing at a rate -------------------------------------------------------------------


class TokenBucket:
    """Paces work to ``rate`` tokens per second with bursts of at most ``capacity``.

    Starts full. ``take(n)`` waits until ``n`` tokens are available and spends them;
    ``n`` may not exceed ``capacity``. Clock and sleep are injectable for tests.
    """

    def __init__(
        self,
        rate: float,
        capacity: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._sleep = sleep
        self._tokens = capacity
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self, n: float) -> None:
        if n > self.capacity:
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.capacity}")
        self._refill()
        while self._tokens < n:
            await self._sleep((n - self._tokens) / self.rate)
            self._refill()
        self._tokens -= n


def batch_size_for(rate_per_s: float | None) -> int:
    """About ten batches a second at the given rate (at least 1 event, at most MAX_BATCH);
    MAX_BATCH when unthrottled."""
    if not rate_per_s or not math.isfinite(rate_per_s):
        return MAX_BATCH
    return max(1, min(MAX_BATCH, int(rate_per_s / 10)))


@dataclass
class DemoSummary:
    seed: int
    orders: int
    events: int
    """events generated (the total to publish)"""
    published: int = 0
    """events Kafka acknowledged"""
    counts_by_type: dict[str, int] = field(default_factory=dict)
    """acknowledged events per type"""
    customers: int = 0
    out_of_order_orders: int = 0
    """orders whose OrderPlaced is published after one of their payment events"""
    elapsed_s: float = 0.0
    correlation_id: str = ""
    error: str | None = None

    @property
    def events_per_s(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def render(self) -> RenderableType:
        table = Table(
            title=f"demo traffic, seed {self.seed}", show_header=False, title_justify="left"
        )
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("orders", f"{self.orders:,}")
        table.add_row("customers", f"{self.customers:,}")
        table.add_row("payments before their order", f"{self.out_of_order_orders:,}")
        table.add_row("events published", f"[green]{self.published:,}[/] of {self.events:,}")
        for type_, count in self.counts_by_type.items():
            table.add_row(f"  {type_}", f"{count:,}")
        table.add_row("elapsed", f"{self.elapsed_s:.2f} s")
        table.add_row("rate", f"{self.events_per_s:,.0f} events/s")
        table.add_row("correlation id", self.correlation_id)
        parts: list[RenderableType] = [table]
        if self.error is not None:
            parts.append(Text.assemble(("publishing stopped: ", "bold red"), self.error))
        parts.append(
            Text(
                f"the same events again: --seed {self.seed} --orders {self.orders} "
                "(event ids repeat, so the read models do not change)"
            )
        )
        return Group(*parts)


def out_of_order_orders(envelopes: Sequence[dict[str, Any]]) -> int:
    """How many orders have a payment event published before their OrderPlaced."""
    placed: set[str] = set()
    early: set[str] = set()
    for envelope in envelopes:
        order_id = envelope["data"].get("order_id")
        if envelope["type"] == "OrderPlaced":
            placed.add(order_id)
        elif envelope["type"].startswith("Payment") and order_id not in placed:
            early.add(order_id)
    return len(early)


async def run_demo(
    settings: Settings,
    rate_per_s: float | None,
    total_orders: int,
    seed: int,
    progress: Progress | None = None,
    *,
    publisher: Publisher | None = None,
    start: datetime = DEFAULT_START,
) -> DemoSummary:
    """Publish ``generate(seed, total_orders)`` at about ``rate_per_s`` events a second
    (None or 0: as fast as Kafka acknowledges), in batches, one batch in flight at a time.

    A Kafka failure stops the run and is reported in the summary (``error``), with
    how many events were acknowledged before it.
    """
    if rate_per_s is not None and not rate_per_s >= 0:
        raise ValueError(f"rate_per_s must be 0 or more, got {rate_per_s}")
    envelopes = generate(seed, total_orders, start=start)
    events: list[Event] = [parse_event(e) for e in envelopes]
    summary = DemoSummary(
        seed=seed,
        orders=total_orders,
        events=len(events),
        customers=sum(1 for e in envelopes if e["type"] == "CustomerRegistered"),
        out_of_order_orders=out_of_order_orders(envelopes),
        correlation_id=str(uuid.uuid4()),
    )
    size = batch_size_for(rate_per_s)
    bucket: TokenBucket | None = None
    if rate_per_s and math.isfinite(rate_per_s):
        bucket = TokenBucket(rate_per_s, capacity=size)
    counts: Counter[str] = Counter()
    owned: EventPublisher | None = None
    if publisher is None:
        publisher = owned = EventPublisher(settings)
    started = time.perf_counter()
    try:
        for i in range(0, len(events), size):
            batch = events[i : i + size]
            if bucket is not None:
                await bucket.take(len(batch))
            try:
                await publisher.publish_many(batch, correlation_id=summary.correlation_id)
            except PUBLISH_FAILURES as exc:
                summary.error = str(exc)
                break
            summary.published += len(batch)
            counts.update(e.type for e in batch)
            if progress is not None:
                progress(summary.published, summary.events)
    finally:
        if owned is not None:
            await owned.stop()
        summary.elapsed_s = time.perf_counter() - started
        summary.counts_by_type = dict(sorted(counts.items()))
    return summary
