"""The query API's active versions in memory (``query_api.versions``), against real
FerretDB and Redis: a switch is followed at the next request, a read-your-writes wait
follows it too, and a GET served from the Redis hot cache sends MongoDB nothing."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient, monitoring

import projections.read_models as read_models
from eventfold.consistency import encode_token
from eventfold.settings import Settings
from projections.read_models import PROJECTIONS, ReadModels, Stores
from query_api.api import create_app

AT = "2026-02-01T09:00:00.000000Z"


def stored_view(order_id: str, status: str) -> str:
    """An order view as the Redis projection stores it, internal fields included."""
    return json.dumps(
        {
            "order_id": order_id,
            "customer_id": "c-1",
            "customer": None,
            "currency": "EUR",
            "items": [{"sku": "A", "quantity": 1, "unit_price": "5.00", "line_total": "5.00"}],
            "total": "5.00",
            "status": status,
            "amount_paid": "0.00",
            "balance_due": "5.00",
            "payments": [],
            "timeline": [],
            "anomalies": [],
            "ledger": [],
            "placed_at": AT,
            "updated_at": AT,
            "placed": True,
        },
        separators=(",", ":"),
    )


async def put_order(models: ReadModels, order_id: str, status: str) -> None:
    await models.redis.hset(
        models.order_key(order_id),
        mapping={"status": status, "view": stored_view(order_id, status)},
    )


class Commands(monitoring.CommandListener):
    """The MongoDB commands a client sends (name and collection)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, event.command.get(event.command_name)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Stores]:
    s = Stores(settings)
    yield s
    for version in {"v1", "v2", "v3"}:
        await s.version(version).drop()
    await s.redis.delete(s.meta_stamp_key)
    await s.mongo.drop_database(settings.mongo_db)
    await s.close()


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Commands:
    """Every MongoDB command of the Stores created from now on (the app's own)."""
    listener = Commands()
    monkeypatch.setattr(
        read_models,
        "AsyncMongoClient",
        functools.partial(AsyncMongoClient, event_listeners=[listener]),
    )
    return listener


@pytest.fixture
async def app(settings: Settings, commands: Commands) -> AsyncIterator[FastAPI]:
    application = create_app(settings.model_copy(update={"consistency_timeout_s": 10.0}))
    yield application
    await application.state.stores.close()


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://query", timeout=30
    ) as client:
        yield client


async def status_of(api: httpx.AsyncClient, order_id: str) -> str:
    answer = await api.get(f"/v1/orders/{order_id}")
    assert answer.status_code == 200, answer.text
    assert "ledger" not in answer.json() and "placed" not in answer.json()
    return str(answer.json()["status"])


async def test_a_switch_is_followed_by_the_next_request(
    stores: Stores, api: httpx.AsyncClient
) -> None:
    await put_order(await stores.active(), "o-1", "placed")
    assert await status_of(api, "o-1") == "placed"
    assert (await api.get("/v1/stats")).json()["orders_by_status"] == {}

    version = await stores.begin_build(["redis"])
    rebuilt = stores.versions({**await stores.active_versions(), "redis": version})
    await put_order(rebuilt, "o-1", "paid")
    await rebuilt.redis.hset(rebuilt.aggregates.rows_prefix + "status", "paid", 1)
    assert await status_of(api, "o-1") == "placed"  # being built is not active

    await stores.activate(version)
    assert await status_of(api, "o-1") == "paid"  # no TTL to wait for
    assert (await api.get("/v1/stats")).json()["orders_by_status"] == {"paid": 1}
    missing = await api.get("/v1/orders/o-2")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "order 'o-2' not found"}


async def test_a_hot_cache_get_sends_no_mongodb_command(
    stores: Stores,
    api: httpx.AsyncClient,
    commands: Commands,
) -> None:
    await put_order(await stores.active(), "o-1", "paid")
    assert await status_of(api, "o-1") == "paid"  # reads the meta document once
    commands.sent.clear()
    for _ in range(20):
        assert await status_of(api, "o-1") == "paid"
    assert commands.sent == []

    version = await stores.begin_build(PROJECTIONS)
    await put_order(stores.version(version), "o-1", "shipped")
    await stores.activate(version)
    assert await status_of(api, "o-1") == "shipped"
    assert commands.sent == [("find", "meta")]  # once, after the switch
    for _ in range(5):
        assert await status_of(api, "o-1") == "shipped"
    assert commands.sent == [("find", "meta")]


