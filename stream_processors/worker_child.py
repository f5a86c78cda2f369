"""The projection worker as the processor holds it: a child process, started as early as
the processor's command can (``start_early``, before Faust is even imported), released
once the processor has created the topics, watched until it exits.

Started early, the child loads the projections and their libraries (about 0.7 s of one
core) while the processor imports Faust and starts it, on the machine's other core,
instead of during the processor's first batches. It is a ``subprocess.Popen`` rather
than an asyncio subprocess because no event loop runs yet when it starts; the
processor's loop later watches it through a pidfd. Nothing heavy is imported here: this
module is loaded before the processor's own libraries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys

PARENT_ENV = "EVENTFOLD_PROJECTIONS_PARENT_PID"
"""Set in the child's environment: the processor's pid (the child dies with it)."""
GO = b"go\n"
"""What the processor writes to the child's stdin once the topics exist."""
MODULE = "stream_processors.projection_worker"

_early: Child | None = None


class Child:
    """A started projection worker, waiting for ``release``."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen

    @classmethod
    def start(cls) -> Child:
        """Start ``python -m stream_processors.projection_worker`` as a child of this
        process, with its environment and its output (the processor's log)."""
        return cls(
            subprocess.Popen(
                [sys.executable, "-m", MODULE],
                env={**os.environ, PARENT_ENV: str(os.getpid())},
                stdin=subprocess.PIPE,
            )
        )

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def release(self) -> None:
        """Let it start reading (one line on its stdin: a pipe's buffer takes it at
        once). A child that died meanwhile is the watch's business."""
        stdin = self._popen.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):
            stdin.write(GO)
            stdin.flush()

    async def wait(self) -> int:
        """Its exit code, once it exits, without blocking the event loop."""
        code = self._popen.poll()
        if code is not None:
            return code
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except ProcessLookupError:  # reaped meanwhile by another wait
            return self._popen.wait()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:  # the pidfd is readable once the child has exited
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return self._popen.wait()  # it exited: this reaps it at once

    def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.terminate()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._popen.kill()


def start_early() -> None:
    """Start the worker now, for the processor to take when it starts
    (``stream_processors.worker``, before it imports Faust)."""
    global _early
    if _early is None:
        _early = Child.start()


def take() -> Child:
    """The worker started early, or one started now (a processor run without the
    processor's command)."""
    global _early
    child, _early = _early, None
    return child if child is not None else Child.start()
