"""Where a projection's views are kept as documents (``Projection.documents``): one port,
a MongoDB adapter and an in-memory one.

The projection's state stays where the engine keeps it (``projection_store``: the
entities and the marks, written in one script call); the documents are the views
derived from it, one per entity, in a collection per version (``collection_name``),
so that they can be listed by their fields. A batch writes its changed views before
its script call raises the marks, under the version's batch lock
(``ProjectionStore.batch_lock``): a reader that waited for a consistency token finds
the documents as new as the marks, and two writers of one version (a rebalance) write
documents in the order they commit (FerretDB does not update a document atomically,
so a conditional write could not order them). A worker killed between the two writes
leaves documents ahead of the marks, never behind: the events past the marks are
folded again, into the same views.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, Self

import pymongo
from pymongo import DeleteOne, ReplaceOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, CollectionInvalid, OperationFailure

from projections.api import Documents

Doc = dict[str, Any]
Filters = Mapping[str, Sequence[Any]]
"""Field -> the values a listed document's field may hold (any of them)."""
NAMESPACE_EXISTS = 48
DUPLICATE_KEY = 11000
WRITE_TIMEOUT_S = 10.0
"""A batch's documents are written within this, or the batch fails (and is applied
again): a third of the batch lock's life (``projection_store.LOCK_TTL_S``), so a writer
does not write on after its lock expired and another writer took it."""
WRITE_CHUNK = 1000
"""Statements per ``bulk_write`` (FerretDB as the stack builds it takes 1,000)."""


def collection_name(name: str, version: str) -> str:
    """The collection of one version of a projection's documents (``p_`` keeps them
    apart from the join's ``orders_v2``: a projection may not be named like those)."""
    return f"p_{name}_{version}"


async def pushes_down_filters(collection: AsyncCollection[Doc]) -> bool:
    """Whether the server answers a filter on a field other than ``_id`` from its
    storage (where an index on the field can serve it), by its ``explain`` of one.
    FerretDB reports ``filterPushdown``, true only for what it hands its backend; the
    collection is created first, as FerretDB on SQLite pushes down nothing for a
    collection that does not exist yet."""
    try:
        await collection.database.create_collection(collection.name)
    except CollectionInvalid:
        pass  # it exists
    except OperationFailure as exc:
        if exc.code != NAMESPACE_EXISTS:
            raise
    plan = await collection.database.command(
        {
            "explain": {"find": collection.name, "filter": {"customer_id": ""}},
            "verbosity": "queryPlanner",
        }
    )
    return plan.get("filterPushdown") is not False


class ViewDocuments(Protocol):
    """The documents of one version of one projection."""

    async def prepare(self) -> None:
        """Create the collection and the indexes the server reads."""
        ...

    async def write(
        self, views: Mapping[str, Mapping[str, Any] | None], new: Collection[str] = ()
    ) -> None:
        """Store each entity's view (None: it shows nothing now: its document goes).
        ``new``: keys of entities not stored before, whose documents are most likely
        not there either (inserted, which costs a document store less than a
        replacement; one that is there after all is replaced)."""
        ...

    async def find(self, filters: Filters, after: str | None, limit: int) -> list[tuple[str, Doc]]:
        """Up to ``limit`` (key, view) whose fields hold one of the given values, in key
        order, after the key ``after``."""
        ...

    async def views(self, keys: Sequence[str] | None = None) -> dict[str, Doc]:
        """Every stored view by key, or those of ``keys`` (``verify``)."""
        ...

    async def drop(self) -> None: ...


