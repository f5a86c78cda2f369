"""Read-your-writes: wait (bounded) until the active read models applied a token's positions.

Every read route takes its token the same way (``TokenHeader``, ``TokenQuery``,
``token_runs``) and waits the same way (``await_applied``), answered with
``NotYetConsistent`` or ``DeadLettered`` when it cannot be served.

A token names positions in the source topics. The processors raise a position's
mark only after everything the record caused is written or stored in Kafka; but
the join's second half runs later, from the internal topics (an order's link
to its customer, the customer block sent back to the order). So once the
token's own positions are applied, the wait goes on until the internal topics
are applied up to where they ended at that moment: first ``order-links``, then
``order-enrichment`` (which the links feed). That waits for a little more than
the token's own effects, never for less.

The versions waited on are looked up again at each poll (when given as a
callable: the query API's ``ActiveVersions.models``), so a wait that spans a
rebuild's switch goes on with the version switched to instead of waiting for
one that the processors no longer write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from aiokafka.errors import KafkaError
from fastapi import Header, Query, Request

from eventfold.consistency import InvalidConsistencyToken, Positions, Runs, decode_token_runs
from projections.read_models import ReadModels
from query_api.capacity import Capacity
from query_api.models import invalid_parameter
from schemas.catalog import INTERNAL_TOPICS

POLL_INTERVAL_S = 0.02
LastOffsetsOf = Callable[[str], Awaitable[dict[int, int]]]  # logical topic -> {partition: offset}
ModelsOf = ReadModels | Callable[[], Awaitable[ReadModels]]  # fixed, or the current ones


def missing_positions(positions: Positions, applied: dict[str, int]) -> list[str]:
    """The ``topic:partition`` marks still below the token's offsets."""
    return [
        f"{topic}:{partition}"
        for topic, parts in positions.items()
        for partition, offset in parts.items()
        if int(applied.get(f"{topic}:{partition}", -1)) < offset
    ]


async def _wait(models: ModelsOf, positions: Positions, deadline: float) -> list[str]:
    while True:
        current = models if isinstance(models, ReadModels) else await models()
        applied = await current.applied_marks()
        missing = missing_positions(positions, applied)
        if not missing or time.monotonic() >= deadline:
            return missing
        await asyncio.sleep(POLL_INTERVAL_S)


async def wait_for_positions(
    models: ModelsOf,
    positions: Positions,
    timeout_s: float,
    last_offsets: LastOffsetsOf | None = None,
) -> list[str]:
    """Returns [] once applied, or the partitions still behind when the time is up.

    Without ``last_offsets`` only the token's own positions are waited for. ``models``
    is a version to wait on, or a callable giving the active one at each poll."""
    deadline = time.monotonic() + timeout_s
    missing = await _wait(models, positions, deadline)
    if missing or last_offsets is None:
        return missing
    for topic in INTERNAL_TOPICS:  # order-links first: it feeds order-enrichment
        try:
            ends = await asyncio.wait_for(
                last_offsets(topic), max(0.0, deadline - time.monotonic())
            )
        except (TimeoutError, OSError, KafkaError) as exc:
            return [f"{topic} (its end offsets are unavailable: {type(exc).__name__})"]
        missing = await _wait(models, {topic: ends}, deadline)
        if missing:
            return missing
    return []


class NotYetConsistent(Exception):
    def __init__(self, missing: list[str]) -> None:
        self.missing = missing


class DeadLettered(Exception):
    """The token covers records the processors dead-lettered: their writes are not in the
    read models (``topic:partition@offset reason`` each)."""

    def __init__(self, letters: list[str]) -> None:
        self.letters = letters


async def await_applied(
    request: Request,
    dead_letters: Callable[[], Awaitable[list[str]]],
    applied: Callable[[], Awaitable[list[str]]],
) -> None:
    """What every read-your-writes wait does around its own ``applied`` (which returns
    the positions still behind at its deadline): it holds a place of the instance's cap
    (503 past ``EVENTFOLD_MAX_CONSISTENCY_WAITS``), and a token covering a record that
    was dead-lettered (``dead_letters``, checked before the wait and after it: it may be
    dead-lettered meanwhile) is answered with that, never with data lacking its write."""
    waits: Capacity = request.app.state.waits
    missing: list[str] = []
    with waits.hold():
        dead = await dead_letters()
        if not dead:
            missing = await applied()
            dead = await dead_letters()
    if dead:
        raise DeadLettered(dead)
    if missing:
        raise NotYetConsistent(missing)


def token_runs(x_consistency_token: str | None, consistency_token: str | None) -> Runs | None:
    """The runs of the caller's token (the header's, if both), None without one; a 422
    naming where it came from for one that is not a token."""
    token = x_consistency_token or consistency_token
    if not token:
        return None
    try:
        return decode_token_runs(token)
    except InvalidConsistencyToken as exc:
        where = (
            ("header", "x-consistency-token")
            if x_consistency_token
            else ("query", "consistency_token")
        )
        raise invalid_parameter(*where, str(exc)) from None


TokenHeader = Annotated[str | None, Header()]
TokenQuery = Annotated[str | None, Query(max_length=4096)]
