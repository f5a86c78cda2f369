"""Applies one Kafka record to one version of the read models, exactly once in effect.

The same code serves the live Faust processors and the replay engine.

Order documents keep their facts (the order's events, with their offsets) next
to the view derived from them, and carry a revision ``_rev`` used for optimistic
concurrency: a write replaces the document only if nobody else did since it was
read. Because every stream's events are kept sorted by their Kafka offset and
deduplicated by event_id, applying a record is idempotent and independent of the
order in which records arrive; the tracking information is written atomically
with the new state, in the same document (the "tracking record" idea of the
eventsourcing library, embedded). Redis follows via a revision-guarded script.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pymongo.errors import DuplicateKeyError

from projections.customer_fold import (
    CUSTOMER_EVENT_TYPES,
    apply_customer,
    customer_view,
    enrichment,
)
from projections.order_fold import (
    OrderFacts,
    apply,
    empty_facts,
    facts_from_doc,
    facts_to_doc,
    order_id_of,
    order_view,
    redis_contribution,
)
from projections.read_models import Document, ReadModels
from projections.redis_writer import RedisWriter
from schemas.events import Event

MAX_CONFLICT_RETRIES = 50
CUSTOMER_VIEW_INPUTS = ("placed", "customer_id", "currency", "amount_paid", "placed_at")


class ConcurrentUpdateError(RuntimeError):
    """Another writer kept changing the same document; the record will be retried."""


@dataclass(frozen=True)
class OrderState:
    """What the order document holds besides the view."""

    facts: OrderFacts
    offsets: dict[str, int]  # event_id -> offset in its stream (the lowest one seen)
    customer: dict[str, Any] | None  # enrichment block
    customer_offset: int  # offset of the customers-stream record the block came from

    @classmethod
    def load(cls, order_id: str, doc: Mapping[str, Any] | None) -> OrderState:
        if doc is None:
            return cls(empty_facts(order_id), {}, None, -1)
        return cls(facts_from_doc(doc["_facts"]), dict(doc["_offsets"]), doc.get("customer"),
                   int(doc.get("_customer_offset", -1)))

    def with_event(self, event: Event, offset: int) -> OrderState | None:
        """The state with ``event`` added at ``offset``; None when already known there."""
        known = self.offsets.get(event.event_id)
        if known is not None and known <= offset:
            return None
        offsets = {**self.offsets, event.event_id: offset}
        facts = apply(self.facts, event) if known is None else self.facts
        by_offset = lambda e: offsets[e.event_id]  # noqa: E731
        facts = replace(
            facts,
            order_events=tuple(sorted(facts.order_events, key=by_offset)),
            payment_events=tuple(sorted(facts.payment_events, key=by_offset)),
        )
        return replace(self, facts=facts, offsets=offsets)

    def to_doc(self, rev: int) -> Document:
        """The stored document: the view plus what it was derived from."""
        return {
            "_id": self.facts.order_id, **order_view(self.facts, self.customer), "_rev": rev,
            "_facts": facts_to_doc(self.facts), "_offsets": self.offsets,
            "_customer_offset": self.customer_offset,
        }


def new_customer(customer_id: str) -> Document:
    """A customer document before anything is known: no profile, no orders."""
    return {"_id": customer_id, **customer_view(customer_id, None, ()), "email": None,
            "_offset": -1, "_orders": {}}


def order_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What a customer document keeps of one of its orders (to sum without a query)."""
    return {k: doc.get(k) for k in ("order_id", *CUSTOMER_VIEW_INPUTS, "_rev")}


def public_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The view part of a stored document (internal fields start with ``_``)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


