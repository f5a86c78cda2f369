"""Read models against a fresh reference fold of the topics, document by document.

The reference is computed with the same pure folds but none of the write path:
every record of ``orders``, ``payments`` and ``customers`` is read from the
beginning, each stream in offset order, and folded in memory. Any difference
between that and a stored version is a lost, doubled or misapplied event.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from eventfold.settings import Settings
from eventfold.topics import source_partitions
from projections.builtin.core import customers, orders
from projections.customer_fold import CustomerProfile, apply_customer, customer_view, enrichment
from projections.engine import RowsDict, rankings
from projections.order_fold import (
    OrderFacts,
    apply,
    empty_facts,
    order_id_of,
    order_rows,
    order_view,
    ranked_measure,
    reference_fold,
)
from projections.read_models import DERIVED, DOCUMENTS, PROJECTIONS, ReadModels, order_view_of
from schemas.codec import CodecError, decode
from schemas.events import Event

CUSTOMER_FIELDS = (
    "customer_id",
    "name",
    "tier",
    "country",
    "email",
    "order_count",
    "lifetime_value",
    "last_order_at",
)


@dataclass
class Snapshot:
    """Read models in comparable form (internal bookkeeping fields left out)."""

    documents: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in DOCUMENTS}
    )
    """Read model kept as documents -> key -> its view."""
    aggregates: RowsDict = field(default_factory=dict)
    """The order aggregates' rows (``order_fold.order_rows``), zeros left out."""
    rankings: RowsDict = field(default_factory=dict)
    """Ranked measure -> customer group -> value, as the rankings hold them."""
    left_out: list[str] = field(default_factory=list)
    """Events a fold computed for reference leaves out, as the processors dead-letter
    them: the read models cannot show them (an amount past their 64-bit counts)."""

    @property
    def orders(self) -> dict[str, dict[str, Any]]:
        return self.documents[orders.name]

    @property
    def customers(self) -> dict[str, dict[str, Any]]:
        return self.documents[customers.name]


@dataclass
class SourceEvents:
    streams: dict[str, list[Event]] = field(default_factory=lambda: defaultdict(list))
    undecodable: int = 0


async def read_source_events(settings: Settings) -> SourceEvents:
    """Every source record up to the current end, each partition in offset order."""
    partitions = await source_partitions(settings)
    consumer = AIOKafkaConsumer(
        **settings.kafka_client(),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=32 * 1024 * 1024,
    )
    result = SourceEvents()
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:  # one partition at a time keeps each stream's order per key
            if ends[tp] == 0:
                continue
            consumer.seek(tp, 0)
            done = False
            while not done:
                batch = await consumer.getmany(tp, timeout_ms=1000, max_records=5000)
                for record in batch.get(tp, []):
                    if record.offset >= ends[tp]:
                        done = True
                        break
                    try:
                        event = decode(record.value)
                    except CodecError:
                        result.undecodable += 1
                        continue
                    result.streams[settings.logical_topic(tp.topic)].append(event)
                done = done or await consumer.position(tp) >= ends[tp]
    finally:
        await consumer.stop()
    return result


def reference_snapshot(source: SourceEvents) -> Snapshot:
    """The read models the events call for."""
    profiles: dict[str, CustomerProfile] = {}
    for event in (e for topic in customers.topics for e in source.streams.get(topic, [])):
        profiles[event.key] = apply_customer(profiles.get(event.key), event)
    events = [e for topic in orders.topics for e in source.streams.get(topic, [])]
    facts = reference_fold(events)
    snap = Snapshot()
    contributions = []
    for order_id, order_facts in facts.items():
        try:
            view, contribution = _shown(order_facts, profiles)
        except FOLD_ERRORS:
            shown = _shown_without_what_fails(order_id, events, profiles, snap.left_out)
            if shown is None:
                continue
            view, contribution = shown
        snap.orders[order_id] = view
        contributions.append(contribution)
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for view in snap.orders.values():
        if view["placed"]:
            by_customer[view["customer_id"]].append(view)
    for cid in set(profiles) | set(by_customer):
        profile = profiles.get(cid)
        snap.customers[cid] = {
            **customer_view(cid, profile, by_customer.get(cid, ())),
            "email": profile.email if profile else None,
        }
    snap.aggregates = _summed(contributions)
    snap.rankings = rankings(snap.aggregates, ranked_measure)
    return snap


