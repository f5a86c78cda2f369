"""The projection commands as a user runs them, against the real servers: ``eventfold
replay --projection`` and ``verify --projection`` for a registered projection,
``eventfold projections``, and ``dlq list --projection``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from eventfold.settings import Settings
from producers.client import EventPublisher
from projections.money import to_units
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from stream_processors.dead_letters import KafkaDeadLetterSink
from stream_processors.records import DeadLetter, Record
from tests.conftest import settings_env
from tests.support.events import event, payment_data, placed_data

EVENTFOLD = Path(sys.executable).parent / "eventfold"
DAY = "2026-01-01"  # the day tests.support.events dates its events


async def eventfold(settings: Settings, *argv: str) -> subprocess.CompletedProcess[str]:
    """``eventfold *argv`` in a process of its own, with ``settings`` in its environment
    (as a user runs it), wide enough that no message is wrapped."""
    env = {"PATH": os.environ["PATH"], "COLUMNS": "250", **settings_env(settings)}
    return await asyncio.to_thread(
        subprocess.run,
        [str(EVENTFOLD), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def publish_orders(settings: Settings) -> None:
    """o-1 placed (A-1 x2 at 9.99, B-2 x1 at 5) and paid; o-2 placed and cancelled."""
    async with EventPublisher(settings) as client:
        await client.publish_many(
            [
                event("OrderPlaced", placed_data("o-1")),
                event("OrderPlaced", placed_data("o-2", items=(("A-1", 1, "9.99"),))),
                event("OrderCancelled", {"order_id": "o-2"}),
                event("PaymentAuthorized", payment_data("PaymentAuthorized", "o-1")),
                event("PaymentCaptured", payment_data("PaymentCaptured", "o-1")),
            ]
        )


def listed(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return {p["name"]: p for p in json.loads(result.stdout)}


async def test_rebuild_verify_and_list_a_registered_projection(topics: Settings) -> None:
    await publish_orders(topics)

    before = listed(await eventfold(topics, "projections", "--json"))
    assert before["sku_sales"]["active"] == "v1" and before["sku_sales"]["lag"] == 5

    result = await eventfold(topics, "replay", "--projection", "sku_sales")
    assert result.returncode == 0, result.stderr
    assert "rebuilt sku_sales as v2 from 5 records" in result.stderr, result.stderr
    assert "active: v2 (was v1, dropped)" in result.stderr
    stores = Stores(topics)
    try:
        versions = ProjectionVersions(stores.redis, topics.redis_prefix)
        assert await versions.active_of("sku_sales") == "v2"
        rows = await versions.store("sku_sales", "v2").rows([f"A-1|{DAY}", f"B-2|{DAY}"])
        assert rows == [  # o-2 was cancelled: only o-1 counts
            {"units": 2, "orders": 1, "revenue:EUR": to_units(Decimal("19.98"))},
            {"units": 1, "orders": 1, "revenue:EUR": to_units(Decimal(5))},
        ]

        result = await eventfold(topics, "verify", "--projection", "sku_sales")
        assert result.returncode == 0, result.stderr
        assert "sku_sales v2 vs a fresh fold of its topics: 2 entities, 2 groups; identical" in (
            result.stderr
        )

        found = listed(await eventfold(topics, "projections", "--json"))
        assert found["sku_sales"] == {
            "name": "sku_sales",
            "core": False,
            "enabled": True,
            "kind": "rows",
            "active": "v2",
            "building": None,
            "lag": 0,
            "lag_from": "marks",
            "topics": ["orders", "payments"],
            "description": found["sku_sales"]["description"],
            "documents": None,
        }
        # never rebuilt and no live worker here: all of its topic's records are lag
        assert (found["payment_methods"]["active"], found["payment_methods"]["lag"]) == ("v1", 2)
        for core in ("orders", "customers", "redis"):
            assert found[core]["core"] and found[core]["kind"] == "core"
            assert (found[core]["active"], found[core]["lag"]) == ("v1", 5)  # no processor
        # each from its definition's topics and the internal one its lookup or totals reads
        assert found["orders"]["topics"] == ["orders", "payments", "order-enrichment"]
        assert found["customers"]["topics"] == ["customers", "order-links"]
        assert found["redis"]["topics"] == found["orders"]["topics"]  # derived from the orders
        table = await eventfold(topics, "projections")
        assert table.returncode == 0 and "sku_sales" in table.stdout, table.stderr

        # a row that differs from the fold: verify names it and exits 1
        await stores.redis.hincrby(
            f"{topics.redis_prefix}p:sku_sales:v2:rows:A-1|{DAY}", "units", 1
        )
        result = await eventfold(topics, "verify", "--projection", "sku_sales")
        assert result.returncode == 1, result.stderr
        assert f"diff row A-1|{DAY}: stored" in result.stderr
    finally:
        await stores.close()


async def test_unknown_names_and_core_only_options_are_refused(topics: Settings) -> None:
    for command in ("replay", "verify"):
        result = await eventfold(topics, command, "--projection", "nope")
        assert result.returncode == 2, result.stderr
        assert "unknown projection(s) nope" in result.stderr
        assert "orders, customers, redis" in result.stderr and "sku_sales" in result.stderr
    since = "2026-01-01T00:00:00Z"
    result = await eventfold(topics, "replay", "--projection", "sku_sales", "--since", since)
    assert result.returncode == 2 and "--since: for the core read models only" in result.stderr
    result = await eventfold(topics, "verify", "--projection", "sku_sales", "--version", "v1")
    assert result.returncode == 2 and "--version and --against" in result.stderr
    stores = Stores(topics)
    try:  # nothing was built
        assert await ProjectionVersions(stores.redis, topics.redis_prefix).active() == {}
    finally:
        await stores.close()


async def test_dlq_list_names_and_filters_by_projection(topics: Settings) -> None:
    record = Record("orders", 0, 7, b"o-1", b"\x00\x01not avro", [("event-type", b"OrderPlaced")])
    sink = KafkaDeadLetterSink(topics)
    try:
        await sink(DeadLetter(record, "projection-failed", KeyError("day"), "sku_sales"))
        await sink(DeadLetter(record, "undecodable", ValueError("not avro")))
    finally:
        await sink.close()

    result = await eventfold(topics, "dlq", "list", "--json")
    assert result.returncode == 0, result.stderr
    letters = [json.loads(line) for line in result.stdout.splitlines()]
    assert [v["projection"] for v in letters] == ["sku_sales", None]

    result = await eventfold(topics, "dlq", "list", "--json", "--projection", "sku_sales")
    assert result.returncode == 0, result.stderr
    letters = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(v["projection"], v["reason"]) for v in letters] == [("sku_sales", "projection-failed")]
    assert "1 dead letter(s) of projection sku_sales" in result.stderr

    result = await eventfold(topics, "dlq", "list")
    assert result.returncode == 0 and "failed in" in result.stdout, result.stderr
