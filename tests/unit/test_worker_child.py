"""The projection worker as the processor holds it (``worker_child.Child``): released
with one line on its stdin, and watched from the event loop (a pidfd) until it exits,
however it exits."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from stream_processors.worker_child import GO, Child

ECHO_ONE_LINE = "import sys; sys.stdout.write(sys.stdin.readline())"


def child(code: str) -> Child:
    popen = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    return Child(popen)


async def test_a_released_child_reads_go_and_its_exit_is_seen() -> None:
    c = child(ECHO_ONE_LINE)
    waiting = asyncio.ensure_future(c.wait())
    await asyncio.sleep(0.2)
    assert not waiting.done() and c.returncode is None  # waiting for its go
    c.release()
    assert await asyncio.wait_for(waiting, timeout=60) == 0
    assert c._popen.stdout is not None and c._popen.stdout.read() == GO


async def test_a_killed_child_is_seen_by_every_waiter() -> None:
    c = child("import time; time.sleep(60)")
    first, second = asyncio.ensure_future(c.wait()), asyncio.ensure_future(c.wait())
    await asyncio.sleep(0.1)
    c.kill()
    codes = await asyncio.wait_for(asyncio.gather(first, second), timeout=60)
    assert codes == [-signal.SIGKILL, -signal.SIGKILL]
    assert await c.wait() == -signal.SIGKILL  # and after, at once


async def test_releasing_a_dead_child_is_harmless() -> None:
    c = child("pass")
    assert await asyncio.wait_for(c.wait(), timeout=60) == 0
    c.release()  # its pipe is closed: the watch says it died, not this
    c.terminate()
    assert c.returncode == 0
