"""What every benchmark shares: figures as ratios, interleaved timing, round-trip counters.

A figure is reported next to a reference measured in the same run, on the same
machine, interleaved with it (A, B, A, B, ...), so that a busy neighbour slows
both about equally and the ratio stays meaningful when the absolute numbers
do not. ``ratio`` is always "fraction of the reference": value / reference for
throughputs, reference / value for latencies; a ceiling gives ratios <= ~1
(higher is better), a baseline (a slower alternative) gives ratios > 1.
"""

from __future__ import annotations

import gc
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pymongo import monitoring
from redis.asyncio import Redis

Kind = Literal["ceiling", "baseline"]
Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Figure:
    """One measured figure and the reference it is read against."""

    name: str
    value: float
    unit: str
    reference: float
    reference_name: str
    kind: Kind = "ceiling"
    better: Better = "higher"
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.value <= 0 or self.reference <= 0:
            return 0.0
        if self.better == "higher":
            return self.value / self.reference
        return self.reference / self.value

    def line(self) -> str:
        return (
            f"{self.name:<34} {_number(self.value):>10} {self.unit:<9}"
            f" {self.kind} {_number(self.reference):>10}  ({self.reference_name})"
            f"  ratio {self.ratio:.3f}"
        )

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "ratio": round(self.ratio, 4)}, default=str)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


class Report:
    """Collects the figures of the session; printed at the end and written as JSON lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.figures: list[Figure] = []

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(f"\n[bench] {figure.line()}", flush=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(figure.as_json() + "\n")
        return figure


# --- timing ----------------------------------------------------------------------------------


@contextmanager
def no_gc() -> Iterator[None]:
    """As timeit does: no collector pauses inside a timed CPU loop."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def best_cpu_rates(contenders: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, interleaved; each returns how many items it
    processed. Returns items per CPU second of this process (so: per core) per round."""
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            with no_gc():
                start = time.process_time()
                items = run()
                spent = time.process_time() - start
            rates[name].append(items / spent if spent > 0 else math.inf)
    return rates


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted samples."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- round trips ---------------------------------------------------------------------------


def command_shape(event: monitoring.CommandStartedEvent) -> str:
    """``find orders_v2 {_id,_rev}``-style label: the command, its collection and the
    fields its filter names."""
    command, name = event.command, event.command_name
    target = command.get(name)
    label = f"{name} {target}" if isinstance(target, str) else name
    query: Any = None
    if name == "find":
        query = command.get("filter")
    elif name in ("update", "delete"):
        query = (command.get(f"{name}s") or [{}])[0].get("q")
    elif name in ("findAndModify", "count"):
        query = command.get("query")
    if isinstance(query, dict):
        return f"{label} {{{','.join(sorted(query))}}}"
    return label


class _MongoCommands(monitoring.CommandListener):
    """Counts and times the commands MongoDB clients send while a counter is active."""

    def __init__(self) -> None:
        self.active: RoundTrips | None = None
        self._shapes: dict[int, tuple[RoundTrips, str]] = {}

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.active is not None:
            self.active.mongo[event.command_name] += 1
            self._shapes[event.request_id] = (self.active, command_shape(event))

    def _done(
        self,
        event: monitoring.CommandSucceededEvent | monitoring.CommandFailedEvent,
    ) -> None:
        counted = self._shapes.pop(event.request_id, None)
        if counted is not None:
            trips, shape = counted
            trips.mongo_shapes[shape] += 1
            trips.mongo_us[shape] += event.duration_micros

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self._done(event)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._done(event)


_MONGO = _MongoCommands()
# Process-wide (pymongo's documented way): applies to every client created after this
# import, i.e. every client of the benchmark session. Inactive unless a counter is.
monitoring.register(_MONGO)


@dataclass
class RoundTrips:
    """Commands sent to MongoDB (from pymongo's command monitoring, with their time by
    filter shape) and to Redis (from the instrumented client) while ``counting()``."""

    mongo: Counter[str] = field(default_factory=Counter)
    redis: Counter[str] = field(default_factory=Counter)
    mongo_shapes: Counter[str] = field(default_factory=Counter)
    mongo_us: Counter[str] = field(default_factory=Counter)

    @contextmanager
    def counting(self) -> Iterator[None]:
        previous, _MONGO.active = _MONGO.active, self
        _REDIS_ACTIVE.append(self)
        try:
            yield
        finally:
            _REDIS_ACTIVE.pop()
            _MONGO.active = previous

    def per(self, n: int) -> dict[str, Any]:
        """Per-item averages: totals, the breakdown by command, and MongoDB's time (ms per
        item) by command shape, costliest first."""
        return {
            "mongo": round(sum(self.mongo.values()) / n, 2),
            "redis": round(sum(self.redis.values()) / n, 2),
            "mongo_by_command": {k: round(v / n, 2) for k, v in self.mongo.most_common()},
            "redis_by_command": {k: round(v / n, 2) for k, v in self.redis.most_common()},
            "mongo_ms_by_shape": {
                shape: {
                    "calls": round(self.mongo_shapes[shape] / n, 2),
                    "ms": round(us / n / 1000, 2),
                    "ms_per_call": round(us / self.mongo_shapes[shape] / 1000, 2),
                }
                for shape, us in self.mongo_us.most_common()
            },
        }


_REDIS_ACTIVE: list[RoundTrips] = []


def count_redis_commands(client: Redis) -> Redis:
    """Make ``client`` report each command it sends (scripts, locks and all go through
    ``execute_command``) to the active ``RoundTrips``. Returns the client."""
    send = client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        if _REDIS_ACTIVE:
            _REDIS_ACTIVE[-1].redis[str(args[0]).upper()] += 1
        return await send(*args, **options)

    client.execute_command = counted  # type: ignore[method-assign]
    return client
