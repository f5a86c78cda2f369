"""What the engine asks of a projection's state of one entity: a small protocol.

A projection's state can take more than one form, and the engine should not care
which. A registered projection folds a JSON value (``engine.JsonState``: its fold
wrapped, the ids of its events as the guard against folding one twice); the join's
states are typed (``joins.OrderState`` keeps an order's events as decoded facts with
the offset of each, so that its hot path never decodes them again). Both are read
from what a store keeps (``StateType.from_json``), fold a batch of one entity's events
(``State.with_events``), show a view, and are kept as JSON (``State.to_json``).

An event whose fold raises is left out and reported (``Failure``), and the entity's
other events still apply: the caller dead-letters it for this projection alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, Protocol, Self, TypeVar

from schemas.events import Event


@dataclass(frozen=True)
class Positioned:
    """An event and where it was read."""

    event: Event
    topic: str
    partition: int
    offset: int

    @property
    def mark(self) -> str:
        return mark_of(self.topic, self.partition)


def mark_of(topic: str, partition: int) -> str:
    """The field a partition's applied offset is stored under (as the built-ins do)."""
    return f"{topic}:{partition}"


@dataclass(frozen=True)
class Failure:
    """An event whose fold (or derivation) raised, and what it raised."""

    at: Positioned
    error: BaseException


S = TypeVar("S", bound="State")


class Folded(NamedTuple, Generic[S]):
    """A batch of one entity's events folded: the new state (None: the events were all
    known, or all failed) and the events that failed. A tuple: one is made per entity
    and batch."""

    state: S | None
    failures: Sequence[Failure] = ()


class State(Protocol):
    """One entity's state, as the engine handles it. Immutable: a fold returns a new one."""

    def with_events(self, events: Sequence[Positioned]) -> Folded[Self]:
        """The state after ``events`` (one entity's, in offset order per partition): an
        event it holds already is skipped, one whose fold raises is a failure."""
        ...

    def view(self) -> Mapping[str, Any] | None:
        """What the entity shows (None: nothing, or a ``rows`` projection's state)."""
        ...

    def to_json(self) -> bytes:
        """What a store keeps of the state (``StateType.from_json`` reads it back)."""
        ...


S_co = TypeVar("S_co", bound=State, covariant=True)


class StateType(Protocol[S_co]):
    """Makes the states of one projection: a new entity's, and a stored one's."""

    def initial(self, key: str) -> S_co:
        """The state of an entity not seen before."""
        ...

    def from_json(self, stored: bytes) -> S_co:
        """The state ``State.to_json`` stored."""
        ...


def fold_each(
    state: S, events: Sequence[Positioned], step: Callable[[S, Event, int], S | None]
) -> Folded[S]:
    """``State.with_events`` for a state that folds one event at a time (``step``: the
    state after the event read at an offset, None when it holds it already): an event
    whose step raises is a failure, and the state stays as it was before it."""
    current, changed, failures = state, False, []
    for p in events:
        try:
            new = step(current, p.event, p.offset)
        except Exception as exc:
            failures.append(Failure(p, exc))
            continue
        if new is not None:
            current, changed = new, True
    return Folded(current if changed else None, failures)


class Documented(State, Protocol):
    """A state kept inside its read-model document (``_state``), next to its view: the
    join's. Two writers of one document (a rebuild and the live processor, or two
    workers across a rebalance) each merge what is stored with what they know, so the
    writer asks the state how (``merged_with``) and what tells two written states apart
    (``mark``)."""

    @property
    def key(self) -> str:
        """The entity's key: its document's ``_id``."""
        ...

    def view(self) -> Mapping[str, Any]:
        """What its document shows (a documented state always shows one)."""
        ...

    @property
    def mark(self) -> object:
        """Equal for two states that store the same document (a writer that wrote this
        mark last need not read the document back to merge)."""
        ...

    def merged_with(self, stored: Mapping[str, Any] | None) -> Self | None:
        """The state to store given the one stored (its ``to_json`` decoded; None: no
        document, or one of a layout without it); None when what is stored is as new."""
        ...

    def packed_view(self) -> str | None:
        """The view as JSON when the state encodes it anyway (a hot cache holds the same
        string), else None (the document encodes it)."""
        ...

    def forget_encoded(self) -> None:
        """Drop what was encoded for the write (the state stays cached: keep it small)."""
        ...


class Cached(Documented, Protocol):
    """A documented state whose view a hot cache also keeps, with rows derived from it
    (the orders' ``redis`` read model): the cache keeps the view of the highest
    ``revision``, whoever writes it last."""

    @property
    def revision(self) -> tuple[int, int]:
        """Grows with every change; the same for the same content, whoever computed it."""
        ...

    def packed_view(self) -> str:
        """The view as JSON (the cache and the document hold the same string)."""
        ...
