"""The demo traffic generator: valid, deterministic, coherent; and its paced publishing."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from eventfold.settings import Settings
from producers.client import PublishError, PublishResult
from producers.demo import TokenBucket, batch_size_for, generate, run_demo
from projections.order_fold import order_view, reference_fold
from schemas.catalog import TOPIC_OF_TYPE
from schemas.events import EVENT_TYPES, Event, event_to_json, parse_event

SEEDS = (0, 1, 2024)
ORDERS = 300


@pytest.fixture(scope="module")
def streams() -> dict[int, list[dict[str, Any]]]:
    return {seed: generate(seed, ORDERS) for seed in SEEDS}


def order_id(envelope: dict[str, Any]) -> str:
    return str(envelope["data"]["order_id"])


def test_every_envelope_is_a_valid_event_and_plain_json(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    for stream in streams.values():
        for envelope in stream:
            event = parse_event(json.loads(json.dumps(envelope)))
            assert event.type == envelope["type"]
            assert event.event_id == envelope["event_id"]  # given, not generated


def test_event_ids_are_unique(streams: dict[int, list[dict[str, Any]]]) -> None:
    ids = [e["event_id"] for stream in streams.values() for e in stream]
    assert len(ids) == len(set(ids))


def test_the_same_seed_gives_the_same_stream() -> None:
    assert json.dumps(generate(7, 120)) == json.dumps(generate(7, 120))


def test_different_seeds_give_different_streams_with_distinct_ids() -> None:
    a, b = generate(1, 120), generate(2, 120)
    assert a != b
    assert not {order_id(e) for e in a if e["type"] == "OrderPlaced"} & {
        order_id(e) for e in b if e["type"] == "OrderPlaced"
    }


def test_orders_argument_is_the_number_of_orders() -> None:
    assert generate(3, 0) == []
    assert Counter(e["type"] for e in generate(3, 57))["OrderPlaced"] == 57
    with pytest.raises(ValueError):
        generate(3, -1)


def test_the_stream_holds_every_event_type_of_the_catalog(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    for stream in streams.values():
        assert {e["type"] for e in stream} == set(EVENT_TYPES) == set(TOPIC_OF_TYPE)


def test_some_payments_are_published_before_their_order(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    for stream in streams.values():
        placed_at_index = {
            order_id(e): i for i, e in enumerate(stream) if e["type"] == "OrderPlaced"
        }
        early = {
            order_id(e)
            for i, e in enumerate(stream)
            if e["type"].startswith("Payment") and i < placed_at_index[order_id(e)]
        }
        assert 0 < len(early) < ORDERS // 4


def test_refunds_never_exceed_what_the_payment_captured(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    refunds = 0
    for stream in streams.values():
        balance: dict[str, Decimal] = defaultdict(Decimal)
        for e in stream:  # publish order is the payments stream's order
            if e["type"] == "PaymentCaptured":
                balance[e["data"]["payment_id"]] += Decimal(e["data"]["amount"])
            elif e["type"] == "PaymentRefunded":
                refunds += 1
                balance[e["data"]["payment_id"]] -= Decimal(e["data"]["amount"])
                assert balance[e["data"]["payment_id"]] >= 0, e
    assert refunds > 0


def test_payments_are_in_their_order_currency(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    for stream in streams.values():
        currency = {
            order_id(e): e["data"]["currency"] for e in stream if e["type"] == "OrderPlaced"
        }
        assert set(currency.values()) == {"EUR", "USD", "GBP"}
        payments = [e for e in stream if "currency" in e["data"] and e["type"] != "OrderPlaced"]
        assert payments
        for e in payments:
            assert e["data"]["currency"] == currency[order_id(e)], e


def test_order_lifecycles_are_coherent(streams: dict[int, list[dict[str, Any]]]) -> None:
    """Per order, in publish order: OrderPlaced first on the orders stream; ship only after
    a capture; deliver only after shipping; a cancelled order never ships; refunds only
    after a cancellation or a delivery; each stream's times never go backwards."""
    for stream in streams.values():
        seen: dict[str, list[str]] = defaultdict(list)
        last_time: dict[tuple[str, str], str] = {}
        for e in stream:
            if e["type"].startswith("Customer"):
                continue
            oid, kind, history = order_id(e), e["type"], seen[order_id(e)]
            orders_history = [t for t in history if t.startswith("Order")]
            if kind.startswith("Order"):
                assert (kind == "OrderPlaced") == (not orders_history), (oid, kind, history)
            if kind == "OrderShipped":
                assert "PaymentCaptured" in history and "OrderCancelled" not in history
            if kind == "OrderDelivered":
                assert "OrderShipped" in history
            if kind == "OrderCancelled":
                assert "OrderShipped" not in history
            if kind == "PaymentRefunded":
                assert "OrderCancelled" in history or "OrderDelivered" in history
            topic = TOPIC_OF_TYPE[kind]
            assert last_time.get((oid, topic), "") <= e["occurred_at"], (oid, kind)
            last_time[(oid, topic)] = e["occurred_at"]
            history.append(kind)