async def test_a_consistency_wait_follows_a_switch(
    stores: Stores, app: FastAPI, api: httpx.AsyncClient
) -> None:
    async def no_internal_partitions(_: str) -> dict[int, int]:
        return {}

    app.state.last_offsets = no_internal_partitions
    await put_order(await stores.active(), "o-1", "placed")  # v1 never applies the token
    version = await stores.begin_build(PROJECTIONS)
    rebuilt = stores.version(version)
    await put_order(rebuilt, "o-1", "paid")
    for projection in PROJECTIONS:
        await rebuilt.redis.hset(rebuilt.checkpoints_key(projection), "orders:0", 7)
    token = encode_token({"orders": {0: 7}})

    started = time.monotonic()
    answer = asyncio.create_task(api.get("/v1/orders/o-1", headers={"X-Consistency-Token": token}))
    listing = asyncio.create_task(api.get("/v1/orders", params={"consistency_token": token}))
    await asyncio.sleep(0.5)
    assert not answer.done() and not listing.done()  # waiting on v1
    await stores.activate(version)
    read = await answer
    assert read.status_code == 200, read.text
    assert read.json()["status"] == "paid"
    assert (await listing).status_code == 200
    assert time.monotonic() - started < 5  # well before the 10 s timeout


async def test_a_broken_connection_of_the_hot_path_is_replaced(
    stores: Stores,
    app: FastAPI,
    api: httpx.AsyncClient,
) -> None:
    await put_order(await stores.active(), "o-1", "paid")
    assert await status_of(api, "o-1") == "paid"
    kept = app.state.versions._idle  # the connections of the pipelined reads
    assert kept
    for conn in kept:
        await conn.send_command("CLIENT", "ID")
        await stores.redis.execute_command("CLIENT", "KILL", "ID", await conn.read_response())
    for _ in range(3):
        assert await status_of(api, "o-1") == "paid"


async def test_activating_an_aborted_build_is_an_error_that_changes_nothing(
    stores: Stores,
) -> None:
    """Issue 11: an ``--abort`` racing a ``replay --projection redis`` made ``activate``
    switch every projection to the dropped version."""
    before = await stores.active_versions()
    version = await stores.begin_build(["redis"])
    await stores.abandon_build(version)  # the abort won the race
    with pytest.raises(read_models.NotBuilding, match=f"{version} is not being built"):
        await stores.activate(version)
    assert await stores.active_versions() == before
    assert await stores.building() == []


async def test_concurrent_meta_changes_each_take_effect_once(stores: Stores) -> None:
    """Every change of the versions is a compare-and-set under one lock: builds begun
    at the same time get distinct versions, all registered, none lost."""
    versions = await asyncio.gather(*(stores.begin_build(["redis"]) for _ in range(8)))
    assert len(set(versions)) == 8
    assert sorted(b.version for b in await stores.building()) == sorted(versions)
    switched = await asyncio.gather(*(stores.activate(v) for v in versions[:4]))
    assert all(set(previous) == {"redis"} for previous in switched)
    await asyncio.gather(*(stores.abandon_build(v) for v in versions[4:]))
    assert await stores.building() == []
    assert (await stores.active_versions())["redis"] in versions[:4]
    meta = await stores.meta.find_one({"_id": read_models.META_ID})
    # one per change: a build's allocation and its registration, each switch, each abort
    assert meta is not None and meta["revision"] == 2 * 8 + 4 + 4


async def test_a_new_version_is_prepared_before_live_processors_can_write_to_it(
    stores: Stores,
) -> None:
    """A rebuild clears what an earlier attempt may have left under its version's name;
    done once the version was registered, that raced with the live processors' first
    writes to it (a Redis count deleted under an order's contribution kept)."""
    seen: list[tuple[str, list[str]]] = []

    async def prepare(version: str) -> None:
        seen.append((version, [b.version for b in await stores.building()]))

    version = await stores.begin_build(["redis"], prepare=prepare)
    assert seen == [(version, [])]  # not registered yet while it was prepared
    assert [b.version for b in await stores.building()] == [version]
    assert await stores.begin_build(["redis"]) != version


# --- the order's shortcut (query_api.api.QueryAPI) and its batched reads ----------------


def metric(text: str, line_start: str) -> float:
    """The value of the first ``/metrics`` line starting with ``line_start``."""
    return next(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)
    )


async def test_the_order_shortcut_answers_as_the_route_does(
    stores: Stores, api: httpx.AsyncClient
) -> None:
    models = await stores.active()
    await put_order(models, "o-1", "paid")
    await put_order(models, "o-2", "pending")
    before = (await api.get("/metrics")).text
    for order_id in ("o-1", "o-2", "o-3"):  # found, pending, missing
        short = await api.get(f"/v1/orders/{order_id}")
        routed = await api.get(f"/v1/orders/{order_id}", params={"via": "route"})  # not taken
        assert (short.status_code, short.content) == (routed.status_code, routed.content)
        for header in ("content-type", "content-length"):
            assert short.headers[header] == routed.headers[header], header
    assert short.json() == {"detail": "order 'o-3' not found"}
    assert (await api.get("/v1/orders/o-1")).json()["status"] == "paid"
    after = (await api.get("/metrics")).text
    observed = "eventfold_query_request_seconds_count "
    assert metric(after, observed) - metric(before, observed) == 8  # 7 orders + /metrics
    for source, count in (("redis", 5), ("mongo", 2)):  # o-3 is looked for in MongoDB
        counted = f'eventfold_query_requests_total{{endpoint="order",source="{source}"}} '
        assert metric(after, counted) - metric(before, counted) == count, source


