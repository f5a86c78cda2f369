"""One contract for every kind of entity state the engine folds (``projections.state``):
a registered projection's JSON state and the join's typed order and customer states.
Each must skip an event it holds, leave out (and report) an event whose fold raises
while applying the others, and read back from its JSON what it folded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from projections.api import JSON, Projection
from projections.engine import JsonStates
from projections.joins import CUSTOMER_STATES, ORDER_STATES, CustomerState, OrderState
from projections.state import Documented, Positioned, State, StateType
from schemas.events import Event
from tests.support.events import customer_event, event, payment_data, placed_data

KEY = "k-1"


def counted(state: JSON, e: Event) -> JSON:
    if getattr(e.data, "reason", None) == "poison":
        raise ValueError("poison")
    state["types"].append(e.type)
    return state


EVENT_TYPES = Projection(
    name="event_types",
    consumes=("OrderPlaced", "OrderCancelled", "PaymentCaptured"),
    initial=lambda: {"types": []},
    fold=counted,
    view=lambda s: {"types": s["types"]},
)


@dataclass(frozen=True)
class Kind:
    """A state type, two events of entity ``KEY`` that each change its view, and an
    event whose fold raises for it."""

    name: str
    states: StateType[State]
    events: Callable[[], list[Event]]
    poison: Callable[[], Event]


KINDS = [
    Kind(
        "json",
        JsonStates(EVENT_TYPES),
        lambda: [
            event("OrderPlaced", placed_data(KEY)),
            event("PaymentCaptured", payment_data("PaymentCaptured", KEY)),
        ],
        lambda: event("OrderCancelled", {"order_id": KEY, "reason": "poison"}),
    ),
    Kind(
        "order",
        ORDER_STATES,
        lambda: [
            event("OrderPlaced", placed_data(KEY)),
            event("PaymentCaptured", payment_data("PaymentCaptured", KEY)),
        ],
        lambda: event("OrderPlaced", placed_data("another-order")),
    ),
    Kind(
        "customer",
        CUSTOMER_STATES,
        lambda: [
            customer_event(customer_id=KEY, name="Ada"),
            customer_event("CustomerUpdated", customer_id=KEY, name="Ada Lovelace"),
        ],
        lambda: customer_event(customer_id="another-customer"),
    ),
]


def at(events: Sequence[Event], start: int = 0) -> list[Positioned]:
    return [Positioned(e, e.topic, 0, start + i) for i, e in enumerate(events)]


def folded(kind: Kind, events: Sequence[Positioned]) -> State:
    result = kind.states.initial(KEY).with_events(events)
    assert not result.failures and result.state is not None
    return result.state


@pytest.fixture(params=KINDS, ids=lambda k: k.name)
def kind(request: pytest.FixtureRequest) -> Kind:
    its: Kind = request.param
    return its


def view(state: State) -> dict[str, Any]:
    shown = state.view()
    assert shown is not None
    return dict(shown)


def test_each_event_changes_the_view(kind: Kind) -> None:
    first, second = at(kind.events())
    one = folded(kind, [first])
    both = one.with_events([second]).state
    assert both is not None and view(both) != view(one)


def test_an_event_held_already_changes_nothing(kind: Kind) -> None:
    events = at(kind.events())
    state = folded(kind, events)
    again = state.with_events(events)
    assert again.state is None and not again.failures
    assert state.with_events(events[:1]).state is None


def test_an_event_whose_fold_raises_is_reported_and_the_others_apply(kind: Kind) -> None:
    first, second = kind.events()
    poison = kind.poison()
    batch = at([first, poison, second])
    result = kind.states.initial(KEY).with_events(batch)
    assert [f.at for f in result.failures] == [batch[1]]
    assert result.state is not None
    without = folded(kind, [batch[0], batch[2]])
    assert view(result.state) == view(without)


def test_a_batch_of_only_failures_leaves_the_state_unchanged(kind: Kind) -> None:
    first = at(kind.events()[:1])
    state = folded(kind, first)
    result = state.with_events(at([kind.poison()], start=5))
    assert result.state is None and len(result.failures) == 1
    assert view(state) == view(folded(kind, first))  # the failed fold changed nothing


def test_what_is_stored_reads_back_and_folds_on_alike(kind: Kind) -> None:
    first, second = at(kind.events())
    state = folded(kind, [first])
    back = kind.states.from_json(state.to_json())
    assert view(back) == view(state)
    assert back.with_events([first]).state is None  # the guard is stored too
    on_back, on_state = back.with_events([second]).state, state.with_events([second]).state
    assert on_back is not None and on_state is not None
    assert view(on_back) == view(on_state)
    assert on_back.to_json() == on_state.to_json()


def test_a_new_entitys_state_is_stored_and_read_back(kind: Kind) -> None:
    new = kind.states.initial(KEY)
    assert kind.states.from_json(new.to_json()).with_events(at(kind.events())).state is not None


# --- the states kept inside their documents (``state.Documented``): the join's ---------

DOCUMENTED = [k for k in KINDS if k.name in ("order", "customer")]


@pytest.fixture(params=DOCUMENTED, ids=lambda k: k.name)
def documented(request: pytest.FixtureRequest) -> Kind:
    its: Kind = request.param
    return its


def stored(state: State) -> dict[str, Any]:
    parsed: dict[str, Any] = orjson.loads(state.to_json())
    return parsed


def as_documented(state: State) -> Documented:
    assert isinstance(state, OrderState | CustomerState)
    return state


def test_a_documented_state_is_keyed_by_its_entity(documented: Kind) -> None:
    state = as_documented(folded(documented, at(documented.events())))
    assert state.key == KEY


def test_with_nothing_stored_the_state_is_stored(documented: Kind) -> None:
    state = as_documented(folded(documented, at(documented.events())))
    assert state.merged_with(None) is state


def test_what_is_stored_as_it_is_is_not_written_again(documented: Kind) -> None:
    state = as_documented(folded(documented, at(documented.events())))
    assert state.merged_with(stored(state)) is None


def test_a_writer_that_knows_less_stores_what_is_stored_and_what_it_knows(
    documented: Kind,
) -> None:
    first, second = at(documented.events())
    both = as_documented(folded(documented, [first, second]))
    first_only = as_documented(folded(documented, [first]))
    # another writer stored both events; this one knows the first only: nothing to write
    assert first_only.merged_with(stored(both)) is None
    # the reverse: this writer knows more, what it writes shows both
    merged = both.merged_with(stored(first_only))
    assert merged is not None and view(merged) == view(both)
    assert merged.mark == both.mark and merged.mark != first_only.mark


def test_two_order_writers_that_each_know_one_event_store_the_union() -> None:
    """(A customer's profile events replace each other: there the newer one wins.)"""
    order = next(k for k in DOCUMENTED if k.name == "order")
    first, second = at(order.events())
    one = as_documented(folded(order, [first]))
    other = as_documented(folded(order, [second]))
    merged = other.merged_with(stored(one))
    assert merged is not None
    assert view(merged) == view(folded(order, [first, second]))
