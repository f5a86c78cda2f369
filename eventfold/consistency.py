"""Consistency tokens: the Kafka positions a write produced, for read-your-writes.

The producer returns one after Kafka acknowledged a batch; a query carrying it
waits until the projections have applied every position in it. The token is
opaque to clients: url-safe base64 of a compact JSON map
``{logical_topic: {partition: offset}}`` holding the highest offset per partition.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping

Positions = dict[str, dict[int, int]]


class InvalidConsistencyToken(ValueError):
    """The token was not produced by this platform (or was damaged in transit)."""


def merge_positions(positions: Iterable[tuple[str, int, int]]) -> Positions:
    """Highest offset per (topic, partition)."""
    merged: Positions = {}
    for topic, partition, offset in positions:
        parts = merged.setdefault(topic, {})
        parts[partition] = max(offset, parts.get(partition, -1))
    return merged


def encode_token(positions: Mapping[str, Mapping[int, int]]) -> str:
    body = {
        topic: {str(p): o for p, o in sorted(parts.items())}
        for topic, parts in sorted(positions.items())
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> Positions:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise TypeError("not an object")
        return {
            str(topic): {int(p): int(o) for p, o in parts.items()} for topic, parts in body.items()
        }
    except (
        binascii.Error,
        ValueError,
        TypeError,
        AttributeError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise InvalidConsistencyToken(f"invalid consistency token: {exc}") from exc
