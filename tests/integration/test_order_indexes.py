"""The order list's secondary indexes: created only where the server reads them.

The stack's FerretDB (on SQLite) answers only ``_id`` conditions from its storage, so
there an index on ``customer_id`` would be written with every order and never read;
a server that pushes such a filter down gets the indexes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventfold.settings import Settings
from projections.order_fold import ORDER_INDEXES
from projections.read_models import Stores
from projections.view_documents import pushes_down_filters


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Stores]:
    s = Stores(settings)
    yield s
    await s.mongo.drop_database(settings.mongo_db)
    await s.close()


async def index_keys(stores: Stores, collection: str) -> list[list[tuple[str, Any]]]:
    found = []
    async for index in await stores.db[collection].list_indexes():
        found.append(list(index["key"].items()))
    return found


async def explained(stores: Stores, collection: str, filter_: dict[str, Any]) -> dict[str, Any]:
    plan: dict[str, Any] = await stores.db.command(
        {"explain": {"find": collection, "filter": filter_}, "verbosity": "queryPlanner"}
    )
    return plan


async def test_the_stack_ferretdb_reads_only_id_from_its_storage(stores: Stores) -> None:
    """The premise of skipping the indexes, checked on the server the tests run: an
    ``_id`` filter is pushed down, a ``customer_id`` one is not."""
    models = stores.version(f"v{uuid.uuid4().hex[:6]}")
    assert await pushes_down_filters(models.orders) is False
    name = models.orders.name
    assert (await explained(stores, name, {"_id": "o-1"}))["filterPushdown"] is True
    assert (await explained(stores, name, {"customer_id": "c-1"}))["filterPushdown"] is False


async def test_no_secondary_index_where_none_is_read(stores: Stores) -> None:
    models = stores.version(f"v{uuid.uuid4().hex[:6]}")
    await models.ensure_indexes()
    await models.ensure_indexes()  # again: the collection exists now
    assert await index_keys(stores, models.orders.name) == [[("_id", 1)]]


async def test_indexes_where_the_server_pushes_filters_down(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MongoDB's explain has no ``filterPushdown``: the decision is read from the
    server's answer alone, and the indexes it then creates are ``ORDER_INDEXES``."""
    models = stores.version(f"v{uuid.uuid4().hex[:6]}")
    command = type(stores.db).command

    async def as_mongodb(self: Any, spec: Any, *args: Any, **kwargs: Any) -> Any:
        answer = await command(self, spec, *args, **kwargs)
        if isinstance(spec, dict) and "explain" in spec:
            answer.pop("filterPushdown", None)
        return answer

    monkeypatch.setattr(type(stores.db), "command", as_mongodb)
    assert await pushes_down_filters(models.orders) is True
    await models.ensure_indexes()
    expected = [[("_id", 1)], *(list(index) for index in ORDER_INDEXES)]
    have = await index_keys(stores, models.orders.name)
    assert sorted(have) == sorted(expected)
