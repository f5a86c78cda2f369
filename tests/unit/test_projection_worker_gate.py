"""The projection worker's start gate (``projection_worker.released``): spawned by the
processor first thing, it loads what it needs and waits for the processor's go (the
topics exist by then); a processor that closes the pipe without it lets it end."""

from __future__ import annotations

import subprocess
import sys

import pytest

WAIT = """
from eventfold.loops import new_event_loop
from stream_processors.projection_worker import released

print(new_event_loop().run_until_complete(released()))
"""


@pytest.mark.parametrize(
    ("said", "starts"),
    [(b"go\n", "True"), (b"", "False"), (b"stop\n", "False")],
)
def test_the_worker_starts_only_on_go(said: bytes, starts: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WAIT], input=said, capture_output=True, timeout=60, check=True
    )
    assert done.stdout.decode().strip() == starts


def test_the_worker_waits_while_the_pipe_is_open() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=2)  # waiting: no go yet, and the pipe is open
        child.stdin.write(b"go\n")
        child.stdin.close()
        assert child.wait(timeout=60) == 0
        assert child.stdout.read().decode().strip() == "True"
    finally:
        child.kill()