class Projector:
    """Writes records into one read-model version (MongoDB first, then Redis)."""

    def __init__(self, models: ReadModels) -> None:
        self.models = models
        self.redis = RedisWriter(models)

    async def apply(self, event: Event, topic: str, partition: int, offset: int) -> bool:
        """Apply one record of logical topic ``topic``; False when it was already applied."""
        if isinstance(event, CUSTOMER_EVENT_TYPES):
            applied = await self._apply_customer(event, offset)
        else:
            applied = await self._apply_order_event(event, offset)
        await self.redis.checkpoint(topic, partition, offset)
        return applied

    async def _apply_order_event(self, event: Event, offset: int) -> bool:
        changed, doc = await self._update_order(
            order_id_of(event), lambda state: state.with_event(event, offset)
        )
        await self._sync_redis(doc)
        if doc.get("customer_id") and (changed is None or changed):
            await self._refresh_customer(doc)
        if doc.get("placed") and doc.get("customer") is None:
            await self._enrich_from_profile(doc)
        return changed is not None

    async def _update_order(
        self, order_id: str, mutate: Callable[[OrderState], OrderState | None]
    ) -> tuple[bool | None, Document]:
        """Read-mutate-write with optimistic concurrency on ``_rev``.

        Returns (None, stored doc) when ``mutate`` had nothing to do, else
        (whether the customer-view inputs changed, new doc)."""
        async with self.models.document_lock("order", order_id):
            return await self._update_order_locked(order_id, mutate)

    async def _update_order_locked(
        self, order_id: str, mutate: Callable[[OrderState], OrderState | None]
    ) -> tuple[bool | None, Document]:
        orders = self.models.orders
        for _ in range(MAX_CONFLICT_RETRIES):
            stored = await orders.find_one({"_id": order_id})
            state = OrderState.load(order_id, stored)
            new_state = mutate(state)
            if new_state is None:
                if stored is None:
                    raise LookupError(f"order {order_id}: nothing stored and nothing to apply")
                return None, stored
            rev = (stored or {}).get("_rev", 0) + 1
            doc = new_state.to_doc(rev)
            if stored is None:
                try:
                    await orders.insert_one(doc)
                except DuplicateKeyError:
                    continue
            else:
                # By _id alone: the document lock already excludes other writers, and
                # FerretDB scans the whole collection for any other filter.
                result = await orders.replace_one({"_id": order_id}, doc)
                if result.matched_count == 0:
                    continue
            inputs_changed = stored is None or any(
                stored.get(k) != doc.get(k) for k in CUSTOMER_VIEW_INPUTS
            )
            return inputs_changed, doc
        raise ConcurrentUpdateError(f"order {order_id}: too many concurrent updates")

    async def _sync_redis(self, doc: Document) -> None:
        view = public_view(doc)
        await self.redis.apply_order(
            doc["_id"], doc["_rev"], redis_contribution(view),
            json.dumps(view, separators=(",", ":")),
        )

    async def _enrich_from_profile(self, doc: Document) -> None:
        """Embed the customer's profile if it exists (closes the race with a
        customer event processed concurrently on another partition)."""
        profile = await self.models.customers.find_one({"_id": doc["customer_id"]})
        if profile is not None and profile.get("_offset", -1) >= 0:
            await self._enrich_order(doc["_id"], profile)

    async def _enrich_order(self, order_id: str, profile: Mapping[str, Any]) -> None:
        block = {k: profile[k] for k in ("name", "tier", "country")}
        offset = int(profile["_offset"])

        def set_customer(state: OrderState) -> OrderState | None:
            if state.customer_offset >= offset:
                return None
            return replace(state, customer=block, customer_offset=offset)

        changed, doc = await self._update_order(order_id, set_customer)
        if changed is not None:
            await self._sync_redis(doc)

    async def _apply_customer(self, event: Event, offset: int) -> bool:
        profile = apply_customer(None, event)
        fields = {**enrichment(profile), "email": profile.email, "_offset": offset,
                  "_event_id": event.event_id}

        def set_profile(doc: Document) -> Document | None:
            return None if doc.get("_offset", -1) >= offset else {**doc, **fields}

        applied, stored = await self._update_customer(profile.customer_id, set_profile)
        # Re-enrich every order of the customer still showing older data (also on a
        # redelivery: the crash may have come between the profile write and this).
        for order_id in stored.get("_orders", {}):
            await self._enrich_order(order_id, stored)
        return applied

    async def _refresh_customer(self, order: Document) -> None:
        """Fold the order's latest summary into its customer's aggregates.

        The customer document keeps one summary per order with the order's
        revision, so a stale or repeated summary changes nothing and no query
        over the orders is needed."""
        summary = order_summary(order)

        def add_order(doc: Document) -> Document | None:
            known = doc.get("_orders", {}).get(order["_id"])
            if known is not None and known["_rev"] >= summary["_rev"]:
                return None
            orders = {**doc.get("_orders", {}), order["_id"]: summary}
            view = customer_view(doc["_id"], None, orders.values())
            aggregates = {k: view[k] for k in ("order_count", "lifetime_value", "last_order_at")}
            return {**doc, **aggregates, "_orders": orders}

        await self._update_customer(order["customer_id"], add_order)

    async def _update_customer(
        self, customer_id: str, mutate: Callable[[Document], Document | None]
    ) -> tuple[bool, Document]:
        """Read-mutate-write of one customer document under its lock."""
        customers = self.models.customers
        async with self.models.document_lock("customer", customer_id):
            stored = await customers.find_one({"_id": customer_id})
            new = mutate(stored or new_customer(customer_id))
            if new is None:
                return False, stored or new_customer(customer_id)
            if stored is None:
                await customers.insert_one(new)
            else:
                await customers.replace_one({"_id": customer_id}, new)
            return True, new
