"""A projection whose views are kept as documents too (``Projection.documents``): the
definition's checks, the ``Applier`` writing each batch's views before its marks (and
none when the marks moved), views that cannot be documents dead-lettered for their
event, and the listing by fields, over the in-memory adapters (the MongoDB adapter
runs the same contract in ``tests/integration/test_view_documents_contract.py``)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from projections.api import JSON, Documents, Projection, ProjectionError
from projections.applier import Applier
from projections.projection_store import MemoryProjectionStore
from projections.state import Failure, Positioned
from projections.view_documents import MemoryViewDocuments
from schemas.events import Event, OrderCancelled, OrderPlaced
from tests.support.events import event, placed_data

SHAPE = Documents(fields=("customer_id", "lines"), indexes=((("customer_id", 1),),))


def initial() -> JSON:
    return {"customer_id": None, "lines": 0, "note": None}


def fold(state: dict[str, Any], e: Event) -> JSON:
    if isinstance(e, OrderPlaced):
        state.update(customer_id=e.data.customer_id, lines=len(e.data.items))
    elif isinstance(e, OrderCancelled):
        state["customer_id"] = None  # a cancelled order shows nothing
        state["note"] = e.data.reason
    return state


def view(state: dict[str, Any]) -> JSON:
    if state["customer_id"] is None:
        return None
    if state["customer_id"] == "c-dollar":  # a field no document can hold
        return {"$where": 1, **state}
    return {**state, "detail": {"nested": [1, 2]}}


def cards(shape: Documents = SHAPE) -> Projection:
    return Projection(
        name="cards",
        consumes=("OrderPlaced", "OrderCancelled"),
        initial=initial,
        fold=fold,
        view=view,
        documents=shape,
    )


def placed(order_id: str, customer_id: str, lines: int = 1) -> Event:
    items = [(f"S-{n}", 1, "1.00") for n in range(lines)]
    return event("OrderPlaced", placed_data(order_id, customer_id=customer_id, items=items))


def cancelled(order_id: str) -> Event:
    return event("OrderCancelled", {"order_id": order_id, "reason": "changed my mind"})


def log(*events: Event, start: int = 0) -> list[Positioned]:
    return [Positioned(e, "orders", 0, start + n) for n, e in enumerate(events)]


def highest(batch: list[Positioned]) -> dict[str, int]:
    return {"orders:0": batch[-1].offset}


async def applier(
    projection: Projection | None = None,
) -> tuple[Applier, MemoryProjectionStore, MemoryViewDocuments]:
    projection = projection or cards()
    assert projection.documents is not None
    store, documents = MemoryProjectionStore(), MemoryViewDocuments(projection.documents)
    a = Applier(projection, store, documents=documents)
    await a.start()
    return a, store, documents


async def stored_views(store: MemoryProjectionStore) -> dict[str, Any]:
    snapshot = await store.snapshot()
    return {k: e.view for k, e in snapshot.entities.items() if e.view is not None}


# --- the definition -----------------------------------------------------------------------


def test_documents_are_for_views_only() -> None:
    with pytest.raises(ProjectionError, match="documents store views; a rows projection"):
        Projection(
            name="counts",
            consumes=("OrderPlaced",),
            initial=dict,
            fold=lambda s, e: s,
            rows=lambda s: {},
            documents=SHAPE,
        )


def test_documents_must_be_a_documents() -> None:
    with pytest.raises(ProjectionError, match=r"documents is a projections\.api\.Documents"):
        cards(shape={"fields": ("status",)})  # type: ignore[arg-type]


def test_an_applier_keeps_documents_only_for_a_projection_that_defines_them() -> None:
    plain = Projection(
        name="plain", consumes=("OrderPlaced",), initial=dict, fold=lambda s, e: s, view=dict
    )
    with pytest.raises(ValueError, match="plain defines no documents to keep"):
        Applier(plain, MemoryProjectionStore(), documents=MemoryViewDocuments(SHAPE))
    Applier(cards(), MemoryProjectionStore())  # a fold whose views are not kept: verify's


def test_what_a_list_filters_on() -> None:
    assert SHAPE.filters_on("customer_id") and not SHAPE.filters_on("note")
    every = Documents()
    assert every.filters_on("note") and every.filters_on("Status_2")
    assert not every.filters_on("_id") and not every.filters_on("a.b")
    assert not every.filters_on("$where")


@pytest.mark.parametrize(
    ("shape", "view_", "wrong"),
    [
        (Documents(), {"_id": "x"}, "'_id': a name starting with _"),
        (Documents(), {"a.b": 1}, "'a.b': not a document's field name"),
        (Documents(), {"nested": {"$gt": 1}}, "'$gt': not a document's field name"),
        (Documents(), {"n": 2**63}, "beyond 64 bits"),
        (Documents(), {"n": [1, -(2**64)]}, "beyond 64 bits"),
        (SHAPE, {"customer_id": {"x.y": 1}}, "'x.y': not a document's field name"),
    ],
)
def test_a_view_a_document_cannot_hold_is_named(
    shape: Documents, view_: dict[str, Any], wrong: str
) -> None:
    found = shape.unstorable(view_)
    assert found is not None and wrong in found


def test_a_document_field_cannot_be_an_operator() -> None:
    with pytest.raises(ProjectionError, match=r"'\$where'.*or '\$'"):
        Documents(fields=("$where",))


def test_a_field_a_view_lacks_stays_absent_from_its_document() -> None:
    doc = SHAPE.document("o-1", {"lines": 2, "note": "x"}, None)
    assert "customer_id" not in doc
    assert Documents.view_of(doc) == {"lines": 2, "note": "x"}


def test_a_document_beyond_the_servers_size_is_named() -> None:
    found = SHAPE.unstorable({"customer_id": "c-1", "blob": "x" * (17 * 1024 * 1024)})
    assert found is not None and "beyond 16,777,216" in found


@dataclass
class Point:
    n: int


@pytest.mark.parametrize(
    "view_",
    [{"ids": (2**63,)}, {"x": Point(2**63)}, {"deep": [{"a": (1, {"b.c": 2})}]}],
    ids=["tuple", "dataclass", "nested"],
)
async def test_a_view_is_checked_as_json_holds_it(view_: dict[str, Any]) -> None:
    """What the engine stores is the view as JSON (a tuple a list, a dataclass an
    object): that is what must fit in a document."""
    letters: list[Failure] = []

    async def dead_letter(projection: Projection, failure: Failure) -> None:
        letters.append(failure)

    projection = Projection(
        name="odd",
        consumes=("OrderPlaced",),
        initial=dict,
        fold=lambda s, e: s,
        view=lambda s: view_,
        documents=Documents(),
    )
    documents = MemoryViewDocuments(Documents())
    a = Applier(projection, MemoryProjectionStore(), dead_letter, documents=documents)
    await a.start()
    batch = log(placed("o-1", "c-1"))
    await a.apply(batch, highest(batch))
    assert len(letters) == 1 and "cannot be stored as a document" in str(letters[0].error)
    assert await documents.views() == {}


def test_the_packed_rest_of_a_view_holds_anything_json() -> None:
    # with fields, only those are the document's own; the rest is one JSON string
    assert SHAPE.unstorable({"customer_id": "c-1", "$rest": {"a.b": [1, {"$x": None}]}}) is None
    assert Documents().unstorable({"n": 2**63 - 1, "m": -(2**63), "ok": True}) is None


# --- the engine ---------------------------------------------------------------------------


async def test_each_batch_stores_the_entities_views_and_a_view_of_none_removes_one() -> None:
    a, store, documents = await applier()
    first = log(placed("o-1", "c-1", 2), placed("o-2", "c-2"), placed("o-3", "c-1", 3))
    await a.apply(first, highest(first))
    assert await documents.views() == await stored_views(store)
    assert set(await documents.views()) == {"o-1", "o-2", "o-3"}
    assert (await documents.views())["o-1"] == {
        "customer_id": "c-1",
        "lines": 2,
        "note": None,
        "detail": {"nested": [1, 2]},
    }

    second = log(cancelled("o-2"), placed("o-4", "c-3"), start=3)
    await a.apply(second, highest(second))
    assert set(await documents.views()) == {"o-1", "o-3", "o-4"}
    assert await documents.views() == await stored_views(store)


async def test_a_view_no_document_can_hold_is_dead_lettered_for_its_event() -> None:
    letters: list[Failure] = []

    async def dead_letter(projection: Projection, failure: Failure) -> None:
        letters.append(failure)

    projection = cards(Documents())  # every field of the view is the document's own
    store, documents = MemoryProjectionStore(), MemoryViewDocuments(Documents())
    a = Applier(projection, store, dead_letter, documents=documents)
    await a.start()
    batch = log(placed("o-1", "c-1"), placed("o-2", "c-dollar"), placed("o-3", "c-3"))
    await a.apply(batch, highest(batch))
    assert [f.at.offset for f in letters] == [1]
    assert "cannot be stored as a document" in str(letters[0].error)
    assert set(await documents.views()) == {"o-1", "o-3"}
    assert a.marks == {"orders:0": 2}


class Spied(MemoryViewDocuments):
    """Documents shared with other writers, and the writes this one made."""

    def __init__(self, shared: MemoryViewDocuments) -> None:
        super().__init__(SHAPE)
        self._docs = shared._docs
        self.writes: list[set[str]] = []

    async def write(
        self, views: Mapping[str, Mapping[str, Any] | None], new: Collection[str] = ()
    ) -> None:
        self.writes.append(set(views))
        await super().write(views, new)


async def test_a_writer_that_finds_the_marks_moved_writes_no_document_and_folds_again() -> None:
    projection = cards()
    assert projection.documents is not None
    store, documents = MemoryProjectionStore(), MemoryViewDocuments(projection.documents)
    a_writes = Spied(documents)
    a = Applier(projection, store, documents=a_writes)
    b = Applier(projection, store, documents=documents)
    await a.start()
    await b.start()
    first = log(placed("o-1", "c-1"))
    await a.apply(first, highest(first))

    # b, which took the partition over, applies what came next
    await b.reset()
    moved = log(placed("o-1", "c-1"), cancelled("o-1"), placed("o-2", "c-2"))
    await b.apply(moved, highest(moved))
    assert set(await documents.views()) == {"o-2"}

    # a, not told, applies from its own position a batch that b applied: it finds the
    # marks moved before writing a document, reloads, and has nothing left to write
    stale = log(cancelled("o-1"), placed("o-2", "c-2"), start=1)
    done = await a.apply(stale, highest(stale))
    assert done.events == 0
    assert a_writes.writes == [{"o-1"}]  # its first batch only
    assert set(await documents.views()) == {"o-2"}
    assert await documents.views() == await stored_views(store)


async def test_documents_are_listed_by_their_fields_in_key_order_a_page_at_a_time() -> None:
    a, _, documents = await applier()
    batch = log(*(placed(f"o-{n}", f"c-{n % 3}", n % 2 + 1) for n in range(9)))
    await a.apply(batch, highest(batch))
    c1 = await documents.find({"customer_id": ["c-1"]}, None, 10)
    assert [k for k, _ in c1] == ["o-1", "o-4", "o-7"]
    assert all(v["customer_id"] == "c-1" for _, v in c1)
    page = await documents.find({"customer_id": ["c-1", "c-2"]}, None, 2)
    assert [k for k, _ in page] == ["o-1", "o-2"]
    rest = await documents.find({"customer_id": ["c-1", "c-2"]}, "o-2", 10)
    assert [k for k, _ in rest] == ["o-4", "o-5", "o-7", "o-8"]
    two_lines = await documents.find({"lines": [2], "customer_id": ["c-0"]}, None, 10)
    assert [k for k, _ in two_lines] == ["o-3"]
    assert await documents.find({"lines": [True]}, None, 10) == []  # a boolean is not 1


class CrashingStore(MemoryProjectionStore):
    """A store whose next script call does not happen: the worker dies after the
    documents were written and before the marks were raised."""

    crash = False

    async def write(self, *args: Any, **kwargs: Any) -> bool:
        if self.crash:
            self.crash = False
            raise ConnectionError("killed between the two writes")
        return await super().write(*args, **kwargs)


async def test_a_worker_killed_between_the_documents_and_the_marks_leaves_them_ahead() -> None:
    projection = cards()
    assert projection.documents is not None
    store, documents = CrashingStore(), MemoryViewDocuments(projection.documents)
    first = Applier(projection, store, documents=documents)
    await first.start()
    early = log(placed("o-1", "c-1"), placed("o-2", "c-2"))
    await first.apply(early, highest(early))

    store.crash = True
    later = log(cancelled("o-1"), placed("o-3", "c-3", 2), start=2)
    with pytest.raises(ConnectionError):
        await first.apply(later, highest(later))
    # the documents are ahead of what is stored: o-1 gone, o-3 there; the marks are not
    assert set(await documents.views()) == {"o-2", "o-3"}
    assert await store.marks() == {"orders:0": 1}

    # the worker that resumes reads from the marks and folds the same events again
    resumed = Applier(projection, store, documents=documents)
    await resumed.start()
    again = [p for p in later if p.offset >= resumed.position(p.mark)]
    assert (await resumed.apply(again, highest(again))).events == 2
    assert await documents.views() == await stored_views(store)
    assert set(await documents.views()) == {"o-2", "o-3"}