class MongoViewDocuments:
    """A version's documents in ``collection``. ``of``: a registered projection's
    (``p_<name>_<version>``); the join's are made alike (``Documents.document``, with
    their state) and read through the same class (``GET /v1/projections/orders``)."""

    def __init__(self, collection: AsyncCollection[Doc], shape: Documents) -> None:
        self._collection = collection
        self._shape = shape

    @classmethod
    def of(cls, db: AsyncDatabase[Doc], name: str, version: str, shape: Documents) -> Self:
        return cls(db[collection_name(name, version)], shape)

    async def prepare(self) -> None:
        if not self._shape.indexes or not await pushes_down_filters(self._collection):
            return
        for index in self._shape.indexes:
            await self._collection.create_index(list(index))

    async def write(
        self, views: Mapping[str, Mapping[str, Any] | None], new: Collection[str] = ()
    ) -> None:
        inserts: list[Doc] = []
        ops: list[ReplaceOne[Doc] | DeleteOne] = []
        for key, view in views.items():
            if view is None:
                ops.append(DeleteOne({"_id": key}))
            elif key in new:
                inserts.append(self._shape.document(key, view, None))
            else:
                ops.append(
                    ReplaceOne({"_id": key}, self._shape.document(key, view, None), upsert=True)
                )
        with pymongo.timeout(WRITE_TIMEOUT_S):  # well within the batch lock's life
            for start in range(0, len(inserts), WRITE_CHUNK):
                chunk = inserts[start : start + WRITE_CHUNK]
                try:
                    await self._collection.insert_many(chunk, ordered=False)
                except BulkWriteError as exc:  # there after all (written ahead of a crash)
                    errors = exc.details.get("writeErrors", [])
                    if any(e.get("code") != DUPLICATE_KEY for e in errors):
                        raise
                    for e in errors:
                        doc = chunk[e["index"]]
                        ops.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
            for start in range(0, len(ops), WRITE_CHUNK):
                await self._collection.bulk_write(ops[start : start + WRITE_CHUNK], ordered=False)

    async def find(self, filters: Filters, after: str | None, limit: int) -> list[tuple[str, Doc]]:
        query: Doc = {field: {"$in": list(values)} for field, values in filters.items()}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self._collection.find(query, self._shape.read).sort("_id", 1).limit(limit)
        return [(str(doc["_id"]), Documents.view_of(doc)) async for doc in cursor]

    async def views(self, keys: Sequence[str] | None = None) -> dict[str, Doc]:
        query = {} if keys is None else {"_id": {"$in": list(keys)}}
        return {
            str(doc["_id"]): Documents.view_of(doc)
            async for doc in self._collection.find(query, self._shape.read)
        }

    async def drop(self) -> None:
        await self._collection.drop()


def _holds(value: Any, values: Sequence[Any]) -> bool:
    """``$in`` as MongoDB compares: numbers by value, a boolean only with a boolean, an
    array by any of its elements (or as a whole)."""
    if isinstance(value, list) and any(_holds(v, values) for v in value):
        return True
    return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in values)


class MemoryViewDocuments:
    """The same contract in a dict (unit tests of the engine)."""

    def __init__(self, shape: Documents) -> None:
        self._shape = shape
        self._docs: dict[str, Doc] = {}

    async def prepare(self) -> None:
        return None

    async def write(
        self, views: Mapping[str, Mapping[str, Any] | None], new: Collection[str] = ()
    ) -> None:
        for key, view in views.items():
            if view is None:
                self._docs.pop(key, None)
            else:
                self._docs[key] = self._shape.document(key, view, None)

    async def find(self, filters: Filters, after: str | None, limit: int) -> list[tuple[str, Doc]]:
        found = []
        for key in sorted(self._docs):
            doc = self._docs[key]
            if after is not None and key <= after:
                continue
            if all(_holds(doc.get(field), values) for field, values in filters.items()):
                found.append((key, Documents.view_of(doc)))
            if len(found) == limit:
                break
        return found

    async def views(self, keys: Sequence[str] | None = None) -> dict[str, Doc]:
        wanted = self._docs.keys() if keys is None else set(keys) & self._docs.keys()
        return {key: Documents.view_of(self._docs[key]) for key in wanted}

    async def drop(self) -> None:
        self._docs.clear()
