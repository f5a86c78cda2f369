"""``eventfold verify``'s fold for reference leaves out what the read models cannot show,
as the processors do (issue 11.1): it never stops on such an event.

Each amount is below the producer API's bound (10**12), yet the 923rd capture of the
largest amount on one order takes its paid total past the read models' 64-bit count of
1e-4 units; the processors dead-letter that record (and each later one like it)."""

from __future__ import annotations

from decimal import Decimal

from projections.money import to_units
from projections.verify import SourceEvents, reference_snapshot
from tests.support.events import event, payment_data, placed_data

LARGEST = "999999999999"


def test_captures_past_the_read_models_bound_are_left_out_and_shown() -> None:
    source = SourceEvents()
    source.streams["orders"].append(event("OrderPlaced", placed_data("o-big")))
    source.streams["orders"].append(event("OrderPlaced", placed_data("o-small")))
    captures = [
        event(
            "PaymentCaptured", payment_data("PaymentCaptured", "o-big", LARGEST, payment_id=f"p{i}")
        )
        for i in range(925)
    ]
    source.streams["payments"].extend(captures)
    source.streams["payments"].append(
        event("PaymentCaptured", payment_data("PaymentCaptured", "o-small"))
    )

    snap = reference_snapshot(source)

    assert len(snap.left_out) == 3
    assert all(
        captures[i].event_id in line for i, line in zip((922, 923, 924), snap.left_out, strict=True)
    )
    big = snap.orders["o-big"]
    assert Decimal(big["amount_paid"]) == 922 * Decimal(LARGEST)
    to_units(Decimal(big["amount_paid"]))  # what is shown fits
    assert {e["event_id"] for e in big["ledger"]} == {c.event_id for c in captures[:922]}
    assert snap.orders["o-small"]["status"] == "paid"  # the other orders as ever
