"""The console's rebuild runner: one at a time, progress from its thread, and an abort
that cancels the rebuild and drops its partial version. The rebuild itself (the
command line's) is replaced by a step that waits to be cancelled; no servers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from eventfold.settings import Settings
from projections.read_models import Stores
from query_api.admin_rebuilds import Progress, RebuildBusy, RebuildRunner, Step, plan
from tests.conftest import eventually


class Held(RebuildRunner):
    """A runner whose steps report some progress, then (unless ``finish``) wait until
    they are cancelled."""

    def __init__(self, finish: bool) -> None:
        super().__init__(Settings(auth_disabled=True))
        self.finish = finish
        self.dropped: list[list[str]] = []
        self.dropping = threading.Event()  # set: the drop returns

    async def _step(self, stores: Stores, progress: Progress, step: Step) -> None:
        step.records, step.total, progress.records, progress.total = 5, 10, 5, 10
        if not self.finish:
            await asyncio.Event().wait()  # until the abort cancels it
        step.version = "v9"

    async def _drop_partial(self, stores: Stores, step: Step) -> None:
        await asyncio.to_thread(self.dropping.wait, 10.0)
        self.dropped.append(step.projections)


async def test_abort_cancels_the_rebuild_and_drops_its_version() -> None:
    runner = Held(finish=False)
    progress = runner.start([Step(["orders", "customers", "redis"])], "k-op…", "corr-1")

    async def reported() -> int:
        return progress.records

    await eventually(reported, lambda n: n == 5, within_s=10.0)
    assert runner.running and progress.steps[0].state == "running"
    with pytest.raises(RebuildBusy):
        runner.start([Step(["orders"])], "k-op…", "corr-2")
    assert runner.abort()

    async def state() -> str:
        return progress.state

    # while the partial version is being dropped, it says so, and that nothing switched
    await eventually(state, lambda s: s == "aborted", within_s=10.0)
    assert "nothing switched" in progress.message and runner.dropped == []
    runner.dropping.set()
    await asyncio.to_thread(runner.wait_stopped, 10.0)
    assert progress.state == "aborted" and progress.steps[0].state == "aborted"
    assert progress.message == "the partial version was dropped; nothing switched"
    assert runner.dropped == [["orders", "customers", "redis"]]
    assert progress.finished_at is not None and not runner.running
    assert not runner.abort()  # nothing runs any more


class DropFails(Held):
    async def _drop_partial(self, stores: Stores, step: Step) -> None:
        raise ConnectionError("FerretDB went away")


async def test_an_abort_whose_drop_fails_says_so() -> None:
    runner = DropFails(finish=False)
    progress = runner.start([Step(["orders"])], "k-op…", "corr-4")

    async def reported() -> int:
        return progress.records

    await eventually(reported, lambda n: n == 5, within_s=10.0)
    assert runner.abort()
    await asyncio.to_thread(runner.wait_stopped, 10.0)
    assert progress.state == "aborted" and not runner.running
    assert progress.message.startswith("nothing switched; the partial version could not be")
    assert "FerretDB went away" in progress.message and "eventfold drop" in progress.message
    assert progress.finished_at is not None


async def test_steps_run_in_order_and_the_last_switch_ends_it() -> None:
    runner = Held(finish=True)
    progress = runner.start([Step(["orders"]), Step(["sku_sales"])], "k-op…", "corr-3")
    await asyncio.to_thread(runner.wait_stopped, 10.0)
    assert progress.state == "switched", progress.message
    assert [s.state for s in progress.steps] == ["switched", "switched"]
    assert "orders: v9 active" in progress.message and runner.dropped == []


def test_plan_puts_the_core_read_models_in_one_step_and_refuses_unknown_names() -> None:
    steps = plan(["redis", "orders", "sku_sales"])
    assert [s.projections for s in steps] == [["orders", "redis"], ["sku_sales"]]
    everything = [s.projections for s in plan([])]
    assert everything[0] == ["orders", "customers", "redis"] and ["sku_sales"] in everything
    with pytest.raises(ValueError, match="unknown projection"):
        plan(["nope"])
