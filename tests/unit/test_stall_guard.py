"""The stall guard: holes before a record are read and handed over first, and a partition
left behind while the worker is idle is resumed and sought back (no Kafka: fakes only)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import NamedTuple

import pytest

from eventfold.settings import Settings
from stream_processors import stall_guard as stall_guard_module
from stream_processors.records import Record
from stream_processors.stall_guard import StallGuard


class TP(NamedTuple):
    topic: str
    partition: int


ORDERS = TP("orders", 0)
ORDERS_1 = TP("orders", 1)
CUSTOMERS = TP("customers", 0)
CHANGELOG = TP("eventfold-processor-orders-changelog", 0)
ASSIGNOR = TP("eventfold-processor-__assignor-__leader", 0)


class FakeConsumer:
    """The parts of Faust's consumer the guard uses, recording what it is asked to do."""

    def __init__(self) -> None:
        self._committed_offset: dict[TP, int | None] = {}
        self.assigned: set[TP] = set()
        self.ends: dict[TP, int] = {}
        self.positions: dict[TP, int] = {}
        self.highwater_calls: list[tuple[TP, ...]] = []
        self.seeks: list[tuple[TP, int]] = []
        self.resumed: list[set[TP]] = []
        self.failing_seeks: set[TP] = set()
        self.on_highwaters: Callable[[], None] | None = None

    def assignment(self) -> set[TP]:
        return set(self.assigned)

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        self.highwater_calls.append(tps)
        if self.on_highwaters is not None:
            self.on_highwaters()
        return {tp: self.ends[tp] for tp in tps if tp in self.ends}

    async def position(self, tp: TP) -> int:
        return self.positions.get(tp, 0)

    async def seek(self, tp: TP, offset: int) -> None:
        if tp in self.failing_seeks:
            raise RuntimeError(f"cannot seek {tp}")
        self.seeks.append((tp, offset))

    def resume_partitions(self, tps: set[TP]) -> None:
        self.resumed.append(set(tps))


class FakeFlowControl:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class FakeApp:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()
        self.in_recovery = False
        self.rebalancing = False
        self.flow_control = FakeFlowControl()
        self.tables = SimpleNamespace(changelog_topics={CHANGELOG.topic})


class FakeLog:
    """Stands in for the guard's own consumer: every offset holds a record unless removed."""

    def __init__(self) -> None:
        self.reads: list[tuple[TP, int, int]] = []
        self.compacted: set[tuple[TP, int]] = set()

    async def read(self, tp: TP, start: int, end: int) -> list[Record]:
        self.reads.append((tp, start, end))
        return [
            record(tp, offset) for offset in range(start, end) if (tp, offset) not in self.compacted
        ]


def record(tp: TP, offset: int) -> Record:
    return Record(tp.topic, tp.partition, offset, b"k", b"v%d" % offset, [])


class Handler:
    def __init__(self) -> None:
        self.handled: list[tuple[str, int, int]] = []

    async def handle(self, r: Record) -> bool:
        self.handled.append((r.topic, r.partition, r.offset))
        return True


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


Seen = Callable[[TP, int], Awaitable[None]]


@pytest.fixture
def app() -> FakeApp:
    return FakeApp()


