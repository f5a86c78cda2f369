"""A rebuild's progress can be read by any process while it runs: the admin API (and so
the console) shows the progress of a rebuild it did not start, as one started by
``eventfold replay`` in a terminal."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from producers.demo import generate
from projections.builtin.sku_sales import sku_sales
from projections.projection_replay import rebuild as rebuild_projection
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from projections.rebuild_status import load_status
from projections.replay import abort, rebuild
from query_api.api import create_app
from tests.support.scenario import publish


async def _admin_projections(settings: Settings) -> dict[str, Any]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://query", timeout=30
        ) as client,
    ):
        response = await client.get("/v1/admin/projections")
    assert response.status_code == 200, response.text
    return {p["name"]: p for p in response.json()["projections"]}


async def test_the_admin_api_shows_how_far_a_rebuild_started_elsewhere_has_got(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    await publish(settings, generate(7, 80))
    stores = Stores(settings)
    halfway = asyncio.Event()

    def progress(done: int, total: int) -> None:
        if done >= total // 2:
            halfway.set()

    # a rebuild in small batches, stopped half way: its version stays "building"
    task = asyncio.create_task(rebuild(settings, stores, progress=progress, batch_records=20))
    await halfway.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    (building,) = await stores.building()
    try:
        rows = await _admin_projections(settings)
        for name in ("orders", "customers", "redis"):
            row = rows[name]
            assert row["building"] == building.version
            status = row["building_progress"]
            assert 0 < status["records"] <= status["total"], status
            assert status["events_per_s"] >= 0
        assert rows["sku_sales"]["building_progress"] is None  # not being rebuilt
    finally:
        await abort(stores)
        await stores.close()
    assert (await _admin_projections(settings))["orders"]["building_progress"] is None


async def test_a_registered_projections_rebuild_saves_its_progress_with_its_version(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    await publish(settings, generate(8, 40))
    stores = Stores(settings)
    try:
        result = await rebuild_projection(settings, stores.redis, sku_sales)
        versions = ProjectionVersions(stores.redis, settings.redis_prefix)
        status = await load_status(stores.redis, versions.status_key("sku_sales", result.version))
        assert status is not None
        assert status.records == status.total == result.records > 0
    finally:
        await stores.close()
