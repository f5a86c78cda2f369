"""The built-in projections (SKU sales, payment-method health) run live in the processor
and match a fold computed here, independently, from the events published: in two
cross-topic interleavings (orders before payments, and payments before orders), and
again after a rebuild of one of them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from eventfold.settings import Settings
from eventfold.topics import source_partitions
from producers.client import EventPublisher
from producers.demo import generate
from projections.builtin.payment_methods import payment_methods
from projections.builtin.sku_sales import sku_sales
from projections.money import to_units
from projections.projection_replay import rebuild, verify
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from projections.state import mark_of
from schemas.catalog import TOPIC_OF_TYPE
from schemas.events import Event, parse_event
from tests.conftest import eventually
from tests.support.processes import ProcessorProcess

Rows = dict[str, dict[str, int]]


def expected_sku_sales(events: Sequence[Event]) -> Rows:
    """Units, orders and revenue per SKU and day of the orders placed and never
    cancelled or refunded."""
    placed: dict[str, Any] = {}
    out: set[str] = set()
    for e in events:
        d = e.data
        if e.type == "OrderPlaced":
            placed[d.order_id] = e  # type: ignore[union-attr]
        elif e.type in ("OrderCancelled", "PaymentRefunded"):
            out.add(d.order_id)  # type: ignore[union-attr]
    rows: Rows = defaultdict(lambda: defaultdict(int))
    for order_id, e in placed.items():
        if order_id in out:
            continue
        for item in e.data.items:
            row = rows[f"{item.sku}|{e.occurred_at.date().isoformat()}"]
            row["units"] += item.quantity
            row[f"revenue:{e.data.currency}"] += to_units(item.unit_price * item.quantity)
        for sku in {item.sku for item in e.data.items}:
            rows[f"{sku}|{e.occurred_at.date().isoformat()}"]["orders"] += 1
    return {g: dict(r) for g, r in rows.items()}


def expected_payment_methods(events: Sequence[Event]) -> Rows:
    """Each payment outcome in its hour, under its authorization's method (failures of
    payments never authorized under ``unknown``; other outcomes without one not at all)."""
    method: dict[str, str] = {}
    for e in events:
        if e.type == "PaymentAuthorized":
            method[e.data.payment_id] = e.data.method  # type: ignore[union-attr]
    names = {
        "PaymentAuthorized": "authorized",
        "PaymentCaptured": "captured",
        "PaymentFailed": "failed",
        "PaymentRefunded": "refunded",
    }
    rows: Rows = defaultdict(lambda: defaultdict(int))
    for e in events:
        if e.type not in names:
            continue
        m = method.get(e.data.payment_id)  # type: ignore[union-attr]
        if m is None and e.type != "PaymentFailed":
            continue
        rows[f"{m or 'unknown'}|{e.occurred_at.strftime('%Y-%m-%dT%H')}"][names[e.type]] += 1
    return {g: dict(r) for g, r in rows.items()}


def demo(seed: int, orders: int, start: datetime) -> list[Event]:
    return [parse_event(e) for e in generate(seed, orders, start=start)]


async def end_marks(settings: Settings, topics: Sequence[str]) -> dict[str, int]:
    """``topic:partition`` -> the last offset of each non-empty partition."""
    consumer = AIOKafkaConsumer(**settings.kafka_client())
    await consumer.start()
    try:
        partitions = await source_partitions(settings, topics)
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {
        mark_of(settings.logical_topic(tp.topic), tp.partition): end - 1
        for tp, end in ends.items()
        if end > 0
    }


async def test_builtin_projections_match_an_independent_fold(
    deployment: Settings, processor: ProcessorProcess
) -> None:
    first = demo(31, 60, datetime(2026, 3, 1, tzinfo=UTC))
    second = demo(32, 60, datetime(2026, 3, 2, tzinfo=UTC))
    assert not {e.event_id for e in first} & {e.event_id for e in second}
    async with EventPublisher(deployment) as publisher:
        # orders before payments for the first orders, payments before orders for the others
        for events, topics in ((first, ("orders", "payments")), (second, ("payments", "orders"))):
            for topic in (*topics, "customers"):
                await publisher.publish_many([e for e in events if TOPIC_OF_TYPE[e.type] == topic])
    events = [*first, *second]
    assert any(e.type == "PaymentRefunded" for e in events)
    assert any(e.type == "OrderCancelled" for e in events)

    stores = Stores(deployment)
    versions = ProjectionVersions(stores.redis, deployment.redis_prefix)
    try:
        for projection, expected in (
            (sku_sales, expected_sku_sales(events)),
            (payment_methods, expected_payment_methods(events)),
        ):
            ends = await end_marks(deployment, projection.topics)
            store = versions.store(projection.name, await versions.active_of(projection.name))
            await eventually(store.marks, lambda marks, ends=ends: marks == ends, within_s=60)
            assert (await store.snapshot()).rows == expected, projection.name
            check = await verify(deployment, stores.redis, projection, db=stores.db)
            assert check.identical, check.differences

        rebuilt = await rebuild(deployment, stores.redis, sku_sales)
        assert (rebuilt.previous, rebuilt.version) == ("v1", "v2")
        assert await versions.active_of("sku_sales") == "v2"
        snapshot = await versions.store("sku_sales", "v2").snapshot()
        assert snapshot.rows == expected_sku_sales(events)
        assert (await verify(deployment, stores.redis, sku_sales)).identical
        # the old version is gone, the other projection untouched
        assert not (await versions.store("sku_sales", "v1").snapshot()).rows
        assert await versions.active_of("payment_methods") == "v1"

        # the live worker follows the switch: what is published now lands in v2
        late = demo(33, 5, datetime(2026, 3, 3, tzinfo=UTC))
        async with EventPublisher(deployment) as publisher:
            await publisher.publish_many(late)
        everything = [*events, *late]
        store = versions.store("sku_sales", "v2")
        await eventually(
            lambda: store.snapshot(),
            lambda s: s.rows == expected_sku_sales(everything),
            within_s=60,
        )
    finally:
        await stores.close()
