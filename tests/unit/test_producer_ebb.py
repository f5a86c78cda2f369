"""An agent folds its next batch only once Faust's producer buffer has drained enough."""

from __future__ import annotations

import asyncio

from stream_processors.app import producer_ebb


class Buffer:
    """Faust's ProducerBuffer as ``producer_ebb`` sees it: a size, and an event set per
    record sent."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.message_sent = asyncio.Event()

    async def send(self, records: int) -> None:
        for _ in range(records):
            await asyncio.sleep(0)
            self.size -= 1
            self.message_sent.set()


async def test_it_returns_at_once_below_the_limit() -> None:
    await asyncio.wait_for(producer_ebb(Buffer(3), 4), 1)


async def test_it_waits_until_the_buffer_is_down_to_the_limit() -> None:
    buffer = Buffer(10)
    waiting = asyncio.ensure_future(producer_ebb(buffer, 4))
    await buffer.send(5)
    await asyncio.sleep(0)
    assert not waiting.done() and buffer.size == 5
    await buffer.send(1)
    await asyncio.wait_for(waiting, 1)
    assert buffer.size == 4
