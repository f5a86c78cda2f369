"""Read-your-writes: wait (bounded) until the active read models applied a token's positions."""

from __future__ import annotations

import asyncio
import time

from eventfold.consistency import Positions
from projections.read_models import ReadModels

POLL_INTERVAL_S = 0.02


def missing_positions(positions: Positions, applied: dict[str, str]) -> list[str]:
    """The ``topic:partition`` marks still below the token's offsets."""
    return [
        f"{topic}:{partition}"
        for topic, parts in positions.items()
        for partition, offset in parts.items()
        if int(applied.get(f"{topic}:{partition}", -1)) < offset
    ]


async def wait_for_positions(
    models: ReadModels, positions: Positions, timeout_s: float
) -> list[str]:
    """Returns [] once applied, or the partitions still behind when the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        applied = await models.hash("checkpoints")
        missing = missing_positions(positions, applied)
        if not missing or time.monotonic() >= deadline:
            return missing
        await asyncio.sleep(POLL_INTERVAL_S)
