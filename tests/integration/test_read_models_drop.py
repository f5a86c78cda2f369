"""Dropping a read-model version (``ReadModels.drop``) against real FerretDB and Redis:
every document and key of the projections dropped, nothing of the others or of
another version."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from eventfold.settings import Settings
from projections.read_models import Stores


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Stores]:
    s = Stores(settings)
    yield s
    for version in ("v1", "v2"):
        await s.version(version).drop()
    await s.mongo.drop_database(settings.mongo_db)
    await s.close()


async def _fill(stores: Stores, version: str) -> list[str]:
    """Documents of both collections and a key of every kind, for ``version``."""
    models = stores.version(version)
    await models.orders.insert_one({"_id": "o-1"})
    await models.customers.insert_one({"_id": "c-1"})
    keys = [
        models.order_key("o-1"),
        models.aggregates.rows_prefix + "status",
        models.aggregates.groups_key,
        models.aggregates.rank_prefix + "ltv|EUR",
        models.aggregates.ranks_key,
        models.checkpoints_key("orders"),
        models.checkpoints_key("redis"),
        models.writer_key("orders"),
        models.key("lock:customers", "customers"),
    ]
    for key in keys:
        await stores.redis.set(key, "1")
    return keys


async def test_dropping_a_version_removes_all_of_it_and_nothing_of_another(
    stores: Stores,
) -> None:
    kept = await _fill(stores, "v1")
    gone = await _fill(stores, "v2")
    await stores.version("v2").drop()
    assert [await stores.redis.exists(k) for k in gone] == [0] * len(gone)
    assert [await stores.redis.exists(k) for k in kept] == [1] * len(kept)
    v1, v2 = stores.version("v1"), stores.version("v2")
    assert await v2.orders.count_documents({}) == 0
    assert await v2.customers.count_documents({}) == 0
    assert await v1.orders.count_documents({}) == 1
    assert await v1.customers.count_documents({}) == 1


async def test_dropping_some_projections_leaves_the_others(stores: Stores) -> None:
    keys = await _fill(stores, "v2")
    models = stores.version("v2")
    await models.drop(["redis"])
    redis_keys = [*keys[:5], models.checkpoints_key("redis")]
    assert [await stores.redis.exists(k) for k in redis_keys] == [0] * len(redis_keys)
    others = [k for k in keys if k not in redis_keys]
    assert [await stores.redis.exists(k) for k in others] == [1] * len(others)
    assert await models.orders.count_documents({}) == 1
    await models.drop(["orders"])
    assert await models.orders.count_documents({}) == 0
    assert await models.customers.count_documents({}) == 1
    assert await stores.redis.exists(models.writer_key("orders")) == 0
    assert await stores.redis.exists(models.key("lock:customers", "customers")) == 1
