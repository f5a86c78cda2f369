"""A rebuild's join state on disk behaves as the dicts it stands for."""

from __future__ import annotations

from pathlib import Path

import pytest

from projections.disk_state import DiskState
from projections.joins import CustomerSide, OrderLink


def test_a_disk_state_is_a_json_mapping(tmp_path: Path) -> None:
    state = DiskState(tmp_path / "s")
    state["o-1"] = {"facts": [1, 2], "customer": None}
    state[("order", "c-1", "o-1")] = ["a", "b"]
    assert state["o-1"] == {"facts": [1, 2], "customer": None}
    assert state.get(("order", "c-1", "o-1")) == ["a", "b"]
    assert state.get("missing") is None and "missing" not in state
    assert sorted(map(str, state)) == sorted(["o-1", str(["order", "c-1", "o-1"])])
    assert len(state) == 2
    del state["o-1"]
    with pytest.raises(KeyError):
        del state["o-1"]
    assert len(state) == 1
    state.close()
    again = DiskState(tmp_path / "s")  # on disk, not in memory
    assert again[("order", "c-1", "o-1")] == ["a", "b"]
    again.destroy()
    assert not (tmp_path / "s").exists()


def test_the_customer_side_runs_on_a_disk_state(tmp_path: Path) -> None:
    memory, disk = CustomerSide({}), CustomerSide(DiskState(tmp_path / "c"), cache_size=0)
    for n in range(1, 5):
        link = OrderLink(
            f"o-{n}",
            1,
            {
                "placed": True,
                "customer_id": "c-1",
                "currency": "EUR",
                "amount_paid": f"{n}.00",
                "placed_at": f"2026-01-0{n}",
            },
        )
        assert memory.apply_link(link).state == disk.apply_link(link).state
    assert disk.order_ids("c-1", 4) == memory.order_ids("c-1", 4) == [f"o-{n}" for n in range(1, 5)]
    state = disk.state("c-1")
    assert state is not None and state.view()["lifetime_value"] == {"EUR": "10.00"}


def test_written_values_are_held_then_written_in_one_batch(tmp_path: Path) -> None:
    state = DiskState(tmp_path / "w", write_back=3)
    state["a"] = [1]
    state["b"] = {"x": 2}
    assert state._db.get(b'"a"') is None  # held, not encoded yet
    assert state["a"] == [1] and state.get("b") == {"x": 2}
    state["a"] = [1, 2]  # a key written again is encoded once
    assert state._db.get(b'"a"') is None
    state["c"] = None
    assert state._db.get(b'"a"') == b"[1,2]"  # the third key held: all written at once
    state["d"] = "held"
    assert sorted(state) == ["a", "b", "c", "d"] and len(state) == 4
    del state["d"]
    assert "d" not in state
    state["e"] = 5
    state.close()
    again = DiskState(tmp_path / "w")
    assert again["e"] == 5 and again["a"] == [1, 2] and again.get("c", "default") is None
    again.destroy()
