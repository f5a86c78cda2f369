"""The projection engine (``apply_batch``) and the ``Applier`` over the in-memory store:
exactly-once application, dead letters per event, checked outputs, conflicting writers,
row differences, and the checks of a ``Projection`` definition."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import pytest

from projections.api import JSON, Projection, ProjectionError, Rows, group_key
from projections.applier import CONFLICT_RETRIES, Applier, MarksMoved
from projections.builtin.sku_sales import sku_sales
from projections.engine import (
    Entity,
    Extreme,
    InvalidOutput,
    RowsDict,
    apply_batch,
    rankings,
    sum_rows,
)
from projections.projection_store import MemoryProjectionStore
from projections.state import Failure, Positioned
from schemas.events import Event, OrderCancelled, PaymentCaptured
from tests.support.events import event, payment_data, placed_data

ORDER = "o-1"
DAY = "2026-01-01"  # tests.support.events.T0
POISON = "poison"
"""The reason of an OrderCancelled whose fold raises."""


def placed(order_id: str = ORDER, items: Sequence[tuple[str, int, str]] | None = None) -> Event:
    if items is None:
        return event("OrderPlaced", placed_data(order_id))
    return event("OrderPlaced", placed_data(order_id, items=items))


def cancelled(order_id: str = ORDER, reason: str = "changed my mind") -> Event:
    return event("OrderCancelled", {"order_id": order_id, "reason": reason})


def shipped(order_id: str = ORDER) -> Event:
    return event("OrderShipped", {"order_id": order_id, "carrier": "DHL", "tracking_number": "T-1"})


def delivered(order_id: str = ORDER) -> Event:
    return event("OrderDelivered", {"order_id": order_id})


def payment(type_: str, order_id: str = ORDER) -> Event:
    return event(type_, payment_data(type_, order_id, payment_id=f"p-{order_id}"))


def positioned(events: Sequence[Event], start: int = 0, partition: int = 0) -> list[Positioned]:
    """``events`` as read from partition ``partition`` of their topics, at consecutive
    offsets per topic from ``start``."""
    offsets: dict[str, int] = {}
    out = []
    for e in events:
        offset = offsets.get(e.topic, start)
        offsets[e.topic] = offset + 1
        out.append(Positioned(e, e.topic, partition, offset))
    return out


def highest(batch: Sequence[Positioned]) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in batch:
        out[p.mark] = max(out.get(p.mark, -1), p.offset)
    return out


class Letters:
    """A dead-letter callback that records what it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Failure]] = []

    async def __call__(self, projection: Projection, failure: Failure) -> None:
        self.sent.append((projection.name, failure))

    @property
    def at(self) -> list[Positioned]:
        return [f.at for _, f in self.sent]


def tally(mutating: bool = False) -> Projection:
    """Counts an order's events per type; an OrderCancelled whose reason is POISON
    raises. ``mutating``: the fold changes the state it is given (allowed by the API)
    rather than returning a new one."""

    def fold(state: dict[str, Any], e: Event) -> JSON:
        if isinstance(e, OrderCancelled) and e.data.reason == POISON:
            raise ValueError("a poisoned event")
        if not mutating:
            state = copy.deepcopy(state)
        state["n"] += 1
        state["types"][e.type] = state["types"].get(e.type, 0) + 1
        return state

    def rows(state: dict[str, Any]) -> Rows:
        out = {t: {"events": n} for t, n in state["types"].items()}
        out["all"] = {"events": state["n"], "orders": 1}
        return out

    return Projection(
        name="tally",
        consumes=(
            "OrderPlaced",
            "OrderShipped",
            "OrderDelivered",
            "OrderCancelled",
            "PaymentCaptured",
        ),
        initial=lambda: {"n": 0, "types": {}},
        fold=fold,
        rows=rows,
    )


TALLY = tally()


async def applied(
    projection: Projection,
    batches: Sequence[Sequence[Positioned]],
    store: MemoryProjectionStore | None = None,
    letters: Letters | None = None,
) -> MemoryProjectionStore:
    store = store if store is not None else MemoryProjectionStore()
    applier = Applier(projection, store, letters)
    await applier.start()
    for batch in batches:
        await applier.apply(batch, highest(batch))
    return store