@pytest.fixture
def kafka_log() -> FakeLog:
    return FakeLog()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Frozen time for the guard only (the event loop keeps the real clock)."""
    fake = Clock()
    monkeypatch.setattr(stall_guard_module, "time", fake)
    return fake


def make_guard(
    app: FakeApp, kafka_log: FakeLog, monkeypatch: pytest.MonkeyPatch, idle_s: float = 0.0
) -> StallGuard:
    guard = StallGuard(app, Settings(), idle_s=idle_s)
    monkeypatch.setattr(guard, "_read", kafka_log.read)
    return guard


@pytest.fixture
def guard(app: FakeApp, kafka_log: FakeLog, monkeypatch: pytest.MonkeyPatch) -> StallGuard:
    return make_guard(app, kafka_log, monkeypatch)


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def seen(guard: StallGuard, handler: Handler) -> Seen:
    """What the agent loop does: the guard first, then the record itself."""

    async def see(tp: TP, offset: int) -> None:
        await guard.seen(tp, offset, handler.handle)
        handler.handled.append(("agent", tp.partition, offset))
        guard.done()

    return see


def agent(tp: TP, *offsets: int) -> list[tuple[str, int, int]]:
    return [("agent", tp.partition, o) for o in offsets]


def filled(tp: TP, *offsets: int) -> list[tuple[str, int, int]]:
    return [(tp.topic, tp.partition, o) for o in offsets]


# --- seen(): holes before a record ---------------------------------------------------------


async def test_contiguous_records_are_not_read_again(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = 3
    for offset in (3, 4, 5, 6):
        await seen(ORDERS, offset)
    assert kafka_log.reads == []
    assert handler.handled == agent(ORDERS, 3, 4, 5, 6)
    assert guard.filled == 0


async def test_a_hole_is_handed_to_the_handler_in_order_before_the_record(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = 10
    await seen(ORDERS, 10)
    await seen(ORDERS, 14)
    assert kafka_log.reads == [(ORDERS, 11, 14)]
    assert handler.handled == agent(ORDERS, 10) + filled(ORDERS, 11, 12, 13) + agent(ORDERS, 14)
    assert guard.filled == 3

    await seen(ORDERS, 15)  # the watermark moved past 14: nothing missing before 15
    assert kafka_log.reads == [(ORDERS, 11, 14)]
    assert handler.handled[-1:] == agent(ORDERS, 15)
    assert guard.filled == 3


async def test_records_compacted_away_in_a_hole_are_skipped(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = 0
    kafka_log.compacted = {(ORDERS, 1), (ORDERS, 3)}
    await seen(ORDERS, 5)
    assert kafka_log.reads == [(ORDERS, 0, 5)]
    assert handler.handled == filled(ORDERS, 0, 2, 4) + agent(ORDERS, 5)
    assert guard.filled == 3
    await seen(ORDERS, 6)
    assert len(kafka_log.reads) == 1


async def test_a_redelivered_lower_offset_reads_nothing_and_keeps_the_watermark(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = 0
    for offset in range(6):
        await seen(ORDERS, offset)
    await seen(ORDERS, 2)  # redelivered after a seek back
    await seen(ORDERS, 3)
    await seen(ORDERS, 6)  # the watermark is still 6, not 4
    assert kafka_log.reads == []
    assert guard.filled == 0
    assert handler.handled == agent(ORDERS, 0, 1, 2, 3, 4, 5, 2, 3, 6)


async def test_partitions_have_their_own_watermarks(
    app: FakeApp, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset.update({ORDERS: 0, ORDERS_1: 0, CUSTOMERS: 5})
    await seen(ORDERS, 0)
    await seen(ORDERS, 1)
    await seen(ORDERS_1, 0)
    await seen(CUSTOMERS, 5)
    await seen(ORDERS_1, 2)
    assert kafka_log.reads == [(ORDERS_1, 1, 2)]
    assert filled(ORDERS_1, 1) == [h for h in handler.handled if h[0] != "agent"]


async def test_a_committed_offset_of_none_counts_as_zero(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = None  # Faust keeps None for a committed 0
    await seen(ORDERS, 0)
    assert kafka_log.reads == []

    await seen(CUSTOMERS, 3)  # nothing committed at all: baseline 0 as well
    assert kafka_log.reads == [(CUSTOMERS, 0, 3)]
    assert handler.handled[1:] == filled(CUSTOMERS, 0, 1, 2) + agent(CUSTOMERS, 3)


async def test_a_first_record_above_the_committed_offset_is_a_hole(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset.update({ORDERS: 7, ORDERS_1: 7})
    await seen(ORDERS, 9)
    assert kafka_log.reads == [(ORDERS, 7, 9)]
    assert handler.handled == filled(ORDERS, 7, 8) + agent(ORDERS, 9)

    await seen(ORDERS_1, 7)  # exactly the committed offset: no hole
    assert kafka_log.reads == [(ORDERS, 7, 9)]


async def test_a_first_record_below_the_committed_offset_reads_nothing(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = 7
    await seen(ORDERS, 5)
    await seen(ORDERS, 7)  # the watermark is the committed 7, not 6
    assert kafka_log.reads == []


async def test_reset_makes_the_committed_offset_the_baseline_again(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, handler: Handler, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = 0
    for offset in range(10):
        await seen(ORDERS, offset)
    app.consumer._committed_offset[ORDERS] = 4  # reassigned: another worker committed 4
    guard.reset()
    await seen(ORDERS, 6)
    assert kafka_log.reads == [(ORDERS, 4, 6)]
    assert handler.handled[-3:] == filled(ORDERS, 4, 5) + agent(ORDERS, 6)


async def test_without_reset_the_old_watermark_stays(
    app: FakeApp, guard: StallGuard, kafka_log: FakeLog, seen: Seen
) -> None:
    app.consumer._committed_offset[ORDERS] = 0
    for offset in range(10):
        await seen(ORDERS, offset)
    app.consumer._committed_offset[ORDERS] = 4
    await seen(ORDERS, 6)
    assert kafka_log.reads == []


# --- check(): partitions left behind while idle --------------------------------------------


def stalled_orders(app: FakeApp, committed: int | None = 5, end: int = 8) -> None:
    app.consumer.assigned.add(ORDERS)
    app.consumer._committed_offset[ORDERS] = committed
    app.consumer.ends[ORDERS] = end


async def test_a_partition_is_flagged_on_the_second_idle_check_then_resumed_and_sought(
    app: FakeApp, guard: StallGuard
) -> None:
    stalled_orders(app)
    await guard.check()
    assert app.consumer.seeks == []
    assert app.consumer.resumed == []
    await guard.check()
    assert app.consumer.resumed == [{ORDERS}]
    assert app.consumer.seeks == [(ORDERS, 5)]
    assert guard.rereads == 1

    await guard.check()  # flagged again only after two more checks
    assert app.consumer.seeks == [(ORDERS, 5)]
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 5), (ORDERS, 5)]
    assert guard.rereads == 2


async def test_the_seek_goes_to_the_watermark_not_the_committed_offset(
    app: FakeApp, guard: StallGuard, seen: Seen
) -> None:
    stalled_orders(app, committed=2, end=20)
    await seen(ORDERS, 2)
    await seen(ORDERS, 3)
    await guard.check()
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 4)]


async def test_a_none_committed_offset_seeks_to_zero(app: FakeApp, guard: StallGuard) -> None:
    stalled_orders(app, committed=None, end=3)
    await guard.check()
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 0)]


async def test_a_watermark_that_moved_between_checks_is_not_stalled(
    app: FakeApp, guard: StallGuard, seen: Seen
) -> None:
    stalled_orders(app, committed=5, end=20)
    await guard.check()
    await seen(ORDERS, 5)  # progress: the watermark is 6 now
    await guard.check()
    assert app.consumer.seeks == []
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 6)]


@pytest.mark.parametrize("end", [5, 4, None])
async def test_nothing_happens_when_the_end_is_not_past_the_baseline(
    app: FakeApp, guard: StallGuard, end: int | None
) -> None:
    stalled_orders(app, committed=5)
    if end is None:
        del app.consumer.ends[ORDERS]  # no end known for it
    else:
        app.consumer.ends[ORDERS] = end
    for _ in range(3):
        await guard.check()
    assert len(app.consumer.highwater_calls) == 3
    assert app.consumer.seeks == []
    assert app.consumer.resumed == []
    assert guard.rereads == 0


async def test_nothing_happens_when_the_end_equals_the_watermark(
    app: FakeApp, guard: StallGuard, seen: Seen
) -> None:
    stalled_orders(app, committed=2, end=5)  # behind the committed offset ...
    for offset in range(2, 5):
        await seen(ORDERS, offset)  # ... but processed up to the end
    for _ in range(3):
        await guard.check()
    assert app.consumer.seeks == []
    assert app.consumer.resumed == []


async def test_changelog_and_assignor_topics_are_ignored(app: FakeApp, guard: StallGuard) -> None:
    stalled_orders(app)
    for tp in (CHANGELOG, ASSIGNOR):
        app.consumer.assigned.add(tp)
        app.consumer._committed_offset[tp] = 0
        app.consumer.ends[tp] = 10
    await guard.check()
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 5)]
    assert app.consumer.resumed == [{ORDERS}]
    assert all(tps == (ORDERS,) for tps in app.consumer.highwater_calls)


async def test_only_ignored_topics_assigned_asks_for_no_ends(
    app: FakeApp, guard: StallGuard
) -> None:
    app.consumer.assigned.update({CHANGELOG, ASSIGNOR})
    app.consumer.ends.update({CHANGELOG: 10, ASSIGNOR: 10})
    await guard.check()
    await guard.check()
    assert app.consumer.highwater_calls == []
    assert app.consumer.seeks == []


async def test_several_stalled_partitions_are_resumed_together(
    app: FakeApp, guard: StallGuard
) -> None:
    stalled_orders(app)
    app.consumer.assigned.update({ORDERS_1, CUSTOMERS})
    app.consumer._committed_offset.update({ORDERS_1: 1, CUSTOMERS: 4})
    app.consumer.ends.update({ORDERS_1: 9, CUSTOMERS: 4})  # customers is caught up
    await guard.check()
    await guard.check()
    assert app.consumer.resumed == [{ORDERS, ORDERS_1}]
    assert sorted(app.consumer.seeks) == [(ORDERS, 5), (ORDERS_1, 1)]


def in_recovery(app: FakeApp) -> None:
    app.in_recovery = True


def rebalancing(app: FakeApp) -> None:
    app.rebalancing = True


def flow_stopped(app: FakeApp) -> None:
    app.flow_control.active = False


@pytest.mark.parametrize("not_quiet", [in_recovery, rebalancing, flow_stopped])
async def test_nothing_happens_while_the_worker_is_not_quiet(
    app: FakeApp, guard: StallGuard, not_quiet: Callable[[FakeApp], None]
) -> None:
    stalled_orders(app)
    not_quiet(app)
    for _ in range(3):
        await guard.check()
    assert app.consumer.highwater_calls == []
    assert app.consumer.seeks == []
    assert app.consumer.resumed == []


@pytest.mark.parametrize("not_quiet", [in_recovery, rebalancing, flow_stopped])
async def test_a_check_that_is_not_quiet_starts_the_count_again(
    app: FakeApp, guard: StallGuard, not_quiet: Callable[[FakeApp], None]
) -> None:
    stalled_orders(app)
    await guard.check()
    not_quiet(app)
    await guard.check()
    app.in_recovery = app.rebalancing = False
    app.flow_control.active = True
    await guard.check()
    assert app.consumer.seeks == []
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 5)]


@pytest.mark.parametrize("not_quiet", [in_recovery, rebalancing, flow_stopped])
async def test_no_seek_when_the_worker_stops_being_quiet_during_the_check(
    app: FakeApp, guard: StallGuard, not_quiet: Callable[[FakeApp], None]
) -> None:
    stalled_orders(app)
    await guard.check()
    app.consumer.on_highwaters = lambda: not_quiet(app)
    await guard.check()
    assert len(app.consumer.highwater_calls) == 2
    assert app.consumer.seeks == []
    assert app.consumer.resumed == []


async def test_nothing_happens_while_records_keep_arriving(
    app: FakeApp,
    kafka_log: FakeLog,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    handler: Handler,
) -> None:
    guard = make_guard(app, kafka_log, monkeypatch, idle_s=5.0)
    stalled_orders(app, committed=5, end=100)
    for offset in range(5, 10):
        clock.now += 2.0
        await guard.seen(ORDERS, offset, handler.handle)
        guard.done()
        await guard.check()
        clock.now += 2.5
        await guard.check()
    assert app.consumer.highwater_calls == []
    assert app.consumer.seeks == []

    clock.now += 2.5  # 5 s since the last record: idle now
    await guard.check()
    assert app.consumer.seeks == []
    clock.now += 3.0
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 10)]


async def test_a_record_between_idle_checks_starts_the_count_again(
    app: FakeApp,
    kafka_log: FakeLog,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    handler: Handler,
) -> None:
    guard = make_guard(app, kafka_log, monkeypatch, idle_s=5.0)
    stalled_orders(app, committed=5, end=100)
    clock.now += 5.0
    await guard.check()  # idle: suspect at 5
    await guard.seen(ORDERS, 3, handler.handle)  # a redelivery: the watermark stays 5
    guard.done()
    await guard.check()  # busy: forgets the suspect
    clock.now += 5.0
    await guard.check()
    assert app.consumer.seeks == []
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 5)]


async def test_reset_forgets_the_suspects(app: FakeApp, guard: StallGuard) -> None:
    stalled_orders(app)
    await guard.check()
    guard.reset()
    await guard.check()
    assert app.consumer.seeks == []
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 5)]


async def test_a_seek_that_fails_is_logged_and_the_others_still_happen(
    app: FakeApp, guard: StallGuard, caplog: pytest.LogCaptureFixture
) -> None:
    stalled_orders(app)
    app.consumer.assigned.add(ORDERS_1)
    app.consumer._committed_offset[ORDERS_1] = 1
    app.consumer.ends[ORDERS_1] = 9
    app.consumer.failing_seeks = {ORDERS}
    await guard.check()
    with caplog.at_level(logging.WARNING, logger=stall_guard_module.__name__):
        await guard.check()  # does not raise
    assert app.consumer.seeks == [(ORDERS_1, 1)]
    assert guard.rereads == 1
    failures = [r for r in caplog.records if r.getMessage().startswith("could not seek")]
    assert len(failures) == 1
    assert "cannot seek" in failures[0].getMessage()
    assert failures[0].levelno == logging.WARNING


async def test_a_record_still_being_handled_keeps_the_worker_busy(
    app: FakeApp,
    guard: StallGuard,
    handler: Handler,
) -> None:
    """Idle time alone is not quiet: a record in flight (seen, not done) blocks checks."""
    app.consumer.assigned = {ORDERS}
    app.consumer.ends = {ORDERS: 9}
    await guard.seen(ORDERS, 0, handler.handle)
    await guard.check()
    await guard.check()
    assert app.consumer.seeks == []
    guard.done()
    await guard.check()
    await guard.check()
    assert app.consumer.seeks == [(ORDERS, 1)]


async def test_a_check_that_cannot_reach_kafka_does_not_raise(
    app: FakeApp,
    guard: StallGuard,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The check runs in a Faust timer: an exception there would stop the worker."""
    app.consumer.assigned = {ORDERS}

    async def unavailable(*tps: TP) -> dict[TP, int]:
        raise TimeoutError("Failed to get offsets by times in 90000 ms")

    app.consumer.highwaters = unavailable  # type: ignore[method-assign]
    with caplog.at_level("WARNING"):
        await guard.check()
    assert "stall check skipped" in caplog.text
    assert app.consumer.seeks == []
