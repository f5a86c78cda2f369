"""Issue 10's side-by-side benchmark (``benchmarks.stream_speed``) on the benchmark stack:
writes ``bench/results/latest.json`` and prints its table. Long: every phase has its
own scale knob and time limit (``EVENTFOLD_BENCH_*``, see benchmarks/README.md), so
pytest's per-test timeout is off here."""

from __future__ import annotations

import pytest

from benchmarks.stream_speed import Knobs, run
from benchmarks.table import render
from tests.support.stack import StackPorts


@pytest.mark.timeout(0)
async def test_read_side_at_stream_speed(servers: StackPorts) -> None:
    results = await run(servers, Knobs())
    print("\n" + render(results.as_dict()), flush=True)
    assert not results.errors, results.errors
