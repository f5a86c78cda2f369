"""A projection keeping its views as documents (``Projection.documents``) against the
same projection keeping them in Redis only, on the same events and servers.

Both fold the demo stream's order events into one view per order (its customer,
status, total and why it is flagged: the README's ``order_flags``) through the
live worker's ``Applier``, in batches of ``BATCH`` records, alternating batch by
batch so that noise falls on both. The one with documents also writes each batch's
changed views to its collection (one ``bulk_write``), under the version's batch lock
(three more Redis calls: take it, read the marks, release it). The **ceiling** is
the projection without documents, so the ratio is what keeping them costs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path

from benchmarks.conftest import demo_envelopes, scaled
from benchmarks.measure import Figure, Report
from benchmarks.test_projection import records
from projections.api import Projection
from projections.applier import Applier
from projections.read_models import Stores
from projections.state import Positioned

ORDERS = 1000  # about 5,000 events, of which about 2,400 the projections consume
BATCH = 500
FLAGS = Path(__file__).parents[1] / "tests/fixtures/eventfold_loyalty/eventfold_loyalty/flags.py"


def order_flags() -> Projection:
    """The example package's ``order_flags`` (the README's), loaded from its file."""
    spec = importlib.util.spec_from_file_location("bench_order_flags", FLAGS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    flags: Projection = module.order_flags
    return flags


async def test_documents_against_the_view_alone(stores: Stores, report: Report) -> None:
    flags = order_flags()
    with_documents = dataclasses.replace(flags, name="bench_flags_docs")
    alone = dataclasses.replace(flags, name="bench_flags", documents=None)
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
    events = sum(1 for p in recs if p.event.type in flags.consumes)
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
