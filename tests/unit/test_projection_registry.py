"""The projection registry: built-ins, entry points and the disabled list; and the
fixture package ``tests/fixtures/eventfold_loyalty`` as the registry loads it."""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from eventfold.settings import Settings
from projections.api import Projection, ProjectionError
from projections.applier import Applier
from projections.joins import ORDER_STATES
from projections.projection_store import MemoryProjectionStore
from projections.registry import ENTRY_POINT_GROUP, enabled, registered
from projections.state import Positioned
from tests.support.events import event, placed_data

BUILT_IN = {"sku_sales", "payment_methods"}
LOYALTY_PACKAGE = Path(__file__).parents[1] / "fixtures" / "eventfold_loyalty"


def _projection(name: str) -> Projection:
    return Projection(
        name=name,
        consumes=("OrderPlaced",),
        initial=dict,
        fold=lambda state, e: state,
        rows=lambda state: {},
    )


# what the fake entry points point at
extra_counts = _projection("extra_counts")
another = _projection("another")
same_name_as_a_built_in = _projection("sku_sales")
named_extra_counts_too = _projection("extra_counts")
named_orders = _projection("orders")
not_a_projection = {"name": "dict_counts"}
typed_orders = Projection(name="typed_orders", consumes=("OrderPlaced",), states=ORDER_STATES)


def point(attribute: str, name: str | None = None) -> EntryPoint:
    return EntryPoint(name or attribute, f"{__name__}:{attribute}", ENTRY_POINT_GROUP)


def test_the_built_ins_with_no_entry_points() -> None:
    assert set(registered([])) == BUILT_IN


def test_entry_points_are_loaded_next_to_the_built_ins() -> None:
    found = registered([point("extra_counts"), point("another")])
    assert set(found) == BUILT_IN | {"extra_counts", "another"}
    assert found["extra_counts"] is extra_counts
    assert found["another"] is another


def test_a_projection_is_registered_under_its_own_name() -> None:
    found = registered([point("extra_counts", name="whatever_the_entry_point_says")])
    assert found["extra_counts"] is extra_counts
    assert "whatever_the_entry_point_says" not in found


def test_an_entry_point_that_is_not_a_projection_is_refused() -> None:
    with pytest.raises(
        ProjectionError, match=re.escape("is a dict, not a projections.api.Projection")
    ):
        registered([point("not_a_projection")])


@pytest.mark.parametrize(
    "value",
    [f"{__name__}:no_such_attribute", "no_such_package.module:projection"],
)
def test_an_entry_point_that_does_not_load_is_refused(value: str) -> None:
    with pytest.raises(ProjectionError, match=re.escape(f"entry point broken = {value}")):
        registered([EntryPoint("broken", value, ENTRY_POINT_GROUP)])


@pytest.mark.parametrize(
    "attributes",
    [
        ["same_name_as_a_built_in"],
        ["extra_counts", "named_extra_counts_too"],
    ],
)
def test_a_name_taken_twice_is_refused(attributes: list[str]) -> None:
    with pytest.raises(ProjectionError, match="two projections are named"):
        registered([point(a) for a in attributes])


def test_a_reserved_name_is_refused() -> None:
    with pytest.raises(ProjectionError, match="'orders' is reserved"):
        registered([point("named_orders")])


def test_a_typed_state_is_registered_from_an_entry_point() -> None:
    """The projection engine runs typed states as it runs JSON ones."""
    assert registered([point("typed_orders")])["typed_orders"] is typed_orders


def test_a_lookup_is_refused_from_an_entry_point() -> None:
    """Only the processor's join runs a lookup or totals (the built-in orders')."""
    core = EntryPoint("orders", "projections.builtin.core:orders", ENTRY_POINT_GROUP)
    with pytest.raises(ProjectionError, match="orders has a lookup, which only the processor's"):
        registered([core])


def test_enabled_leaves_out_the_disabled_ones() -> None:
    points = [point("extra_counts"), point("another")]
    assert set(enabled(Settings(), points)) == BUILT_IN | {"extra_counts", "another"}
    off = Settings(projections_disabled=" sku_sales, extra_counts ,")
    assert set(enabled(off, points)) == {"payment_methods", "another"}
    all_off = Settings(projections_disabled="sku_sales,payment_methods,extra_counts,another")
    assert enabled(all_off, points) == {}


def test_enabled_refuses_an_unknown_disabled_name() -> None:
    # a typo would leave running a projection meant to be off
    with pytest.raises(ProjectionError, match=r"unknown projection.*sku_sale;"):
        enabled(Settings(projections_disabled="sku_sale,payment_methods"), [])
    # a name registered by a package that is not installed here is unknown too
    with pytest.raises(ProjectionError, match="extra_counts"):
        enabled(Settings(projections_disabled="extra_counts"), [])


# --- the fixture package, loaded from its entry point ---------------------------------------


@pytest.fixture
def loyalty_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fixture package importable (from its source tree) and forgotten afterwards."""
    monkeypatch.syspath_prepend(str(LOYALTY_PACKAGE))
    yield
    for module in [m for m in sys.modules if m.split(".")[0] == "eventfold_loyalty"]:
        del sys.modules[module]


def _entry_points_of_the_package() -> list[EntryPoint]:
    """The entry points as the package's pyproject.toml declares them."""
    declared = tomllib.loads((LOYALTY_PACKAGE / "pyproject.toml").read_text())
    points = declared["project"]["entry-points"][ENTRY_POINT_GROUP].items()
    return [EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in points]


@pytest.mark.usefixtures("loyalty_importable")
async def test_the_loyalty_fixture_package_registers_and_folds() -> None:
    found = registered(_entry_points_of_the_package())
    assert set(found) == BUILT_IN | {"loyalty_points", "order_flags"}
    loyalty = found["loyalty_points"]
    assert (loyalty.topics, loyalty.key_field, loyalty.kind) == (("orders",), "order_id", "rows")

    def placed(order_id: str, customer: str, items: list[tuple[str, int, str]]) -> Positioned:
        e = event("OrderPlaced", placed_data(order_id, customer_id=customer, items=items))
        return Positioned(e, "orders", 0, 0)

    def cancelled(order_id: str) -> Positioned:
        return Positioned(event("OrderCancelled", {"order_id": order_id}), "orders", 0, 0)

    log = [
        placed("o-1", "c-1", [("A-1", 2, "9.99"), ("B-2", 1, "5")]),  # 24.98 -> 24
        placed("o-2", "c-1", [("C-3", 3, "0.40")]),  # 1.20 -> 1
        placed("o-3", "c-1", [("A-1", 1, "100")]),
        cancelled("o-3"),
        placed("o-4", "c-2", [("D-4", 1, "0.50")]),  # 0 points: only the order counts
        cancelled("o-5"),  # cancelled before it was placed: it never counts
        placed("o-5", "c-2", [("A-1", 10, "10")]),
        Positioned(event("OrderDelivered", {"order_id": "o-1"}), "orders", 0, 0),
    ]
    log = [Positioned(p.event, p.topic, p.partition, offset) for offset, p in enumerate(log)]
    store = MemoryProjectionStore()
    applier = Applier(loyalty, store)
    await applier.start()
    for offset in range(0, len(log), 3):
        batch = log[offset : offset + 3]
        await applier.apply(batch, {"orders:0": batch[-1].offset})

    snapshot = await store.snapshot()
    assert snapshot.rows == {"c-1": {"points": 25, "orders": 2}, "c-2": {"orders": 1}}
    assert snapshot.marks == {"orders:0": len(log) - 1}