async def test_the_order_shortcut_keeps_the_read_scope(settings: Settings, stores: Stores) -> None:
    await put_order(await stores.active(), "o-1", "paid")
    app = create_app(
        settings.model_copy(
            update={"auth_disabled": False, "api_keys": {"r": ["read"], "w": ["write"]}}
        )
    )
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://query"
        ) as api:
            refused = await api.get("/v1/orders/o-1")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert (
                await api.get("/v1/orders/o-1", headers={"X-API-Key": "nope"})
            ).status_code == 401
            assert (await api.get("/v1/orders/o-1", headers={"X-API-Key": "w"})).status_code == 403
            for headers in ({"X-API-Key": "r"}, {"Authorization": "Bearer r"}):
                answer = await api.get("/v1/orders/o-1", headers=headers)
                assert answer.status_code == 200, headers
                assert answer.json()["status"] == "paid"
    finally:
        await app.state.stores.close()


async def test_middleware_added_after_the_app_is_made_sees_the_order_requests(
    settings: Settings, stores: Stores
) -> None:
    await put_order(await stores.active(), "o-1", "paid")
    app = create_app(settings)
    seen: list[str] = []

    @app.middleware("http")
    async def audit(request: Any, call_next: Any) -> Any:
        seen.append(request.url.path)
        response = await call_next(request)
        response.headers["x-audited"] = "yes"
        return response

    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://query"
        ) as api:
            answer = await api.get("/v1/orders/o-1")
        assert answer.status_code == 200 and answer.json()["status"] == "paid"
        assert answer.headers["x-audited"] == "yes"
        assert seen == ["/v1/orders/o-1"]
    finally:
        await app.state.stores.close()


async def test_an_error_of_the_order_shortcut_is_answered_by_the_stack_without_a_second_read(
    stores: Stores, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    await put_order(await stores.active(), "o-1", "paid")
    calls: list[str] = []

    async def broken(*_: Any) -> Any:
        calls.append("hget")
        raise RuntimeError("boom")

    monkeypatch.setattr(app.state.versions, "hget", broken)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://q"
    ) as api:
        answer = await api.get("/v1/orders/o-1")
    assert (answer.status_code, answer.text) == (500, "Internal Server Error")
    assert calls == ["hget"]


async def test_reads_of_one_turn_share_one_exchange_and_each_gets_its_own_replies(
    stores: Stores, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = await stores.active()
    for i in range(5):
        await put_order(models, f"o-{i}", "paid")
    await models.redis.set(models.order_key("o-wrong"), "not a hash")  # HGET: WRONGTYPE
    versions = app.state.versions
    exchanged: list[int] = []
    exchange = versions._exchange

    async def counted(packed: bytes, count: int) -> Any:
        exchanged.append(count // 2)
        return await exchange(packed, count)

    monkeypatch.setattr(versions, "_exchange", counted)
    active = await versions.current()

    async def view(order_id: str) -> Any:
        _, value = await versions.hget(active, lambda m: m.order_key(order_id), "view")
        return json.loads(value)["order_id"] if value else None

    ids = ["o-3", "o-0", "o-wrong", "o-9", "o-4", "o-1"]
    answers = await asyncio.gather(*(view(i) for i in ids), return_exceptions=True)
    assert exchanged == [6]
    assert [a if isinstance(a, str) or a is None else "error" for a in answers] == [
        "o-3",
        "o-0",
        "error",
        None,
        "o-4",
        "o-1",
    ]
    assert "WRONGTYPE" in str(answers[2])
    # the connection stayed in step: the next reads are right
    assert await asyncio.gather(view("o-2"), view("o-1")) == ["o-2", "o-1"]


async def test_a_batch_whose_connection_breaks_or_whose_leader_is_cancelled_reads_alone(
    stores: Stores, app: FastAPI
) -> None:
    models = await stores.active()
    for i in range(3):
        await put_order(models, f"o-{i}", "paid")
    versions = app.state.versions
    active = await versions.current()

    async def view(order_id: str) -> Any:
        _, value = await versions.hget(active, lambda m: m.order_key(order_id), "view")
        return json.loads(value)["order_id"]

    assert await asyncio.gather(view("o-0"), view("o-1")) == ["o-0", "o-1"]
    for conn in versions._idle:  # broken under the kept connections
        await conn.send_command("CLIENT", "ID")
        await stores.redis.execute_command("CLIENT", "KILL", "ID", await conn.read_response())
    assert await asyncio.gather(view("o-0"), view("o-1"), view("o-2")) == ["o-0", "o-1", "o-2"]

    leader = asyncio.create_task(view("o-0"))
    joined = asyncio.create_task(view("o-1"))
    await asyncio.sleep(0)  # the leader waits for its batch, the other joined it
    leader.cancel()
    assert await joined == "o-1"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert await asyncio.gather(view("o-2"), view("o-0")) == ["o-2", "o-0"]