def test_customers_register_before_they_order_or_update(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    for stream in streams.values():
        registered: set[str] = set()
        updates = 0
        for e in stream:
            if e["type"] == "CustomerRegistered":
                assert e["data"]["customer_id"] not in registered
                registered.add(e["data"]["customer_id"])
            elif e["type"] == "CustomerUpdated":
                updates += 1
                assert e["data"]["customer_id"] in registered
            elif e["type"] == "OrderPlaced":
                assert e["data"]["customer_id"] in registered
        assert 0 < len(registered) < ORDERS and updates > 0


def test_the_read_model_folds_the_stream_without_anomalies_into_every_status(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    """The read model's own rules (currency, refund limits, shipping rules) find nothing."""
    for stream in streams.values():
        folded = reference_fold(parse_event(e) for e in stream)
        assert len(folded) == ORDERS
        views = [order_view(facts, None) for facts in folded.values()]
        assert [v["anomalies"] for v in views if v["anomalies"]] == []
        statuses = Counter(v["status"] for v in views)
        assert set(statuses) == {
            "placed",
            "paid",
            "shipped",
            "delivered",
            "cancelled",
            "refunded",
        }, statuses
        assert statuses["delivered"] > ORDERS // 4


def test_orders_have_one_to_four_items_with_exact_prices(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    sizes: Counter[int] = Counter()
    for stream in streams.values():
        for e in stream:
            if e["type"] == "OrderPlaced":
                items = e["data"]["items"]
                sizes[len(items)] += 1
                assert len({i["sku"] for i in items}) == len(items)
                for item in items:
                    assert isinstance(item["unit_price"], str)
                    assert Decimal("1") < Decimal(item["unit_price"]) < Decimal("1000")
    assert set(sizes) == {1, 2, 3, 4}


# --- pacing and publishing ----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_token_bucket_paces_to_the_rate_after_an_initial_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=50, capacity=10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        await bucket.take(10)
    # the first 10 tokens are the initial burst; the other 90 come at 50 per second
    assert clock.now - 100.0 == pytest.approx(90 / 50)
    with pytest.raises(ValueError):
        await bucket.take(11)


async def test_token_bucket_does_not_bank_more_than_its_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, capacity=5, clock=clock, sleep=clock.sleep)
    await bucket.take(5)
    clock.now += 60  # idle for a minute: still only 5 tokens
    await bucket.take(5)
    assert clock.slept == []
    await bucket.take(5)
    assert sum(clock.slept) == pytest.approx(0.5)


def test_batch_size_follows_the_rate_within_bounds() -> None:
    assert batch_size_for(None) == batch_size_for(0) == batch_size_for(float("inf")) == 500
    assert batch_size_for(5) == 1
    assert batch_size_for(200) == 20
    assert batch_size_for(1_000_000) == 500


class RecordingPublisher:
    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.fail_on_call = fail_on_call

    async def publish_many(
        self,
        events: Sequence[Event],
        *,
        correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> PublishResult:
        if self.fail_on_call == len(self.batches) + 1:
            raise PublishError("Kafka did not acknowledge the events: test")
        self.batches.append(list(events))
        return PublishResult([], "token")


async def test_run_demo_publishes_the_generated_stream_in_order() -> None:
    publisher = RecordingPublisher()
    progress: list[tuple[int, int]] = []
    summary = await run_demo(
        Settings(), None, 40, 11, lambda d, t: progress.append((d, t)), publisher=publisher
    )
    expected = generate(11, 40)
    sent = [event_to_json(e) for batch in publisher.batches for e in batch]
    assert [e["event_id"] for e in sent] == [e["event_id"] for e in expected]
    assert summary.published == summary.events == len(expected)
    assert summary.error is None
    assert summary.counts_by_type == dict(sorted(Counter(e["type"] for e in expected).items()))
    assert progress[-1] == (len(expected), len(expected))
    assert all(len(b) <= 500 for b in publisher.batches)


async def test_run_demo_keeps_to_the_rate() -> None:
    publisher = RecordingPublisher()
    rate = 400.0
    started = time.monotonic()
    summary = await run_demo(Settings(), rate, 30, 5, None, publisher=publisher)
    elapsed = time.monotonic() - started
    capacity = batch_size_for(rate)
    assert all(len(b) <= capacity for b in publisher.batches)
    # everything beyond the initial burst had to wait for tokens at `rate` per second
    assert elapsed >= (summary.events - capacity) / rate * 0.95
    assert summary.published == summary.events


async def test_run_demo_stops_at_a_publish_failure_and_says_how_far_it_got() -> None:
    publisher = RecordingPublisher(fail_on_call=3)
    summary = await run_demo(Settings(), None, 300, 9, None, publisher=publisher)
    assert summary.error is not None and "Kafka" in summary.error
    assert summary.published == 2 * 500 < summary.events
    assert sum(summary.counts_by_type.values()) == summary.published


def test_a_payment_refused_after_its_authorization_fails_under_the_same_id(
    streams: dict[int, list[dict[str, Any]]],
) -> None:
    for stream in streams.values():
        authorized = {e["data"]["payment_id"] for e in stream if e["type"] == "PaymentAuthorized"}
        failed = [e["data"]["payment_id"] for e in stream if e["type"] == "PaymentFailed"]
        refused = [p for p in failed if p in authorized]
        # about 3 in 10 failures were authorized first; the others never were
        assert 0 < len(refused) < len(failed)
