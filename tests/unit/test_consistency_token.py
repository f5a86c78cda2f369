from __future__ import annotations

import base64

import pytest

from eventfold.consistency import (
    InvalidConsistencyToken,
    decode_token,
    encode_token,
    merge_positions,
)
from query_api.consistency import missing_positions


def test_positions_keep_the_highest_offset_per_partition() -> None:
    merged = merge_positions([("orders", 1, 5), ("orders", 1, 3), ("payments", 0, 7)])
    assert merged == {"orders": {1: 5}, "payments": {0: 7}}


def test_token_round_trips() -> None:
    positions = {"orders": {0: 12, 5: 3}, "customers": {2: 0}}
    assert decode_token(encode_token(positions)) == positions


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
