"""The joins as pure steps over keyed state: no I/O, no framework.

Two keyed states, each owned by the worker that owns its key's partitions:

* ``OrderState`` per order_id (co-partitioned ``orders`` + ``payments`` +
  ``order-enrichment``): the order's facts with their offsets, and the customer
  block embedded into its view.
* ``CustomerState`` per customer_id (co-partitioned ``customers`` +
  ``order-links``): the customer's latest profile and the totals of its orders;
  next to it, in the same store, the latest summary of each order and the
  customer's order index (pages of order ids), each under a key of its own.

The order side tells the customer side about each change of an order through
an ``OrderLink`` (keyed by customer_id: a repartition); the customer side
answers with an ``Enrichment`` per order whenever the profile changes or an
order becomes known (keyed by order_id). The Faust agents keep these states in
changelog-backed tables; a rebuild keeps them in dicts and hands the messages
over in-process. Either way the steps below are the whole join logic.

Every step is idempotent: giving it an input it already holds returns
``duplicate=True`` and the same state, and callers then re-emit the effects
(writes, messages), since a crash may have lost them after the state was saved.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Generic, TypeVar

import orjson

from projections.customer_fold import (
    CUSTOMER_TOTALS,
    CustomerProfile,
    apply_customer,
    enrichment,
    profile_from_doc,
    profile_to_doc,
)
from projections.money import format_money, from_units
from projections.order_fold import (
    CUSTOMER_LOOKUP,
    ORDER_EVENT_TYPES,
    OrderFacts,
    append_new,
    apply,
    empty_facts,
    facts_from_doc,
    facts_to_doc,
    facts_to_json,
    order_view,
    with_customer_block,
)
from projections.state import Documented, Folded, Positioned, StateType, fold_each
from schemas.events import Event, OrderPlaced, PaymentCaptured, PaymentRefunded

Doc = dict[str, Any]
S = TypeVar("S", "OrderState", "CustomerState")
SUMMARY_FIELDS = CUSTOMER_TOTALS.fields
"""What an order tells its customer: the fields of its view the totals read."""
SUMMARY_EVENT_TYPES = (OrderPlaced, PaymentCaptured, PaymentRefunded)
"""The events an order's summary (``SUMMARY_FIELDS``) is derived from: the others
never change it (an authorization only sets the currency a later capture or refund of
its payment is checked against, and a reader of the payments stream in order knows it
before those). Their number and offsets are the summary's ``Basis``."""
Basis = tuple[int, int]
"""What an order's summary is derived from: how many of its ``SUMMARY_EVENT_TYPES``
events, and the sum of their offsets. Of two summaries of one order derived from the
same topics, the one with more such events knows more, and with as many (the same
events), the one with the lower sum (an event's lowest offset is its place in its
stream: ``OrderState.with_event``); with the same basis, they are the same summary.
Unlike the order's fact count, it does not depend on when the summary was sent (a
shipment after the payment sends none)."""


def basis_rank(basis: Basis) -> tuple[int, int]:
    """The order of ``Basis`` values: the greater knows more."""
    return basis[0], -basis[1]


