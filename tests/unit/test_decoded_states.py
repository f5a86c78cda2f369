"""The pipeline's cache of decoded states never serves a state the store no longer holds."""

from __future__ import annotations

from typing import Any

from projections.joins import CustomerState
from projections.projector import DecodedStates


def test_a_state_is_decoded_once_while_the_store_holds_its_document() -> None:
    decoded: list[Any] = []

    def decode(doc: Any) -> CustomerState:
        decoded.append(doc)
        return CustomerState.from_doc(doc)

    store: dict[str, Any] = {}
    states = DecodedStates(store, decode)
    assert states.get("c-1") is None
    states.put("c-1", CustomerState("c-1"))
    first = states.get("c-1")
    assert first == CustomerState("c-1") and states.get("c-1") is first
    assert decoded == []  # put remembered what it stored

    store["c-1"] = CustomerState("c-1", profile_offset=4).to_doc()  # e.g. restored
    assert states.get("c-1") == CustomerState("c-1", profile_offset=4)
    assert len(decoded) == 1


def test_the_cache_is_bounded() -> None:
    store: dict[str, Any] = {}
    states = DecodedStates(store, CustomerState.from_doc, size=2)
    for key in ("a", "b", "c"):
        states.put(key, CustomerState(key))
    assert [states.get(k) for k in ("a", "b", "c")] == [CustomerState(k) for k in "abc"]
