"""The ViewDocuments contract, run against both adapters: the in-memory one and MongoDB
(the session's FerretDB; each test has a database of its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from eventfold.settings import Settings
from projections.api import Documents
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from projections.view_documents import (
    WRITE_CHUNK,
    MemoryViewDocuments,
    MongoViewDocuments,
    ViewDocuments,
    collection_name,
)

PACKED = Documents(fields=("status", "customer_id"), indexes=((("status", 1), ("_id", 1)),))
FLAT = Documents()
MakeDocuments = Callable[[Documents], ViewDocuments]


@pytest.fixture(params=["memory", "mongo"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[MakeDocuments]:
    if request.param == "memory":
        yield MemoryViewDocuments
        return
    settings: Settings = request.getfixturevalue("settings")
    stores = Stores(settings)
    try:
        yield lambda shape: MongoViewDocuments.of(stores.db, "cards", "v1", shape)
    finally:
        await stores.mongo.drop_database(settings.mongo_db)
        await stores.close()


def card(status: str, customer: str, **more: Any) -> dict[str, Any]:
    return {"status": status, "customer_id": customer, "items": [{"sku": "S-1"}], **more}


@pytest.mark.parametrize("shape", [PACKED, FLAT], ids=["packed", "flat"])
async def test_views_written_are_read_back_and_none_removes_one(
    make: MakeDocuments, shape: Documents
) -> None:
    documents = make(shape)
    await documents.prepare()
    views = {
        "o-1": card("open", "c-1", total="12.50", flags={"late": True}),
        "o-2": card("flagged", "c-2", total=None),
        "o-3": card("open", "c-1", count=2**62),
    }
    await documents.write(views)
    assert await documents.views() == views
    changed = card("flagged", "c-1", total="99")
    await documents.write({"o-1": changed, "o-2": None, "o-9": None})
    assert await documents.views() == {"o-1": changed, "o-3": views["o-3"]}


async def test_a_list_filters_on_fields_in_key_order_after_a_key(make: MakeDocuments) -> None:
    documents = make(PACKED)
    await documents.prepare()
    await documents.write(
        {f"o-{n:02}": card(("open", "flagged", "clear")[n % 3], f"c-{n % 2}") for n in range(12)}
    )

    def keys(found: list[tuple[str, dict[str, Any]]]) -> list[str]:
        return [k for k, _ in found]

    flagged = await documents.find({"status": ["flagged"]}, None, 50)
    assert keys(flagged) == ["o-01", "o-04", "o-07", "o-10"]
    assert flagged[0][1] == card("flagged", "c-1")
    either = await documents.find({"status": ["flagged", "clear"], "customer_id": ["c-0"]}, None, 2)
    assert keys(either) == ["o-02", "o-04"]
    after = await documents.find(
        {"status": ["flagged", "clear"], "customer_id": ["c-0"]}, "o-04", 50
    )
    assert keys(after) == ["o-08", "o-10"]
    assert keys(await documents.find({}, "o-09", 50)) == ["o-10", "o-11"]
    assert await documents.find({"status": ["nothing"]}, None, 50) == []


async def test_values_match_as_mongodb_compares_them(make: MakeDocuments) -> None:
    documents = make(FLAT)
    await documents.write(
        {"a": {"n": 1, "on": True}, "b": {"n": 1.0, "on": False}, "c": {"n": "1", "on": None}}
    )
    assert [k for k, _ in await documents.find({"n": [1]}, None, 10)] == ["a", "b"]
    assert [k for k, _ in await documents.find({"n": ["1"]}, None, 10)] == ["c"]
    assert [k for k, _ in await documents.find({"on": [True]}, None, 10)] == ["a"]
    assert [k for k, _ in await documents.find({"n": [True]}, None, 10)] == []
    assert [k for k, _ in await documents.find({"on": [None]}, None, 10)] == ["c"]


async def test_an_array_field_matches_by_any_of_its_elements(make: MakeDocuments) -> None:
    documents = make(FLAT)
    await documents.write(
        {"a": {"tags": ["large", "failed"]}, "b": {"tags": ["large"]}, "c": {"tags": []}}
    )
    assert [k for k, _ in await documents.find({"tags": ["failed"]}, None, 10)] == ["a"]
    assert [k for k, _ in await documents.find({"tags": ["large"]}, None, 10)] == ["a", "b"]
    assert [k for k, _ in await documents.find({"tags": ["nothing"]}, None, 10)] == []


async def test_a_batch_larger_than_a_command_is_written_whole(make: MakeDocuments) -> None:
    documents = make(PACKED)
    count = WRITE_CHUNK + 150
    await documents.write({f"o-{n:05}": card("open", "c-1") for n in range(count)})
    await documents.write({f"o-{n:05}": card("flagged", "c-1") for n in range(count)})
    assert len(await documents.find({"status": ["flagged"]}, None, count + 1)) == count


async def test_drop_removes_every_document(make: MakeDocuments) -> None:
    documents = make(PACKED)
    await documents.write({"o-1": card("open", "c-1")})
    await documents.drop()
    assert await documents.views() == {}


async def test_dropping_a_version_drops_its_collection(settings: Settings) -> None:
    stores = Stores(settings)
    try:
        versions = ProjectionVersions(stores.redis, settings.redis_prefix, stores.db)
        documents = MongoViewDocuments.of(stores.db, "cards", "v2", PACKED)
        await documents.write({"o-1": card("open", "c-1")})
        assert collection_name("cards", "v2") in await stores.db.list_collection_names()
        await versions.drop("cards", "v2")
        assert collection_name("cards", "v2") not in await stores.db.list_collection_names()
    finally:
        await stores.mongo.drop_database(settings.mongo_db)
        await stores.close()


async def test_a_new_entitys_document_is_inserted_or_replaced_if_there(
    make: MakeDocuments,
) -> None:
    documents = make(PACKED)
    await documents.write({"o-1": card("open", "c-1")})
    # o-1 is said new (written ahead of a crash, say): replaced all the same
    await documents.write(
        {"o-1": card("flagged", "c-1"), "o-2": card("open", "c-2"), "o-3": None},
        new={"o-1", "o-2"},
    )
    assert await documents.views() == {"o-1": card("flagged", "c-1"), "o-2": card("open", "c-2")}