# --- exactly once ----------------------------------------------------------------------


async def test_a_redelivered_batch_changes_nothing() -> None:
    batch = positioned([placed(), payment("PaymentCaptured"), shipped(), placed("o-2")])
    store = MemoryProjectionStore()
    applier = Applier(TALLY, store)
    await applier.start()
    first = await applier.apply(batch, highest(batch))
    assert (first.events, first.entities, first.dead_letters) == (4, 2, 0)
    once = await store.snapshot()
    assert once.rows == {
        "OrderPlaced": {"events": 2},
        "PaymentCaptured": {"events": 1},
        "OrderShipped": {"events": 1},
        "all": {"events": 4, "orders": 2},
    }
    assert once.marks == {"orders:0": 2, "payments:0": 0}

    again = await applier.apply(batch, highest(batch))
    assert (again.events, again.entities) == (0, 0)
    assert await store.snapshot() == once

    # a worker that starts afresh (nothing held in memory) and reads the batch again
    restarted = Applier(TALLY, store)
    await restarted.start()
    await restarted.apply(batch, highest(batch))
    assert await store.snapshot() == once

    # the engine alone, on the stored entities: their event ids make it a no-op
    outcome = apply_batch(TALLY, once.entities, batch)
    assert (outcome.entities, outcome.deltas, outcome.failures) == ({}, {}, [])


async def test_a_republished_event_counts_once() -> None:
    first, captured, cancel = placed(), payment("PaymentCaptured"), cancelled()
    store = await applied(
        TALLY,
        [
            [Positioned(first, "orders", 0, 0), Positioned(captured, "payments", 0, 0)],
            # the producer published the OrderPlaced again (same event_id, new offset)
            [Positioned(first, "orders", 0, 1)],
            # and a batch holding an event twice
            [Positioned(cancel, "orders", 0, 2), Positioned(cancel, "orders", 0, 3)],
        ],
    )
    snapshot = await store.snapshot()
    assert snapshot.rows["all"] == {"events": 3, "orders": 1}
    assert snapshot.rows["OrderPlaced"] == {"events": 1}
    assert snapshot.rows["OrderCancelled"] == {"events": 1}
    assert snapshot.marks == {"orders:0": 3, "payments:0": 0}
    assert snapshot.entities[ORDER].doc["events"] == sorted(
        [first.event_id, captured.event_id, cancel.event_id]
    )


async def test_marks_advance_over_records_the_projection_does_not_consume() -> None:
    # sku_sales consumes OrderPlaced, OrderCancelled and PaymentRefunded only
    batch = [
        Positioned(shipped(), "orders", 0, 0),
        Positioned(delivered(), "orders", 0, 1),
        # orders:0@2 was undecodable: no event, but the highest offset read
        Positioned(payment("PaymentAuthorized"), "payments", 1, 5),
        Positioned(payment("PaymentCaptured"), "payments", 1, 6),
    ]
    store = MemoryProjectionStore()
    applier = Applier(sku_sales, store)
    await applier.start()
    done = await applier.apply(batch, {"orders:0": 2, "payments:1": 6, "customers:0": 9})
    assert (done.events, done.entities) == (0, 0)
    snapshot = await store.snapshot()
    assert snapshot.marks == {"orders:0": 2, "payments:1": 6}  # not customers: not its topic
    assert (snapshot.entities, snapshot.rows) == ({}, {})
    assert (applier.position("orders:0"), applier.position("payments:1")) == (3, 7)
    assert applier.position("customers:0") == 0

    # the next records of those partitions are read past the marks, and count
    later = [Positioned(placed(), "orders", 0, 3)]
    done = await applier.apply(later, highest(later))
    assert done.events == 1
    assert (await store.snapshot()).rows[group_key("A-1", DAY)]["units"] == 2
    assert (await store.marks())["orders:0"] == 3


# --- dead letters and checked outputs ----------------------------------------------------


