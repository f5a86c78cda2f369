"""The joins as pure steps over keyed state: no I/O, no framework.

Two keyed states, each owned by the worker that owns its key's partitions:

* ``OrderState`` per order_id (co-partitioned ``orders`` + ``payments`` +
  ``order-enrichment``): the order's facts with their offsets, and the customer
  block embedded into its view.
* ``CustomerState`` per customer_id (co-partitioned ``customers`` +
  ``order-links``): the customer's latest profile and a summary of each of its
  orders.

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

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from projections.customer_fold import (
    CustomerProfile,
    apply_customer,
    customer_view,
    enrichment,
    profile_from_doc,
    profile_to_doc,
)
from projections.order_fold import (
    OrderFacts,
    apply,
    empty_facts,
    facts_from_doc,
    facts_to_doc,
    order_view,
)
from schemas.events import Event

Doc = dict[str, Any]
SUMMARY_FIELDS = ("placed", "customer_id", "currency", "amount_paid", "placed_at")


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
        facts = apply(self.facts, event) if known is None else self.facts
        return replace(self, facts=_sorted_facts(facts, offsets), offsets=offsets)

    def with_customer(self, block: Mapping[str, Any], offset: int) -> OrderState | None:
        """The state showing ``block``; None when a block as new or newer is shown."""
        if offset <= self.customer_offset:
            return None
        return replace(self, customer=dict(block), customer_offset=offset)

    def merge(self, other: OrderState) -> OrderState:
        """Everything either state knows (both writers of a document see it all)."""
        merged = self
        by_id = {e.event_id: e for e in (*other.facts.order_events, *other.facts.payment_events)}
        for event_id, offset in other.offsets.items():
            merged = merged.with_event(by_id[event_id], offset) or merged
        if other.customer is not None:
            merged = merged.with_customer(other.customer, other.customer_offset) or merged
        return merged

    def covers(self, doc: Mapping[str, Any]) -> bool:
        """Whether this state holds everything the ``to_doc()`` document ``doc`` holds
        (then merging it changes nothing), judged on offsets alone, without decoding
        its events."""
        return (int(doc.get("customer_offset", -1)) <= self.customer_offset
                and all(self.offsets.get(k) == v for k, v in doc["offsets"].items()))

    def view(self) -> Doc:
        return order_view(self.facts, self.customer)

    def summary(self) -> OrderLink | None:
        """What the customer side needs of this order; None before its customer is known."""
        view = self.view()
        if not view.get("customer_id"):
            return None
        return OrderLink(self.order_id, len(self.offsets), {k: view.get(k) for k in SUMMARY_FIELDS})

    def to_doc(self) -> Doc:
        return {"facts": facts_to_doc(self.facts), "offsets": dict(self.offsets),
                "customer": None if self.customer is None else dict(self.customer),
                "customer_offset": self.customer_offset}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OrderState:
        """Raises ValueError when the offsets are not those of the facts' events (the
        revision and ``covers`` rely on them)."""
        facts = facts_from_doc(doc["facts"])
        offsets = {str(k): int(v) for k, v in doc["offsets"].items()}
        if set(offsets) != set(facts.event_ids()):
            raise ValueError(f"order {facts.order_id!r}: the offsets name other events "
                             "than its facts")
        return cls(facts, offsets, doc.get("customer"), int(doc.get("customer_offset", -1)))


def _sorted_facts(facts: OrderFacts, offsets: Mapping[str, int]) -> OrderFacts:
    """Each stream's events in offset order, whatever order they were learnt in."""
    by_offset = lambda e: offsets[e.event_id]  # noqa: E731
    return replace(facts, order_events=tuple(sorted(facts.order_events, key=by_offset)),
                   payment_events=tuple(sorted(facts.payment_events, key=by_offset)))


@dataclass(frozen=True)
class OrderLink:
    """Order side -> customer side, keyed by customer_id: this order's summary.

    ``facts`` (the order's fact count) orders the summaries of one order."""

    order_id: str
    facts: int
    summary: Mapping[str, Any]

    @property
    def customer_id(self) -> str:
        return str(self.summary["customer_id"])

    def to_doc(self) -> Doc:
        return {"order_id": self.order_id, "facts": self.facts, "summary": dict(self.summary)}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> OrderLink:
        summary = dict(doc["summary"])
        if set(summary) != set(SUMMARY_FIELDS) or not summary["customer_id"]:
            raise ValueError(f"malformed order summary for {doc.get('order_id')!r}")
        return cls(str(doc["order_id"]), int(doc["facts"]), summary)


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
        if set(block) != {"name", "tier", "country"}:
            raise ValueError(f"malformed enrichment for {doc.get('order_id')!r}")
        return cls(str(doc["order_id"]), block, int(doc["offset"]))


