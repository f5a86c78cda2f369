"""The projector against real FerretDB and Redis: idempotent, order-independent writes."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo.asynchronous.collection import AsyncCollection

from eventfold.settings import Settings
from projections.projector import Projector, public_view
from projections.read_models import ReadModels, Stores, order_view_of
from projections.redis_writer import RedisWriter
from schemas.events import Event, parse_event

AT = "2026-02-01T09:00:00Z"


def ev(type_: str, data: dict[str, Any], at: str = AT) -> Event:
    return parse_event(
        {"type": type_, "event_id": str(uuid.uuid4()), "occurred_at": at, "data": data}
    )


def placed(order_id: str, customer_id: str = "c-1") -> Event:
    return ev(
        "OrderPlaced",
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "currency": "EUR",
            "items": [{"sku": "A", "quantity": 2, "unit_price": "10.00"}],
        },
    )


def captured(order_id: str, amount: str = "20.00", at: str = AT) -> Event:
    return ev(
        "PaymentCaptured",
        {"payment_id": f"p-{order_id}", "order_id": order_id, "amount": amount, "currency": "EUR"},
        at,
    )


def customer(customer_id: str, name: str, type_: str = "CustomerRegistered") -> Event:
    return ev(
        type_,
        {
            "customer_id": customer_id,
            "name": name,
            "email": "a@example.com",
            "tier": "gold",
            "country": "FR",
        },
    )


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Stores]:
    s = Stores(settings)
    yield s
    await s.mongo.drop_database(settings.mongo_db)
    await s.close()


async def fresh_models(stores: Stores) -> ReadModels:
    models = stores.version(f"v{uuid.uuid4().hex[:6]}")
    await models.ensure_indexes()
    return models


async def order_doc(models: ReadModels, order_id: str) -> dict[str, Any]:
    """The stored document with the view it shows unpacked (``order_view_of``)."""
    doc = await models.orders.find_one({"_id": order_id})
    assert doc is not None
    return {**doc, **order_view_of(doc)}


async def redis_state(models: ReadModels) -> dict[str, Any]:
    return {
        "counts": await models.status_counts(),
        "revenue": await models.revenue(),
        "top": await models.top("EUR", 100),
        "rows and rankings": await models.aggregates.snapshot(),
    }


async def test_payment_before_order_gives_the_same_document(stores: Stores) -> None:
    order, payment = placed("o-1"), captured("o-1")
    a, b = await fresh_models(stores), await fresh_models(stores)
    in_a, in_b = Projector(a), Projector(b)
    await in_a.apply(order, "orders", 0, 5)
    await in_a.apply(payment, "payments", 0, 9)
    await in_b.apply(payment, "payments", 0, 9)
    await in_b.apply(order, "orders", 0, 5)
    doc_a, doc_b = await order_doc(a, "o-1"), await order_doc(b, "o-1")
    assert public_view(doc_a) == public_view(doc_b)
    assert doc_a["status"] == "paid"
    assert await redis_state(a) == await redis_state(b)
    assert (await redis_state(a))["counts"] == {"paid": 1}


async def test_redelivery_and_duplicate_event_ids_change_nothing(stores: Stores) -> None:
    models = await fresh_models(stores)
    projector = Projector(models)
    order, payment = placed("o-2"), captured("o-2")
    assert await projector.apply(order, "orders", 1, 0)
    assert await projector.apply(payment, "payments", 1, 0)
    before_doc, before_redis = await order_doc(models, "o-2"), await redis_state(models)

    assert not await projector.apply(payment, "payments", 1, 0)  # redelivered record
    assert not await projector.apply(payment, "payments", 1, 3)  # same event_id, re-published
    assert not await projector.apply(order, "orders", 1, 0)

    assert await order_doc(models, "o-2") == before_doc
    assert await redis_state(models) == before_redis
    assert before_redis["revenue"] == {"2026-02-01|EUR": 200000}


class FailingOnce(Exception):
    pass


async def test_crash_between_mongo_and_redis_is_repaired_by_the_redelivery(
    stores: Stores,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = await fresh_models(stores)
    projector = Projector(models)
    await projector.apply(placed("o-3"), "orders", 2, 0)
    payment = captured("o-3")

    async def crash(*args: Any, **kwargs: Any) -> bool:
        raise FailingOnce("process died after the MongoDB write")

    with monkeypatch.context() as patched:
        patched.setattr(RedisWriter, "apply_orders", crash)
        with pytest.raises(FailingOnce):
            await projector.apply(payment, "payments", 2, 0)
    assert (await order_doc(models, "o-3"))["status"] == "paid"  # MongoDB has it
    assert (await redis_state(models))["counts"] == {"placed": 1}  # Redis does not

    # Kafka redelivers; the state already holds the payment, the effects are re-emitted
    assert not await projector.apply(payment, "payments", 2, 0)
    assert (await redis_state(models))["counts"] == {"paid": 1}
    assert (await redis_state(models))["revenue"] == {"2026-02-01|EUR": 200000}


async def test_customer_data_enriches_orders_whichever_comes_first(stores: Stores) -> None:
    models = await fresh_models(stores)
    projector = Projector(models)
    await projector.apply(placed("o-4", "c-7"), "orders", 0, 0)
    await projector.apply(customer("c-7", "Grace"), "customers", 3, 0)
    await projector.apply(placed("o-5", "c-7"), "orders", 1, 0)
    for order_id in ("o-4", "o-5"):
        assert (await order_doc(models, order_id))["customer"] == {
            "name": "Grace",
            "tier": "gold",
            "country": "FR",
        }

    await projector.apply(customer("c-7", "Grace H.", "CustomerUpdated"), "customers", 3, 1)
    for order_id in ("o-4", "o-5"):
        assert (await order_doc(models, order_id))["customer"]["name"] == "Grace H."
    # an older record of the compacted topic, redelivered, does not roll it back
    await projector.apply(customer("c-7", "Grace"), "customers", 3, 0)
    assert (await order_doc(models, "o-4"))["customer"]["name"] == "Grace H."

    view = await models.customers.find_one({"_id": "c-7"})
    assert view is not None
    assert (view["name"], view["order_count"]) == ("Grace H.", 2)


async def test_customer_view_sums_amount_paid_per_currency(stores: Stores) -> None:
    models = await fresh_models(stores)
    projector = Projector(models)
    for i, order_id in enumerate(("o-6", "o-7")):
        await projector.apply(placed(order_id, "c-8"), "orders", i, 0)
        await projector.apply(captured(order_id, "20.00"), "payments", i, 0)
    view = await models.customers.find_one({"_id": "c-8"})
    assert view is not None
    assert view["lifetime_value"] == {"EUR": "40.00"}
    assert await models.top("EUR", 1) == [("c-8", 400000)]


async def test_concurrent_writers_of_one_order_lose_no_fact(stores: Stores) -> None:
    """Two processes writing the same order at once (a rebuild catching up while the
    live processor writes the version being built) must both land; FerretDB's
    non-atomic updates make the per-document lock necessary."""
    models = await fresh_models(stores)
    a, b = Projector(models), Projector(stores.version(models.version))
    orders = [f"o-race-{i}" for i in range(15)]
    paid = {o: captured(o, at="2026-02-01T09:01:00Z") for o in orders}
    shipped = {
        o: ev(
            "OrderShipped",
            {"order_id": o, "carrier": "UPS", "tracking_number": "1Z"},
            "2026-02-01T09:02:00Z",
        )
        for o in orders
    }
    for order_id in orders:
        order = placed(order_id, "c-race")
        for p in (a, b):
            await p.apply(order, "orders", 0, 0)
    await asyncio.gather(
        *(
            write
            for order_id in orders
            for write in (
                a.apply(paid[order_id], "payments", 0, 1),
                b.apply(shipped[order_id], "orders", 0, 1),
            )
        )
    )
    for order_id in orders:
        doc = await order_doc(models, order_id)
        assert [t["type"] for t in doc["timeline"]] == [
            "OrderPlaced",
            "PaymentCaptured",
            "OrderShipped",
        ], order_id
        assert doc["status"] == "shipped"
    # Each writer goes on to read the record the other one wrote (both read every record).
    for order_id in orders:
        await a.apply(shipped[order_id], "orders", 0, 1)
        await b.apply(paid[order_id], "payments", 0, 1)
    assert (await redis_state(models))["counts"] == {"shipped": len(orders)}
    view = await models.customers.find_one({"_id": "c-race"})
    assert view is not None
    assert view["lifetime_value"] == {"EUR": f"{20 * len(orders)}.00"}


async def test_a_buffered_projector_writes_on_flush_what_the_unbuffered_one_writes(
    stores: Stores,
) -> None:
    """A rebuild's projector holds each changed document until the batch ends and then
    writes it once; the result is the per-event writer's, marks included."""
    each, buffered = await fresh_models(stores), await fresh_models(stores)
    direct, batched = Projector(each), Projector(buffered, buffered=True)
    records = [
        (customer("c-9", "Ada"), "customers", 0, 0),
        (placed("o-8", "c-9"), "orders", 0, 0),
        (captured("o-8"), "payments", 0, 0),
        (placed("o-9", "c-9"), "orders", 0, 1),
        (customer("c-9", "Ada L.", "CustomerUpdated"), "customers", 0, 1),
    ]
    for event, topic, partition, offset in records:
        await direct.apply(event, topic, partition, offset)
        await batched.apply(event, topic, partition, offset)
    assert await buffered.orders.count_documents({}) == 0  # nothing before the flush
    assert await buffered.marks("orders") == {}

    await batched.flush()
    for order_id in ("o-8", "o-9"):
        assert public_view(await order_doc(buffered, order_id)) == public_view(
            await order_doc(each, order_id)
        )
    assert (await order_doc(buffered, "o-9"))["customer"]["name"] == "Ada L."
    assert await buffered.customers.find_one({"_id": "c-9"}) == await each.customers.find_one(
        {"_id": "c-9"}
    )
    assert await redis_state(buffered) == await redis_state(each)
    assert (
        await buffered.marks("orders")
        == await each.marks("orders")
        == {"customers:0": 1, "orders:0": 1, "payments:0": 0}
    )

    await batched.flush()  # nothing held: a second flush writes nothing
    assert await buffered.orders.count_documents({}) == 2