FOLD_ERRORS = (ValueError, ArithmeticError)
"""What showing an order raises for events the read models cannot take (``to_units``:
money past a 64-bit count of 1e-4 units): the processors dead-letter the record."""


def _shown(
    facts: OrderFacts, profiles: Mapping[str, CustomerProfile]
) -> tuple[dict[str, Any], dict[str, dict[str, int]]]:
    """An order's view, enriched when its customer is known, and its Redis rows."""
    bare = order_view(facts, None)
    profile = profiles.get(bare["customer_id"]) if bare["customer_id"] else None
    view = order_view(facts, enrichment(profile)) if profile else bare
    return view, order_rows(view)


def _shown_without_what_fails(
    order_id: str,
    events: Sequence[Event],
    profiles: Mapping[str, CustomerProfile],
    left_out: list[str],
) -> tuple[dict[str, Any], dict[str, dict[str, int]]] | None:
    """The order as the processors leave it: its events taken one at a time, each one
    that makes it fail to show left out (the processors dead-letter that record), or
    None when none is left. Quadratic in the order's events, and only for an order
    that fails."""
    facts = empty_facts(order_id)
    shown = None
    for event in (e for e in events if order_id_of(e) == order_id):
        trial = apply(facts, event)
        try:
            shown_now = _shown(trial, profiles)
        except FOLD_ERRORS as exc:
            left_out.append(f"{event.type} {event.event_id} of order {order_id}: {exc}")
            continue
        facts, shown = trial, shown_now
    return shown


def _summed(contributions: Sequence[Mapping[str, Mapping[str, int]]]) -> RowsDict:
    """Each group's row: the sum of the orders' rows, zeros left out."""
    total: RowsDict = {}
    for rows in contributions:
        for group, row in rows.items():
            held = total.setdefault(group, {})
            for measure, value in row.items():
                held[measure] = held.get(measure, 0) + value
    return {g: kept for g, row in total.items() if (kept := {m: v for m, v in row.items() if v})}


async def stored_snapshot(models: ReadModels) -> Snapshot:
    snap = Snapshot()
    async for doc in models.orders.find({}):
        snap.orders[doc["_id"]] = order_view_of(doc)
    async for doc in models.customers.find({}):
        snap.customers[doc["_id"]] = {k: doc.get(k) for k in CUSTOMER_FIELDS}
    snap.aggregates, snap.rankings = await models.aggregates.snapshot()
    return snap


def differences(
    expected: Snapshot, actual: Snapshot, limit: int = 50, projections: Sequence[str] = PROJECTIONS
) -> list[str]:
    """Human-readable differences, document by document and field by field, in the
    given projections."""
    found: list[str] = []
    for name in (p for p in DOCUMENTS if p in projections):
        want, have = expected.documents[name], actual.documents[name]
        for doc_id in sorted(set(want) | set(have)):
            if doc_id not in have:
                found.append(f"{name}/{doc_id}: missing")
            elif doc_id not in want:
                found.append(f"{name}/{doc_id}: not called for by any event")
            else:
                for key in sorted(set(want[doc_id]) | set(have[doc_id])):
                    if want[doc_id].get(key) != have[doc_id].get(key):
                        found.append(
                            f"{name}/{doc_id}.{key}: expected "
                            f"{want[doc_id].get(key)!r}, stored {have[doc_id].get(key)!r}"
                        )
    derived = any(m.name in projections for models in DERIVED.values() for m in models)
    for name in ("aggregates", "rankings") if derived else ():
        want_rows: RowsDict = getattr(expected, name)
        have_rows: RowsDict = getattr(actual, name)
        for key in sorted(set(want_rows) | set(have_rows)):
            if want_rows.get(key) != have_rows.get(key):
                found.append(
                    f"redis {name} {key}: expected {want_rows.get(key)!r}, "
                    f"stored {have_rows.get(key)!r}"
                )
    return found[:limit] + ([f"... and {len(found) - limit} more"] if len(found) > limit else [])
