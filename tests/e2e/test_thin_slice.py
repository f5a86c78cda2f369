"""HTTP in, Kafka, the Faust processor, MongoDB and Redis, HTTP out; then a rebuild."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from eventfold.settings import Settings
from projections.read_models import Stores
from projections.replay import rebuild
from projections.verify import Snapshot, differences, stored_snapshot
from stream_processors.worker import jemalloc_library
from tests.conftest import eventually
from tests.support.processes import ProcessorProcess


def order_events(order_id: str, customer_id: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "OrderPlaced",
            "data": {
                "order_id": order_id,
                "customer_id": customer_id,
                "currency": "EUR",
                "items": [
                    {"sku": "A-1", "quantity": 2, "unit_price": "9.99"},
                    {"sku": "B-2", "quantity": 1, "unit_price": "5.00"},
                ],
            },
        },
        {
            "type": "PaymentCaptured",
            "data": {
                "payment_id": f"p-{order_id}",
                "order_id": order_id,
                "amount": "24.98",
                "currency": "EUR",
            },
        },
    ]


async def test_posted_order_and_payment_are_read_back(
    processor: ProcessorProcess,
    producer_api: httpx.AsyncClient,
    query_api: httpx.AsyncClient,
) -> None:
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    posted = await producer_api.post("/v1/events", json=order_events(order_id, "c-1"))
    assert posted.status_code == 202, posted.text
    body = posted.json()
    assert [e["topic"] for e in body["events"]] == ["orders", "payments"]
    # keyed by order_id and co-partitioned: both land in the same partition number
    assert body["events"][0]["partition"] == body["events"][1]["partition"]

    async def read() -> httpx.Response:
        return await query_api.get(f"/v1/orders/{order_id}")

    response = await eventually(
        read, lambda r: r.status_code == 200 and r.json()["status"] == "paid"
    )
    order = response.json()
    assert order["total"] == "24.98"
    assert order["amount_paid"] == "24.98"
    assert order["balance_due"] == "0.00"
    assert [t["type"] for t in order["timeline"]] == ["OrderPlaced", "PaymentCaptured"]


async def test_consistency_token_gives_read_your_writes(
    processor: ProcessorProcess,
    producer_api: httpx.AsyncClient,
    query_api: httpx.AsyncClient,
) -> None:
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    posted = await producer_api.post("/v1/events", json=order_events(order_id, "c-2")[:1])
    token = posted.json()["consistency_token"]
    # No polling here: the query itself waits until the token's position is applied.
    response = await query_api.get(f"/v1/orders/{order_id}", headers={"X-Consistency-Token": token})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "placed"
    assert response.json()["amount_paid"] == "0.00"


async def test_the_core_read_models_are_read_as_projections(
    processor: ProcessorProcess,
    producer_api: httpx.AsyncClient,
    query_api: httpx.AsyncClient,
) -> None:
    """``orders`` and ``customers`` are definitions (``projections.builtin.core``): the
    generic projection endpoints serve them from their documents, as their own
    endpoints do, and list them by the fields their documents keep apart."""
    customer_id = f"c-{uuid.uuid4().hex[:8]}"
    orders = sorted(f"o-{uuid.uuid4().hex[:8]}" for _ in range(2))
    profile = {
        "customer_id": customer_id,
        "name": "Grace Hopper",
        "email": f"{customer_id}@example.com",
        "tier": "gold",
        "country": "US",
    }
    posted = await producer_api.post(
        "/v1/events", json=[{"type": "CustomerRegistered", "data": profile}]
    )
    assert posted.status_code == 202, posted.text
    for order_id in orders:
        posted = await producer_api.post("/v1/events", json=order_events(order_id, customer_id))
        assert posted.status_code == 202, posted.text
    token = {"X-Consistency-Token": posted.json()["consistency_token"]}

    read = await query_api.get(f"/v1/projections/orders/{orders[1]}", headers=token)
    assert read.status_code == 200, read.text  # the token's wait, as GET /v1/orders/{id}'s
    assert read.json()["kind"] == "view" and read.json()["data"]["status"] == "paid"

    async def both_enriched() -> list[httpx.Response]:
        return [await query_api.get(f"/v1/orders/{o}") for o in orders]

    await eventually(both_enriched, lambda rs: all(r.json()["customer"] for r in rs))
    for order_id in orders:  # settled: the same view from either endpoint
        own = (await query_api.get(f"/v1/orders/{order_id}")).json()
        generic = (await query_api.get(f"/v1/projections/orders/{order_id}")).json()
        assert {k: generic["data"][k] for k in own} == own
        assert generic["data"]["customer"]["tier"] == "gold"
    customer = (await query_api.get(f"/v1/customers/{customer_id}")).json()
    generic = (await query_api.get(f"/v1/projections/customers/{customer_id}")).json()
    assert generic["data"] == customer and customer["order_count"] == 2  # no email shown

    listed = await query_api.get("/v1/projections/orders", params={"customer_id": customer_id})
    assert listed.status_code == 200, listed.text
    assert [i["key"] for i in listed.json()["items"]] == orders  # in key order
    gold = await query_api.get(
        "/v1/projections/customers", params={"tier": "gold", "customer_id": customer_id}
    )
    assert [i["view"]["name"] for i in gold.json()["items"]] == ["Grace Hopper"]

    every = {p["name"]: p for p in (await query_api.get("/v1/projections")).json()["items"]}
    listed_by = ["order_id", "customer_id", "status", "placed_at"]
    assert every["orders"]["core"] and every["orders"]["documents"] == listed_by
    assert every["customers"]["core"] and not every["sku_sales"]["core"]
    assert "email" not in every["customers"]["documents"]
    missing = await query_api.get("/v1/projections/orders/o-never-placed")
    assert missing.status_code == 404
    for internal in ({"total": "24.98"}, {"placed": "true"}):  # not kept apart; not shown
        assert (await query_api.get("/v1/projections/orders", params=internal)).status_code == 422
    by_email = await query_api.get("/v1/projections/customers", params={"email": profile["email"]})
    assert by_email.status_code == 422  # a customer's email is not shown, nor searched by


async def _snapshot(settings: Settings) -> tuple[str, Snapshot]:
    stores = Stores(settings)
    try:
        models = await stores.active()
        return models.version, await stored_snapshot(models)
    finally:
        await stores.close()


async def test_replay_rebuilds_documents_equal_to_the_live_ones(
    processor: ProcessorProcess,
    deployment: Settings,
    producer_api: httpx.AsyncClient,
    query_api: httpx.AsyncClient,
) -> None:
    ids = [f"o-{uuid.uuid4().hex[:8]}" for _ in range(12)]
    batch = [e for i, oid in enumerate(ids) for e in order_events(oid, f"c-{i % 3}")]
    batch += [
        {
            "type": "CustomerRegistered",
            "data": {
                "customer_id": f"c-{i}",
                "name": f"Customer {i}",
                "email": f"c{i}@example.com",
                "tier": "gold",
                "country": "DE",
            },
        }
        for i in range(3)
    ]
    batch.append(
        {
            "type": "OrderShipped",
            "data": {"order_id": ids[0], "carrier": "DHL", "tracking_number": "T-1"},
        }
    )
    posted = await producer_api.post("/v1/events", json=batch)
    assert posted.status_code == 202, posted.text
    token = posted.json()["consistency_token"]
    assert (
        await query_api.get(f"/v1/orders/{ids[0]}", params={"consistency_token": token})
    ).json()["status"] == "shipped"

    live_version, live = await _snapshot(deployment)
    assert set(ids) <= set(live.orders)
    assert live.customers["c-0"]["name"] == "Customer 0"

    stores = Stores(deployment)
    try:
        result = await rebuild(deployment, stores, targets_ttl_s=1.0)
    finally:
        await stores.close()
    assert result.version != live_version
    rebuilt_version, rebuilt = await _snapshot(deployment)
    assert rebuilt_version == result.version
    assert differences(live, rebuilt) == []
    assert rebuilt.aggregates == live.aggregates and rebuilt.rankings == live.rankings
    assert rebuilt.aggregates["status"]  # the counts are compared, not two empty rows
    # and the query API now serves the rebuilt version
    response = await query_api.get(f"/v1/orders/{ids[0]}")
    assert response.json()["status"] == "shipped"


def test_the_processor_runs_under_jemalloc_where_the_machine_has_it(
    processor: ProcessorProcess,
) -> None:
    """``make provision`` installs it; the worker's command preloads it (pid unchanged)."""
    assert processor.proc is not None
    maps = Path(f"/proc/{processor.proc.pid}/maps").read_text()
    if jemalloc_library() is None:
        pytest.skip("libjemalloc2 is not installed here")
    assert "libjemalloc" in maps