@pytest.mark.parametrize(
    ("mutating", "poison_at"),
    [
        (False, 0),
        (False, 2),
        (False, 4),
        # a poisoned first event raises before the fold changed anything: no bug to show
        (True, 2),  # a fold that changes its state in place, raising after it did
        (True, 4),
    ],
)
async def test_an_event_whose_fold_raises_is_dead_lettered_and_the_others_apply(
    mutating: bool, poison_at: int
) -> None:
    projection = tally(mutating)
    good = [placed(), payment("PaymentCaptured"), shipped(), delivered()]
    poison = cancelled(reason=POISON)
    events = [*good[:poison_at], poison, *good[poison_at:], placed("o-2")]
    batch = positioned(events)
    poisoned = next(p for p in batch if p.event is poison)
    letters = Letters()
    store = MemoryProjectionStore()
    applier = Applier(projection, store, letters)
    await applier.start()

    done = await applier.apply(batch, highest(batch))

    assert letters.at == [poisoned]
    assert letters.sent[0][0] == "tally"
    assert isinstance(letters.sent[0][1].error, ValueError)
    assert (done.events, done.entities, done.dead_letters) == (6, 2, 1)
    snapshot = await store.snapshot()
    assert snapshot.rows["all"] == {"events": 5, "orders": 2}
    assert "OrderCancelled" not in snapshot.rows
    assert snapshot.entities[ORDER].doc["events"] == sorted(e.event_id for e in good)
    assert snapshot.entities[ORDER].doc["state"]["n"] == 4
    assert snapshot.marks == highest(batch)  # the poisoned record is not read again

    await applier.apply(batch, highest(batch))  # redelivered: not dead-lettered again
    assert len(letters.sent) == 1

    # the entity goes on from the state without the poisoned event
    later = [Positioned(cancelled(), "orders", 0, snapshot.marks["orders:0"] + 1)]
    await applier.apply(later, highest(later))
    assert (await store.snapshot()).rows["all"] == {"events": 6, "orders": 2}


def _bad_measure(value: object) -> Callable[[dict[str, Any]], Rows]:
    def rows(state: dict[str, Any]) -> Rows:
        out: dict[str, Any] = {"all": {"events": state["events"]}}
        if state["seen_capture"]:
            out["captures"] = {"n": value}
        return out

    return rows


def _capture_seen(state: dict[str, Any], e: Event) -> JSON:
    return {
        **state,
        "events": state["events"] + 1,
        "seen_capture": state["seen_capture"] or isinstance(e, PaymentCaptured),
    }


def _amount_in_state(state: dict[str, Any], e: Event) -> JSON:
    new = {**state, "events": state["events"] + 1}
    if isinstance(e, PaymentCaptured):
        new["amount"] = e.data.amount  # a Decimal: not JSON
    return new


def _events_view(state: dict[str, Any]) -> Mapping[str, JSON] | None:
    return {"events": state["events"]}


def _invalid(
    name: str, fold: Callable[[dict[str, Any], Event], JSON], **derivation: Any
) -> Projection:
    return Projection(
        name=name,
        consumes=("OrderPlaced", "OrderShipped", "PaymentCaptured"),
        initial=lambda: {"events": 0, "seen_capture": False},
        fold=fold,
        **derivation,
    )


INVALID_OUTPUTS = {
    "float measure": _invalid("floats", _capture_seen, rows=_bad_measure(1.5)),
    "bool measure": _invalid("bools", _capture_seen, rows=_bad_measure(True)),
    "str measure": _invalid("strs", _capture_seen, rows=_bad_measure("1")),
    "None measure": _invalid("nones", _capture_seen, rows=_bad_measure(None)),
    "rows not a mapping": _invalid(
        "listed",
        _capture_seen,
        rows=lambda s: [("all", 1)] if s["seen_capture"] else {"all": {"events": s["events"]}},
    ),
    "non-JSON state": _invalid(
        "decimals", _amount_in_state, rows=lambda s: {"all": {"events": s["events"]}}
    ),
    "view not a mapping": _invalid(
        "view_list", _capture_seen, view=lambda s: ["x"] if s["seen_capture"] else _events_view(s)
    ),
    "non-JSON view": _invalid(
        "view_set",
        _capture_seen,
        view=lambda s: {"seen": {1, 2}} if s["seen_capture"] else _events_view(s),
    ),
}


