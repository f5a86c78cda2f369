"""A projection from a package outside Eventfold's source tree, as the README's "Write
your own projection" has a user write, install and run one: registered through the
``eventfold.projections`` entry point, run live by the processor, rebuilt alone with
``eventfold replay --projection``, verified, and read over
``GET /v1/projections/{name}/{key}``. With it, a projection whose fold raises on one
event: that event is dead-lettered for it alone, and every other projection applies it.

The packages are installed with ``pip install --target`` into a folder the processes
get on their PYTHONPATH, rather than into the project's virtual environment (the
README's ``pip install``), so the suite leaves the environment as it found it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from producers.client import EventPublisher
from producers.demo import generate
from projections.read_models import Stores
from projections.registry import registered
from schemas.codec import decode
from schemas.events import Event, parse_event
from tests.conftest import eventually, isolated_settings, settings_env
from tests.integration.test_producer_kafka import read_all
from tests.support.apps import query_client
from tests.support.events import event, placed_data
from tests.support.processes import ProcessorProcess
from tests.support.scenario import (
    read_model_differences,
    wait_caught_up,
    wait_projection_caught_up,
)
from tests.support.stack import ROOT, StackPorts

FIXTURES = ROOT / "tests" / "fixtures"
PACKAGES = ("eventfold_loyalty", "eventfold_fragile")


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fixture packages, installed where the processes below find them."""
    target = tmp_path_factory.mktemp("site")
    for package in PACKAGES:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--target",
                str(target),
                str(FIXTURES / package),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    sys.path.insert(0, str(target))  # this process: the query API and the verify
    yield target
    sys.path.remove(str(target))


@pytest.fixture(scope="module")
def deployment(servers: StackPorts) -> Settings:
    return isolated_settings(servers, consistency_timeout_s=20.0)


def env_with(settings: Settings, plugins: Path) -> dict[str, str]:
    return {**settings_env(settings), "PYTHONPATH": os.pathsep.join((str(plugins), str(ROOT)))}


@pytest.fixture(scope="module")
async def processor(
    deployment: Settings, plugins: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ProcessorProcess]:
    await ensure_topics(deployment)
    log = tmp_path_factory.mktemp("processor") / "processor.log"
    worker = ProcessorProcess(deployment, env_with(deployment, plugins), log)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
async def query_api(deployment: Settings, plugins: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with query_client(deployment) as client:
        yield client


def eventfold(settings: Settings, plugins: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "eventfold"), *args],
        env={**os.environ, **env_with(settings, plugins)},
        text=True,
        capture_output=True,
        timeout=300,
    )


