"""Where the read models live, projection by projection, and which versions are active.

Three projections: ``orders`` (MongoDB order views), ``customers`` (MongoDB
customer views) and ``redis`` (hot cache, counts, revenue, leaderboard). Each
has versions: ``orders_<v>``, ``customers_<v>`` collections, and Redis keys
under ``<prefix>{<v>}:`` (the hash tag keeps one version's keys in one Redis
Cluster slot so the Lua scripts stay atomic). A rebuild of one projection or
several writes a new version of those while the active ones keep serving;
switching is one update of the ``meta`` document. Each projection version
keeps its own applied-position marks (``checkpoints:<projection>``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.lock import Lock

from eventfold.consistency import Runs
from eventfold.settings import Settings
from projections.api import Documents, Projection, Rows
from projections.builtin.core import JOINED, orders
from projections.order_fold import (
    ORDER_RANKED,
    REVENUE_GROUP,
    STATUS_GROUP,
    customer_of_group,
    lifetime_value_measure,
    order_rows,
)
from projections.projection_store import LOCK_TTL_S, LOCK_WAIT_S, ProjectionVersions, RedisRows
from projections.view_documents import pushes_down_filters

T = TypeVar("T")

Document = dict[str, Any]
META_ID = "read_models"
SCAN_COUNT = 10_000
"""Keys a ``SCAN`` call looks at (Redis' default: 10): a pass over 13,000 keys took 14
calls and 12 ms at 1,000, 2 calls and 8 ms at 10,000."""
FIRST_VERSION = "v1"


@dataclass(frozen=True)
class CoreReadModel:
    """A read model the processor's join writes: its name (a projection name, versioned
    and rebuilt like a registered one's), what it holds, and how its views are stored
    as documents (None: in Redis). ``definition``: the projection it is (``orders``,
    ``customers``), or for one derived from another's views (``redis``, from the
    orders'), None and ``derived_from`` that projection's name, with the ``rows`` each
    view contributes (``projections.api.Rows``) and the measures kept ``ranked``; it
    also caches each view (its state's ``packed_view``, at its ``revision``)."""

    name: str
    description: str
    documents: Documents | None = None
    definition: Projection | None = None
    derived_from: str | None = None
    rows: Callable[[Mapping[str, Any]], Rows] | None = None
    ranked: tuple[str, ...] = ()

    @classmethod
    def of(cls, definition: Projection) -> CoreReadModel:
        return cls(definition.name, definition.description, definition.documents, definition)


CORE: tuple[CoreReadModel, ...] = (
    *(CoreReadModel.of(d) for d in JOINED),
    CoreReadModel(
        "redis",
        "hot cache, status counts, revenue, top customers (Redis), derived from the orders",
        derived_from=orders.name,
        rows=order_rows,
        ranked=ORDER_RANKED,
    ),
)
"""The join's read models, declared once: the names, the descriptions and the documents
below, the names a registered projection cannot take, ``eventfold projections``."""
PROJECTIONS: tuple[str, ...] = tuple(m.name for m in CORE)
DERIVED: dict[str, tuple[CoreReadModel, ...]] = {
    d.name: tuple(m for m in CORE if m.derived_from == d.name) for d in JOINED
}
"""The read models derived from each definition's views (the orders': ``redis``)."""
DOCUMENTS: dict[str, Documents] = {m.name: m.documents for m in CORE if m.documents is not None}
"""How each projection stored in MongoDB stores its views (``projections.api.Documents``)."""
ORDER_PROJECTION: tuple[str, ...] = DOCUMENTS[orders.name].read or ()
"""The fields to read of an order document to show its view."""
# The Redis projection's key layout, under a version's prefix (``ReadModels.key``); declared
# here once, used through ``ReadModels``' methods of the same names.
ORDER_KEY = "order:{order_id}"  # hash: facts, customer (its revision), rows, view
REDIS_PROJECTION_KEYS = (ORDER_KEY.format(order_id="*"), *RedisRows.PATTERNS)
"""Every key of the Redis projection: the orders' hot cache, and the order aggregates
(``aggregates``) in the layout of a projection's rows."""


def projections_named(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` in canonical order; ValueError for an unknown one."""
    wanted = set(names)
    unknown = wanted - set(PROJECTIONS)
    if unknown:
        raise ValueError(
            f"unknown projection(s) {', '.join(sorted(unknown))}; known: {', '.join(PROJECTIONS)}"
        )
    return tuple(p for p in PROJECTIONS if p in wanted)


class NotBuilding(ValueError):
    """A version that is not being built (never was, or its rebuild was aborted)."""


class MetaChanged(RuntimeError):
    """The meta document changed between a read and the write based on it."""


def _without(entries: Sequence[Any], version: str) -> list[Any]:
    """A ``building`` or ``retired`` list without ``version``'s entry."""
    return [e for e in entries if (e if isinstance(e, str) else e.get("version")) != version]


@dataclass(frozen=True)
class Build:
    """A version being built: its name and the projections it rebuilds."""

    version: str
    projections: tuple[str, ...]


@dataclass(frozen=True)
class Meta:
    """The ``meta`` document, read tolerantly (older layouts had one version for all)."""

    active: Mapping[str, str]
    building: Sequence[Build]
    retired: Sequence[Mapping[str, Any]]

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> Meta:
        doc = doc or {}
        active = doc.get("active", FIRST_VERSION)
        if isinstance(active, str):
            active = dict.fromkeys(PROJECTIONS, active)
        building = [
            Build(b, PROJECTIONS)
            if isinstance(b, str)
            else Build(str(b["version"]), tuple(b["projections"]))
            for b in doc.get("building", [])
        ]
        retired = [{"projections": list(PROJECTIONS), **r} for r in doc.get("retired", [])]
        return cls({p: str(active.get(p, FIRST_VERSION)) for p in PROJECTIONS}, building, retired)

    def targets(self, projection: str) -> list[str]:
        """Versions live processors write ``projection`` to: active, then being built."""
        active = self.active[projection]
        return [
            active,
            *(
                b.version
                for b in self.building
                if projection in b.projections and b.version != active
            ),
        ]


order_view_of = Documents.view_of
"""The order view a stored document shows (``Documents.view_of``); documents written
before the compact layout hold every field of the view as its own, and show it too."""


def stored_document(
    projection: str, doc_id: str, view: Mapping[str, Any], state: str, packed: str | None = None
) -> Document:
    """The document of ``projection`` (``orders`` or ``customers``) for a view and the
    state it was derived from, as its ``Documents`` store it."""
    return DOCUMENTS[projection].document(doc_id, view, state, packed)


@dataclass(frozen=True)
class ReadModels:
    """Handles on one version of each projection (usually the same version for all)."""

    db: AsyncDatabase[Document]
    redis: Redis
    versions: Mapping[str, str]  # projection -> version
    redis_prefix: str

    @property
    def version(self) -> str:
        """A label: ``v3``, or ``orders=v3,customers=v3,redis=v4`` when they differ."""
        distinct = set(self.versions.values())
        if len(distinct) == 1:
            return distinct.pop()
        return ",".join(f"{p}={self.versions[p]}" for p in PROJECTIONS)

    @property
    def orders(self) -> AsyncCollection[Document]:
        return self.db[self.collection("orders")]

    @property
    def customers(self) -> AsyncCollection[Document]:
        return self.db[self.collection("customers")]

    def collection(self, projection: str) -> str:
        """The collection of projection ``orders`` or ``customers``."""
        return f"{projection}_{self.versions[projection]}"

    def key(self, name: str, projection: str = "redis") -> str:
        """A Redis key of ``projection``'s version (the Redis projection's by default)."""
        return f"{self.redis_prefix}{{{self.versions[projection]}}}:{name}"

    def checkpoints_key(self, projection: str) -> str:
        return self.key(f"checkpoints:{projection}", projection)

    def order_key(self, order_id: str) -> str:
        """The hot-cache hash of one order (its view, status and contribution)."""
        return self.key(ORDER_KEY.format(order_id=order_id))

    @property
    def aggregates(self) -> RedisRows:
        """The order aggregates (``order_fold.order_rows``): rows and rankings, under this
        version's prefix."""
        return RedisRows(self.redis, self.key(""))

    @property
    def status_key(self) -> str:
        """How far a rebuild of this version has got (``projections.rebuild_status``)."""
        return self.key("rebuild_status")

    @property
    def progress_key(self) -> str:
        """A rebuild's saved position per source partition (``topic:partition`` -> offset)."""
        return self.key("rebuild_progress")

    async def marks(self, projection: str) -> dict[str, int]:
        """``topic:partition`` -> highest offset ``projection``'s version has applied."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.checkpoints_key(projection)))
        return {k: int(v) for k, v in raw.items()}

    async def applied_marks(self) -> dict[str, int]:
        """``topic:partition`` -> highest offset every projection here has applied."""
        marks: dict[str, int] | None = None
        for projection in PROJECTIONS:
            these = await self.marks(projection)
            marks = (
                these
                if marks is None
                else {k: min(v, these[k]) for k, v in marks.items() if k in these}
            )
        return marks or {}

    def batch_lock(self, projection: str) -> Lock:
        """A lock making one writer at a time write a batch into ``projection``'s
        collection of this version.

        MongoDB updates a single document atomically, but FerretDB's SQLite
        backend (the local stack) does not: it reads, modifies and writes a
        document outside a transaction (FerretDB issue #3040; measured here:
        195 of 200 racing compare-and-swaps both "succeeded"). Two writers of
        one collection (the live processor and a rebuild writing the version
        being built, or two workers during a rebalance) therefore take turns
        per batch: one lock for the batch's read-merge-write, two Redis round
        trips per batch instead of two per document. It expires after
        ``LOCK_TTL_S`` so a killed writer cannot block others."""
        return Lock(
            self.redis,
            self.key(f"lock:{projection}", projection),
            timeout=LOCK_TTL_S,
            sleep=0.002,
            blocking_timeout=LOCK_WAIT_S,
        )

    def writer_key(self, projection: str) -> str:
        """Names the last writer of ``projection``'s collection (``claim_writes``)."""
        return self.key(f"writer:{projection}", projection)

    async def claim_writes(self, projection: str, writer: str) -> bool:
        """Name ``writer`` the last writer of ``projection``'s collection of this version
        (called under its ``batch_lock``); True when it was the last one already, so the
        collection holds what it wrote last, as it wrote it (``projector.WrittenLast``)."""
        previous = await self.redis.set(self.writer_key(projection), writer, get=True)
        return bool(previous == writer)

    def for_projection(self, projection: str) -> ReadModels:
        """These handles with ``projection``'s version for every projection (so
        ``key()`` names that version's keys)."""
        version = self.versions[projection]
        if all(v == version for v in self.versions.values()):
            return self
        return ReadModels(
            self.db, self.redis, dict.fromkeys(PROJECTIONS, version), self.redis_prefix
        )

    def changes_channel(self, order_id: str) -> str:
        """Redis pub/sub channel carrying each new view of one order (for live updates)."""
        return self.key(f"changes:{order_id}")

    async def status_counts(self) -> dict[str, int]:
        """Orders per status (the Redis projection's counts)."""
        return (await self.aggregates.rows([STATUS_GROUP]))[0]

    async def revenue(self) -> dict[str, int]:
        """``YYYY-MM-DD|CUR`` -> captured minus refunded, in 1e-4 units."""
        return (await self.aggregates.rows([REVENUE_GROUP]))[0]

    async def top(self, currency: str, limit: int) -> list[tuple[str, int]]:
        """The customers with the highest lifetime value in ``currency``, highest first,
        with that value in 1e-4 units."""
        ranked = await self.aggregates.top(lifetime_value_measure(currency), limit)
        return [(customer_of_group(group), units) for group, units in ranked]

    async def ensure_indexes(self) -> None:
        """The indexes of each projection's documents (``Documents.indexes``: the order
        list's), where the server reads them.

        FerretDB on SQLite (the local stack) pushes down to SQL a condition on ``_id``
        and nothing else: a filter on ``customer_id`` or ``status`` and any sort are
        answered by reading the collection, so a secondary index there is never read,
        and every write pays for it (SQLite parses the document's JSON for each indexed
        field of each index, before and after a replacement). Its ``explain`` says so:
        ``filterPushdown`` false for a filter on an indexed field. MongoDB (whose
        explain has no such field) and FerretDB on PostgreSQL (which pushes the filter
        down) get the indexes. Measured on the benchmark's catch-up, 4 alternated pairs:
        FerretDB's CPU 1.17 to 1.35 s without them against 1.62 to 2.00 s with."""
        for projection, documents in DOCUMENTS.items():
            if not documents.indexes:
                continue
            collection = self.db[self.collection(projection)]
            if not await pushes_down_filters(collection):
                continue
            for index in documents.indexes:
                await collection.create_index(list(index))

    async def drop(self, projections: Iterable[str] = PROJECTIONS) -> None:
        """Remove every document and key of the given projections of this version.

        Each pattern of keys is found by a pass over the whole keyspace (``SCAN``):
        dropping every projection of one version makes one pass, for every key under
        its prefix, not one per pattern and one more (a rebuild drops its new version
        before it starts: 5 passes took 60 ms of the benchmark's 2 s rebuild, over
        13,000 keys)."""
        chosen = projections_named(projections)
        whole = chosen == PROJECTIONS and len(set(self.versions.values())) == 1
        for projection in chosen:
            if projection != "redis":
                await self.db[self.collection(projection)].drop()
                if not whole:
                    await self.redis.delete(
                        self.key(f"lock:{projection}", projection),
                        self.writer_key(projection),
                    )
            if not whole:
                await self.redis.delete(self.checkpoints_key(projection))
        if whole:
            await self._delete_matching(self.key("*"))
        elif "redis" in chosen:
            for pattern in REDIS_PROJECTION_KEYS:
                await self._delete_matching(self.key(pattern))

    async def _delete_matching(self, pattern: str) -> None:
        cursor = 0
        while True:
            cursor, keys = await self.redis.scan(cursor, match=pattern, count=SCAN_COUNT)
            if keys:
                await self.redis.delete(*keys)
            if cursor == 0:
                break


class Stores:
    """The connections of one process (one MongoDB client, one Redis pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mongo: AsyncMongoClient[Document] = AsyncMongoClient(
            settings.mongo_uri,
            serverSelectionTimeoutMS=5000,
            connectTimeoutMS=5000,
            socketTimeoutMS=10000,
            tz_aware=True,
            # explicit: what an acknowledged read-model write survives (see the README)
            w=settings.mongo_write_concern_w,
            journal=settings.mongo_journal,
        )
        # Bounded: past redis_max_connections a command waits for a free connection,
        # so no number of clients of this process can exhaust Redis's connections.
        self.redis: Redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                settings.redis_uri,
                max_connections=settings.redis_max_connections,
                timeout=settings.redis_pool_wait_s,
                client_name=settings.redis_client_name,
                decode_responses=True,
                socket_timeout=5,
                socket_connect_timeout=5,
            )
        )
        self.db: AsyncDatabase[Document] = self.mongo[settings.mongo_db]

    @property
    def meta(self) -> AsyncCollection[Document]:
        return self.db["meta"]

    @property
    def meta_stamp_key(self) -> str:
        """A Redis counter raised after every change of the meta document.

        Processes that keep the active versions in memory (the query API) read it
        with each request, in the same round trip as their data, and re-read the
        meta document only when it moved: no MongoDB read per request. It is raised
        *after* the meta document is written, and a reader reads it *before* the
        meta document, so a reader that saw the new stamp sees the new meta."""
        return f"{self.settings.redis_prefix}meta-stamp"

    def dead_letters_key(self, topic: str, partition: int) -> str:
        """The dead-lettered offsets of a source partition (a sorted set scored by offset):
        a consistency token covering one is answered with its reason, not stale data."""
        return f"{self.settings.redis_prefix}dead-letters:{topic}:{partition}"

    async def record_dead_letter(self, topic: str, partition: int, offset: int, why: str) -> None:
        await self.redis.zadd(self.dead_letters_key(topic, partition), {f"{offset} {why}": offset})

    async def dead_letters_in(self, runs: Runs) -> list[str]:
        """``topic:partition@offset reason`` of each dead-lettered record in ``runs``."""
        pipe = self.redis.pipeline(transaction=False)
        asked = []
        for topic, parts in runs.items():
            for partition, found in parts.items():
                for first, last in found:
                    pipe.zrangebyscore(self.dead_letters_key(topic, partition), first, last)
                    asked.append(f"{topic}:{partition}")
        if not asked:
            return []
        answers = await pipe.execute()
        return [
            f"{where}@{entry}"
            for where, entries in zip(asked, answers, strict=True)
            for entry in entries
        ]

    async def _meta_changed(self) -> None:
        await self.redis.incr(self.meta_stamp_key)

    def projection_versions(self) -> ProjectionVersions:
        """The registered projections' versions and stores (their documents in ``db``)."""
        return ProjectionVersions(self.redis, self.settings.redis_prefix, self.db)

    def version(self, version: str) -> ReadModels:
        """Version ``version`` of every projection."""
        return self.versions(dict.fromkeys(PROJECTIONS, version))

    def versions(self, versions: Mapping[str, str]) -> ReadModels:
        return ReadModels(self.db, self.redis, dict(versions), self.settings.redis_prefix)

    async def read_meta(self) -> Meta:
        return Meta.from_doc(await self.meta.find_one({"_id": META_ID}))

    async def active_versions(self) -> dict[str, str]:
        return dict((await self.read_meta()).active)

    async def active_version(self) -> str:
        """The active version's label (see ``ReadModels.version``)."""
        return (await self.active()).version

    async def active(self) -> ReadModels:
        return self.versions(await self.active_versions())

    async def targets(self) -> dict[str, list[str]]:
        """Per projection, the versions live processors write to: active, then being built."""
        meta = await self.read_meta()
        return {p: meta.targets(p) for p in PROJECTIONS}

    async def building(self) -> list[Build]:
        return list((await self.read_meta()).building)

    def _meta_lock(self) -> Lock:
        """Serializes changes of the meta document: FerretDB's updates are not atomic
        (see ``ReadModels.batch_lock``), so its revision check alone would not be."""
        return Lock(
            self.redis,
            f"{self.settings.redis_prefix}meta-lock",
            timeout=LOCK_TTL_S,
            sleep=0.01,
            blocking_timeout=LOCK_WAIT_S,
        )

    async def _change_meta(self, change: Callable[[Document], tuple[Document, T]]) -> T:
        """Apply ``change`` to the meta document as one compare-and-set: ``change`` gets
        the current document and returns the fields to set and a result (or raises,
        changing nothing); the write applies only if the document's ``revision`` is
        still the one read, and raises ``MetaChanged`` otherwise."""
        async with self._meta_lock():
            doc = await self._current_meta()
            revision = int(doc.get("revision", 0))
            fields, result = change(doc)
            written = await self.meta.update_one(
                {"_id": META_ID, "revision": revision},
                {"$set": {**fields, "revision": revision + 1}},
            )
            if written.matched_count != 1:
                raise MetaChanged("the read-model versions changed meanwhile; try again")
        await self._meta_changed()
        return result

    async def _current_meta(self) -> Document:
        """The meta document in today's layout (created, or an older one rewritten)."""
        doc = await self.meta.find_one({"_id": META_ID})
        if doc is not None and isinstance(doc.get("active"), dict) and "revision" in doc:
            return doc
        meta = Meta.from_doc(doc)
        last = max([1, *(int(v[1:]) for v in meta.active.values())])
        layout = {
            "active": dict(meta.active),
            "building": [
                {"version": b.version, "projections": list(b.projections)} for b in meta.building
            ],
            "retired": list(meta.retired),
            "last_version": int((doc or {}).get("last_version", last)),
            "revision": 0,
        }
        await self.meta.replace_one({"_id": META_ID}, layout, upsert=True)
        return {"_id": META_ID, **layout}

    async def begin_build(
        self,
        projections: Sequence[str] = PROJECTIONS,
        prepare: Callable[[str], Awaitable[None]] | None = None,
    ) -> str:
        """Allocate a new version for ``projections`` and register it so live processors
        also write to it. ``prepare`` runs on the allocated version before it is
        registered, while nothing writes to it yet: a rebuild clears what an earlier
        attempt may have left under the name. (Clearing it after registering raced with
        the live processors' first writes to it: a Redis count deleted under an order
        key kept, and the version's counts were off for good.)"""
        chosen = list(projections_named(projections))

        def allocate(doc: Document) -> tuple[Document, str]:
            version = int(doc["last_version"]) + 1
            return {"last_version": version}, f"v{version}"

        version = await self._change_meta(allocate)
        if prepare is not None:
            await prepare(version)

        def register(doc: Document) -> tuple[Document, None]:
            return {
                "building": [*doc["building"], {"version": version, "projections": chosen}]
            }, None

        await self._change_meta(register)
        return version

    async def activate(self, version: str) -> dict[str, str]:
        """Make ``version`` the one queries read for the projections it was built for, in
        one update; returns the versions those projections had before. Raises
        ``NotBuilding`` when ``version`` is not being built (its rebuild was aborted):
        then nothing changes."""

        def switch(doc: Document) -> tuple[Document, dict[str, str]]:
            meta = Meta.from_doc(doc)
            build = next((b for b in meta.building if b.version == version), None)
            if build is None:
                raise NotBuilding(f"{version} is not being built (was its rebuild aborted?)")
            fields: Document = {f"active.{p}": version for p in build.projections}
            fields["building"] = _without(doc["building"], version)
            return fields, {p: meta.active[p] for p in build.projections}

        return await self._change_meta(switch)

    async def _remove_entry(self, field: str, version: str) -> None:
        """Take ``version`` out of the meta document's ``building`` or ``retired`` list.

        (Written back with ``$set``: FerretDB 1.24's ``$pull`` removes only elements
        equal to the whole condition document, not those matching it.)"""
        await self._change_meta(lambda doc: ({field: _without(doc.get(field, []), version)}, None))

    async def retire(self, previous: Mapping[str, str], drop_after_s: float) -> None:
        """Mark versions no longer active for dropping after a grace period."""
        by_version: dict[str, list[str]] = {}
        for projection, version in previous.items():
            by_version.setdefault(version, []).append(projection)
        entries = [
            {
                "version": version,
                "projections": projections,
                "drop_after": time.time() + drop_after_s,
            }
            for version, projections in by_version.items()
        ]
        await self._change_meta(
            lambda doc: ({"retired": [*doc.get("retired", []), *entries]}, None)
        )

    async def drop_retired(self, now: float | None = None, version: str | None = None) -> list[str]:
        """Drop retired versions whose grace period is over (or ``version`` now)."""
        meta = await self.read_meta()
        now = time.time() if now is None else now
        due = [
            r
            for r in meta.retired
            if (version is None and r["drop_after"] <= now) or r["version"] == version
        ]
        if version is not None and not due:
            in_use = version in meta.active.values() or any(
                b.version == version for b in meta.building
            )
            if in_use:
                raise ValueError(f"{version} is in use (active or being rebuilt)")
            due.append({"version": version, "projections": list(PROJECTIONS)})
        for entry in due:
            name = str(entry["version"])
            # Never a projection that is active at that version again.
            projections = [p for p in entry["projections"] if meta.active[p] != name]
            await self.version(name).drop(projections)
            await self._remove_entry("retired", name)
        return [str(entry["version"]) for entry in due]

    async def holding(self, version: str) -> tuple[ReadModels, tuple[str, ...]]:
        """The read models with ``version`` for the projections it holds (active, being
        built or retired) and the active version for the others; and those projections."""
        meta = await self.read_meta()
        held = {p for p in PROJECTIONS if meta.active[p] == version}
        held |= {p for b in meta.building if b.version == version for p in b.projections}
        held |= {p for r in meta.retired if r["version"] == version for p in r["projections"]}
        if not held:
            raise ValueError(f"no projection has a version {version}")
        chosen = projections_named(held)
        return self.versions(
            {p: version if p in chosen else meta.active[p] for p in PROJECTIONS}
        ), chosen

    async def abandon_build(self, version: str) -> None:
        await self._remove_entry("building", version)

    async def close(self) -> None:
        await self.mongo.close()
        await self.redis.aclose()
