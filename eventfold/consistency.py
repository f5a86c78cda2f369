"""Consistency tokens: the Kafka positions a write produced, for read-your-writes.

The producer returns one after Kafka acknowledged a batch; a query carrying it
waits until the projections have applied every position in it, and answers an
error instead if one of its records was dead-lettered. The token is opaque to
clients: url-safe base64 of a compact JSON map
``{logical_topic: {partition: [[first, last], ...]}}``, the runs of consecutive
offsets its records took per partition (a batch's records of one partition are
usually one run). Tokens of the earlier layout, ``{partition: offset}`` (the
highest offset alone), are still read: as a run of that one offset.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping

Positions = dict[str, dict[int, int]]
"""The highest offset per topic and partition: what the read models must have applied."""
Runs = dict[str, dict[int, list[tuple[int, int]]]]
"""The runs ``(first, last)`` of offsets a token's records took, per topic and partition."""


class InvalidConsistencyToken(ValueError):
    """The token was not produced by this platform (or was damaged in transit)."""


def runs_of(positions: Iterable[tuple[str, int, int]]) -> Runs:
    """The runs of consecutive offsets among ``positions`` (topic, partition, offset)."""
    offsets: dict[tuple[str, int], set[int]] = {}
    for topic, partition, offset in positions:
        offsets.setdefault((topic, partition), set()).add(offset)
    runs: Runs = {}
    for (topic, partition), taken in sorted(offsets.items()):
        found: list[tuple[int, int]] = []
        for offset in sorted(taken):
            if found and found[-1][1] == offset - 1:
                found[-1] = (found[-1][0], offset)
            else:
                found.append((offset, offset))
        runs.setdefault(topic, {})[partition] = found
    return runs


def highest(runs: Runs) -> Positions:
    return {topic: {p: r[-1][1] for p, r in parts.items()} for topic, parts in runs.items()}


def token_of(positions: Iterable[tuple[str, int, int]]) -> str:
    """The token of the records at ``positions`` (topic, partition, offset)."""
    runs = runs_of(positions)
    body = {
        topic: {str(p): [list(run) for run in r] for p, r in sorted(parts.items())}
        for topic, parts in runs.items()
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def encode_token(positions: Mapping[str, Mapping[int, int]]) -> str:
    """A token of the earlier layout: the highest offset per partition alone."""
    body = {
        topic: {str(p): o for p, o in sorted(parts.items())}
        for topic, parts in sorted(positions.items())
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> Positions:
    """The highest offset per partition a token names."""
    return highest(decode_token_runs(token))


def _runs(value: object) -> list[tuple[int, int]]:
    if isinstance(value, list):
        runs = [(int(first), int(last)) for first, last in value]
        if not runs or any(first > last for first, last in runs):
            raise ValueError("malformed offset runs")
        return sorted(runs)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("an offset is an integer")
    return [(value, value)]


def decode_token_runs(token: str) -> Runs:
    """The runs of offsets a token names (one of the earlier layout: its highest ones)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise TypeError("not an object")
        return {
            str(topic): {int(p): _runs(value) for p, value in parts.items()}
            for topic, parts in body.items()
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