@dataclass(frozen=True)
class CustomerState:
    """The customer's latest profile and the latest summary of each of its orders."""

    customer_id: str
    profile: CustomerProfile | None = None
    profile_offset: int = -1
    orders: Mapping[str, OrderLink] = field(default_factory=dict)

    def with_profile(self, event: Event, offset: int) -> CustomerState | None:
        """The state with ``event``'s profile; None when one as new or newer is known.
        Raises ValueError for a non-customer event or one of another customer."""
        profile = apply_customer(None, event)
        if profile.customer_id != self.customer_id:
            raise ValueError(f"{event.type} {event.event_id} belongs to customer "
                             f"{profile.customer_id!r}, not {self.customer_id!r}")
        if offset <= self.profile_offset:
            return None
        return replace(self, profile=profile, profile_offset=offset)

    def with_order(self, link: OrderLink) -> CustomerState | None:
        """The state with ``link``'s summary; None when one with as many facts is known.
        Raises ValueError for an order of another customer."""
        if link.customer_id != self.customer_id:
            raise ValueError(f"order {link.order_id!r} belongs to customer "
                             f"{link.customer_id!r}, not {self.customer_id!r}")
        known = self.orders.get(link.order_id)
        if known is not None and known.facts >= link.facts:
            return None
        return replace(self, orders={**self.orders, link.order_id: link})

    def merge(self, other: CustomerState) -> CustomerState:
        merged = self
        if other.profile is not None and other.profile_offset > merged.profile_offset:
            merged = replace(merged, profile=other.profile, profile_offset=other.profile_offset)
        for link in other.orders.values():
            merged = merged.with_order(link) or merged
        return merged

    def enrichment_for(self, order_id: str) -> Enrichment | None:
        if self.profile is None:
            return None
        return Enrichment(order_id, enrichment(self.profile), self.profile_offset)

    def view(self) -> Doc:
        summaries = [{"order_id": link.order_id, **link.summary} for link in self.orders.values()]
        return {**customer_view(self.customer_id, self.profile, summaries),
                "email": None if self.profile is None else self.profile.email}

    def to_doc(self) -> Doc:
        return {"customer_id": self.customer_id,
                "profile": None if self.profile is None else profile_to_doc(self.profile),
                "profile_offset": self.profile_offset,
                "orders": {k: v.to_doc() for k, v in self.orders.items()}}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> CustomerState:
        profile = doc.get("profile")
        return cls(str(doc["customer_id"]), None if profile is None else profile_from_doc(profile),
                   int(doc.get("profile_offset", -1)),
                   {k: OrderLink.from_doc(v) for k, v in doc.get("orders", {}).items()})


# --- steps: (state, input) -> what to store and what to emit --------------------------------


@dataclass(frozen=True)
class OrderStep:
    state: OrderState
    duplicate: bool
    link: OrderLink | None  # to send to the customer side (None: nothing new to tell)


def order_event_step(state: OrderState | None, event: Event, offset: int,
                     order_id: str) -> OrderStep:
    """Fold an orders- or payments-stream event into its order.

    The link goes out on every change of a placed order, so the customer side
    always learns the highest fact count."""
    current = state or OrderState.empty(order_id)
    new = current.with_event(event, offset)
    if new is None:
        return OrderStep(current, True, current.summary())
    return OrderStep(new, False, new.summary())


def enrichment_step(state: OrderState | None, message: Enrichment) -> OrderStep:
    """Embed the customer block; the order may not be known yet (its events come later)."""
    current = state or OrderState.empty(message.order_id)
    new = current.with_customer(message.customer, message.offset)
    return OrderStep(current if new is None else new, new is None, None)


@dataclass(frozen=True)
class CustomerStep:
    state: CustomerState
    duplicate: bool
    view_changed: bool  # the customer document needs writing
    enrichments: tuple[Enrichment, ...]  # to send to the order side


def customer_event_step(state: CustomerState | None, event: Event, offset: int,
                        customer_id: str) -> CustomerStep:
    """A new profile re-enriches every known order of the customer."""
    current = state or CustomerState(customer_id)
    new = current.with_profile(event, offset)
    result = current if new is None else new
    out = tuple(e for e in (result.enrichment_for(o) for o in result.orders) if e is not None)
    return CustomerStep(result, new is None, new is not None, out)


def order_link_step(state: CustomerState | None, link: OrderLink) -> CustomerStep:
    """A newer summary of an order; a new order is enriched at once if the profile is known."""
    current = state or CustomerState(link.customer_id)
    new = current.with_order(link)
    if new is None:
        enrich = current.enrichment_for(link.order_id)
        return CustomerStep(current, True, False, () if enrich is None else (enrich,))
    known = current.orders.get(link.order_id)
    view_changed = known is None or dict(known.summary) != dict(link.summary)
    enrich = new.enrichment_for(link.order_id) if known is None else None
    return CustomerStep(new, False, view_changed, () if enrich is None else (enrich,))
