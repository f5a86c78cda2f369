"""A registered projection with a typed state (``Projection.states``) on the projection
engine (``engine.TypedEntityState``), over the in-memory store: it folds, guards and
dead-letters as a JSON one does, and the built-in order state runs on it unchanged (the
order read model without its customer lookup)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import orjson
import pytest

from projections.api import JSON, Documents, Projection
from projections.builtin.core import orders
from projections.engine import apply_batch
from projections.joins import ORDER_STATES
from projections.order_fold import order_view, reference_fold
from projections.projection_store import MemoryProjectionStore
from projections.state import Folded, Positioned, StateType, fold_each
from schemas.events import Event, OrderCancelled, PaymentCaptured
from tests.unit.test_projection_engine import (
    POISON,
    Letters,
    applied,
    cancelled,
    delivered,
    highest,
    payment,
    placed,
    positioned,
    shipped,
)

CONSUMES = ("OrderPlaced", "OrderShipped", "OrderDelivered", "OrderCancelled", "PaymentCaptured")


@dataclass(frozen=True)
class Steps:
    """What a user might write as a typed state: an order's event types in the order
    they were folded, the ids of its events (the guard), and the last captured amount.
    An OrderCancelled whose reason is ``POISON`` raises. ``amount_as``: how the view
    shows the amount: as text, as a Decimal (not JSON: the view cannot be stored), or
    in cents past 2**63 (JSON holds it, a document's signed 64-bit integer does not)."""

    order_id: str
    types: tuple[str, ...] = ()
    seen: frozenset[str] = frozenset()
    captured: str | None = None
    amount_as: str = "text"

    @classmethod
    def initial(cls, key: str) -> Steps:
        return cls(key)

    @classmethod
    def from_json(cls, stored: bytes) -> Steps:
        doc = orjson.loads(stored)
        return cls(
            doc["order_id"],
            tuple(doc["types"]),
            frozenset(doc["seen"]),
            doc["captured"],
            doc["amount_as"],
        )

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "order_id": self.order_id,
                "types": self.types,
                "seen": sorted(self.seen),
                "captured": self.captured,
                "amount_as": self.amount_as,
            }
        )

    def with_event(self, e: Event, offset: int) -> Steps | None:
        if e.event_id in self.seen:
            return None
        if isinstance(e, OrderCancelled) and e.data.reason == POISON:
            raise ValueError("a poisoned event")
        captured = str(e.data.amount) if isinstance(e, PaymentCaptured) else self.captured
        return replace(
            self, types=(*self.types, e.type), seen=self.seen | {e.event_id}, captured=captured
        )

    def with_events(self, events: Sequence[Positioned]) -> Folded[Steps]:
        return fold_each(self, events, Steps.with_event)

    def view(self) -> dict[str, Any]:
        captured: Any = self.captured
        if captured is not None and self.amount_as == "decimal":
            captured = Decimal(captured)
        elif captured is not None and self.amount_as == "units":
            captured = 2**63 + int(Decimal(captured) * 100)
        return {"order_id": self.order_id, "steps": list(self.types), "captured": captured}


@dataclass(frozen=True)
class StepsShowing:
    """The states of ``Steps`` whose views show amounts ``amount_as``."""

    amount_as: str

    def initial(self, key: str) -> Steps:
        return Steps(key, amount_as=self.amount_as)

    def from_json(self, stored: bytes) -> Steps:
        return Steps.from_json(stored)


STEPS: StateType[Steps] = Steps
STEPS_PROJECTION = Projection(name="steps", consumes=CONSUMES, states=STEPS)


def json_steps() -> Projection:
    """The same projection with a JSON state: its twin."""

    def fold(state: JSON, e: Event) -> JSON:
        if isinstance(e, OrderCancelled) and e.data.reason == POISON:
            raise ValueError("a poisoned event")
        captured = str(e.data.amount) if isinstance(e, PaymentCaptured) else state["captured"]
        return {"steps": [*state["steps"], e.type], "captured": captured}

    return Projection(
        name="json_steps",
        consumes=CONSUMES,
        initial=lambda: {"steps": [], "captured": None},
        fold=fold,
        view=lambda state: state,
    )


def views(store: MemoryProjectionStore) -> dict[str, Any]:
    return {k: e.view for k, e in store._entities.items()}


