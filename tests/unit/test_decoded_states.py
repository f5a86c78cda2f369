"""The pipeline's cache of decoded states: read and decoded once, dropped on a rebalance."""

from __future__ import annotations

from typing import Any

from projections.joins import CustomerState, DecodedStates


class CountingStore(dict[str, Any]):
    """A dict that counts reads (a disk-backed table pays for each)."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        self.reads += 1
        return super().get(key, default)


def test_a_state_is_decoded_once_until_the_store_changes_under_it() -> None:
    decoded: list[Any] = []

    def decode(doc: Any) -> CustomerState:
        decoded.append(doc)
        return CustomerState.from_doc(doc)

    store = CountingStore()
    states = DecodedStates(store, decode)
    assert states.get("c-1") is None
    states.put("c-1", CustomerState("c-1"))
    reads = store.reads
    first = states.get("c-1")
    assert first == CustomerState("c-1") and states.get("c-1") is first
    assert decoded == [] and store.reads == reads  # put remembered what it stored
    assert store["c-1"] == CustomerState("c-1").to_doc()  # and stored it

    store["c-1"] = CustomerState("c-1", profile_offset=4).to_doc()  # e.g. restored
    states.invalidate()  # a rebalance
    assert states.get("c-1") == CustomerState("c-1", profile_offset=4)
    assert len(decoded) == 1


def test_the_cache_is_bounded() -> None:
    store: dict[str, Any] = {}
    states = DecodedStates(store, CustomerState.from_doc, size=2)
    for key in ("a", "b", "c"):
        states.put(key, CustomerState(key))
    assert [states.get(k) for k in ("a", "b", "c")] == [CustomerState(k) for k in "abc"]
