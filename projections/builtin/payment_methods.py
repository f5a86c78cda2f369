"""Payment-method health: authorized, captured, failed and refunded payments per method
per hour.

Folded per order (``order_id``), keeping each payment's method (from its
``PaymentAuthorized``) and the hours of its outcomes; each outcome counts in the group
``method|hour`` (UTC, ``2026-12-03T10``) of the hour it occurred in. Only the
authorization names the method: a payment seen failing or captured before its
authorization counts once the authorization arrives, and a failure of a payment that
was never authorized counts under ``unknown``.
"""

from __future__ import annotations

from typing import Any

from projections.api import JSON, Projection, Rows, group_key
from schemas.events import (
    Event,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
)

UNKNOWN_METHOD = "unknown"
OUTCOMES: dict[type[Event], str] = {  # type: ignore[dict-item]
    PaymentAuthorized: "authorized",
    PaymentCaptured: "captured",
    PaymentFailed: "failed",
    PaymentRefunded: "refunded",
}
MEASURES: tuple[str, ...] = tuple(OUTCOMES.values())


def initial() -> JSON:
    return {}  # payment_id -> {"method": str | None, "outcomes": [[outcome, hour], ...]}


def fold(state: dict[str, Any], event: Event) -> JSON:
    payment = state.setdefault(event.data.payment_id, {"method": None, "outcomes": []})  # type: ignore[union-attr]
    if isinstance(event, PaymentAuthorized):
        payment["method"] = event.data.method
    payment["outcomes"].append([OUTCOMES[type(event)], event.occurred_at.strftime("%Y-%m-%dT%H")])
    return state


def rows(state: dict[str, Any]) -> Rows:
    out: dict[str, dict[str, int]] = {}
    for payment in state.values():
        method = payment["method"]
        for outcome, hour in payment["outcomes"]:
            if method is None and outcome != "failed":
                continue  # counted once its authorization names the method
            row = out.setdefault(group_key(method or UNKNOWN_METHOD, hour), {})
            row[outcome] = row.get(outcome, 0) + 1
    return out


payment_methods = Projection(
    name="payment_methods",
    consumes=tuple(t.__name__ for t in OUTCOMES),
    initial=initial,
    fold=fold,
    rows=rows,
    description="authorized, captured, failed and refunded payments per method per hour",
)