async def test_a_typed_state_shows_what_its_json_twin_shows() -> None:
    events = [placed(), payment("PaymentCaptured"), shipped(), delivered(), placed("o-2")]
    batches = [positioned(events[:2]), positioned(events[2:], start=2)]
    typed = await applied(STEPS_PROJECTION, batches)
    twin = await applied(json_steps(), batches)
    shown = views(typed)
    assert set(shown) == {"o-1", "o-2"}
    for key, view in views(twin).items():
        assert shown[key] == {"order_id": key, **view}
    assert shown["o-1"]["steps"] == [
        "OrderPlaced",
        "PaymentCaptured",
        "OrderShipped",
        "OrderDelivered",
    ]
    assert (await typed.snapshot()).marks == highest(batches[0]) | highest(batches[1])


async def test_a_redelivered_batch_changes_nothing() -> None:
    batch = positioned([placed(), payment("PaymentCaptured")])
    store = await applied(STEPS_PROJECTION, [batch])
    before = await store.snapshot()
    # the same events again past the marks (a re-publish): the typed state's guard skips them
    again = positioned([e.event for e in batch], start=10)
    await applied(STEPS_PROJECTION, [again], store)
    after = await store.snapshot()
    assert after.entities == before.entities
    assert after.marks != before.marks  # read past them all the same


async def test_an_event_whose_fold_raises_is_dead_lettered_and_the_others_apply() -> None:
    poison = cancelled(reason=POISON)
    batch = positioned([placed(), poison, shipped(), placed("o-2")])
    letters = Letters()
    store = await applied(STEPS_PROJECTION, [batch], letters=letters)
    assert letters.at == [batch[1]] and letters.sent[0][0] == "steps"
    assert views(store)["o-1"]["steps"] == ["OrderPlaced", "OrderShipped"]
    assert views(store)["o-2"]["steps"] == ["OrderPlaced"]


async def test_an_event_whose_view_cannot_be_stored_is_dead_lettered_alone() -> None:
    exact = Projection(name="exact_steps", consumes=CONSUMES, states=StepsShowing("decimal"))
    batch = positioned([placed(), shipped(), payment("PaymentCaptured"), placed("o-2")])
    letters = Letters()
    store = await applied(exact, [batch], letters=letters)
    assert letters.at == [batch[2]]  # the capture made the view show a Decimal
    assert "not JSON" in str(letters.sent[0][1].error)
    assert views(store)["o-1"] == {
        "order_id": "o-1",
        "steps": ["OrderPlaced", "OrderShipped"],
        "captured": None,
    }
    assert views(store)["o-2"]["steps"] == ["OrderPlaced"]


def test_a_view_a_document_cannot_hold_is_a_failure_of_its_event() -> None:
    documented = Projection(
        name="documented_steps",
        consumes=CONSUMES,
        states=StepsShowing("units"),
        documents=Documents(fields=("captured",)),
    )
    batch = positioned([placed(), payment("PaymentCaptured"), shipped()])
    outcome = apply_batch(documented, {"o-1": None}, batch)
    assert [f.at for f in outcome.failures] == [batch[1]]
    assert "cannot be stored as a document" in str(outcome.failures[0].error)
    view = outcome.entities["o-1"].view
    assert view == {"order_id": "o-1", "steps": ["OrderPlaced", "OrderShipped"], "captured": None}


# --- the built-in order state, without its lookup -------------------------------------


ORDER_FACTS = Projection(name="order_facts", consumes=orders.consumes, states=ORDER_STATES)
"""The ``orders`` definition's typed state without its customer lookup: a registered
projection can run it as it is."""


def _traffic(seed: int) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    for n in range(12):
        order_id = f"o-{n}"
        life = [placed(order_id), payment("PaymentCaptured", order_id)]
        life.append(shipped(order_id) if rng.random() < 0.6 else cancelled(order_id))
        if life[-1].type == "OrderShipped" and rng.random() < 0.5:
            life.append(delivered(order_id))
        events.extend(life)
    # two topics interleaved at random: each keeps its own order
    by_topic = {t: [e for e in events if e.topic == t] for t in ("orders", "payments")}
    mixed: list[Event] = []
    while any(by_topic.values()):
        topic = rng.choice([t for t, left in by_topic.items() if left])
        mixed.append(by_topic[topic].pop(0))
    return mixed


@pytest.mark.parametrize("seed", [1, 2])
async def test_the_order_state_on_the_engine_shows_the_order_views(seed: int) -> None:
    events = _traffic(seed)
    read = positioned(events)
    cut = random.Random(seed).randrange(1, len(read))
    store = await applied(ORDER_FACTS, [read[:cut], read[cut:]])
    expected = {k: order_view(f, None) for k, f in reference_fold(events).items()}
    assert views(store) == expected
    # the whole traffic in one batch (a rebuild's) ends in the same entities
    rebuilt = await applied(ORDER_FACTS, [read])
    assert (await rebuilt.snapshot()).entities == (await store.snapshot()).entities
