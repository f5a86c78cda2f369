"""The batch processor's tables: what a batch wrote comes out once per key, encoded once,
to the partition its key belongs to, in the order last written; the local copy keeps
it and the changelog offsets reached across a reopen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from projections.joins import customer_key, order_index_key, order_summary_key
from stream_processors.batch_processor import customer_of
from stream_processors.changelog_table import ChangelogRecord, ChangelogTable
from stream_processors.outbox import partition_of

PARTITIONS = 6


def table(path: Path) -> ChangelogTable:
    return ChangelogTable(path, "app-customer-state-changelog", PARTITIONS, customer_of)


def test_a_batch_s_writes_come_out_once_per_key_in_the_order_last_written(
    tmp_path: Path,
) -> None:
    t = table(tmp_path / "t")
    t[customer_key("c-1")] = {"n": 1}
    t[order_summary_key("c-2", "o-1")] = {"total": "1.00"}
    t[customer_key("c-1")] = {"n": 2}  # written again: once, after the summary

    records = t.take().records

    assert [(orjson.loads(k), orjson.loads(v or b"null")) for _, k, v in records] == [
        (["order", "c-2", "o-1"], {"total": "1.00"}),
        ("c-1", {"n": 2}),
    ]
    assert [p for p, _, _ in records] == [
        partition_of("c-2", PARTITIONS),
        partition_of("c-1", PARTITIONS),
    ]
    assert t.take().records == []  # taken: the next batch starts empty
    assert t[customer_key("c-1")] == {"n": 2}  # and kept locally


def test_every_key_of_a_customer_goes_to_the_customer_s_partition(tmp_path: Path) -> None:
    t = table(tmp_path / "t")
    keys = [customer_key("c-9"), order_summary_key("c-9", "o-3"), order_index_key("c-9", 2)]
    for key in keys:
        t[key] = [1]
    assert {p for p, _, _ in t.take().records} == {partition_of("c-9", PARTITIONS)}


def test_held_writes_are_read_back_before_they_are_taken(tmp_path: Path) -> None:
    t = table(tmp_path / "t")
    t["c-1"] = {"n": 1}
    assert t.get("c-1") == {"n": 1} and t.pending == 1
    del t["c-1"]
    assert t.get("c-1") is None and "c-1" not in t
    [(_, key, value)] = t.take().records
    assert orjson.loads(key) == "c-1" and value is None  # a tombstone for the changelog
    with pytest.raises(KeyError):
        del t["c-1"]


def test_a_reopened_table_has_what_was_taken_and_the_offsets_reached(tmp_path: Path) -> None:
    t = table(tmp_path / "t")
    t["c-1"] = {"n": 1}
    t.take()
    t.sent(3, 42)
    t.sent(3, 41)  # acked late
    t["c-2"] = {"n": 2}  # never taken: neither in the changelog nor kept
    t.close()

    again = table(tmp_path / "t")
    assert again.get("c-1") == {"n": 1}
    assert again.get("c-2") is None
    assert again.offsets == {3: 42}
    assert list(again) == ["c-1"] and len(again) == 1
    again.close()


def test_a_table_in_order_keeps_every_write_in_the_order_written(tmp_path: Path) -> None:
    """The customer side's steps write several keys in an order a redelivery relies on:
    a partition whose last values do not fit in one producer batch gets every write, so
    that whatever prefix of them a crash keeps is a prefix of its steps."""
    t = ChangelogTable(tmp_path / "t", "changelog", PARTITIONS, customer_of, in_order=True)
    t[order_index_key("c-1", 0)] = ["o-1"]
    t[customer_key("c-1")] = {"orders": 1}
    t[order_summary_key("c-1", "o-1")] = {"facts": 1}
    t[order_index_key("c-1", 0)] = ["o-1", "o-2"]
    t[customer_key("c-1")] = {"orders": 2}
    t[customer_key("c-2")] = {"orders": 1}

    changes = t.take()

    def decoded(records: list[ChangelogRecord]) -> list[tuple[Any, Any]]:
        return [(orjson.loads(k), orjson.loads(v or b"null")) for _, k, v in records]

    c1, c2 = partition_of("c-1", PARTITIONS), partition_of("c-2", PARTITIONS)
    assert c1 != c2
    assert decoded(changes.records) == [  # each key once, in the order last written
        (["order", "c-1", "o-1"], {"facts": 1}),
        (["orders", "c-1", 0], ["o-1", "o-2"]),
        ("c-1", {"orders": 2}),
        ("c-2", {"orders": 1}),
    ]
    assert decoded(changes.every(c1) or []) == [
        (["orders", "c-1", 0], ["o-1"]),
        ("c-1", {"orders": 1}),
        (["order", "c-1", "o-1"], {"facts": 1}),
        (["orders", "c-1", 0], ["o-1", "o-2"]),
        ("c-1", {"orders": 2}),
    ]
    assert decoded(changes.every(c2) or []) == [("c-2", {"orders": 1})]
    assert t[customer_key("c-1")] == {"orders": 2} and t.pending == 0


def test_a_coalescing_table_keeps_last_values_only(tmp_path: Path) -> None:
    t = table(tmp_path / "t")
    t["c-1"] = {"n": 1}
    t["c-1"] = {"n": 2}
    changes = t.take()
    assert changes.every(partition_of("c-1", PARTITIONS)) is None
    assert [orjson.loads(v or b"null") for _, _, v in changes.records] == [{"n": 2}]
