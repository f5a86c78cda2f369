"""A batch's messages and table changelogs are sent whatever else its write meets: the
records of a batch that fails for good are applied again one by one, find their states
kept, and send nothing again (``projections.projector.FoldedBatch``)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest

from projections.projector import BatchWriter, FoldedBatch


class FailingWriter(BatchWriter):
    """Fails before it awaits what the batch sends (a view that cannot be computed)."""

    async def flush(self, before_marks: Awaitable[Any] | None = None) -> None:
        raise ValueError("a state that cannot be shown")


async def test_the_sends_complete_when_the_write_fails_before_awaiting_them() -> None:
    sent: list[str] = []

    async def send() -> None:
        sent.append("changelog and join records")

    with pytest.raises(ValueError, match="cannot be shown"):
        await FoldedBatch(FailingWriter(), send).write()
    assert sent == ["changelog and join records"]


async def test_a_failed_send_is_what_the_write_raises_so_it_is_retried() -> None:
    async def send() -> None:
        raise ConnectionError("Kafka unavailable")

    with pytest.raises(ConnectionError):  # a dependency unavailable: the write is retried
        await FoldedBatch(FailingWriter(), send).write()
