from __future__ import annotations

import base64

import pytest

from eventfold.consistency import (
    InvalidConsistencyToken,
    decode_token,
    decode_token_runs,
    encode_token,
    highest,
    runs_of,
    token_of,
)
from query_api.consistency import missing_positions


def test_a_token_names_the_runs_of_offsets_of_its_records() -> None:
    taken = [("orders", 1, 5), ("orders", 1, 3), ("orders", 1, 4), ("orders", 1, 9)]
    runs = runs_of([*taken, ("payments", 0, 7)])
    assert runs == {"orders": {1: [(3, 5), (9, 9)]}, "payments": {0: [(7, 7)]}}
    assert highest(runs) == {"orders": {1: 9}, "payments": {0: 7}}
    token = token_of([*taken, ("payments", 0, 7)])
    assert decode_token_runs(token) == runs
    assert decode_token(token) == {"orders": {1: 9}, "payments": {0: 7}}


def test_a_token_of_the_earlier_layout_is_read_as_its_highest_offsets() -> None:
    positions = {"orders": {0: 12, 5: 3}, "customers": {2: 0}}
    assert decode_token(encode_token(positions)) == positions
    assert decode_token_runs(encode_token(positions))["orders"] == {0: [(12, 12)], 5: [(3, 3)]}


@pytest.mark.parametrize(
    "token",
    [
        "",
        "!!!",
        "bm90IGpzb24",
        "WzEsMl0",
        "eyJhIjoxfQ",
        "eyJvcmRlcnMiOnsiMCI6MWU5OTl9fQ",  # {"orders":{"0":1e999}}: an infinite offset
        base64.urlsafe_b64encode(b"[" * 3000).decode(),  # nesting deep enough to recurse out
        base64.urlsafe_b64encode(b'{"orders":{"0":[[7,5]]}}').decode(),  # a run backwards
        base64.urlsafe_b64encode(b'{"orders":{"0":[]}}').decode(),
        base64.urlsafe_b64encode(b'{"orders":{"0":"7"}}').decode(),
    ],
)
def test_damaged_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidConsistencyToken):
        decode_token(token)


def test_missing_positions_lists_partitions_still_behind() -> None:
    token = {"orders": {0: 10, 1: 4}, "payments": {0: 2}}
    applied = {"orders:0": 10, "orders:1": 3}
    assert missing_positions(token, applied) == ["orders:1", "payments:0"]
    assert missing_positions(token, {**applied, "orders:1": 4, "payments:0": 9}) == []
