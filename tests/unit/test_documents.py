"""``projections.api.Documents``: how views are stored as documents, checked when it is
defined, and a view read back from its document as it was stored."""

from __future__ import annotations

import re
from typing import Any

import pytest

from projections.api import Documents, ProjectionError
from projections.customer_fold import CUSTOMER_DOCUMENTS
from projections.order_fold import ORDER_DOCUMENTS, ORDER_QUERY_FIELDS

VIEW: dict[str, Any] = {
    "order_id": "o-1",
    "status": "paid",
    "items": [{"sku": "A", "quantity": 2}],
    "payments": [],
}


def test_a_view_is_stored_with_its_query_fields_apart_and_read_back_whole() -> None:
    documents = Documents(fields=("order_id", "status"), indexes=((("status", 1),),))
    doc = documents.document("o-1", VIEW, "state-json")
    assert doc["_id"] == "o-1" and doc["_state"] == "state-json"
    assert {k for k in doc if not k.startswith("_")} == {"order_id", "status"}
    assert documents.view_of(doc) == VIEW
    assert documents.read == ("order_id", "status", "_view")


def test_a_field_of_its_own_wins_over_the_packed_view() -> None:
    documents = Documents(fields=("status",))
    doc = documents.document("o-1", VIEW, "{}", packed='{"status": "stale", "n": 1}')
    assert documents.view_of(doc) == {"status": "paid", "n": 1}


def test_without_fields_the_view_is_stored_as_it_is() -> None:
    doc = CUSTOMER_DOCUMENTS.document("c-1", {"name": "Ada", "tier": "gold"}, "{}")
    assert doc == {"_id": "c-1", "name": "Ada", "tier": "gold", "_state": "{}"}
    assert CUSTOMER_DOCUMENTS.read is None  # read whole
    assert Documents.view_of(doc) == {"name": "Ada", "tier": "gold"}


def test_the_order_documents_index_only_fields_of_their_own() -> None:
    assert ORDER_DOCUMENTS.fields == ORDER_QUERY_FIELDS
    indexed = {name for index in ORDER_DOCUMENTS.indexes for name, _ in index}
    assert indexed <= {*ORDER_QUERY_FIELDS, "_id"}


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"fields": "status"}, "tuple of names"),
        ({"fields": ("_view",)}, "not starting with '_'"),
        ({"fields": ("a.b",)}, "without '.'"),
        ({"fields": ("",)}, "non-empty"),
        ({"fields": ("a", "a")}, "one twice"),
        ({"fields": ("a",), "indexes": ((),)}, "no field"),
        ({"fields": ("a",), "indexes": ((("a", 2),),)}, "(field, 1) or (field, -1)"),
        ({"fields": ("a",), "indexes": (("a", 1),)}, "(field, 1) or (field, -1)"),
        ({"fields": ("a",), "indexes": ((("b", 1),),)}, "not a field of its own"),
        ({"indexes": ((("_state", 1),),)}, "not a field of its own"),
    ],
)
def test_a_definition_the_store_cannot_keep_is_refused(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ProjectionError, match=re.escape(says)):
        Documents(**kwargs)


def test_an_index_may_end_on_the_id() -> None:
    documents = Documents(fields=("placed_at",), indexes=((("placed_at", -1), ("_id", -1)),))
    assert documents.indexes[0][1] == ("_id", -1)
