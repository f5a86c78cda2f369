"""A projection keeping its views as documents (``Projection.documents``) against the
same projection keeping them in Redis only, on the same events and servers.

Both fold the demo stream's order events into one view per order (its customer,
status, total and why it is flagged, as the README's ``order_flags``) through the
live worker's ``Applier``, in batches of ``BATCH`` records, alternating batch by
batch so that noise falls on both. The one with documents also writes each batch's
changed views to its collection (one ``bulk_write``), under the version's batch lock
(three more Redis calls: take it, read the marks, release it). The **ceiling** is
the projection without documents, so the ratio is what keeping them costs.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from benchmarks.conftest import demo_envelopes, scaled
from benchmarks.measure import Figure, Report
from benchmarks.test_projection import records
from projections.api import JSON, Documents, Projection
from projections.applier import Applier
from projections.engine import Positioned
from projections.read_models import Stores
from schemas.events import Event, OrderCancelled, OrderPlaced, PaymentFailed

ORDERS = 1000  # about 5,000 events, of which about 2,400 the projections consume
BATCH = 500
CONSUMES = ("OrderPlaced", "OrderCancelled", "PaymentFailed")


def initial() -> JSON:
    return {"customer_id": None, "total": "0", "failed": 0, "cancelled": False}


def fold(state: dict[str, Any], event: Event) -> JSON:
    if isinstance(event, OrderPlaced):
        total = sum((i.unit_price * i.quantity for i in event.data.items), Decimal(0))
        state.update(customer_id=event.data.customer_id, total=str(total))
    elif isinstance(event, PaymentFailed):
        state["failed"] += 1
    elif isinstance(event, OrderCancelled):
        state["cancelled"] = True
    return state


def view(state: dict[str, Any]) -> JSON:
    if state["customer_id"] is None:
        return None
    reasons = [
        r
        for r, on in (("large", Decimal(state["total"]) >= 250), ("failed", state["failed"]))
        if on
    ]
    status = "cancelled" if state["cancelled"] else "flagged" if reasons else "clear"
    return {
        "customer_id": state["customer_id"],
        "status": status,
        "total": state["total"],
        "reasons": reasons,
    }


def flags(name: str, documents: Documents | None) -> Projection:
    return Projection(
        name=name, consumes=CONSUMES, initial=initial, fold=fold, view=view, documents=documents
    )


async def test_documents_against_the_view_alone(stores: Stores, report: Report) -> None:
    shape = Documents(fields=("status", "customer_id"), indexes=((("status", 1), ("_id", 1)),))
    with_documents, alone = flags("bench_flags_docs", shape), flags("bench_flags", None)
    versions = stores.projection_versions()
    appliers = {
        "documents": Applier(
            with_documents,
            versions.store(with_documents.name, "v1"),
            documents=versions.documents(with_documents, "v1"),
        ),
        "alone": Applier(alone, versions.store(alone.name, "v1")),
    }
    for applier in appliers.values():
        await applier.start()
    recs = [Positioned(*r) for r in records(demo_envelopes(scaled(ORDERS)))]
    spent = dict.fromkeys(appliers, 0.0)
    for start in range(0, len(recs), BATCH):
        batch = recs[start : start + BATCH]
        highest: dict[str, int] = {}
        for p in batch:
            highest[p.mark] = max(highest.get(p.mark, -1), p.offset)
        for name, applier in appliers.items():
            t = time.perf_counter()
            await applier.apply(batch, highest)
            spent[name] += time.perf_counter() - t

    # sanity: the documents are the views the other keeps
    kept = await versions.documents(with_documents, "v1").views()  # type: ignore[union-attr]
    snapshot = await versions.store(alone.name, "v1").snapshot()
    views = {k: e.view for k, e in snapshot.entities.items() if e.view is not None}
    assert kept == views and kept
    events = sum(1 for p in recs if p.event.type in CONSUMES)
    report.add(
        Figure(
            "projection with documents",
            events / spent["documents"],
            "ev/s",
            events / spent["alone"],
            "the same view without documents",
            details={
                "events": events,
                "records": len(recs),
                "views": len(views),
                "batch": BATCH,
                "seconds": {k: round(v, 3) for k, v in spent.items()},
            },
        )
    )
