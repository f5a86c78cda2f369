"""Fixtures of the benchmark suite: real servers of its own, per-benchmark isolation
(own topics, database, Redis keys; ``settings`` is the test suite's), the demo
events and the report.

The servers are the project's stack (``stack/stack.sh``) in a folder and on ports
of their own (``.stack/bench``, 2xxxx), not the test session's (``.stack/test``):
a test run going on at the same time (the end-to-end fault tests stop and restart
their servers) must neither break a benchmark nor load the servers it measures.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from functools import cache
from typing import Any

import pytest

from benchmarks.measure import Report, count_redis_commands
from eventfold.settings import Settings
from producers.demo import generate
from projections.read_models import Stores
from tests.conftest import settings  # noqa: F401  (fixture; uses the ``servers`` below)
from tests.support.stack import ROOT, StackPorts, stack

SEED = 20260105
# Below Linux's ephemeral range (32768-60999), where a probe of a closed port can
# connect to itself and a client's outgoing connection can take a server's port.
BENCH_PORTS = {
    "KAFKA_PORT": "29192",
    "KAFKA_CONTROLLER_PORT": "29193",
    "KAFKA_SASL_PORT": "29194",
    "MONGO_PORT": "27117",
    "FERRETDB_DEBUG_PORT": "28189",
    "REDIS_PORT": "26479",
}
BENCH_STACK_ENV = {
    "EVENTFOLD_STACK_DIR": str(ROOT / ".stack" / "bench"),
    **{
        f"EVENTFOLD_{name}": os.environ.get(f"EVENTFOLD_BENCH_{name}", default)
        for name, default in BENCH_PORTS.items()
    },
}
_REPORT: Report | None = None


@pytest.fixture(scope="session")
def servers() -> Iterator[StackPorts]:
    """Kafka, FerretDB and Redis for the benchmarks, started once per session unless
    already running (then reused and left running); stopped by their recorded pids
    afterwards unless ``EVENTFOLD_BENCH_KEEP_STACK`` is set."""
    status = stack("status", extra_env=BENCH_STACK_ENV).stdout
    started_here = not all(f"{n}: running" in status for n in ("redis", "ferretdb", "kafka"))
    if started_here:
        result = stack("up", extra_env=BENCH_STACK_ENV, check=False)
        if result.returncode != 0:
            pytest.fail(f"could not start the benchmark stack:\n{result.stderr}")
    yield StackPorts(
        int(BENCH_STACK_ENV["EVENTFOLD_KAFKA_PORT"]),
        int(BENCH_STACK_ENV["EVENTFOLD_MONGO_PORT"]),
        int(BENCH_STACK_ENV["EVENTFOLD_REDIS_PORT"]),
    )
    if started_here and not os.environ.get("EVENTFOLD_BENCH_KEEP_STACK"):
        stack("down", extra_env=BENCH_STACK_ENV)


def scaled(n: int) -> int:
    """``n`` times ``EVENTFOLD_BENCH_SCALE`` (default 1): larger runs on a quiet machine."""
    return max(1, round(n * float(os.environ.get("EVENTFOLD_BENCH_SCALE", "1"))))


@cache
def demo_envelopes(orders: int) -> tuple[dict[str, Any], ...]:
    """The demo stream of ``orders`` orders (customers, orders, payments), publish order."""
    return tuple(generate(SEED, orders))


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Report]:
    """Where every benchmark puts its figures: printed, and appended as JSON lines to
    ``bench-results.jsonl`` in pytest's temporary directory (never into the repository)."""
    global _REPORT
    _REPORT = Report(tmp_path_factory.getbasetemp() / "bench-results.jsonl")
    yield _REPORT


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _REPORT is None or not _REPORT.figures:
        return
    terminalreporter.section("benchmark figures (ratio = fraction of the reference)")
    terminalreporter.write_line(f"{'name':<34} {'value':>10} {'unit':<9} reference")
    for figure in _REPORT.figures:
        terminalreporter.write_line(figure.line())
    terminalreporter.write_line(f"JSON lines: {_REPORT.path}")


@pytest.fixture
async def stores(settings: Settings) -> AsyncIterator[Stores]:  # noqa: F811
    """Connections for one benchmark, Redis commands counted; its database and Redis
    keys are removed afterwards."""
    s = Stores(settings)
    count_redis_commands(s.redis)
    yield s
    await s.mongo.drop_database(settings.mongo_db)
    keys = [k async for k in s.redis.scan_iter(match=f"{settings.redis_prefix}*", count=1000)]
    for i in range(0, len(keys), 1000):
        await s.redis.delete(*keys[i : i + 1000])
    await s.close()
