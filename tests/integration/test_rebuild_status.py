"""A rebuild's progress can be read by any process while it runs: the admin API (and so
the console) shows the progress of a rebuild it did not start, as one started by
``eventfold replay`` in a terminal."""

from __future__ import annotations

from typing import Any

import pytest

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from producers.demo import generate
from projections.builtin.sku_sales import sku_sales
from projections.projection_replay import rebuild as rebuild_projection
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from projections.rebuild_status import load_status
from projections.replay import abort, rebuild
from tests.support.apps import query_client
from tests.support.scenario import publish


async def _admin_projections(settings: Settings) -> dict[str, Any]:
    async with query_client(settings) as client:
        response = await client.get("/v1/admin/projections")
    assert response.status_code == 200, response.text
    return {p["name"]: p for p in response.json()["projections"]}


async def _published(settings: Settings, seed: int, orders: int) -> Stores:
    """Stores of ``settings`` once the demo traffic of ``seed`` is in its topics."""
    await ensure_topics(settings)
    await publish(settings, generate(seed, orders))
    return Stores(settings)


async def test_the_admin_api_shows_how_far_a_rebuild_started_elsewhere_has_got(
    settings: Settings,
) -> None:
    stores = await _published(settings, 7, 80)

    class Interrupted(Exception):
        """Stops the rebuild half way, as a crash would: its version stays "building"."""

    def progress(done: int, total: int) -> None:
        if done >= total // 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        await rebuild(settings, stores, progress=progress, batch_records=20)
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
    stores = await _published(settings, 8, 40)
    try:
        result = await rebuild_projection(settings, stores.redis, sku_sales)
        versions = ProjectionVersions(stores.redis, settings.redis_prefix)
        status = await load_status(stores.redis, versions.status_key("sku_sales", result.version))
        assert status is not None
        assert status.records == status.total == result.records > 0
    finally:
        await stores.close()
