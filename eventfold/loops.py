"""The event loop of the long-running stream processes: uvloop where it is installed.

The processor and the projection worker spend much of their time in the event loop's
own machinery (transports, futures, callbacks) between Kafka, FerretDB and Redis;
uvloop does that work in C, as the APIs already get it from ``uvicorn[standard]``.
Measured on the benchmark's catch-up (4 alternated runs each): the processor used
2.83 to 3.14 CPU-s against 2.81 to 3.33 on asyncio's loop (medians 2.99 and 3.19). A
platform without the wheel (uvloop does not build on Windows) runs on asyncio's loop.
"""

from __future__ import annotations

import asyncio
import importlib.util

UVLOOP = "uvloop"


def uvloop_installed() -> bool:
    return importlib.util.find_spec(UVLOOP) is not None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop: uvloop's when installed, asyncio's otherwise."""
    if uvloop_installed():
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def faust_loop_env(env: dict[str, str]) -> dict[str, str]:
    """The environment a Faust worker picks its loop from (``F_LOOP``, read when the
    ``faust`` package is imported): uvloop when installed, unless the user chose one."""
    if "F_LOOP" in env or not uvloop_installed():
        return env
    return {**env, "F_LOOP": UVLOOP}