@dataclass(frozen=True)
class OrderState:
    """What is known about one order, and from which positions."""

    facts: OrderFacts
    offsets: Mapping[str, int] = field(default_factory=dict)  # event_id -> lowest offset seen
    customer: Mapping[str, Any] | None = None  # the enrichment block
    customer_offset: int = -1  # customers-stream offset the block came from

    @classmethod
    def empty(cls, order_id: str) -> OrderState:
        return cls(empty_facts(order_id))

    @property
    def order_id(self) -> str:
        return self.facts.order_id

    @property
    def revision(self) -> tuple[int, int]:
        """Grows with every change and is the same for the same content, whoever
        computed it: (number of facts, customer offset). Guards the Redis writes."""
        return len(self.offsets), self.customer_offset

    def with_event(self, event: Event, offset: int) -> OrderState | None:
        """The state with ``event`` added at ``offset``; None when already known there."""
        known = self.offsets.get(event.event_id)
        if known is not None and known <= offset:
            return None
        offsets = {**self.offsets, event.event_id: offset}
        if known is not None:  # seen at a later offset (a re-publish read first): reorder
            return replace(self, facts=_sorted_facts(self.facts, offsets), offsets=offsets)
        if getattr(event.data, "order_id", None) != self.order_id:
            apply(self.facts, event)  # raises the error of a customer event or another order's
        # the offsets name every event of the facts: one unknown there is new to them
        facts = append_new(self.facts, event)
        stream = (
            facts.order_events if isinstance(event, ORDER_EVENT_TYPES) else facts.payment_events
        )
        if len(stream) > 1 and offsets[stream[-2].event_id] > offset:
            facts = _sorted_facts(facts, offsets)  # learnt out of offset order (a merge)
        # the constructor, not ``replace`` (introspects the fields): the hot path
        return OrderState(facts, offsets, self.customer, self.customer_offset)

    def with_customer(self, block: Mapping[str, Any], offset: int) -> OrderState | None:
        """The state showing ``block``; None when a block as new or newer is shown."""
        if offset <= self.customer_offset:
            return None
        new = OrderState(self.facts, self.offsets, dict(block), offset)  # not ``replace``
        if "_view" in self.__dict__:  # derived already: only its customer field changes
            new.__dict__["_view"] = with_customer_block(self._view, new.customer or {})
        return new

    def merge(self, other: OrderState) -> OrderState:
        """Everything either state knows (both writers of a document see it all)."""
        merged = self
        by_id = {e.event_id: e for e in (*other.facts.order_events, *other.facts.payment_events)}
        for event_id, offset in other.offsets.items():
            merged = merged.with_event(by_id[event_id], offset) or merged
        if other.customer is not None:
            merged = merged.with_customer(other.customer, other.customer_offset) or merged
        return merged

    # --- as a ``state.Documented``: what the writer of its document calls ------------------

    @property
    def key(self) -> str:
        return self.facts.order_id

    @property
    def mark(self) -> object:
        return self.revision

    def merged_with(self, stored: Mapping[str, Any] | None) -> OrderState | None:
        if stored is not None and self.covers(stored):
            # The common case (the writer knows more): no need to decode the stored events.
            unchanged = (
                len(stored["offsets"]) == len(self.offsets)
                and int(stored.get("customer_offset", -1)) == self.customer_offset
            )
            return None if unchanged else self
        known = None if stored is None else OrderState.from_doc(stored)
        merged = self if known is None else known.merge(self)
        return None if merged == known else merged

    def packed_view(self) -> str:
        return self.view_json()

    def forget_encoded(self) -> None:
        """Drop the encoded view and document (written: the state may stay cached for
        long)."""
        self.__dict__.pop("_view_json", None)
        self.__dict__.pop("_json", None)

    def covers(self, doc: Mapping[str, Any]) -> bool:
        """Whether this state holds everything the ``to_doc()`` document ``doc`` holds
        (then merging it changes nothing), judged on offsets alone, without decoding
        its events."""
        return int(doc.get("customer_offset", -1)) <= self.customer_offset and all(
            self.offsets.get(k) == v for k, v in doc["offsets"].items()
        )

    def view(self) -> Doc:
        """The order view (computed once per state: the pipeline needs it for the
        customer summary, the document and the Redis contribution). Not to be mutated."""
        return self._view

    @cached_property
    def _view(self) -> Doc:
        return order_view(self.facts, self.customer)

    def view_json(self) -> str:
        """The view as compact JSON, encoded once per state: the Redis hot cache and the
        order document (``order_fold.ORDER_DOCUMENTS``) hold the same string."""
        return self._view_json

    @cached_property
    def _view_json(self) -> str:
        return orjson.dumps(self.view()).decode()

    def summary(self) -> OrderLink | None:
        """What the customer side needs of this order; None before its customer is known."""
        view = self.view()
        if not view.get("customer_id"):
            return None
        summary = {k: view.get(k) for k in SUMMARY_FIELDS}
        return OrderLink(self.order_id, len(self.offsets), summary, self.basis())

    def basis(self) -> Basis:
        """What the summary is derived from (``Basis``): a few events, counted afresh."""
        offsets, count, total = self.offsets, 0, 0
        for event in (*self.facts.order_events, *self.facts.payment_events):
            if isinstance(event, SUMMARY_EVENT_TYPES):
                count += 1
                total += offsets[event.event_id]
        return count, total

    def to_doc(self) -> Doc:
        """The state as a JSON-safe document."""
        return {
            "facts": facts_to_doc(self.facts),
            "offsets": dict(self.offsets),
            "customer": None if self.customer is None else dict(self.customer),
            "customer_offset": self.customer_offset,
        }

    def to_json(self) -> bytes:
        """``to_doc()`` as JSON, encoded once per state from its events' encoded envelopes
        (``order_fold.encoded``): its table and its read-model document both store it."""
        return self._json

    @cached_property
    def _json(self) -> bytes:
        return orjson.dumps(
            {
                "facts": facts_to_json(self.facts),
                "offsets": self.offsets,
                "customer": self.customer,
                "customer_offset": self.customer_offset,
            }
        )

    def stored(self) -> orjson.Fragment:
        """What a state store keeps of the state: its JSON, which the stores dump as it is
        (``from_stored`` reads it back, or the document a store decoded it to)."""
        return orjson.Fragment(self.to_json())

    @classmethod
    def from_stored(cls, value: orjson.Fragment | Mapping[str, Any]) -> OrderState:
        if isinstance(value, orjson.Fragment):
            return cls.from_doc(orjson.loads(orjson.dumps(value)))
        return cls.from_doc(value)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OrderState:
        """Raises ValueError when the offsets are not those of the facts' events (the
        revision and ``covers`` rely on them)."""
        facts = facts_from_doc(doc["facts"])
        offsets = {str(k): int(v) for k, v in doc["offsets"].items()}
        if set(offsets) != set(facts.event_ids()):
            raise ValueError(
                f"order {facts.order_id!r}: the offsets name other events than its facts"
            )
        return cls(facts, offsets, doc.get("customer"), int(doc.get("customer_offset", -1)))

    # --- as a ``state.State``: what the engine calls -------------------------------------

    @classmethod
    def initial(cls, key: str) -> OrderState:
        return cls.empty(key)

    @classmethod
    def from_json(cls, stored: bytes) -> OrderState:
        return cls.from_doc(orjson.loads(stored))

    def with_events(self, events: Sequence[Positioned]) -> Folded[OrderState]:
        return fold_each(self, events, OrderState.with_event)


