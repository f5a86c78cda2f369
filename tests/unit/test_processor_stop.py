"""The worker's stop waits for the batch in flight a bounded time
(``stream_processors.app.stop_processor``)."""

from __future__ import annotations

import asyncio

from stream_processors.app import stop_processor


class Processor:
    """What ``stop_processor`` uses of a ``BatchProcessor``: its loop ends after the
    batch in flight, whose write takes ``write_s``."""

    def __init__(self, write_s: float) -> None:
        self.write_s = write_s
        self.stopping = asyncio.Event()
        self.closed = False
        self.cancelled = False

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        try:
            await self.stopping.wait()
            await asyncio.sleep(self.write_s)  # the batch in flight
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    async def close(self) -> None:
        self.closed = True


async def test_a_stop_waits_for_the_batch_in_flight() -> None:
    processor = Processor(write_s=0.05)
    running = asyncio.ensure_future(processor.run())
    await stop_processor(processor, running, wait_s=5.0)  # type: ignore[arg-type]
    assert running.done() and not running.cancelled()
    assert processor.closed and not processor.cancelled


async def test_a_batch_that_is_not_written_in_time_is_dropped_and_the_processor_closed() -> None:
    processor = Processor(write_s=3600.0)  # a store that does not answer
    running = asyncio.ensure_future(processor.run())
    await stop_processor(processor, running, wait_s=0.05)  # type: ignore[arg-type]
    assert running.cancelled() and processor.cancelled
    assert processor.closed
