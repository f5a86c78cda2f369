"""``ReadModels.write_turn``: one write command at a time per database and process."""

from __future__ import annotations

import asyncio

from eventfold.settings import Settings
from projections.read_models import Stores


def stores(db: str) -> Stores:
    return Stores(Settings(mongo_db=db))  # clients connect on first use: none here


async def test_every_version_of_a_database_shares_one_turn() -> None:
    one = stores("turns_a")
    assert one.version("v1").write_turn() is one.version("v2").write_turn()
    assert one.version("v1").write_turn() is stores("turns_a").version("v3").write_turn()
    assert one.version("v1").write_turn() is not stores("turns_b").version("v1").write_turn()


async def test_writers_take_turns() -> None:
    turn = stores("turns_c").version("v1").write_turn()
    writing: list[int] = []
    most = 0

    async def write() -> None:
        nonlocal most
        async with turn:
            writing.append(1)
            most = max(most, len(writing))
            await asyncio.sleep(0)
            writing.pop()

    await asyncio.gather(*(write() for _ in range(5)))
    assert most == 1


def test_each_event_loop_has_its_own_turns() -> None:
    """A lock waited on in one loop cannot be used in another (the tests' loops)."""

    async def turn() -> asyncio.Lock:
        return stores("turns_d").version("v1").write_turn()

    first, second = asyncio.run(turn()), asyncio.run(turn())
    assert first is not second