def _sorted_facts(facts: OrderFacts, offsets: Mapping[str, int]) -> OrderFacts:
    """Each stream's events in offset order, whatever order they were learnt in."""
    by_offset = lambda e: offsets[e.event_id]  # noqa: E731
    return replace(
        facts,
        order_events=tuple(sorted(facts.order_events, key=by_offset)),
        payment_events=tuple(sorted(facts.payment_events, key=by_offset)),
    )


@dataclass(frozen=True)
class OrderLink:
    """Order side -> customer side, keyed by customer_id: this order's summary.

    ``basis`` orders the summaries of one order (``supersedes``). ``facts`` (the order's
    fact count when the summary was sent) did before it: a summary kept from then, or
    sent by a processor of then, has no basis (None), and is ordered by it."""

    order_id: str
    facts: int
    summary: Mapping[str, Any]
    basis: Basis | None = None

    @property
    def customer_id(self) -> str:
        return str(self.summary["customer_id"])

    def supersedes(self, known: OrderLink) -> bool:
        """Whether this summary of the order knows more than ``known``."""
        if self.basis is not None and known.basis is not None:
            return basis_rank(self.basis) > basis_rank(known.basis)
        return self.facts > known.facts

    @property
    def mark(self) -> Pending:
        """What tells this summary of the order from the others (``CustomerState.pending``)."""
        return self.order_id, self.facts, self.basis

    def to_doc(self) -> Doc:
        doc = {"order_id": self.order_id, "facts": self.facts, "summary": dict(self.summary)}
        if self.basis is not None:
            doc["basis"] = list(self.basis)
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OrderLink:
        summary = dict(doc["summary"])
        if set(summary) != set(SUMMARY_FIELDS) or not summary["customer_id"]:
            raise ValueError(f"malformed order summary for {doc.get('order_id')!r}")
        basis = doc.get("basis")
        return cls(
            str(doc["order_id"]),
            int(doc["facts"]),
            summary,
            None if basis is None else _basis(basis),
        )


Pending = tuple[str, int, Basis | None]
"""A summary of an order, named by its order, fact count and basis (``OrderLink.mark``)."""


def _basis(value: Sequence[Any]) -> Basis:
    count, total = value
    return int(count), int(total)


@dataclass(frozen=True)
class Enrichment:
    """Customer side -> order side, keyed by order_id: the block to embed."""

    order_id: str
    customer: Mapping[str, Any]
    offset: int

    def to_doc(self) -> Doc:
        return {"order_id": self.order_id, "customer": dict(self.customer), "offset": self.offset}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Enrichment:
        block = dict(doc["customer"])
        if not CUSTOMER_LOOKUP.holds(block):
            raise ValueError(f"malformed enrichment for {doc.get('order_id')!r}")
        return cls(str(doc["order_id"]), block, int(doc["offset"]))


