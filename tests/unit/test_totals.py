"""``projections.api.Totals``: an entity's totals over the views of another projection,
checked when defined, and kept by replacing one view's contribution at a time; the
customer's totals over its orders declared with it (``customer_fold.CUSTOMER_TOTALS``),
in the stored format they had before."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from projections.api import ProjectionError, Totals
from projections.customer_fold import customer_view
from projections.joins import SUMMARY_FIELDS, CustomerTotals, OrderLink


def points(view: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "games": 1,
        "points": {view["league"]: view["points"]},
        "best": view["points"],
        "first": view.get("day"),
    }


def totals(**changes: Any) -> Totals:
    options: dict[str, Any] = {
        "projection": "games",
        "key": "player_id",
        "reads": ("league", "points", "day"),
        "measures": {"games": "sum", "points": "sum_per_key", "best": "max", "first": "min"},
        "contribution": points,
        **changes,
    }
    return Totals(**options)


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        ({"projection": "Games"}, "not a projection name"),
        ({"reads": "league"}, "a tuple of names"),
        ({"key": "player id"}, "'player id'"),
        ({"measures": {}}, "no measure"),
        ({"measures": {"games": "count"}}, "kind 'count'"),
        ({"measures": {"1st": "min"}}, "'1st'"),
        ({"contribution": "points"}, "a function"),
    ],
)
def test_a_definition_the_engine_cannot_keep_is_refused(changes: dict[str, Any], said: str) -> None:
    with pytest.raises(ProjectionError, match=said):
        totals(**changes)


def test_the_fields_are_what_it_reads_and_the_key_once() -> None:
    assert totals().fields == ("league", "points", "day", "player_id")
    assert totals(reads=("player_id", "league")).fields == ("player_id", "league")


def test_a_contribution_is_replaced_by_the_newer_one() -> None:
    t = totals()
    first = {"league": "north", "points": 3, "day": "2026-12-02"}
    kept = t.replaced(t.empty(), None, first)
    assert kept == {"games": 1, "points": {"north": 3}, "best": 3, "first": "2026-12-02"}
    second = {"league": "south", "points": 5, "day": "2026-12-01"}
    kept = t.replaced(kept, None, second)
    assert kept == {
        "games": 2,
        "points": {"north": 3, "south": 5},
        "best": 5,
        "first": "2026-12-01",
    }
    # the first game scored again: its 3 points out, its 1 in; north at 1
    kept = t.replaced(kept, first, {**first, "points": 1})
    assert kept["games"] == 2 and kept["points"] == {"north": 1, "south": 5}
    # to zero: the key leaves the sums
    kept = t.replaced(kept, {**first, "points": 1}, {**first, "points": 0})
    assert kept["points"] == {"south": 5}


def test_a_maximum_does_not_go_back_when_its_contribution_is_lowered() -> None:
    t = totals()
    best = {"league": "north", "points": 9, "day": "2026-12-02"}
    kept = t.replaced(t.empty(), None, best)
    assert t.replaced(kept, best, {**best, "points": 2})["best"] == 9


def test_nothing_contributed_leaves_the_totals_as_they_were() -> None:
    t = totals(contribution=lambda view: {} if view["points"] is None else points(view))
    kept = t.replaced(t.empty(), None, {"league": "north", "points": None, "day": None})
    assert kept == t.empty() == {"games": 0, "points": {}, "best": None, "first": None}


def test_a_contribution_to_a_measure_it_does_not_have_is_an_error() -> None:
    t = totals(contribution=lambda view: {"goals": 1})
    with pytest.raises(ValueError, match="unknown measure"):
        t.replaced(t.empty(), None, {"league": "north", "points": 1, "day": None})


def test_stored_totals_are_read_back_checked() -> None:
    t = totals()
    stored = {"games": "2", "points": {"north": "3"}, "best": 3, "first": None, "other": 1}
    assert t.from_doc(stored) == {"games": 2, "points": {"north": 3}, "best": 3, "first": None}
    with pytest.raises(KeyError):
        t.from_doc({"games": 2})


def link(order_id: str, facts: int, **summary: Any) -> OrderLink:
    base = {
        "placed": True,
        "customer_id": "c-1",
        "currency": "EUR",
        "amount_paid": "0.00",
        "placed_at": "2026-12-01T10:00:00.000000Z",
    }
    return OrderLink(order_id, facts, {**base, **summary})


def test_the_customer_totals_keep_their_stored_format() -> None:
    """The customer state's totals as the processors' tables and documents hold them
    (written before ``Totals``) read back and are written again alike."""
    stored = {
        "order_count": 2,
        "paid": {"EUR": 125000, "USD": 990000},
        "last_order_at": "2026-12-01T10:00:00.000000Z",
        "facts": 7,
        "orders": 3,
    }
    assert CustomerTotals.from_doc(stored).to_doc() == stored
    assert set(SUMMARY_FIELDS) == {"placed", "customer_id", "currency", "amount_paid", "placed_at"}


def test_the_customer_totals_match_the_view_of_its_orders() -> None:
    """Summaries applied one at a time, some replaced by newer ones, give the totals the
    customer view computes from the orders' latest summaries."""
    latest = {
        "o-1": link("o-1", 3, amount_paid="12.50"),
        "o-2": link(
            "o-2", 4, currency="USD", amount_paid="99.00", placed_at="2026-12-03T08:00:00.000000Z"
        ),
        "o-3": link("o-3", 1, placed=False, placed_at=None),
        "o-4": link("o-4", 5, amount_paid="0.00", placed_at="2026-11-30T23:59:59.000000Z"),
    }
    steps = [
        (None, link("o-1", 1, amount_paid="0.00")),
        (None, latest["o-2"]),
        (link("o-1", 1, amount_paid="0.00"), latest["o-1"]),
        (None, latest["o-3"]),
        (None, latest["o-4"]),
    ]
    kept = CustomerTotals()
    for old, new in steps:
        kept = kept.with_summary(old, new)
    expected = customer_view("c-1", None, [dict(s.summary, order_id=i) for i, s in latest.items()])
    assert kept.measures["order_count"] == expected["order_count"] == 3
    assert kept.measures["last_order_at"] == expected["last_order_at"]
    assert kept.orders == 4 and kept.facts == 3 + 4 + 1 + 5
    assert {c: u / 10_000 for c, u in kept.measures["paid"].items()} == {
        c: float(v) for c, v in expected["lifetime_value"].items()
    }
