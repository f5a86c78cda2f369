"""Server-Sent Events of one order's changes, through the real processor."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from tests.conftest import eventually
from tests.support.processes import ProcessorProcess


async def next_order_event(lines: Any) -> dict[str, Any]:
    async for line in lines:
        if line.startswith("data: "):
            return dict(json.loads(line.removeprefix("data: ")))
    raise AssertionError("stream ended")


async def test_each_change_of_an_order_is_pushed_as_it_happens(
    processor: ProcessorProcess,
    producer_api: httpx.AsyncClient,
    query_api: httpx.AsyncClient,
    query_server: str,
) -> None:
    order_id = f"o-{uuid.uuid4().hex[:8]}"
    placed = {
        "type": "OrderPlaced",
        "data": {
            "order_id": order_id,
            "customer_id": "c-live",
            "currency": "EUR",
            "items": [{"sku": "A", "quantity": 1, "unit_price": "5.00"}],
        },
    }
    token = (await producer_api.post("/v1/events", json=placed)).json()["consistency_token"]
    read = await eventually(
        lambda: query_api.get(f"/v1/orders/{order_id}", headers={"X-Consistency-Token": token}),
        lambda r: r.status_code == 200,
        within_s=120,
    )
    assert read.json()["status"] == "placed"

    async with (
        httpx.AsyncClient(base_url=query_server, timeout=30) as client,
        client.stream("GET", f"/v1/orders/{order_id}/events") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        first = await asyncio.wait_for(next_order_event(lines), 30)
        assert (first["order_id"], first["status"]) == (order_id, "placed")
        paid = {
            "type": "PaymentCaptured",
            "data": {
                "payment_id": f"p-{order_id}",
                "order_id": order_id,
                "amount": "5.00",
                "currency": "EUR",
            },
        }
        assert (await producer_api.post("/v1/events", json=paid)).status_code == 202
        second = await asyncio.wait_for(next_order_event(lines), 30)
        assert (second["status"], second["amount_paid"]) == ("paid", "5.00")
        assert "ledger" not in second