@pytest.mark.parametrize("case", list(INVALID_OUTPUTS))
async def test_invalid_outputs_are_failures_of_their_event(case: str) -> None:
    projection = INVALID_OUTPUTS[case]
    events = [placed(), payment("PaymentCaptured"), shipped()]
    batch = positioned(events)
    letters = Letters()
    store = await applied(projection, [batch], letters=letters)

    assert letters.at == [batch[1]]
    assert isinstance(letters.sent[0][1].error, InvalidOutput)
    snapshot = await store.snapshot()
    entity = snapshot.entities[ORDER].doc
    assert entity["events"] == sorted([events[0].event_id, events[2].event_id])
    assert entity["state"]["events"] == 2
    if projection.kind == "rows":
        assert snapshot.rows == {"all": {"events": 2}}
    else:
        assert entity["view"] == {"events": 2}
        assert snapshot.rows == {}
    assert snapshot.marks == highest(batch)


async def test_non_json_state_of_a_mutating_fold_is_a_failure_of_its_event() -> None:
    def fold(state: dict[str, Any], e: Event) -> JSON:
        state["events"] += 1
        if isinstance(e, PaymentCaptured):
            state["amount"] = e.data.amount  # a Decimal: not JSON
        return state

    projection = _invalid("mutating", fold, rows=lambda s: {"all": {"events": s["events"]}})
    batch = positioned([placed(), payment("PaymentCaptured"), shipped()])
    outcome = apply_batch(projection, {ORDER: None}, batch)
    assert [f.at for f in outcome.failures] == [batch[1]]
    assert outcome.deltas == {"all": {"events": 2}}


# --- conflicting writers -------------------------------------------------------------------


