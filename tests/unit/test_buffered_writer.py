"""The batch writer: one write per changed document per batch, marks after the writes,
nothing forgotten when a flush fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from projections.joins import CustomerState, Enrichment, OrderState
from projections.projector import BatchWriter, Pipeline, Targets
from projections.read_models import ReadModels
from tests.support.events import event


class FakeModels:
    """Stands for one read-model version; the patched writes below never touch it."""

    def __init__(self) -> None:
        self.redis = object()
        self.versions = {"orders": "v1", "customers": "v1", "redis": "v1"}


MODELS: Any = FakeModels()
TARGETS = Targets({"orders": [MODELS], "customers": [MODELS], "redis": [MODELS]})


def order_with(count: int) -> OrderState:
    state = OrderState.empty("o-1")
    placed = event(
        "OrderPlaced",
        {
            "order_id": "o-1",
            "customer_id": "c-1",
            "currency": "EUR",
            "items": [{"sku": "A", "quantity": 1, "unit_price": "5.00"}],
        },
    )
    new = state.with_event(placed, 0)
    assert new is not None
    for offset in range(1, count):
        shipped = event(
            "OrderShipped",
            {"order_id": "o-1", "carrier": "UPS", "tracking_number": str(offset)},
            at=offset,
        )
        new = new.with_event(shipped, offset) or new
    return new


class Recorded:
    """The writer's store calls, in order (what reaches MongoDB and Redis)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_orders: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_orders = fail_orders
        order_failed = asyncio.Event()

        async def write_documents(
            models: ReadModels, projection: str, items: list[tuple[str, Any]]
        ) -> None:
            if projection == "orders":
                if self.fail_orders:
                    self.fail_orders -= 1
                    order_failed.set()
                    raise TimeoutError("store timed out")
                for _doc_id, merge in items:
                    self.calls.append(("order", len(merge(None).offsets)))
            else:
                if self.fail_orders or order_failed.is_set():
                    # a write still under way when another one fails
                    await order_failed.wait()
                    for _ in range(5):
                        await asyncio.sleep(0)
                for doc_id, _ in items:
                    self.calls.append(("customer", doc_id))

        async def write_contributions(_self: Any, model: Any, updates: list[Any]) -> None:
            for _, state, _ in updates:
                self.calls.append((model.name, state.key))

        async def raise_marks(_self: Any, held: Any) -> None:
            for (topic, partition), (_, offset) in held.marks.items():
                self.calls.append(("mark", (topic, partition, offset)))

        monkeypatch.setattr(BatchWriter, "_write_documents", staticmethod(write_documents))
        monkeypatch.setattr(BatchWriter, "_write_contributions", write_contributions)
        monkeypatch.setattr(BatchWriter, "_raise_marks", raise_marks)


async def test_each_document_is_written_once_with_its_latest_state_then_the_marks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stores = Recorded(monkeypatch)
    writer = BatchWriter()
    for count in (1, 2, 3):
        writer.write("orders", TARGETS, order_with(count))
        writer.checkpoint(TARGETS, "orders", 0, count - 1)
    writer.write("customers", TARGETS, CustomerState("c-1"))
    writer.write("customers", TARGETS, CustomerState("c-1", profile_offset=2))
    writer.checkpoint(TARGETS, "customers", 1, 7)
    writer.checkpoint(TARGETS, "customers", 1, 5)  # never lowers a mark
    assert stores.calls == [] and writer.pending == 2  # nothing before the flush

    await writer.flush()
    writes, marks = stores.calls[:3], stores.calls[3:]
    # documents and contributions together (FerretDB and Redis at once), the marks last
    assert sorted(writes) == [("customer", "c-1"), ("order", 3), ("redis", "o-1")]
    assert sorted(marks) == [("mark", ("customers", 1, 7)), ("mark", ("orders", 0, 2))]
    assert writer.pending == 0

    await writer.flush()  # nothing held
    assert len(stores.calls) == 5


async def test_an_order_without_facts_is_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    stores = Recorded(monkeypatch)

    async def targets() -> Targets:
        return TARGETS

    async def nowhere(_message: Any) -> None:
        raise AssertionError("nothing to send")

    pipeline = Pipeline({}, {}, targets, nowhere, nowhere)
    # only its customer block known: no order to show yet
    await pipeline.enrichment(Enrichment("o-2", {"name": "Ada"}, 3))
    assert pipeline.writer.pending == 0
    await pipeline.flush()
    assert stores.calls == []


async def test_a_failed_flush_waits_for_its_other_writes_forgets_nothing_and_raises_no_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stores = Recorded(monkeypatch, fail_orders=1)
    writer = BatchWriter()
    writer.write("orders", TARGETS, order_with(2))
    writer.write("customers", TARGETS, CustomerState("c-1"))
    writer.checkpoint(TARGETS, "orders", 0, 1)
    with pytest.raises(TimeoutError):
        await writer.flush()
    assert not any(kind == "mark" for kind, _ in stores.calls)
    # the other writes ended before the raise (a contribution written twice is harmless:
    # Redis takes an order's revision once)
    assert sorted(stores.calls) == [("customer", "c-1"), ("redis", "o-1")]
    assert writer.pending == 2

    await writer.flush()  # the retry writes everything again (merges: harmless)
    assert ("order", 2) in stores.calls and stores.calls[-1] == ("mark", ("orders", 0, 1))


async def test_messages_sent_by_the_batch_are_stored_before_any_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stores = Recorded(monkeypatch)
    writer = BatchWriter()
    writer.write("orders", TARGETS, order_with(1))
    writer.checkpoint(TARGETS, "orders", 0, 0)

    async def sent() -> None:
        await asyncio.sleep(0.01)
        stores.calls.append(("sent", None))

    await writer.flush(sent())
    assert stores.calls.index(("sent", None)) < stores.calls.index(("mark", ("orders", 0, 0)))


async def test_discard_forgets_what_the_batch_held(monkeypatch: pytest.MonkeyPatch) -> None:
    stores = Recorded(monkeypatch)
    writer = BatchWriter()
    writer.write("orders", TARGETS, order_with(1))
    writer.checkpoint(TARGETS, "orders", 0, 0)
    writer.discard()
    await writer.flush()
    assert stores.calls == [] and writer.pending == 0
