"""The processor's command: ``python -m stream_processors.worker [faust worker options]``.

It runs ``faust -A stream_processors.app worker --without-web`` with the given options,
on uvloop when installed (``eventfold.loops``; ``F_LOOP`` chooses another), and under
jemalloc when the machine has it (Debian's ``libjemalloc2``; ``make provision``
installs it) and ``EVENTFOLD_PROCESSOR_ALLOCATOR`` is ``jemalloc`` (the default).

Why the allocator: a worker's live Python objects stay under about 70 MB (measured with
tracemalloc while it caught up), but its RSS grew to several times that under glibc's
malloc. The consumer thread, RocksDB's threads and the event loop each allocate from an
arena of their own, and the batches' short-lived buffers (fetched records, BSON, packed
join records) leave those arenas fragmented and their pages held. jemalloc returns
unused pages on a timer (``MALLOC_CONF`` below); measured with 40,000 orders of state in
one run each: 349 MB under glibc, 271 MB under jemalloc. RocksDB's own docs recommend
it for the same reason.

The library is preloaded by re-executing this module once with ``LD_PRELOAD`` set; a
machine without it runs on glibc's malloc and says so in the log.
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from collections.abc import Sequence

from eventfold.loops import faust_loop_env
from eventfold.settings import Settings
from stream_processors import worker_child

log = logging.getLogger(__name__)

JEMALLOC = "jemalloc"
MALLOC_CONF = "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0"
"""Unused pages go back to the system within about a second, from jemalloc's own thread
rather than from the allocating ones."""
FAUST_WORKER = ("-A", "stream_processors.app", "worker", "--without-web")


def jemalloc_library() -> str | None:
    """The jemalloc shared library's name as the dynamic loader finds it, or None."""
    return ctypes.util.find_library(JEMALLOC)


def preload_env(env: dict[str, str], library: str) -> dict[str, str] | None:
    """The environment to re-execute with so that ``library`` is preloaded, or None when
    it already is (the re-executed process, or a user's own ``LD_PRELOAD``)."""
    preloaded = env.get("LD_PRELOAD", "")
    if library in preloaded.split(":") or JEMALLOC in preloaded:
        return None
    return {
        **env,
        "LD_PRELOAD": ":".join(p for p in (library, preloaded) if p),
        "MALLOC_CONF": env.get("MALLOC_CONF", MALLOC_CONF),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if Settings().processor_allocator == JEMALLOC:
        library = jemalloc_library()
        if library is None:
            logging.basicConfig()
            log.warning("jemalloc not found (Debian: libjemalloc2): running on glibc's malloc")
        else:
            env = preload_env(dict(os.environ), library)
            if env is not None:
                os.execve(
                    sys.executable,
                    [sys.executable, "-m", "stream_processors.worker", *args],
                    env,
                )
    # the projection worker loads on the other core while this process imports Faust
    worker_child.start_early()
    # before faust is imported: it installs the loop named there when imported
    os.environ.update(faust_loop_env(dict(os.environ)))
    from faust.cli.faust import cli

    cli.main(args=[*FAUST_WORKER, *args], prog_name="faust")


if __name__ == "__main__":
    main()
