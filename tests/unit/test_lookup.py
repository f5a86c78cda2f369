"""``projections.api.Lookup``: one view showing fields of another, checked when it is
defined; the order read model's customer block is one."""

from __future__ import annotations

import re
from typing import Any

import pytest

from projections.api import Lookup, ProjectionError
from projections.customer_fold import CustomerProfile, enrichment
from projections.joins import Enrichment
from projections.order_fold import CUSTOMER_LOOKUP, customer_block, with_customer_block

PROFILE = CustomerProfile("c-1", "Ada", "ada@example.com", "gold", "DE", "e-1")


def test_the_block_holds_the_looked_up_fields_and_no_others() -> None:
    lookup = Lookup(projection="customers", key="customer_id", fields=("name", "tier"), into="c")
    assert lookup.block({"name": "Ada", "tier": "gold", "email": "a@x"}) == {
        "name": "Ada",
        "tier": "gold",
    }
    assert lookup.block({"name": "Ada"}) == {"name": "Ada", "tier": None}
    assert lookup.holds({"tier": 1, "name": 2}) and not lookup.holds({"name": 2})


def test_an_order_shows_what_its_customer_s_enrichment_sends() -> None:
    block = enrichment(PROFILE)
    assert block == {"name": "Ada", "tier": "gold", "country": "DE"}  # not the email
    assert CUSTOMER_LOOKUP.holds(block)
    assert customer_block(True, block) == block and customer_block(False, block) is None
    assert with_customer_block({"placed": True, "customer": None}, block)["customer"] == block
    sent = Enrichment("o-1", block, 7)
    assert Enrichment.from_doc(sent.to_doc()) == sent
    with pytest.raises(ValueError, match="malformed enrichment"):
        Enrichment.from_doc({**sent.to_doc(), "customer": {**block, "email": "a@x"}})


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"projection": "Customers"}, "not a projection name"),
        ({"fields": "name"}, "non-empty tuple"),
        ({"fields": ()}, "non-empty tuple"),
        ({"fields": ("name", "name")}, "one twice"),
        ({"fields": ("_id",)}, "a letter, then"),
        ({"key": "customer.id"}, "a letter, then"),
        ({"into": "customer_id"}, "the key's own field"),
    ],
)
def test_a_lookup_the_engine_cannot_make_is_refused(kwargs: dict[str, Any], says: str) -> None:
    given = {"projection": "customers", "key": "customer_id", "fields": ("name",), "into": "c"}
    with pytest.raises(ProjectionError, match=re.escape(says)):
        Lookup(**{**given, **kwargs})
