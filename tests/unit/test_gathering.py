"""The buffer between an agent's stream and the applier of its batches."""

from __future__ import annotations

import asyncio

import pytest

from stream_processors.gathering import Gathering


async def never() -> None:
    await asyncio.Event().wait()


async def test_a_take_returns_everything_put_since_the_last_one_in_order() -> None:
    gathered: Gathering[int] = Gathering(10)
    applier = asyncio.ensure_future(never())
    await gathered.put([1, 2], applier)
    await gathered.put([3], applier)
    assert await gathered.take() == [1, 2, 3]
    assert len(gathered) == 0
    applier.cancel()


async def test_a_take_waits_for_the_first_record() -> None:
    gathered: Gathering[int] = Gathering(10)
    applier = asyncio.ensure_future(never())
    taking = asyncio.ensure_future(gathered.take())
    await asyncio.sleep(0)
    assert not taking.done()
    await gathered.put([7], applier)
    assert await asyncio.wait_for(taking, 1) == [7]
    applier.cancel()


async def test_records_gathered_while_a_batch_is_applied_make_the_next_batch() -> None:
    """The stream keeps handing records over while the applier works; the applier's next
    take gets all of them at once, without waiting any longer."""
    gathered: Gathering[int] = Gathering(100)
    batches: list[list[int]] = []
    applying = asyncio.Event()
    release = asyncio.Event()

    async def apply() -> None:
        while True:
            batches.append(await gathered.take())
            applying.set()
            await release.wait()
            release.clear()

    applier = asyncio.ensure_future(apply())
    await gathered.put([0], applier)
    await applying.wait()
    for i in range(1, 6):  # arrive while batch [0] is being applied
        await gathered.put([i], applier)
    applying.clear()
    release.set()
    await applying.wait()
    assert batches == [[0], [1, 2, 3, 4, 5]]
    applier.cancel()


async def test_a_put_waits_while_the_limit_is_held_and_goes_on_once_taken() -> None:
    gathered: Gathering[int] = Gathering(3)
    applier = asyncio.ensure_future(never())
    await gathered.put([1, 2, 3], applier)
    putting = asyncio.ensure_future(gathered.put([4], applier))
    await asyncio.sleep(0.01)
    assert not putting.done() and len(gathered) == 3  # the stream stops here
    assert await gathered.take() == [1, 2, 3]
    await asyncio.wait_for(putting, 1)
    assert await gathered.take() == [4]
    applier.cancel()


async def test_a_put_waiting_for_room_raises_the_error_the_applier_ended_with() -> None:
    gathered: Gathering[int] = Gathering(1)
    failing = asyncio.Event()

    async def apply() -> None:
        await failing.wait()
        raise ValueError("a bug in a fold")

    applier = asyncio.ensure_future(apply())
    await gathered.put([1], applier)
    putting = asyncio.ensure_future(gathered.put([2], applier))
    await asyncio.sleep(0.01)
    assert not putting.done()
    failing.set()
    with pytest.raises(ValueError, match="a bug in a fold"):
        await asyncio.wait_for(putting, 1)
    assert len(gathered) == 1  # nothing was added after the applier was gone


async def test_a_put_after_the_applier_ended_never_adds_records() -> None:
    gathered: Gathering[int] = Gathering(5)

    async def done() -> None:
        return None

    applier = asyncio.ensure_future(done())
    await applier
    with pytest.raises(RuntimeError, match="ended"):
        await gathered.put([1], applier)
    assert len(gathered) == 0


async def test_a_batch_is_bounded_by_the_weight_of_its_records() -> None:
    """A packed join record carries many messages: batches are cut by what they weigh,
    the oldest first, at least one record each."""
    gathered: Gathering[tuple[str, int]] = Gathering(10, weight=lambda item: item[1])
    applier = asyncio.ensure_future(never())
    putting = asyncio.ensure_future(
        gathered.put([("a", 4), ("b", 4), ("c", 4), ("d", 30), ("e", 1)], applier)
    )
    await asyncio.sleep(0.01)
    assert gathered.weight == 12  # room is checked per record
    assert await gathered.take() == [("a", 4), ("b", 4)]
    assert await gathered.take() == [("c", 4)]
    assert await gathered.take() == [("d", 30)]  # heavier than a batch: alone
    assert await gathered.take() == [("e", 1)]
    await asyncio.wait_for(putting, 1)
    assert gathered.weight == 0
    applier.cancel()


async def test_a_put_waits_while_the_weight_held_reaches_the_limit() -> None:
    gathered: Gathering[int] = Gathering(10, weight=lambda item: item)
    applier = asyncio.ensure_future(never())
    await gathered.put([6, 5], applier)  # 11: full
    putting = asyncio.ensure_future(gathered.put([1], applier))
    await asyncio.sleep(0.01)
    assert not putting.done()
    assert await gathered.take() == [6]  # 5 left: room again
    await asyncio.wait_for(putting, 1)
    assert await gathered.take() == [5, 1]
    applier.cancel()


async def test_a_put_of_many_heavy_records_holds_at_most_the_limit_and_one_record() -> None:
    """The stream hands over up to 2,000 records at once, each packed join record
    weighing up to a hundred messages: room is checked per record, not per hand-over."""
    gathered: Gathering[int] = Gathering(250, weight=lambda item: item)
    applier = asyncio.ensure_future(never())
    putting = asyncio.ensure_future(gathered.put([100] * 10, applier))
    await asyncio.sleep(0.01)
    assert not putting.done()
    assert gathered.weight == 300  # 100 + 100 (< 250, room) + 100, then it waits
    assert await gathered.take() == [100, 100]  # a take stays within the limit
    await asyncio.sleep(0.01)
    assert gathered.weight <= 250 + 100
    taken = await gathered.take()
    while not putting.done() or len(gathered):
        taken += await gathered.take()
    assert len(taken) == 8
    applier.cancel()
