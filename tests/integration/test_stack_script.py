"""The stack script: servers healthy, idempotent start, clear errors."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

from bson import ObjectId
from pymongo import AsyncMongoClient, ReplaceOne, UpdateOne
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
    (``ferretdb_patches.id_lookups``); unpatched, SQLite scans the whole table."""
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
    query at once (``ferretdb_patches.update_close``); unpatched, every matched
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
    (``ferretdb_patches.id_in``): a batch reads the documents it changes with one such
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


async def test_ferretdb_applies_a_bulk_of_updates_by_id_as_mongodb_does(settings) -> None:  # type: ignore[no-untyped-def]
    """The stack builds FerretDB applying a run of update statements that each select one
    document by _id as one batch (``ferretdb_patches.batched_updates``: one query, one
    write transaction) and telling no-op updates exactly (``ferretdb_patches.exact_noop``).
    The counts and documents are MongoDB's: each statement sees what the ones before it
    did, an upsert's index is its statement's."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_uri)
    try:
        collection = mongo[settings.mongo_db]["batched"]
        oid = ObjectId()
        await collection.insert_many(
            [
                {"_id": "a", "n": 1},
                {"_id": "b", "n": 2},
                {"_id": "c", "n": 3, "f": 1.0},
                {"_id": oid, "n": 4},
                {"_id": "e", "tag": "z"},
                {"_id": "untouched", "n": 0},
            ]
        )
        result = await collection.bulk_write(
            [
                ReplaceOne({"_id": "a"}, {"n": 10}),  # 0: modified
                ReplaceOne({"_id": "missing"}, {"n": -1}),  # 1: no match
                ReplaceOne({"_id": "b"}, {"_id": "b", "n": 2}),  # 2: changes nothing
                ReplaceOne({"_id": "a"}, {"_id": "a", "n": 11, "t": True}),  # 3: sees 0's n
                ReplaceOne({"_id": "a"}, {"_id": "a", "n": 11, "t": True}),  # 4: changes nothing
                ReplaceOne({"_id": "new"}, {"n": 5}, upsert=True),  # 5: upserted
                ReplaceOne({"_id": "new"}, {"n": 6}),  # 6: replaces 5's document
                UpdateOne({"_id": "b"}, {"$inc": {"n": 1}}),  # 7: modified
                UpdateOne({"_id": "c"}, {"$set": {"f": 1.0}}),  # 8: changes nothing
                ReplaceOne({"_id": "c"}, {"_id": "c", "n": 3, "f": 1}),  # 9: 1.0 -> 1 (int32)
                ReplaceOne({"_id": oid}, {"n": 40}),  # 10: an ObjectId _id
                UpdateOne({"tag": "z"}, {"$set": {"seen": True}}),  # 11: not by _id
                UpdateOne({"_id": "e"}, {"$set": {"after": True}}),  # 12: sees 11's field
                UpdateOne({"_id": "b"}, {"$set": {"sub": {"x": 1}}}),  # 13: modified
                UpdateOne({"_id": "b"}, {"$set": {"sub": {"y": 1}}}),  # 14: other field name
                # 15: the same content, but MongoDB leaves a document alone only when the
                # replacement as given is binary-equal to it, _id included: modified
                ReplaceOne({"_id": "c"}, {"n": 3, "f": 1}),
            ],
            ordered=False,
        )
        assert (result.matched_count, result.modified_count, result.upserted_count) == (14, 11, 1)
        assert result.upserted_ids == {5: "new"}
        documents = {d["_id"]: d async for d in collection.find()}
        assert documents == {
            "a": {"_id": "a", "n": 11, "t": True},
            "b": {"_id": "b", "n": 3, "sub": {"y": 1}},
            "c": {"_id": "c", "n": 3, "f": 1},
            oid: {"_id": oid, "n": 40},
            "e": {"_id": "e", "tag": "z", "seen": True, "after": True},
            "new": {"_id": "new", "n": 6},
            "untouched": {"_id": "untouched", "n": 0},
        }
        assert type(documents["c"]["f"]) is int  # written, not only counted
    finally:
        await mongo.drop_database(settings.mongo_db)
        await mongo.close()


async def test_ferretdb_replaces_by_id_and_revision_on_the_id_index(settings) -> None:  # type: ignore[no-untyped-def]
    """The stack builds FerretDB selecting the _id of a filter with other conditions on the
    _id index (``ferretdb_patches.id_and_more``; it scanned the collection), and applying
    the rest of the filter as before: a conditional replace matches only its revision,
    alone or in a bulk, where each statement sees the ones before it."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_uri)
    try:
        db = mongo[settings.mongo_db]
        collection = db["conditional"]
        await collection.insert_many([{"_id": f"o-{i}", "_rev": 1, "v": i} for i in range(200)])
        plan = await db.command(
            "explain", {"find": "conditional", "filter": {"_id": "o-7", "_rev": 1}}
        )
        steps = " ".join(plan["queryPlanner"]["Plan"])
        assert "USING INDEX" in steps and "SCAN" not in steps, steps

        hit = await collection.replace_one(
            {"_id": "o-7", "_rev": 1}, {"_id": "o-7", "_rev": 2, "v": 7}
        )
        assert (hit.matched_count, hit.modified_count) == (1, 1)
        stale = await collection.replace_one({"_id": "o-7", "_rev": 1}, {"_id": "o-7", "_rev": 3})
        assert (stale.matched_count, stale.modified_count) == (0, 0)
        # every command still applies the whole filter to what the _id selects
        assert await collection.find_one({"_id": "o-7", "_rev": 1}) is None
        assert await collection.find_one({"_id": "o-7", "_rev": 2}) == {
            "_id": "o-7",
            "_rev": 2,
            "v": 7,
        }
        assert await collection.count_documents({"_id": "o-7", "_rev": 1}) == 0
        assert await collection.distinct("v", {"_id": "o-7", "_rev": 1}) == []
        match = {"$match": {"_id": "o-7", "_rev": {"$gt": 1}}}
        assert [d["_rev"] async for d in await collection.aggregate([match])] == [2]
        assert (
            await collection.find_one_and_update({"_id": "o-8", "_rev": 2}, {"$set": {"v": 0}})
            is None
        )
        assert (await collection.delete_one({"_id": "o-8", "_rev": 2})).deleted_count == 0
        assert (await collection.delete_one({"_id": "o-8", "_rev": 1})).deleted_count == 1

        result = await collection.bulk_write(
            [
                ReplaceOne({"_id": "o-1", "_rev": 1}, {"_id": "o-1", "_rev": 2, "v": "one"}),
                ReplaceOne({"_id": "o-1", "_rev": 1}, {"_id": "o-1", "_rev": 9}),  # sees rev 2
                ReplaceOne({"_id": "o-2", "_rev": 5}, {"_id": "o-2", "_rev": 6}),  # stale
                ReplaceOne({"_id": "o-3", "_rev": 1}, {"_id": "o-3", "_rev": 2, "v": "three"}),
                ReplaceOne({"_id": "o-404", "_rev": 1}, {"_id": "o-404", "_rev": 2}),  # missing
            ],
            ordered=False,
        )
        assert (result.matched_count, result.modified_count, result.upserted_count) == (2, 2, 0)
        wanted = ["o-1", "o-2", "o-3", "o-404"]
        documents = {d["_id"]: d async for d in collection.find({"_id": {"$in": wanted}})}
        assert documents == {
            "o-1": {"_id": "o-1", "_rev": 2, "v": "one"},
            "o-2": {"_id": "o-2", "_rev": 1, "v": 2},
            "o-3": {"_id": "o-3", "_rev": 2, "v": "three"},
        }
    finally:
        await mongo.drop_database(settings.mongo_db)
        await mongo.close()