class RecordingStore(MemoryProjectionStore):
    """Records whether each write was applied."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bool] = []

    async def write(
        self,
        entities: Mapping[str, Entity],
        deltas: RowsDict,
        marks: Mapping[str, int],
        expected: Mapping[str, int],
        ranked: Collection[str] = (),
        extremes: Sequence[Extreme] = (),
    ) -> bool:
        done = await super().write(entities, deltas, marks, expected, ranked, extremes)
        self.writes.append(done)
        return done


async def test_a_write_that_finds_the_marks_moved_reloads_and_folds_again() -> None:
    log = positioned(
        [
            placed(),  # orders@0
            payment("PaymentCaptured"),  # payments@0
            shipped(),  # orders@1
            delivered(),  # orders@2
            placed("o-2"),  # orders@3
            cancelled("o-2"),  # orders@4
        ]
    )
    store = RecordingStore()
    a = Applier(TALLY, store)
    await a.start()
    await a.apply(log[:2], highest(log[:2]))  # a holds o-1 in memory now

    # the partitions move to b, which applies two more records
    b = Applier(TALLY, store)
    await b.start()
    await b.apply(log[2:4], highest(log[2:4]))

    # a, not yet told, applies what it read next: from its own position (orders@1)
    rest = [p for p in log if p.offset >= a.position(p.mark)]
    assert [p.offset for p in rest] == [1, 2, 3, 4]
    done = await a.apply(rest, highest(rest))

    assert store.writes == [True, True, False, True]  # the conflict, then the refold
    assert done.events == 2  # only what b had not applied
    assert a.marks == {"orders:0": 4, "payments:0": 0}
    reference = await (await applied(TALLY, [log])).snapshot()
    assert await store.snapshot() == reference
    assert reference.rows["all"] == {"events": 6, "orders": 2}


async def test_marks_that_keep_moving_raise_and_dead_letter_once() -> None:
    class Moving(MemoryProjectionStore):
        async def write(
            self,
            entities: Mapping[str, Entity],
            deltas: RowsDict,
            marks: Mapping[str, int],
            expected: Mapping[str, int],
            ranked: Collection[str] = (),
            extremes: Sequence[Extreme] = (),
        ) -> bool:
            return False  # another writer always got there first

    letters = Letters()
    applier = Applier(TALLY, Moving(), letters)
    await applier.start()
    batch = positioned([placed(), cancelled(reason=POISON)])
    with pytest.raises(MarksMoved):
        await applier.apply(batch, highest(batch))
    assert CONFLICT_RETRIES > 1
    assert letters.at == [batch[1]]  # folded CONFLICT_RETRIES times, sent once


# --- row differences -------------------------------------------------------------------------


async def test_deltas_take_out_an_entity_that_stops_contributing() -> None:
    a1, b2 = group_key("A-1", DAY), group_key("B-2", DAY)
    store = await applied(
        sku_sales,
        [positioned([placed(ORDER), placed("o-2", items=[("A-1", 1, "10")])])],
    )
    assert (await store.snapshot()).rows == {
        a1: {"units": 3, "orders": 2, "revenue:EUR": 2 * 99_900 + 100_000},
        b2: {"units": 1, "orders": 1, "revenue:EUR": 50_000},
    }

    cancel = [Positioned(cancelled(ORDER), "orders", 0, 2)]
    outcome = apply_batch(sku_sales, await store.load([ORDER]), cancel)
    assert outcome.deltas == {
        a1: {"units": -2, "orders": -1, "revenue:EUR": -199_800},
        b2: {"units": -1, "orders": -1, "revenue:EUR": -50_000},
    }
    assert outcome.entities[ORDER].rows == {}

    await applied(sku_sales, [cancel], store)
    snapshot = await store.snapshot()
    assert snapshot.rows == {a1: {"units": 1, "orders": 1, "revenue:EUR": 100_000}}
    assert await store.rows([a1, b2]) == [{"units": 1, "orders": 1, "revenue:EUR": 100_000}, {}]
    assert sum_rows(snapshot.entities.values()) == snapshot.rows

    # a refund takes out the other order: nothing is left
    refund = [Positioned(payment("PaymentRefunded", "o-2"), "payments", 0, 0)]
    await applied(sku_sales, [refund], store)
    snapshot = await store.snapshot()
    assert snapshot.rows == {}
    assert await store.rows([a1, b2]) == [{}, {}]
    assert set(snapshot.entities) == {ORDER, "o-2"}


def test_an_entity_that_comes_and_goes_in_one_batch_makes_no_delta() -> None:
    batch = positioned([placed("o-3"), cancelled("o-3")])
    outcome = apply_batch(sku_sales, {"o-3": None}, batch)
    assert outcome.deltas == {}
    assert outcome.entities["o-3"].rows == {}
    assert outcome.entities["o-3"].doc["events"] == sorted(p.event.event_id for p in batch)


def test_a_refund_before_its_order_ends_in_the_same_rows() -> None:
    refund, order = payment("PaymentRefunded"), placed()
    for events in ([order, refund], [refund, order]):
        outcome = apply_batch(sku_sales, {ORDER: None}, positioned(events))
        assert outcome.deltas == {}
        assert outcome.entities[ORDER].shown == {
            "rows": {},
            "view": None,
            "events": sorted([refund.event_id, order.event_id]),
        }


# --- definitions -----------------------------------------------------------------------------


def _definition(**overrides: Any) -> Projection:
    fields: dict[str, Any] = {
        "name": "counts",
        "consumes": ("OrderPlaced",),
        "initial": dict,
        "fold": lambda s, e: s,
        "rows": lambda s: {},
    }
    return Projection(**(fields | overrides))


def test_a_valid_definition_is_normalised() -> None:
    projection = _definition(
        consumes=("PaymentRefunded", "OrderPlaced", "OrderPlaced", "OrderCancelled")
    )
    assert projection.consumes == ("OrderCancelled", "OrderPlaced", "PaymentRefunded")
    assert projection.topics == ("orders", "payments")
    assert projection.key_field == "order_id"
    assert projection.kind == "rows"
    assert projection.entity_of(payment("PaymentRefunded", "o-9")) == "o-9"
    customers = _definition(consumes=("CustomerRegistered",), rows=None, view=lambda s: s)
    assert (customers.topics, customers.key_field, customers.kind) == (
        ("customers",),
        "customer_id",
        "view",
    )


@pytest.mark.parametrize(
    "name", ["", "Sku_sales", "1sku", "_sku", "sku-sales", "sku sales", "sku.sales", "a" * 41]
)
def test_a_bad_name_is_refused(name: str) -> None:
    with pytest.raises(ProjectionError, match="projection name"):
        _definition(name=name)


def test_the_longest_name_is_accepted() -> None:
    assert _definition(name="a" * 40).name == "a" * 40


def test_an_unknown_event_type_is_refused() -> None:
    with pytest.raises(ProjectionError, match=r"unknown event type.*OrderRefunded"):
        _definition(consumes=("OrderPlaced", "OrderRefunded"))


def test_consuming_nothing_is_refused() -> None:
    with pytest.raises(ProjectionError, match="consumes no event type"):
        _definition(consumes=())


@pytest.mark.parametrize(
    "consumes",
    [("OrderPlaced", "CustomerRegistered"), ("PaymentCaptured", "CustomerUpdated")],
)
def test_topics_keyed_differently_are_refused(consumes: tuple[str, ...]) -> None:
    with pytest.raises(ProjectionError, match="keyed by different fields"):
        _definition(consumes=consumes)


def test_exactly_one_of_rows_and_view() -> None:
    with pytest.raises(ProjectionError, match="exactly one of rows and view"):
        _definition(view=lambda s: s)
    with pytest.raises(ProjectionError, match="exactly one of rows and view"):
        _definition(rows=None)


def test_ranked_measures_are_normalised_and_rank_their_family() -> None:
    projection = _definition(ranked=("units", "ltv", "units"))
    assert projection.ranked == ("ltv", "units")
    assert projection.ranks("units") and projection.ranks("ltv|EUR")
    assert projection.ranks("ltv|EUR|2026")  # the family is the part before the first |
    assert not projection.ranks("unit") and not projection.ranks("ltv2")
    assert not projection.ranks("EUR|ltv")
    assert not _definition().ranks("units")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ranked": ("units",), "rows": None, "view": lambda s: s}, "it has none"),
        ({"ranked": ("",)}, "ranked measure ''"),
        ({"ranked": ("ltv|EUR",)}, r"ranked measure 'ltv\|EUR'"),
        ({"ranked": (3,)}, "ranked measure 3"),
        ({"ranked": "units"}, r"not one string: ranked=\('units',\)"),
    ],
)
def test_a_bad_ranking_is_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ProjectionError, match=message):
        _definition(**overrides)


async def test_the_applier_ranks_the_measures_the_projection_ranks() -> None:
    ranked = Projection(
        name="tally",
        consumes=TALLY.consumes,
        initial=TALLY.initial,
        fold=TALLY.fold,
        rows=TALLY.rows,
        ranked=("events",),
    )
    batch = positioned(
        [placed("o-1"), placed("o-2"), payment("PaymentCaptured", "o-2"), shipped("o-2")]
    )
    store = await applied(ranked, [batch])
    # equal values: the group keys in descending order, as Redis ranks them
    assert await store.top("events", 10) == [
        ("all", 4),
        ("OrderPlaced", 2),
        ("PaymentCaptured", 1),
        ("OrderShipped", 1),
    ]
    assert await store.top("orders", 10) == []  # not ranked
    snapshot = await store.snapshot()
    assert snapshot.ranks == rankings(snapshot.rows, ranked.ranks)
    assert set(snapshot.ranks) == {"events"}
    # the same batch on a projection that ranks nothing keeps no ranking
    assert (await (await applied(TALLY, [batch])).snapshot()).ranks == {}


def test_rankings_are_the_rows_ranked_measures_as_scores() -> None:
    rows: RowsDict = {"a": {"units": 3, "orders": 1}, "b": {"units": 2**53 + 1}, "c": {}}
    assert rankings(rows, lambda m: m == "units") == {"units": {"a": 3, "b": 2**53}}
    assert rankings(rows, lambda m: False) == {}


def latest_orders(**options: Any) -> Projection:
    """Per customer: orders (a sum), the latest and the first order time (epoch
    seconds; a maximum and a minimum); a cancelled order contributes nothing."""

    def fold(state: dict[str, Any], e: Event) -> JSON:
        if isinstance(e, OrderCancelled):
            state["cancelled"] = True
        else:
            state["customer"] = e.data.customer_id  # type: ignore[union-attr]
            state["at"] = int(e.occurred_at.timestamp()) + int(e.data.items[0].quantity)  # type: ignore[union-attr]
        return state

    def rows(state: dict[str, Any]) -> Rows:
        if state["customer"] is None or state["cancelled"]:
            return {}
        at = state["at"]
        return {state["customer"]: {"orders": 1, "latest": at, "first": at}}

    fields: dict[str, Any] = {
        "name": "latest_orders",
        "consumes": ("OrderPlaced", "OrderCancelled"),
        "initial": lambda: {"customer": None, "at": 0, "cancelled": False},
        "fold": fold,
        "rows": rows,
        "maxima": ("latest",),
        "minima": ("first",),
    }
    return Projection(**(fields | options))


def placed_by(order_id: str, quantity: int) -> Event:
    """An OrderPlaced of customer c-1 whose time (for ``latest_orders``) is T0 + quantity."""
    return placed(order_id, items=[("SKU-1", quantity, "1.00")])


async def test_a_maximum_and_a_minimum_follow_their_entities_coming_and_going() -> None:
    projection = latest_orders()
    customer = placed("o-x").data.customer_id  # type: ignore[union-attr]
    base = int(placed("o-x").occurred_at.timestamp())
    first = positioned([placed_by("o-1", 5), placed_by("o-2", 9), placed_by("o-3", 2)])
    store = await applied(projection, [first])
    (row,) = await store.rows([customer])
    assert row == {"orders": 3, "latest": base + 9, "first": base + 2}
    snapshot = await store.snapshot()
    assert sum_rows(snapshot.entities.values(), projection) == snapshot.rows
    assert sum_rows(snapshot.entities.values()) != snapshot.rows  # summed, they differ

    # the latest and the first order cancelled: the next ones take their places
    second = positioned([cancelled("o-2"), cancelled("o-3")], start=3)
    await applied(projection, [second], store)
    (row,) = await store.rows([customer])
    assert row == {"orders": 1, "latest": base + 5, "first": base + 5}
    snapshot = await store.snapshot()
    assert sum_rows(snapshot.entities.values(), projection) == snapshot.rows

    await applied(projection, [positioned([cancelled("o-1")], start=5)], store)
    assert await store.rows([customer]) == [{}]


def test_an_outcome_lists_only_the_extremes_that_changed() -> None:
    projection = latest_orders()
    batch = positioned([placed_by("o-1", 5)])
    outcome = apply_batch(projection, {"o-1": None}, batch)
    customer = placed("o-x").data.customer_id  # type: ignore[union-attr]
    at = int(placed("o-x").occurred_at.timestamp()) + 5
    assert outcome.deltas == {customer: {"orders": 1}}
    assert outcome.extremes == [
        (customer, "first", "min", "o-1", at),
        (customer, "latest", "max", "o-1", at),
    ]
    # a shipment changes no row: nothing to write for the extremes either
    stored = outcome.entities["o-1"]
    again = apply_batch(projection, {"o-1": stored}, positioned([cancelled("o-1")], start=1))
    assert again.deltas == {customer: {"orders": -1}}
    assert [(m, v) for _, m, _, _, v in again.extremes] == [("first", None), ("latest", None)]


def test_extremes_are_checked_and_named_like_rankings() -> None:
    projection = latest_orders(maxima=("latest", "at"))
    assert projection.maxima == ("at", "latest")
    assert projection.extreme("latest") == "max" and projection.extreme("at|EUR") == "max"
    assert projection.extreme("first") == "min" and projection.extreme("orders") is None
    assert projection.has_extremes and not _definition().has_extremes
    with pytest.raises(ProjectionError, match="latest in both maxima and minima"):
        latest_orders(minima=("latest",))
    with pytest.raises(ProjectionError, match="maxima names measures of rows"):
        _definition(maxima=("latest",), rows=None, view=lambda s: s)
    with pytest.raises(ProjectionError, match=r"minima measure 'a\|b'"):
        _definition(minima=("a|b",))


async def test_an_extreme_beyond_a_doubles_exact_range_is_a_failure_of_its_event() -> None:
    def fold(state: dict[str, Any], e: Event) -> JSON:
        state["n"] = 2**53
        return state

    projection = _definition(
        fold=fold, initial=lambda: {"n": 0}, rows=lambda s: {"g": {"top": s["n"]}}, maxima=("top",)
    )
    letters = Letters()
    store = await applied(projection, [positioned([placed("o-1")])], letters=letters)
    assert len(letters.sent) == 1
    assert "beyond 2**53" in str(letters.sent[0][1].error)
    assert await store.rows(["g"]) == [{}]
