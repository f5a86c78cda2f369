"""Blue/green rebuild while the platform is in use: writes and queries go on, the
switch is atomic, and the result equals a fresh fold of the topics."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from eventfold.settings import Settings
from producers.demo import generate
from projections.read_models import Stores
from projections.replay import RebuildInProgress, abort, rebuild
from tests.support.processes import ProcessorProcess
from tests.support.scenario import publish, read_model_differences, wait_caught_up

BATCH = 100


def placed_ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["order_id"] for e in events if e["type"] == "OrderPlaced"]


@pytest.mark.timeout(900)  # about 2 minutes here: the live side applies some 50 events/s
async def test_rebuild_during_writes_and_reads_switches_without_errors_or_gaps(
    processor: ProcessorProcess,
    deployment: Settings,
    producer_api: httpx.AsyncClient,
    query_api: httpx.AsyncClient,
) -> None:
    before, during = generate(11, 620), generate(12, 130)  # ~3,000 events, then ~600 more
    assert len(before) > 3000 and len(during) > 600
    await publish(deployment, before)
    await wait_caught_up(deployment, within_s=600)
    served_before = placed_ids(before)

    failures: list[str] = []
    stop = asyncio.Event()

    async def keep_publishing() -> None:
        for start in range(0, len(during), BATCH):
            response = await producer_api.post("/v1/events", json=during[start : start + BATCH])
            if response.status_code != 202:
                failures.append(f"publish: {response.status_code} {response.text[:200]}")

    async def keep_querying() -> None:
        i = 0
        while not stop.is_set():
            order_id = served_before[i % len(served_before)]
            i += 1
            response = await query_api.get(f"/v1/orders/{order_id}")
            if response.status_code != 200:  # no 5xx, and no order that existed goes missing
                failures.append(f"GET {order_id}: {response.status_code}")
            listing = await query_api.get("/v1/orders", params={"limit": 5})
            if listing.status_code != 200:
                failures.append(f"list: {listing.status_code}")

    stores = Stores(deployment)
    previous = await stores.active_version()
    readers = asyncio.create_task(keep_querying())
    try:
        writers = asyncio.create_task(keep_publishing())
        result = await rebuild(deployment, stores, grace_s=0)
        await writers
    finally:
        stop.set()
        await readers
    assert failures == []
    assert set(result.previous.values()) == {previous} != {result.version}
    assert await stores.active_version() == result.version
    assert await stores.drop_retired() == [previous]  # grace 0: due at once
    await stores.close()

    await wait_caught_up(deployment, within_s=600)
    assert await read_model_differences(deployment) == []


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "flush_documents",
    [
        50,  # flushes of 50 documents, every customer written with each
        20_000,  # a flush per partition number, the customers held for the last one
    ],
)
async def test_an_interrupted_rebuild_resumes_from_its_checkpoints(
    processor: ProcessorProcess,
    deployment: Settings,
    flush_documents: int,
) -> None:
    await wait_caught_up(deployment)
    stores = Stores(deployment)
    totals: list[int] = []

    class Interrupted(Exception):
        """Stops the rebuild two thirds of the way, as a crash would (a cancellation
        raced with the rebuild's last records)."""

    def progress(done: int, total: int) -> None:
        totals.append(total)
        if done >= 2 * total // 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rebuild(
            deployment,
            stores,
            progress=progress,
            grace_s=0,
            batch_records=50,
            flush_documents=flush_documents,
        )
    building = [b.version for b in await stores.building()]
    assert len(building) == 1  # left registered, to be resumed
    try:
        await rebuild(deployment, stores)
        raise AssertionError("a second rebuild must not start while one is in progress")
    except RebuildInProgress:
        pass

    resumed = await rebuild(deployment, stores, resume=True, grace_s=0)
    assert resumed.version == building[0]
    assert 0 < resumed.records < totals[0]  # it went on from its checkpoints, not from zero
    await stores.close()
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []


@pytest.mark.timeout(600)
async def test_rebuilding_one_projection_replaces_only_that_one(
    processor: ProcessorProcess,
    deployment: Settings,
) -> None:
    await wait_caught_up(deployment)
    stores = Stores(deployment)
    await stores.drop_retired()  # what earlier rebuilds retired
    before = await stores.active_versions()
    result = await rebuild(deployment, stores, projections=["redis"], grace_s=0)
    assert result.previous == {"redis": before["redis"]}
    assert await stores.active_versions() == {**before, "redis": result.version}

    old = stores.version(before["redis"])
    orders_kept = await stores.versions(before).orders.count_documents({})
    assert await stores.drop_retired() == [before["redis"]]  # grace 0: due at once
    assert await old.redis.exists(old.aggregates.rows_prefix + "status") == 0  # its keys went
    assert await stores.versions(before).orders.count_documents({}) == orders_kept > 0
    await stores.close()

    # the live processors write the new Redis version and the old MongoDB ones
    await publish(deployment, generate(13, 10))
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []


async def test_abort_drops_the_version_in_the_making(deployment: Settings) -> None:
    stores = Stores(deployment)
    active = await stores.active_versions()
    version = await stores.begin_build()
    await stores.version(version).orders.insert_one({"_id": "partial"})
    assert await abort(stores) == [version]
    assert await stores.building() == []
    assert await stores.targets() == {p: [v] for p, v in active.items()}
    assert await stores.version(version).orders.count_documents({}) == 0
    await stores.close()