async def test_ferretdb_writes_replacements_by_id_without_reading_them(settings) -> None:  # type: ignore[no-untyped-def]
    """The stack builds FerretDB writing a bulk of replacements by _id alone without
    reading the documents first (``ferretdb_patches.unread_replaces``): the documents
    are MongoDB's (the _id first, then the replacement's fields; a later statement of
    the same _id wins), matched counts the documents there, and a replacement that
    changes the _id is refused as before (with the run applied statement by statement)."""
    mongo: AsyncMongoClient = AsyncMongoClient(settings.mongo_uri)
    try:
        collection = mongo[settings.mongo_db]["replaced"]
        oid = ObjectId()
        await collection.insert_many(
            [
                {"_id": "a", "n": 1, "gone": True},
                {"_id": "b", "n": 2},
                {"_id": oid, "n": 3},
                {"_id": "untouched", "n": 0},
            ]
        )
        result = await collection.bulk_write(
            [
                ReplaceOne({"_id": "a"}, {"m": 10, "_id": "a", "l": [1, {"x": 1.5}]}),
                ReplaceOne({"_id": "missing"}, {"n": -1}),  # no match, not inserted
                ReplaceOne({"_id": "b"}, {"n": 20}),
                ReplaceOne({"_id": oid}, {"n": 30}),
                ReplaceOne({"_id": "b"}, {"n": 21, "t": True}),  # the later one wins
            ],
            ordered=False,
        )
        assert (result.matched_count, result.upserted_count) == (4, 0)
        documents = {d["_id"]: d async for d in collection.find()}
        assert documents == {
            "a": {"_id": "a", "m": 10, "l": [1, {"x": 1.5}]},
            "b": {"_id": "b", "n": 21, "t": True},
            oid: {"_id": oid, "n": 30},
            "untouched": {"_id": "untouched", "n": 0},
        }
        assert list(documents["a"]) == ["_id", "m", "l"]
        # (as a command: pymongo's bulk_write cannot read FerretDB's answer to a failed
        # update, which has no nModified)
        refused = await mongo[settings.mongo_db].command(
            "update",
            "replaced",
            updates=[
                {"q": {"_id": "a"}, "u": {"m": 11}},
                {"q": {"_id": "b"}, "u": {"_id": "not-b", "n": 0}},
            ],
        )
        assert [e["code"] for e in refused["writeErrors"]] == [66], refused  # ImmutableField
        assert await collection.find_one({"_id": "a"}) == {"_id": "a", "m": 11}  # before it
        assert await collection.find_one({"_id": "b"}) == {"_id": "b", "n": 21, "t": True}
    finally:
        await mongo.drop_database(settings.mongo_db)
        await mongo.close()


def test_a_zombie_process_counts_as_stopped(tmp_path: Path) -> None:
    """Issue 11: ``kill -0`` succeeds on a zombie (exited, not reaped by its parent), so
    ``status`` called a dead process running and ``run`` never noticed it died."""
    import subprocess
    import sys

    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0: os._exit(0)\n"
            "print(pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        zombie = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while Path(f"/proc/{zombie}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "processor.pid").write_text(f"{zombie}\n")
        status = stack("status", extra_env={"EVENTFOLD_STACK_DIR": str(tmp_path)}).stdout
        assert "processor: stopped" in status, status
    finally:
        parent.kill()
        parent.wait()