def state_field(state: Documented) -> str:
    """A state as stored next to its view in a read-model document (``_state``): one
    JSON string, which FerretDB stores and returns several times faster than the same
    content as nested fields (measured: a 400-document bulk write of order documents
    0.68x the time, the find of them 0.58x)."""
    return state.to_json().decode()


def stored_state(doc: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The state a read-model document was derived from (None: none, or an older layout
    without one); documents of the earlier layout hold it as nested fields."""
    raw = None if doc is None else doc.get("_state")
    if isinstance(raw, str):
        parsed: Mapping[str, Any] = orjson.loads(raw)
        return parsed
    return raw


def customer_key(customer_id: str) -> str:
    """Where a customer's ``CustomerState`` is kept in the customer side's store."""
    return customer_id


def order_summary_key(customer_id: str, order_id: str) -> tuple[str, str, str]:
    """Where the summary of one order, as the customer side applied it, is kept (next to
    the customer's state, in the same store: see ``CustomerState.pending``)."""
    return ("order", customer_id, order_id)


def order_index_key(customer_id: str, page: int) -> tuple[str, str, int]:
    """Where one page of a customer's order ids is kept (for re-enrichment)."""
    return ("orders", customer_id, page)


ORDER_INDEX_PAGE = 200
"""Order ids per page of a customer's order index: adding an order rewrites one page."""


@dataclass(frozen=True)
class CustomerTotals:
    """What the customer view totals over the customer's orders (``CUSTOMER_TOTALS``),
    kept incrementally: an order's newer summary replaces its older one
    (``with_summary``), so the cost of an order's change does not grow with the
    customer's history."""

    measures: Mapping[str, Any] = field(default_factory=CUSTOMER_TOTALS.empty)
    facts: int = 0
    """The fact counts of every applied summary, added up: how totals without a basis
    for each of their summaries are ordered (``knows_more``)."""
    orders: int = 0  # orders known (placed or not): the order index's length
    basis: Basis = (0, 0)
    """The bases of the applied summaries that have one, added up (``knows_more``)."""
    based: int = 0  # how many of the applied summaries have a basis

    def with_summary(self, old: OrderLink | None, new: OrderLink) -> CustomerTotals:
        count, total, based = *self.basis, self.based
        if old is not None and old.basis is not None:
            count, total, based = count - old.basis[0], total - old.basis[1], based - 1
        if new.basis is not None:
            count, total, based = count + new.basis[0], total + new.basis[1], based + 1
        return CustomerTotals(
            CUSTOMER_TOTALS.replaced(
                self.measures, None if old is None else old.summary, new.summary
            ),
            self.facts - (0 if old is None else old.facts) + new.facts,
            self.orders + (old is None),
            (count, total),
            based,
        )

    def knows_more(self, other: CustomerTotals) -> bool:
        """Whether these totals of the customer know more than ``other``, both derived
        from the same topics (by two writers of its document, or one at two times).

        With a basis for every summary: by the bases added up (``basis_rank``). Each
        order's summary knows at most what the topics say, with the highest basis when
        it knows all of it (``Basis``), so totals that know everything have the highest
        sum, and totals with that sum know everything: whatever two writers wrote, in
        whatever order, the totals of a fold of every event win, never lose a tie to
        others. Totals with summaries from before bases (kept by an earlier version)
        are ordered by their fact counts, as then (which does not have that property:
        a fact count depends on when each summary was sent)."""
        if self.based == self.orders and other.based == other.orders:
            return basis_rank(self.basis) > basis_rank(other.basis)
        return self.facts > other.facts

    def to_doc(self) -> Doc:
        doc = {**self.measures, "facts": self.facts, "orders": self.orders}
        if self.based:  # none: the layout from before bases
            doc["basis"], doc["based"] = list(self.basis), self.based
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> CustomerTotals:
        basis = doc.get("basis")
        return cls(
            CUSTOMER_TOTALS.from_doc(doc),
            int(doc["facts"]),
            int(doc["orders"]),
            (0, 0) if basis is None else _basis(basis),
            int(doc.get("based", 0)),
        )


@dataclass(frozen=True)
class CustomerState:
    """The customer's latest profile and the totals of its orders.

    The summary of each order is kept on its own (``order_summary_key``), so a change
    of one order rewrites its summary and these totals, never a list of every order.
    ``pending`` names the last summary applied to the totals (``OrderLink.mark``): the
    state and that summary are two writes, and a record redelivered after only the
    first of them was kept must complete the second, not apply the summary twice."""

    customer_id: str
    profile: CustomerProfile | None = None
    profile_offset: int = -1
    totals: CustomerTotals = field(default_factory=CustomerTotals)
    pending: Pending | None = None

    def with_profile(self, event: Event, offset: int) -> CustomerState | None:
        """The state with ``event``'s profile; None when one as new or newer is known.
        Raises ValueError for a non-customer event or one of another customer."""
        profile = apply_customer(None, event)
        if profile.customer_id != self.customer_id:
            raise ValueError(
                f"{event.type} {event.event_id} belongs to customer "
                f"{profile.customer_id!r}, not {self.customer_id!r}"
            )
        if offset <= self.profile_offset:
            return None
        return CustomerState(self.customer_id, profile, offset, self.totals, self.pending)

    def applied(self, known: OrderLink | None, link: OrderLink) -> bool:
        """Whether ``link`` is already in the totals (``known``: the order's summary as
        kept). Raises ValueError for an order of another customer."""
        if link.customer_id != self.customer_id:
            raise ValueError(
                f"order {link.order_id!r} belongs to customer "
                f"{link.customer_id!r}, not {self.customer_id!r}"
            )
        return (known is not None and not link.supersedes(known)) or self.pending == link.mark

    def with_order(self, known: OrderLink | None, link: OrderLink) -> CustomerState | None:
        """The state with ``link``'s summary in place of ``known``; None when it is
        applied already (``applied``)."""
        if self.applied(known, link):
            return None
        return CustomerState(
            self.customer_id,
            self.profile,
            self.profile_offset,
            self.totals.with_summary(known, link),
            link.mark,
        )

    def merge(self, other: CustomerState) -> CustomerState:
        """The newer profile, and the totals that know more.

        Totals cannot be united, but two states of one customer are both derived from
        the same events: a document written by a rebuild and one by the live
        processor, or by two workers. Once a writer has seen everything, its totals win
        over any partial ones (``CustomerTotals.knows_more``)."""
        merged = self
        if other.profile is not None and other.profile_offset > merged.profile_offset:
            merged = replace(merged, profile=other.profile, profile_offset=other.profile_offset)
        if other.totals.knows_more(merged.totals):
            merged = replace(merged, totals=other.totals, pending=other.pending)
        return merged

    # --- as a ``state.Documented`` --------------------------------------------------------

    @property
    def key(self) -> str:
        return self.customer_id

    @property
    def mark(self) -> object:
        return self

    def merged_with(self, stored: Mapping[str, Any] | None) -> CustomerState | None:
        known = None if stored is None else CustomerState.from_doc(stored)
        merged = self if known is None else known.merge(self)
        return None if merged == known else merged

    def packed_view(self) -> None:
        return None

    def forget_encoded(self) -> None:
        """Nothing encoded is kept."""

    def enrichment_for(self, order_id: str) -> Enrichment | None:
        if self.profile is None:
            return None
        return Enrichment(order_id, enrichment(self.profile), self.profile_offset)

    def view(self) -> Doc:
        profile, totals = self.profile, self.totals
        return {
            "customer_id": self.customer_id,
            "name": None if profile is None else profile.name,
            "tier": None if profile is None else profile.tier,
            "country": None if profile is None else profile.country,
            "order_count": totals.measures["order_count"],
            "lifetime_value": {
                c: format_money(from_units(u)) for c, u in totals.measures["paid"].items()
            },
            "last_order_at": totals.measures["last_order_at"],
            "email": None if profile is None else profile.email,
        }

    def to_doc(self) -> Doc:
        return {
            "customer_id": self.customer_id,
            "profile": None if self.profile is None else profile_to_doc(self.profile),
            "profile_offset": self.profile_offset,
            "totals": self.totals.to_doc(),
            "pending": None if self.pending is None else _pending_doc(self.pending),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> CustomerState:
        """Also reads the layout before per-order summaries were kept apart (every
        summary inside the state): its totals are computed from them, and
        ``legacy_summaries`` returns them so the caller can keep them apart."""
        profile = doc.get("profile")
        state = cls(
            str(doc["customer_id"]),
            None if profile is None else profile_from_doc(profile),
            int(doc.get("profile_offset", -1)),
        )
        if "totals" in doc:
            pending = doc.get("pending")
            return cls(
                state.customer_id,
                state.profile,
                state.profile_offset,
                CustomerTotals.from_doc(doc["totals"]),
                None if pending is None else _pending_of(pending),
            )
        for link in legacy_summaries(doc):
            state = state.with_order(None, link) or state
        return replace(state, pending=None)

    # --- as a ``state.State``: what the engine calls (its profile events; the totals come
    # from the orders' summaries, ``with_order``) -------------------------------------------

    @classmethod
    def initial(cls, key: str) -> CustomerState:
        return cls(key)

    @classmethod
    def from_json(cls, stored: bytes) -> CustomerState:
        return cls.from_doc(orjson.loads(stored))

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_doc())

    def with_events(self, events: Sequence[Positioned]) -> Folded[CustomerState]:
        return fold_each(self, events, CustomerState.with_profile)


ORDER_STATES: StateType[OrderState] = OrderState
CUSTOMER_STATES: StateType[CustomerState] = CustomerState
_ORDER_DOCUMENTED: type[Documented] = OrderState
_CUSTOMER_DOCUMENTED: type[Documented] = CustomerState
"""The join's two states as the engine's protocol names them (``state.StateType``)."""


def _pending_doc(pending: Pending) -> list[Any]:
    """[order_id, facts], and the basis' two numbers when it has one."""
    order_id, facts, basis = pending
    return [order_id, facts] if basis is None else [order_id, facts, *basis]


def _pending_of(doc: Sequence[Any]) -> Pending:
    return str(doc[0]), int(doc[1]), None if len(doc) == 2 else _basis(doc[2:])


def legacy_summaries(doc: Mapping[str, Any]) -> list[OrderLink]:
    """The order summaries a customer state document of the earlier layout holds."""
    return [OrderLink.from_doc(v) for v in doc.get("orders", {}).values()]


# --- steps: (state, input) -> what to store and what to emit --------------------------------


@dataclass(frozen=True)
class OrderStep:
    state: OrderState
    duplicate: bool
    link: OrderLink | None  # to send to the customer side (None: nothing new to tell)


def order_event_step(
    state: OrderState | None, event: Event, offset: int, order_id: str
) -> OrderStep:
    """Fold an orders- or payments-stream event into its order, with the link to send
    for it alone (``summary_change``)."""
    new, duplicate = fold_order_event(state, event, offset, order_id)
    return OrderStep(new, duplicate, summary_change(state, new, duplicate))


def fold_order_event(
    state: OrderState | None, event: Event, offset: int, order_id: str
) -> tuple[OrderState, bool]:
    """The order's state with ``event`` folded in, and whether it held it already."""
    current = state or OrderState.empty(order_id)
    new = current.with_event(event, offset)
    return (current, True) if new is None else (new, False)


def summary_change(before: OrderState | None, after: OrderState, resend: bool) -> OrderLink | None:
    """The link telling the customer side that ``after`` replaced ``before``: sent when
    the summary the customer side shows changed (placed, paid, refunded: about half of
    an order's events), or its basis did (an event of ``SUMMARY_EVENT_TYPES`` that
    changed nothing, an anomaly), not for a shipment or an authorization; its basis
    orders the summaries of one order. Every change of the basis is sent, so the
    customer side's totals, whichever batches the events came in, add up the bases of
    the orders' states (``CustomerTotals.knows_more`` relies on it). ``resend`` (a
    record applied before: a crash may have lost its link) sends the current summary
    whatever changed.

    A batch of records calls it once per changed order, ``before`` the batch and
    ``after`` it: one summary per order and batch, however many of its events the
    batch holds."""
    summary = after.summary()
    if resend or summary is None:
        return summary
    known = None if before is None else before.summary()
    if known is None or known.summary != summary.summary or known.basis != summary.basis:
        return summary
    return None


def enrichment_step(state: OrderState | None, message: Enrichment) -> OrderStep:
    """Embed the customer block; the order may not be known yet (its events come later)."""
    current = state or OrderState.empty(message.order_id)
    new = current.with_customer(message.customer, message.offset)
    return OrderStep(current if new is None else new, new is None, None)


@dataclass(frozen=True)
class CustomerStep:
    state: CustomerState
    duplicate: bool
    view_changed: bool  # the customer view differs from the one before
    enrichments: tuple[Enrichment, ...]  # to send to the order side
    summary: OrderLink | None = None  # to keep as the order's summary (``order_summary_key``)
    new_order: bool = False  # the order is new to the customer: add it to its order index
    enrich_all: bool = False  # send the profile's enrichment to every order of the customer


def customer_event_step(
    state: CustomerState | None, event: Event, offset: int, customer_id: str
) -> CustomerStep:
    """A profile re-enriches every known order of the customer (also when it is a
    duplicate: the enrichments are re-emitted)."""
    current = state or CustomerState(customer_id)
    new = current.with_profile(event, offset)
    result = current if new is None else new
    return CustomerStep(
        result,
        new is None,
        new is not None,
        (),
        enrich_all=result.profile is not None and result.totals.orders > 0,
    )


def order_link_step(
    state: CustomerState | None, known: OrderLink | None, link: OrderLink
) -> CustomerStep:
    """A newer summary of an order (``known``: the one kept so far); a new order is
    enriched at once if the profile is known."""
    current = state or CustomerState(link.customer_id)
    new = current.with_order(known, link)
    if new is None:
        enrich = current.enrichment_for(link.order_id)
        unkept = known is None or link.supersedes(known)  # see CustomerState.pending
        return CustomerStep(
            current,
            True,
            False,
            () if enrich is None else (enrich,),
            summary=link if unkept else None,
            new_order=known is None,
        )
    view_changed = known is None or dict(known.summary) != dict(link.summary)
    enrich = new.enrichment_for(link.order_id) if known is None else None
    return CustomerStep(
        new,
        False,
        view_changed,
        () if enrich is None else (enrich,),
        summary=link,
        new_order=known is None,
    )


# --- keyed state: a cache over a store, and the customer side over its store -------------


Reentry = Callable[[], Callable[[], object]]
"""Captures the context a state is put in and returns a function that re-enters it, for
a state stored later than it was put (``DecodedStates``' write-back): the Faust agent's
current event, whose partition a table's changelog write follows."""


def _to_doc(state: Any) -> Any:
    return state.to_doc()


class DecodedStates(Generic[S]):
    """A state store read through a cache of decoded states.

    Decoding a state (every event of an order, validated) on each record is the
    pipeline's main CPU cost, and reading one from a disk-backed table costs a
    lookup and a JSON parse. The pipeline is the only writer of its keys while its
    worker owns their partitions, so a state it stored or read stays valid until
    the table changes under it: a rebalance, where a table restores partitions from
    its changelog. Then ``invalidate()`` (the processor calls it when partitions
    are assigned).

    ``write_back``: a put only marks the state dirty; it is encoded and stored once,
    when it leaves the cache or on ``sync()``, however often it changed before: a
    batch's records write each key once (as Kafka Streams' record cache does), and a
    rebuild's store on disk, which nothing else reads, is written only on eviction.
    ``context`` captures what a later store must re-enter (``Reentry``)."""

    def __init__(
        self,
        store: MutableMapping[Any, Any],
        decode: Callable[[Any], S],
        size: int = 5_000,
        write_back: bool = False,
        context: Reentry | None = None,
        encode: Callable[[S], Any] | None = None,
    ) -> None:
        """``encode``: what the store keeps of a state (its ``to_doc()`` by default)."""
        self._store = store
        self._decode: Callable[[Any], S] = decode
        self._encode: Callable[[S], Any] = encode or _to_doc
        self._size = size
        self._cache: OrderedDict[Any, S] = OrderedDict()
        self._write_back = write_back
        self._context = context
        self._dirty: dict[Any, Callable[[], object] | None] = {}

    def get(self, key: Any) -> S | None:
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        doc = self._store.get(key)
        if doc is None:
            return None
        state = self._decode(doc)
        self._remember(key, state)
        return state

    def put(self, key: Any, state: S) -> None:
        if self._write_back:
            self._dirty[key] = None if self._context is None else self._context()
        else:
            self._store[key] = self._encode(state)
        self._remember(key, state)

    def sync(self) -> None:
        """Store every dirty state."""
        dirty, self._dirty = self._dirty, {}
        for key, enter in dirty.items():
            self._store_state(key, self._cache[key], enter)

    async def sync_in_turns(self, every: int) -> None:
        """``sync()``, with a turn of the event loop every ``every`` states (what runs
        meanwhile must not put or get states of this store: the caller's lock)."""
        dirty, self._dirty = self._dirty, {}
        for i, (key, enter) in enumerate(dirty.items()):
            if i % every == every - 1:
                await asyncio.sleep(0)
            self._store_state(key, self._cache[key], enter)

    def _store_state(self, key: Any, state: S, enter: Callable[[], object] | None) -> None:
        if enter is not None:
            enter()
        self._store[key] = self._encode(state)

    def invalidate(self) -> None:
        self.sync()
        self._cache.clear()

    def _remember(self, key: Any, state: S) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        if len(self._cache) > self._size:
            old, evicted = self._cache.popitem(last=False)
            if old in self._dirty:
                self._store_state(old, evicted, self._dirty.pop(old))


class CustomerSide:
    """The customer side of the join over its one store (a Faust table, a dict): each
    customer's state, each order's latest summary and each customer's order index,
    under keys of their own (``customer_key``, ``order_summary_key``,
    ``order_index_key``). It runs the customer steps and keeps what they say; the
    steps it returns carry every enrichment to send. No I/O but the store's."""

    def __init__(
        self, store: MutableMapping[Any, Any], cache_size: int = 5_000, write_back: bool = False
    ) -> None:
        self.store = store
        self._states = DecodedStates(store, self._decode, cache_size, write_back)

    def state(self, customer_id: str) -> CustomerState | None:
        return self._states.get(customer_key(customer_id))

    def invalidate(self) -> None:
        self._states.invalidate()

    def sync(self) -> None:
        self._states.sync()

    def apply_profile(self, event: Event, offset: int) -> CustomerStep:
        """A customers-stream event (its key is the customer id)."""
        step = customer_event_step(self.state(event.key), event, offset, event.key)
        return self._keep(step, None)

    def apply_link(self, link: OrderLink) -> CustomerStep:
        """An order's summary from the order side."""
        known = self.summary(link.customer_id, link.order_id)
        step = order_link_step(self.state(link.customer_id), known, link)
        return self._keep(step, link.order_id)

    def summary(self, customer_id: str, order_id: str) -> OrderLink | None:
        doc = self.store.get(order_summary_key(customer_id, order_id))
        return None if doc is None else OrderLink.from_doc(doc)

    def order_ids(self, customer_id: str, count: int) -> list[str]:
        """The ids of the customer's first ``count`` orders (whole pages are read)."""
        pages = (count + ORDER_INDEX_PAGE - 1) // ORDER_INDEX_PAGE
        return [
            str(order_id)
            for page in range(pages)
            for order_id in self.store.get(order_index_key(customer_id, page)) or []
        ]

    def restore(
        self, customer_id: str, stored: CustomerState | None, summaries: Sequence[OrderLink]
    ) -> None:
        """Set a customer's state from its stored profile (``stored``) and the summaries
        of its orders (a resumed rebuild, from the documents it wrote)."""
        state = (
            CustomerState(customer_id)
            if stored is None
            else CustomerState(customer_id, stored.profile, stored.profile_offset)
        )
        for link in summaries:
            known = self.summary(customer_id, link.order_id)
            new = state.with_order(known, link)
            if new is not None:
                if known is None:
                    self._index(customer_id, new.totals.orders, link.order_id)
                state = new
                self.store[order_summary_key(customer_id, link.order_id)] = link.to_doc()
        self._states.put(customer_key(customer_id), replace(state, pending=None))

    def _keep(self, step: CustomerStep, order_id: str | None) -> CustomerStep:
        # Kept in this order, so that whatever part of it a crash keeps (a table's
        # changelog keeps a prefix of what one worker wrote to one partition), the
        # redelivered record completes the rest (see ``CustomerState.pending``): the
        # order index (adding an id twice is harmless), the state, the summary.
        customer_id = step.state.customer_id
        if step.new_order and order_id is not None:
            self._index(customer_id, step.state.totals.orders, order_id)
        if not step.duplicate:
            self._states.put(customer_key(customer_id), step.state)
        if step.summary is not None:
            self.store[order_summary_key(customer_id, step.summary.order_id)] = (
                step.summary.to_doc()
            )
        if not step.enrich_all:
            return step
        every = (
            step.state.enrichment_for(o)
            for o in self.order_ids(customer_id, step.state.totals.orders)
        )
        return replace(step, enrichments=tuple(e for e in every if e is not None))

    def _index(self, customer_id: str, ordinal: int, order_id: str) -> None:
        """Add the customer's ``ordinal``-th order (from 1) to its order index."""
        key = order_index_key(customer_id, (ordinal - 1) // ORDER_INDEX_PAGE)
        page = list(self.store.get(key) or [])
        if order_id not in page:
            self.store[key] = [*page, order_id]

    def _decode(self, doc: Any) -> CustomerState:
        """A stored customer state; one of the earlier layout (every order's summary
        inside it) is rewritten in today's, its summaries kept apart."""
        state = CustomerState.from_doc(doc)
        legacy = legacy_summaries(doc)
        if legacy:
            for ordinal, link in enumerate(legacy, start=1):
                self._index(state.customer_id, ordinal, link.order_id)
                self.store[order_summary_key(state.customer_id, link.order_id)] = link.to_doc()
            self.store[customer_key(state.customer_id)] = state.to_doc()
        return state