async def test_a_fresh_writer_merges_the_documents_another_writer_stored(stores: Stores) -> None:
    """A rebuild's writer inserts its documents first; where the live processor wrote
    one into the version being built, the duplicate key becomes a merge: the document
    shows what both writers know, whoever wrote first."""
    models = await fresh_models(stores)
    live, rebuild = Projector(models), Projector(models, buffered=True)
    await live.apply(captured("o-f1"), "payments", 0, 4)  # stored before the rebuild's flush
    await live.apply(customer("c-f", "Ada"), "customers", 0, 0)
    await rebuild.apply(placed("o-f1", "c-f"), "orders", 0, 2)
    await rebuild.apply(placed("o-f2", "c-f"), "orders", 0, 3)  # new to the version
    await rebuild.flush()

    first, second = await order_doc(models, "o-f1"), await order_doc(models, "o-f2")
    assert first["status"] == "paid"  # the live writer's capture and the rebuild's order
    assert first["amount_paid"] == "20.00"
    assert second["status"] == "placed"
    assert (await models.customers.find_one({"_id": "c-f"}) or {})["name"] == "Ada"


class FindCounter:
    """Counts the documents read by id (``find({"_id": {"$in": ids}})``), per collection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        real = AsyncCollection.find

        def find(collection: AsyncCollection[Any], *args: Any, **kwargs: Any) -> Any:
            query = args[0] if args else kwargs.get("filter")
            if isinstance(query, dict) and isinstance(query.get("_id"), dict):
                self.calls[collection.name] += len(query["_id"].get("$in", ()))
            return real(collection, *args, **kwargs)

        monkeypatch.setattr(AsyncCollection, "find", find)

    def take(self, collection: str) -> int:
        return self.calls.pop(collection, 0)


async def test_a_writer_reads_back_only_what_another_writer_may_have_changed(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live processor rewrites documents it wrote itself a moment ago: it merges
    without reading them as long as nobody else wrote the collection since; a write by
    another writer (a rebuild writing the version being built) makes it read and merge
    again, so neither loses the other's facts."""
    finds = FindCounter(monkeypatch)
    models = await fresh_models(stores)
    orders = models.collection("orders")
    live, other = Projector(models), Projector(stores.version(models.version))
    await live.apply(placed("o-w1", "c-w"), "orders", 0, 0)
    assert finds.take(orders) == 1  # never written by it: read (nothing there)
    await live.apply(captured("o-w1"), "payments", 0, 0)
    await live.apply(
        ev("OrderShipped", {"order_id": "o-w1", "carrier": "UPS", "tracking_number": "1Z"}),
        "orders",
        0,
        1,
    )
    assert finds.take(orders) == 0  # its own document, nobody else writing
    assert (await order_doc(models, "o-w1"))["status"] == "shipped"

    # another writer adds a fact the live writer does not know
    await other.apply(
        ev(
            "PaymentRefunded",
            {"payment_id": "r-1", "order_id": "o-w1", "amount": "5.00", "currency": "EUR"},
        ),
        "payments",
        0,
        7,
    )
    finds.take(orders)
    await live.apply(
        ev("OrderDelivered", {"order_id": "o-w1"}, "2026-02-01T10:00:00Z"), "orders", 0, 2
    )
    assert finds.take(orders) == 1  # read again, and merged
    doc = await order_doc(models, "o-w1")
    assert sorted(t["type"] for t in doc["timeline"]) == [
        "OrderDelivered",
        "OrderPlaced",
        "OrderShipped",
        "PaymentCaptured",
        "PaymentRefunded",
    ]
    # the merged document holds more than the live writer's state: it reads it next time too
    await live.apply(captured("o-w1", "1.00"), "payments", 0, 3)
    assert finds.take(orders) == 1
