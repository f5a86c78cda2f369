"""The stack script: servers healthy, idempotent start, clear errors."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from pymongo import AsyncMongoClient, ReplaceOne
from redis.asyncio import Redis

from tests.support.stack import stack


async def test_session_servers_are_real_and_healthy(servers) -> None:  # type: ignore[no-untyped-def]
    status = stack("status").stdout
    for name in ("redis", "ferretdb", "kafka"):
        assert f"{name}: running" in status
    mongo: AsyncMongoClient = AsyncMongoClient(f"mongodb://127.0.0.1:{servers.mongo_port}")
    build = await mongo.admin.command("buildInfo")
    assert build["ferretdbVersion"] == "v1.24.2"  # the real FerretDB server, not a stand-in
    await mongo.close()
    redis = Redis(port=servers.redis_port)
    assert (await redis.info("server"))["redis_version"]
    await redis.aclose()


async def test_ferretdb_finds_documents_by_id_through_the_id_index(settings) -> None:  # type: ignore[no-untyped-def]
    """The stack builds FerretDB with its _id lookups matching its _id index
    (``patch_ferretdb_id_lookups``); unpatched, SQLite scans the whole table."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_uri)
    try:
        collection = mongo[settings.mongo_db]["lookups"]
        await collection.insert_many([{"_id": f"o-{i}", "n": i} for i in range(50)])
        plan = await mongo[settings.mongo_db].command(
            "explain", {"find": "lookups", "filter": {"_id": "o-7"}}
        )
        steps = " ".join(plan["queryPlanner"]["Plan"])
        assert "USING INDEX" in steps and "SCAN" not in steps, steps
        assert (await collection.find_one({"_id": "o-7"}) or {}).get("n") == 7
    finally:
        await mongo.drop_database(settings.mongo_db)
        await mongo.close()


async def test_ferretdb_completes_one_bulk_write_matching_500_documents(settings) -> None:  # type: ignore[no-untyped-def]
    """The stack builds FerretDB with its update command closing each statement's
    query at once (``patch_ferretdb_update_close``); unpatched, every matched
    ReplaceOne of one command held a pooled SQLite connection until the command
    ended, and the 100th waited for one forever."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_uri, socketTimeoutMS=30_000)
    try:
        collection = mongo[settings.mongo_db]["replaced"]
        await collection.insert_many([{"_id": f"o-{i}", "n": i} for i in range(500)])
        result = await asyncio.wait_for(
            collection.bulk_write(
                [ReplaceOne({"_id": f"o-{i}"}, {"n": -i, "state": "replaced"}) for i in range(500)],
                ordered=False,
            ),
            timeout=30,
        )
        assert result.matched_count == 500
        documents = await collection.find().to_list()
        assert sorted((d["_id"], d["n"], d["state"]) for d in documents) == sorted(
            (f"o-{i}", -i, "replaced") for i in range(500)
        )
    finally:
        await mongo.drop_database(settings.mongo_db)
        await mongo.close()


def test_up_is_idempotent_and_fast_when_running(servers) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    result = stack("up")
    assert result.returncode == 0
    assert time.monotonic() - started < 30
    assert "running" in stack("status").stdout


def test_a_taken_port_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = stack(
            "up",
            extra_env={"EVENTFOLD_STACK_DIR": str(tmp_path), "EVENTFOLD_REDIS_PORT": str(port)},
            check=False,
        )
    assert result.returncode != 0
    assert f"port {port} is already in use" in result.stderr
    assert "EVENTFOLD_REDIS_PORT" in result.stderr


async def test_ferretdb_finds_a_batch_of_ids_on_the_id_index(settings) -> None:  # type: ignore[no-untyped-def]
    """The stack builds FerretDB with `{_id: {$in: [...]}}` pushed down to SQLite
    (``patch_ferretdb_id_in``): a batch reads the documents it changes with one such
    find, which otherwise decoded every document of the collection."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_uri)
    try:
        collection = mongo[settings.mongo_db]["batch_lookups"]
        await collection.insert_many([{"_id": f"o-{i}", "n": i} for i in range(300)])
        wanted = [f"o-{i}" for i in (3, 150, 299)] + ["o-missing"]
        plan = await mongo[settings.mongo_db].command(
            "explain", {"find": "batch_lookups", "filter": {"_id": {"$in": wanted}}}
        )
        steps = " ".join(plan["queryPlanner"]["Plan"])
        assert "USING INDEX" in steps and "SCAN" not in steps, steps
        found = {d["_id"]: d["n"] async for d in collection.find({"_id": {"$in": wanted}})}
        assert found == {"o-3": 3, "o-150": 150, "o-299": 299}
    finally:
        await mongo.drop_database(settings.mongo_db)
        await mongo.close()
