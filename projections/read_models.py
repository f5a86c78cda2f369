"""Where one version of the read models lives, and which version is active.

Every version has its own MongoDB collections (``orders_<v>``, ``customers_<v>``)
and its own Redis key prefix (``<prefix>{<v>}:``; the hash tag keeps one
version's keys in one Redis Cluster slot so the Lua scripts stay atomic).
A rebuild writes a new version while the active one keeps serving; switching
is one update of the ``meta`` document.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from eventfold.settings import Settings

Document = dict[str, Any]
META_ID = "read_models"
LOCK_TTL_S = 30.0
LOCK_WAIT_S = 60.0
FIRST_VERSION = "v1"


@dataclass(frozen=True)
class ReadModels:
    """Handles on one version of the read models."""

    db: AsyncDatabase[Document]
    redis: Redis
    version: str
    redis_prefix: str

    @property
    def orders(self) -> AsyncCollection[Document]:
        return self.db[f"orders_{self.version}"]

    @property
    def customers(self) -> AsyncCollection[Document]:
        return self.db[f"customers_{self.version}"]

    def collection(self, name: str) -> str:
        """The name of collection ``name`` (``orders`` or ``customers``) in this version."""
        return f"{name}_{self.version}"

    def key(self, name: str) -> str:
        return f"{self.redis_prefix}{{{self.version}}}:{name}"

    def document_lock(self, kind: str, doc_id: str) -> Lock:
        """A lock making one writer at a time update one document.

        MongoDB updates a single document atomically, but FerretDB's SQLite
        backend (the local stack) does not: it reads, modifies and writes a
        document outside a transaction (FerretDB issue #3040; measured here:
        195 of 200 racing compare-and-swaps both "succeeded"). Writers of a
        document therefore hold this Redis lock around read-modify-write. It
        expires after ``LOCK_TTL_S`` so a killed writer cannot block others."""
        return Lock(self.redis, self.key(f"lock:{kind}:{doc_id}"), timeout=LOCK_TTL_S,
                    sleep=0.002, blocking_timeout=LOCK_WAIT_S)

    def changes_channel(self, order_id: str) -> str:
        """Redis pub/sub channel carrying each new view of one order (for live updates)."""
        return self.key(f"changes:{order_id}")

    async def hash(self, name: str) -> dict[str, str]:
        """A Redis hash of this version (the client decodes responses to str)."""
        return cast(dict[str, str], await self.redis.hgetall(self.key(name)))

    async def ranking(self, name: str, limit: int) -> list[tuple[str, float]]:
        """The top of a sorted set of this version, highest score first."""
        ranked = cast(
            list[tuple[str, float]],
            await self.redis.zrevrange(self.key(name), 0, limit - 1, withscores=True),
        )
        return [(str(member), float(score)) for member, score in ranked]

    async def ensure_indexes(self) -> None:
        """The indexes the query API and the enrichment updates need."""
        await self.orders.create_index([("customer_id", ASCENDING), ("placed_at", DESCENDING)])
        await self.orders.create_index([("status", ASCENDING), ("placed_at", DESCENDING)])
        await self.orders.create_index([("placed_at", DESCENDING), ("_id", DESCENDING)])

    async def drop(self) -> None:
        """Remove every document and key of this version."""
        await self.orders.drop()
        await self.customers.drop()
        cursor = 0
        pattern = self.key("*")
        while True:
            cursor, keys = await self.redis.scan(cursor, match=pattern, count=1000)
            if keys:
                await self.redis.delete(*keys)
            if cursor == 0:
                break


class Stores:
    """The connections of one process (one MongoDB client, one Redis pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mongo: AsyncMongoClient[Document] = AsyncMongoClient(
            settings.mongo_uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
            socketTimeoutMS=10000, tz_aware=True,
        )
        self.redis: Redis = Redis.from_url(
            settings.redis_uri, decode_responses=True, socket_timeout=5,
            socket_connect_timeout=5,
        )
        self.db: AsyncDatabase[Document] = self.mongo[settings.mongo_db]

    @property
    def meta(self) -> AsyncCollection[Document]:
        return self.db["meta"]

    def version(self, version: str) -> ReadModels:
        return ReadModels(self.db, self.redis, version, self.settings.redis_prefix)

    async def active_version(self) -> str:
        doc = await self.meta.find_one({"_id": META_ID})
        return FIRST_VERSION if doc is None else str(doc["active"])

    async def active(self) -> ReadModels:
        return self.version(await self.active_version())

    async def targets(self) -> list[str]:
        """Versions live processors write to: the active one and those being rebuilt."""
        doc = await self.meta.find_one({"_id": META_ID})
        if doc is None:
            return [FIRST_VERSION]
        return [str(doc["active"]), *(v for v in doc.get("building", []) if v != doc["active"])]

    async def begin_build(self) -> str:
        """Allocate a new version and register it so live processors also write to it."""
        await self.meta.update_one(
            {"_id": META_ID},
            {"$setOnInsert": {"active": FIRST_VERSION, "building": [], "last_version": 1}},
            upsert=True,
        )
        doc = await self.meta.find_one_and_update(
            {"_id": META_ID}, {"$inc": {"last_version": 1}}, return_document=True
        )
        assert doc is not None
        version = f"v{doc['last_version']}"
        await self.meta.update_one({"_id": META_ID}, {"$push": {"building": version}})
        return version

    async def activate(self, version: str) -> str:
        """Make ``version`` the one queries read; returns the previously active version."""
        previous = await self.active_version()
        await self.meta.update_one(
            {"_id": META_ID}, {"$set": {"active": version}, "$pull": {"building": version}},
            upsert=True,
        )
        return previous

    async def retire(self, version: str, drop_after_s: float) -> None:
        """Mark a no longer active version for dropping after a grace period."""
        entry = {"version": version, "drop_after": time.time() + drop_after_s}
        await self.meta.update_one({"_id": META_ID}, {"$push": {"retired": entry}})

    async def drop_retired(self, now: float | None = None,
                           version: str | None = None) -> list[str]:
        """Drop retired versions whose grace period is over (or ``version`` now)."""
        doc = await self.meta.find_one({"_id": META_ID}) or {}
        now = time.time() if now is None else now
        due = [r["version"] for r in doc.get("retired", [])
               if (version is None and r["drop_after"] <= now) or r["version"] == version]
        if version is not None and version not in due:
            if version == doc.get("active") or version in doc.get("building", []):
                raise ValueError(f"{version} is in use (active or being rebuilt)")
            due.append(version)
        for name in due:
            await self.version(name).drop()
            await self.meta.update_one({"_id": META_ID},
                                       {"$pull": {"retired": {"version": name}}})
        return due

    async def abandon_build(self, version: str) -> None:
        await self.meta.update_one({"_id": META_ID}, {"$pull": {"building": version}})

    async def close(self) -> None:
        await self.mongo.close()
        await self.redis.aclose()
