"""A rebuild's writer: one write per changed document per batch, marks after the writes,
nothing forgotten when a flush fails."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from projections.joins import CustomerState, OrderState
from projections.projector import BufferedWriter, ReadModelWriter, Targets
from tests.support.events import event

TARGETS = Targets(orders=[], customers=[], redis=[])


def order_with(count: int) -> OrderState:
    state = OrderState.empty("o-1")
    placed = event("OrderPlaced", {"order_id": "o-1", "customer_id": "c-1", "currency": "EUR",
                                   "items": [{"sku": "A", "quantity": 1, "unit_price": "5.00"}]})
    new = state.with_event(placed, 0)
    assert new is not None
    for offset in range(1, count):
        shipped = event("OrderShipped", {"order_id": "o-1", "carrier": "UPS",
                                         "tracking_number": str(offset)}, at=offset)
        new = new.with_event(shipped, offset) or new
    return new


class Recorded:
    """The base writer's calls, in order (what reaches the stores)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_orders: int = 0) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_orders = fail_orders
        order_failed = asyncio.Event()

        async def write_order(_self: Any, targets: Targets, state: OrderState) -> None:
            if self.fail_orders:
                self.fail_orders -= 1
                order_failed.set()
                raise TimeoutError("store timed out")
            self.calls.append(("order", len(state.offsets)))

        async def write_customer(_self: Any, targets: Targets, state: CustomerState) -> None:
            if self.fail_orders or order_failed.is_set():
                # a write still under way when another one fails
                await order_failed.wait()
                for _ in range(5):
                    await asyncio.sleep(0)
            self.calls.append(("customer", state.customer_id))

        async def raise_marks(_self: Any, targets: Targets, marks: dict[str, int]) -> None:
            for field, offset in marks.items():
                topic, partition = field.split(":")
                self.calls.append(("mark", (topic, int(partition), offset)))

        monkeypatch.setattr(ReadModelWriter, "write_order", write_order)
        monkeypatch.setattr(ReadModelWriter, "write_customer", write_customer)
        monkeypatch.setattr(ReadModelWriter, "_raise_marks", raise_marks)


async def test_each_document_is_written_once_with_its_latest_state_then_the_marks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stores = Recorded(monkeypatch)
    writer = BufferedWriter()
    for count in (1, 2, 3):
        await writer.write_order(TARGETS, order_with(count))
        await writer.checkpoint(TARGETS, "orders", 0, count - 1)
    await writer.write_customer(TARGETS, CustomerState("c-1"))
    await writer.write_customer(TARGETS, CustomerState("c-1", profile_offset=2))
    await writer.checkpoint(TARGETS, "customers", 1, 7)
    await writer.checkpoint(TARGETS, "customers", 1, 5)  # never lowers a mark
    assert stores.calls == [] and writer.pending == 2  # nothing before the flush

    await writer.flush()
    writes, marks = stores.calls[:2], stores.calls[2:]
    assert sorted(writes) == [("customer", "c-1"), ("order", 3)]
    assert sorted(marks) == [("mark", ("customers", 1, 7)), ("mark", ("orders", 0, 2))]
    assert writer.pending == 0

    await writer.flush()  # nothing held
    assert len(stores.calls) == 4


async def test_an_order_without_facts_is_not_written(monkeypatch: pytest.MonkeyPatch) -> None:
    stores = Recorded(monkeypatch)
    writer = BufferedWriter()
    await writer.write_order(TARGETS, OrderState.empty("o-2"))  # only an enrichment known
    await writer.flush()
    assert stores.calls == []


async def test_a_failed_flush_waits_for_its_other_writes_forgets_nothing_and_raises_no_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stores = Recorded(monkeypatch, fail_orders=1)
    writer = BufferedWriter()
    await writer.write_order(TARGETS, order_with(2))
    await writer.write_customer(TARGETS, CustomerState("c-1"))
    await writer.checkpoint(TARGETS, "orders", 0, 1)
    with pytest.raises(TimeoutError):
        await writer.flush()
    assert not any(kind == "mark" for kind, _ in stores.calls)
    assert stores.calls == [("customer", "c-1")]  # the other write ended before the raise
    assert writer.pending == 2

    await writer.flush()  # the retry writes everything again (merges: harmless)
    assert ("order", 2) in stores.calls and stores.calls[-1] == ("mark", ("orders", 0, 1))
