"""The order and customer read models as definitions (``projections.builtin.core``):
what they declare is what the join and the read side use, and the checks a typed
state, a lookup and totals get when a projection is defined."""

from __future__ import annotations

import pytest

from projections.api import Documents, Lookup, Projection, ProjectionError, Totals
from projections.builtin.core import JOINED, customers, orders
from projections.customer_fold import CUSTOMER_TOTALS
from projections.joins import CUSTOMER_STATES, ORDER_STATES, SUMMARY_FIELDS
from projections.order_fold import CUSTOMER_LOOKUP
from projections.read_models import CORE, DOCUMENTS, PROJECTIONS
from projections.registry import RESERVED
from schemas.catalog import CARRIES


def test_the_core_read_models_are_the_definitions_and_one_derived_from_them() -> None:
    assert PROJECTIONS == ("orders", "customers", "redis")
    assert [m.definition for m in CORE] == [*JOINED, None]
    assert CORE[2].derived_from == "orders"
    assert DOCUMENTS == {"orders": orders.documents, "customers": customers.documents}
    assert RESERVED == {"orders", "customers", "redis"}
    for model in CORE[:2]:
        assert model.definition is not None
        assert model.description == model.definition.description != ""


def test_the_join_is_declared_by_the_lookup_and_the_totals() -> None:
    assert orders.lookup is CUSTOMER_LOOKUP and orders.lookup.projection == customers.name
    assert customers.totals is CUSTOMER_TOTALS and customers.totals.projection == orders.name
    assert SUMMARY_FIELDS == customers.totals.fields  # what an order tells its customer
    assert orders.states is ORDER_STATES and customers.states is CUSTOMER_STATES
    assert orders.topics == ("orders", "payments") and orders.key_field == "order_id"
    assert customers.topics == ("customers",) and customers.key_field == "customer_id"
    assert orders.joined_topics == (CARRIES["customers", "orders"],) == ("order-enrichment",)
    assert customers.joined_topics == (CARRIES["orders", "customers"],) == ("order-links",)
    assert orders.typed and customers.typed and orders.kind == "view"


def fold(state: object, event: object) -> object:
    return state


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"states": ORDER_STATES, "initial": dict}, "folds itself: no initial or fold"),
        ({"states": ORDER_STATES, "fold": fold}, "folds itself: no initial or fold"),
        ({"states": ORDER_STATES, "view": dict}, "shows its own view: no rows or view"),
        ({"states": ORDER_STATES, "rows": dict}, "shows its own view: no rows or view"),
        ({"view": dict}, "define initial and fold"),
        ({"initial": dict, "view": dict}, "define initial and fold"),
        (
            {"initial": dict, "fold": fold, "view": dict, "lookup": CUSTOMER_LOOKUP},
            "does not run a lookup over a JSON state",
        ),
        (
            {"initial": dict, "fold": fold, "view": dict, "totals": CUSTOMER_TOTALS},
            "does not run a totals over a JSON state",
        ),
        ({"states": ORDER_STATES, "lookup": CUSTOMER_TOTALS}, "lookup is a projections.api"),
        (
            {
                "states": ORDER_STATES,
                "lookup": Lookup(projection="orders", key="k", fields=("a",), into="b"),
            },
            "over its own views",
        ),
        (
            {
                "states": ORDER_STATES,
                "lookup": Lookup(projection="payments_x", key="k", fields=("a",), into="b"),
            },
            "no internal topic carries payments_x's views to it",
        ),
    ],
)
def test_a_definition_that_mixes_the_two_kinds_of_state_is_refused(
    options: dict[str, object], error: str
) -> None:
    with pytest.raises(ProjectionError, match=error):
        Projection(name="orders", consumes=("OrderPlaced",), **options)  # type: ignore[arg-type]


def test_a_typed_state_keeps_documents_and_takes_totals() -> None:
    made = Projection(
        name="customers",
        consumes=("CustomerRegistered",),
        states=CUSTOMER_STATES,
        totals=Totals(
            projection="orders",
            key="customer_id",
            reads=("placed",),
            measures={"n": "sum"},
            contribution=lambda view: {"n": 1},
        ),
        documents=Documents(),
    )
    assert made.joined_topics == ("order-links",) and made.documents == Documents()