def expected_points(events: list[Event]) -> dict[str, dict[str, int]]:
    """Points (whole units of the order's total, rounded down) and orders per customer,
    of the orders placed and not cancelled: computed here, not by the projection."""
    cancelled = {e.data.order_id for e in events if e.type == "OrderCancelled"}  # type: ignore[union-attr]
    rows: dict[str, dict[str, int]] = {}
    for e in events:
        if e.type != "OrderPlaced" or e.data.order_id in cancelled:  # type: ignore[union-attr]
            continue
        total = sum(i.unit_price * i.quantity for i in e.data.items)  # type: ignore[union-attr]
        row = rows.setdefault(e.data.customer_id, {"points": 0, "orders": 0})  # type: ignore[union-attr]
        row["points"] += int(total // 1)
        row["orders"] += 1
    return rows


async def test_a_users_projection_runs_rebuilds_verifies_and_is_served(
    deployment: Settings,
    plugins: Path,
    processor: ProcessorProcess,
    query_api: httpx.AsyncClient,
) -> None:
    history = [parse_event(e) for e in generate(41, 40, start=datetime(2026, 4, 1, tzinfo=UTC))]
    poison = event(
        "OrderPlaced", placed_data("o-poison", "c-poison", items=(("EXPLODE", 1, "3.50"),))
    )
    async with EventPublisher(deployment) as publisher:
        await publisher.publish_many([*history, poison])
    events = [*history, poison]

    listed = eventfold(deployment, plugins, "projections", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {p["name"]: p for p in json.loads(listed.stdout)}
    names = set(rows)
    assert rows["order_flags"]["documents"] == ["status", "customer_id"]
    assert rows["loyalty_points"]["documents"] is None
    assert {
        "loyalty_points",
        "order_flags",
        "fragile_orders",
        "sku_sales",
        "payment_methods",
    } <= names

    # the processor runs it live; every projection is then identical to a fresh fold
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []

    replayed = eventfold(deployment, plugins, "replay", "--projection", "loyalty_points", "--quiet")
    assert replayed.returncode == 0, replayed.stderr
    verified = eventfold(deployment, plugins, "verify", "--projection", "loyalty_points")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "identical" in verified.stdout + verified.stderr

    expected = expected_points(events)
    assert expected["c-poison"] == {"points": 3, "orders": 1}
    for customer_id, row in expected.items():
        answer = await query_api.get(f"/v1/projections/loyalty_points/{customer_id}")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["version"], body["data"]) == ("v2", row)
    top = await query_api.get("/v1/rankings/loyalty_points/points", params={"limit": 5})
    assert top.status_code == 200, top.text
    ranked = sorted(((r["points"], c) for c, r in expected.items() if r["points"]), reverse=True)
    assert top.json()["version"] == "v2"
    assert top.json()["items"] == [{"group": c, "value": p} for p, c in ranked[:5]]

    # a ranking that disagrees with the rows is a difference verify reports
    redis = Redis.from_url(deployment.redis_uri, decode_responses=True)
    rank_key = f"{deployment.redis_prefix}p:loyalty_points:v2:rank:points"
    leader, points = ranked[0][1], ranked[0][0]
    try:
        await redis.zadd(rank_key, {leader: points + 1})
        tampered = eventfold(deployment, plugins, "verify", "--projection", "loyalty_points")
        assert tampered.returncode != 0, tampered.stdout + tampered.stderr
        assert "ranking points" in tampered.stdout + tampered.stderr
    finally:
        await redis.zadd(rank_key, {leader: points})
        await redis.aclose()
    missing = await query_api.get("/v1/projections/loyalty_points/nobody")
    assert missing.status_code == 404
    unknown = await query_api.get("/v1/projections/nothing/c-1")
    assert unknown.status_code == 404


async def test_an_event_a_projection_raises_on_is_dead_lettered_for_it_alone(
    deployment: Settings,
    plugins: Path,
    processor: ProcessorProcess,
    query_api: httpx.AsyncClient,
) -> None:
    letters = await eventually(
        lambda: read_all(deployment, "orders.dlq"), lambda found: len(found) >= 1, within_s=60
    )
    assert len(letters) == 1  # only fragile_orders failed on it, once
    headers = dict(letters[0].headers)
    assert headers["dlq-projection"] == b"fragile_orders"
    assert decode(letters[0].value).data.order_id == "o-poison"  # type: ignore[union-attr]

    # fragile_orders shows the other orders; the others applied the poison order too
    shown = await query_api.get("/v1/projections/fragile_orders/o-poison")
    assert shown.status_code == 404
    sales = await query_api.get("/v1/projections/sku_sales/EXPLODE%7C2026-01-01")
    assert sales.status_code == 200, sales.text
    assert sales.json()["data"]["units"] == 1
    listed = eventfold(
        deployment, plugins, "dlq", "list", "--projection", "fragile_orders", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    assert "o-poison" in listed.stdout
    for name in ("fragile_orders", "sku_sales", "payment_methods", "loyalty_points", "order_flags"):
        verified = eventfold(deployment, plugins, "verify", "--projection", name)
        assert verified.returncode == 0, (name, verified.stdout + verified.stderr)


def expected_flags(events: list[Event]) -> dict[str, dict[str, Any]]:
    """Each placed order's view in ``order_flags`` (large: a total of 250 or more; a
    payment failed; cancelled wins), computed here from the events."""
    placed: dict[str, Any] = {}
    failed: set[str] = set()
    cancelled: set[str] = set()
    for e in events:
        order_id = e.data.order_id  # type: ignore[union-attr]
        if e.type == "OrderPlaced":
            placed[order_id] = e.data
        elif e.type == "PaymentFailed":
            failed.add(order_id)
        elif e.type == "OrderCancelled":
            cancelled.add(order_id)
    views = {}
    for order_id, data in placed.items():
        total = sum((i.unit_price * i.quantity for i in data.items), Decimal(0))
        reasons = [
            reason
            for reason, holds in (("large", total >= 250), ("payment failed", order_id in failed))
            if holds
        ]
        status = "cancelled" if order_id in cancelled else "flagged" if reasons else "clear"
        views[order_id] = {
            "customer_id": data.customer_id,
            "status": status,
            "total": str(total),
            "reasons": reasons,
        }
    return views


async def listed(api: httpx.AsyncClient, **params: str) -> tuple[str, dict[str, Any]]:
    """Every document ``GET /v1/projections/order_flags`` lists, page by page."""
    found: dict[str, Any] = {}
    version, cursor = "", None
    while True:
        page = {**params, "limit": "7", **({"cursor": cursor} if cursor else {})}
        answer = await api.get("/v1/projections/order_flags", params=page)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        version = body["version"]
        found.update((item["key"], item["view"]) for item in body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return version, found


async def test_a_users_projection_keeps_its_views_as_documents_listed_by_field(
    deployment: Settings,
    plugins: Path,
    processor: ProcessorProcess,
    query_api: httpx.AsyncClient,
) -> None:
    def order(order_id: str, price: str) -> Event:
        return event("OrderPlaced", placed_data(order_id, "c-flags", items=(("F-1", 1, price),)))

    def failed(order_id: str) -> Event:
        data = {"payment_id": f"p-{order_id}", "order_id": order_id, "reason": "declined"}
        return event("PaymentFailed", data)

    mine = [
        order("o-flag-large", "300.00"),
        order("o-flag-failed", "12.00"),
        failed("o-flag-failed"),
        order("o-flag-cancelled", "900.00"),
        event("OrderCancelled", {"order_id": "o-flag-cancelled"}),
        order("o-flag-clear", "5.00"),
        failed("o-flag-ghost"),  # a payment of an order never placed: no document
    ]
    async with EventPublisher(deployment) as publisher:
        await publisher.publish_many(mine)
    events = [
        decode(r.value)
        for topic in ("orders", "payments")
        for r in await read_all(deployment, topic)
    ]
    expected = expected_flags(events)
    assert expected["o-flag-large"]["status"] == "flagged"
    assert expected["o-flag-cancelled"]["status"] == "cancelled"
    assert "o-flag-ghost" not in expected

    flags = registered()["order_flags"]
    stores = Stores(deployment)
    try:
        await wait_projection_caught_up(deployment, stores, flags)
    finally:
        await stores.close()
    version, every = await listed(query_api)
    assert (version, every) == ("v1", expected)
    _, flagged = await listed(query_api, status="flagged")
    assert flagged == {k: v for k, v in expected.items() if v["status"] == "flagged"}
    _, theirs = await listed(query_api, customer_id="c-flags", status="clear")
    assert list(theirs) == ["o-flag-clear"]

    replayed = eventfold(deployment, plugins, "replay", "--projection", "order_flags", "--quiet")
    assert replayed.returncode == 0, replayed.stderr
    verified = eventfold(deployment, plugins, "verify", "--projection", "order_flags")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert await listed(query_api) == ("v2", expected)

    # a document that is not its entity's view is a difference verify reports
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(deployment.mongo_uri)
    documents = mongo[deployment.mongo_db]["p_order_flags_v2"]
    try:
        assert await documents.count_documents({}) == len(expected)
        assert "p_order_flags_v1" not in await mongo[deployment.mongo_db].list_collection_names()
        await documents.update_one({"_id": "o-flag-clear"}, {"$set": {"status": "flagged"}})
        tampered = eventfold(deployment, plugins, "verify", "--projection", "order_flags")
        assert tampered.returncode != 0, tampered.stdout + tampered.stderr
        assert "document o-flag-clear" in tampered.stdout + tampered.stderr
    finally:
        await documents.update_one({"_id": "o-flag-clear"}, {"$set": {"status": "clear"}})
        await mongo.close()
