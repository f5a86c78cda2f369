"""What one query API instance holds open is bounded (issue 11): live streams share one
Redis pub/sub connection, and streams and consistency waits past their caps are refused
with 503 and ``Retry-After``, the caps shown in ``/metrics``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import httpx
import pytest

from eventfold.consistency import token_of
from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from projections.read_models import Stores
from tests.conftest import eventually, isolated_settings
from tests.support.stack import StackPorts


@pytest.fixture(scope="module")
def deployment(servers: StackPorts) -> Settings:
    return isolated_settings(
        servers,
        max_streams=2,
        max_consistency_waits=1,
        consistency_timeout_s=3.0,
        redis_max_connections=8,
    )


@pytest.fixture
async def stores(deployment: Settings) -> AsyncIterator[Stores]:
    await ensure_topics(deployment)
    s = Stores(deployment)
    yield s
    await s.close()


async def open_stream(
    stack: AsyncExitStack, client: httpx.AsyncClient, order_id: str
) -> AsyncIterator[str]:
    response = await stack.enter_async_context(
        client.stream("GET", f"/v1/orders/{order_id}/events")
    )
    assert response.status_code == 200
    return response.aiter_lines()


async def next_data(lines: AsyncIterator[str]) -> dict[str, object]:
    async for line in lines:
        if line.startswith("data: "):
            return dict(json.loads(line.removeprefix("data: ")))
    raise AssertionError("stream ended")


def metric(text: str, name: str) -> float:
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


async def test_streams_share_one_subscription_and_are_capped(
    query_server: str, stores: Stores
) -> None:
    models = await stores.active()
    channel = models.changes_channel("o-cap")
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=query_server, timeout=30)
        )
        first = await open_stream(stack, client, "o-cap")
        second = await open_stream(stack, client, "o-cap")
        numsub = await eventually(
            lambda: stores.redis.pubsub_numsub(channel), lambda n: n == [(channel, 1)]
        )
        assert numsub == [(channel, 1)]  # two streams, one subscription

        view = {"order_id": "o-cap", "status": "paid", "customer_id": "c-1", "ledger": []}
        await stores.redis.publish(channel, json.dumps(view))
        for lines in (first, second):
            got = await asyncio.wait_for(next_data(lines), 10)
            assert got == {"order_id": "o-cap", "status": "paid", "customer_id": "c-1"}

        refused = await client.get("/v1/orders/o-other/events")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "5"
        assert "at most 2" in refused.json()["detail"]
        text = (await client.get("/metrics")).text
        assert metric(text, "eventfold_query_streams_open") == 2
        assert metric(text, "eventfold_query_streams_limit") == 2
        assert metric(text, "eventfold_query_redis_connections_limit") == 8
    # closed by the client: the instance notices, frees the places and the subscription
    async with httpx.AsyncClient(base_url=query_server, timeout=30) as client:
        await eventually(
            lambda: client.get("/metrics"),
            lambda r: metric(r.text, "eventfold_query_streams_open") == 0,
        )
        await eventually(lambda: stores.redis.pubsub_numsub(channel), lambda n: n == [(channel, 0)])


async def test_a_burst_of_streams_gets_no_more_places_than_the_cap(
    query_server: str,
) -> None:
    """Issue 11.6: the cap was checked by the route but counted only once a stream's
    body ran, so requests arriving together all passed the check."""
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=query_server, timeout=30)
        )
        opened = await asyncio.gather(
            *(
                stack.enter_async_context(client.stream("GET", f"/v1/orders/o-burst-{i}/events"))
                for i in range(6)
            )
        )
        assert sorted(r.status_code for r in opened) == [200, 200, 503, 503, 503, 503]
        text = (await client.get("/metrics")).text
        assert metric(text, "eventfold_query_streams_open") == 2
    async with httpx.AsyncClient(base_url=query_server, timeout=30) as client:
        await eventually(  # every place given back, the refused ones' too
            lambda: client.get("/metrics"),
            lambda r: metric(r.text, "eventfold_query_streams_open") == 0,
        )


async def test_consistency_waits_past_the_cap_are_refused_at_once(
    query_api: httpx.AsyncClient,
) -> None:
    never = token_of([("orders", 0, 10**9)])  # an offset no processor will apply
    waiting = asyncio.create_task(
        query_api.get("/v1/orders/o-1", headers={"X-Consistency-Token": never})
    )
    await eventually(
        lambda: query_api.get("/metrics"),
        lambda r: metric(r.text, "eventfold_query_consistency_waits_open") == 1,
    )
    refused = await query_api.get("/v1/orders/o-1", headers={"X-Consistency-Token": never})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert "consistency waits" in refused.json()["detail"]
    assert (await waiting).status_code == 409  # the one waiting ran out of time as before
    assert (await query_api.get("/v1/orders/o-1")).status_code == 404  # without a token: served
