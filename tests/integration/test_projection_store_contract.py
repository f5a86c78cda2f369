"""The ProjectionStore contract, run against both adapters: the in-memory one and Redis
(the session's server; the settings' key prefix keeps each test to itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from eventfold.settings import Settings
from projections.engine import Entity, Extreme, RowsDict
from projections.projection_store import (
    MemoryProjectionStore,
    ProjectionStore,
    RedisProjectionStore,
    Snapshot,
)

MakeStore = Callable[[str, str], ProjectionStore]
G1 = "SKU-1|2026-03-01"  # group keys as the built-ins make them
G2 = "SKU-2|2026-03-01"
BIG = 2**53 + 1  # beyond a double's exact integers: counted exactly
FAR = 10**12 + 7  # an offset of a long-lived partition


def entity(n: int, rows: dict[str, dict[str, int]] | None = None) -> Entity:
    return Entity.of({"n": n, "note": "é|\"'"}, rows or {}, None, [f"e-{n}"])


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    """Makes stores (projection name, version) of one adapter."""
    if request.param == "memory":
        yield lambda name, version: MemoryProjectionStore(version)
        return
    settings: Settings = request.getfixturevalue("settings")
    redis: Redis = Redis.from_url(settings.redis_uri, decode_responses=True)
    made: list[RedisProjectionStore] = []

    def make(name: str, version: str) -> ProjectionStore:
        store = RedisProjectionStore(redis, settings.redis_prefix, name, version)
        made.append(store)
        return store

    try:
        yield make
    finally:
        for store in made:
            await store.drop()
        await redis.aclose()


@pytest.fixture
def store(make_store: MakeStore) -> ProjectionStore:
    return make_store("contract", "v1")


async def everything(store: ProjectionStore) -> tuple[Any, ...]:
    """What every read of the store says."""
    snapshot = await store.snapshot()
    groups = await store.groups()
    return (
        snapshot,
        await store.marks(),
        groups,
        await store.rows(groups),
        await store.load([*sorted(snapshot.entities), "o-unknown"]),
    )


async def test_a_new_store_is_empty(store: ProjectionStore) -> None:
    assert store.version == "v1"
    assert await store.marks() == {}
    assert await store.groups() == []
    assert await store.rows([G1]) == [{}]
    assert await store.rows([]) == []
    assert await store.load(["o-1"]) == {"o-1": None}
    assert await store.load([]) == {}
    assert await store.snapshot() == Snapshot({}, {}, {})


async def test_a_write_on_the_expected_marks_applies_and_raises_them(
    store: ProjectionStore,
) -> None:
    first = entity(1, {G1: {"units": 2}})
    assert await store.write({"o-1": first}, {G1: {"units": 2}}, {"orders:0": 4}, {"orders:0": -1})
    assert await store.marks() == {"orders:0": 4}
    assert await store.load(["o-1", "o-2"]) == {"o-1": first, "o-2": None}

    # the next batch: one partition seen before, one new; an entity replaced, one added
    second, third = entity(2, {G1: {"units": 5}}), entity(3)
    assert await store.write(
        {"o-1": second, "o-2": third},
        {G1: {"units": 3}},
        {"orders:0": 9, "payments:0": FAR},
        {"orders:0": 4, "payments:0": -1},
    )
    assert await store.marks() == {"orders:0": 9, "payments:0": FAR}
    assert await store.load(["o-1", "o-2"]) == {"o-1": second, "o-2": third}
    assert await store.rows([G1]) == [{"units": 5}]

    # a batch that changes no entity and no row still raises its marks
    assert await store.write({}, {}, {"orders:0": 12}, {"orders:0": 9})
    assert await store.marks() == {"orders:0": 12, "payments:0": FAR}


@pytest.mark.parametrize(
    "stale",
    [
        {"orders:0": -1},  # the partition was written since
        {"orders:0": 3},  # an older mark
        {"orders:0": 5},  # a mark it never had
        {"orders:0": 4, "payments:0": 0},  # one holds, the other does not
        {"orders:1": 4},  # another partition's mark expected where there is none
    ],
)
async def test_a_write_on_stale_marks_writes_nothing(
    store: ProjectionStore, stale: dict[str, int]
) -> None:
    assert await store.write(
        {"o-1": entity(1, {G1: {"units": 2}})},
        {G1: {"units": 2}},
        {"orders:0": 4},
        {"orders:0": -1},
    )
    before = await everything(store)

    assert not await store.write(
        {"o-1": entity(7), "o-9": entity(9)},
        {G1: {"units": -2}, G2: {"units": 1}},
        {"orders:0": 8, "payments:0": 3, "orders:1": 5},
        stale,
    )
    assert await everything(store) == before
    assert before[1] == {"orders:0": 4}


async def test_row_deltas_sum_and_a_measure_summing_to_zero_disappears(
    store: ProjectionStore,
) -> None:
    marks = iter(range(100))

    async def add(deltas: dict[str, dict[str, int]]) -> None:
        mark = next(marks)
        assert await store.write({}, deltas, {"orders:0": mark}, {"orders:0": mark - 1})

    await add({G1: {"units": 3, "orders": 1, "revenue:EUR": BIG}})
    await add({G1: {"units": 4, "revenue:EUR": BIG}, G2: {"units": 1}})
    assert await store.rows([G1, G2]) == [
        {"units": 7, "orders": 1, "revenue:EUR": 2 * BIG},
        {"units": 1},
    ]

    await add({G1: {"units": -7, "revenue:EUR": -BIG}})
    assert await store.rows([G1, G2]) == [{"orders": 1, "revenue:EUR": BIG}, {"units": 1}]

    await add({G1: {"orders": -1, "revenue:EUR": -BIG}, G2: {"units": -3}})
    assert await store.rows([G1, G2]) == [{}, {"units": -2}]  # a difference may go below 0
    snapshot = await store.snapshot()
    assert snapshot.rows == {G2: {"units": -2}}  # an empty group is left out
    assert await store.groups() == [G1, G2]  # the groups ever written


async def test_every_read_agrees(store: ProjectionStore) -> None:
    a, b = entity(1, {G1: {"units": 1}}), entity(2, {G1: {"units": 2}, G2: {"units": 5}})
    assert await store.write(
        {"o-1": a, "o-2": b},
        {G1: {"units": 3}, G2: {"units": 5}},
        {"orders:0": 0, "orders:2": 6},
        {"orders:0": -1, "orders:2": -1},
    )
    assert await store.write(
        {"o-1": entity(3)}, {G1: {"units": -1}}, {"orders:0": 1}, {"orders:0": 0}
    )

    snapshot, marks, groups, rows, loaded = await everything(store)
    assert snapshot.marks == marks == {"orders:0": 1, "orders:2": 6}
    assert groups == [G1, G2]
    assert snapshot.rows == {g: r for g, r in zip(groups, rows, strict=True) if r}
    assert snapshot.rows == {G1: {"units": 2}, G2: {"units": 5}}
    assert loaded == {**snapshot.entities, "o-unknown": None}
    assert snapshot.entities == {"o-1": entity(3), "o-2": b}
    assert snapshot.entities["o-2"].doc["state"] == {"n": 2, "note": "é|\"'"}


async def test_ranked_measures_rank_their_groups_highest_first(store: ProjectionStore) -> None:
    marks = iter(range(100))

    async def add(deltas: dict[str, dict[str, int]], ranked: tuple[str, ...]) -> None:
        mark = next(marks)
        assert await store.write({}, deltas, {"orders:0": mark}, {"orders:0": mark - 1}, ranked)

    c1, c2, c3 = "c-1", "c-2", "c-3"
    await add({c1: {"points": 5, "orders": 1}, c2: {"points": 9, "orders": 1}}, ("points",))
    await add({c3: {"points": 5, "orders": 2}}, ("points",))
    assert await store.top("points", 10) == [(c2, 9), (c3, 5), (c1, 5)]  # ties: c3 before c1
    assert await store.top("points", 2) == [(c2, 9), (c3, 5)]
    assert await store.top("orders", 10) == []  # written, but never ranked

    # a change moves the group; a value back at 0 leaves the ranking, as it leaves the row
    await add({c1: {"points": 10}, c2: {"points": -9}}, ("points",))
    assert await store.top("points", 10) == [(c1, 15), (c3, 5)]
    assert await store.rows([c2]) == [{"orders": 1}]

    # a negative value ranks below the others; an exact big value is read back exactly
    await add({c2: {"points": -3}, c3: {"points": BIG}}, ("points",))
    assert await store.top("points", 10) == [(c3, BIG + 5), (c1, 15), (c2, -3)]

    snapshot = await store.snapshot()
    assert snapshot.ranks == {"points": {c1: 15, c2: -3, c3: int(float(BIG + 5))}}
    assert snapshot.rows[c3] == {"points": BIG + 5, "orders": 2}


async def test_a_ranking_holds_what_was_written_ranked(store: ProjectionStore) -> None:
    """Groups written before their measure was ranked are not in the ranking (a rebuild
    puts them there), and a measure no longer ranked keeps the ranking it had."""
    assert await store.write({}, {"c-1": {"points": 3}}, {"orders:0": 0}, {"orders:0": -1})
    assert await store.write(
        {}, {"c-2": {"points": 5}}, {"orders:0": 1}, {"orders:0": 0}, ["points"]
    )
    assert await store.top("points", 10) == [("c-2", 5)]
    assert await store.write({}, {"c-2": {"points": 4}}, {"orders:0": 2}, {"orders:0": 1})
    assert await store.top("points", 10) == [("c-2", 9)]  # the row's value, read now
    assert (await store.snapshot()).ranks == {"points": {"c-2": 5}}  # not moved since
    assert await store.top("points", 0) == []
    assert await store.top("points", -1) == []


async def test_a_stale_write_ranks_nothing(store: ProjectionStore) -> None:
    assert await store.write(
        {}, {"c-1": {"points": 3}}, {"orders:0": 0}, {"orders:0": -1}, ["points"]
    )
    assert not await store.write(
        {},
        {"c-1": {"points": 4}, "c-2": {"points": 1}},
        {"orders:0": 1},
        {"orders:0": 5},
        ["points"],
    )
    assert await store.top("points", 10) == [("c-1", 3)]
    assert (await store.snapshot()).ranks == {"points": {"c-1": 3}}


async def test_a_maximum_or_minimum_is_its_entities_extreme_and_falls_back(
    store: ProjectionStore,
) -> None:
    marks = iter(range(100))

    async def add(extremes: list[Extreme], deltas: RowsDict | None = None) -> None:
        mark = next(marks)
        assert await store.write(
            {}, deltas or {}, {"orders:0": mark}, {"orders:0": mark - 1}, ["latest"], extremes
        )

    c = "c-1"
    await add(
        [
            (c, "latest", "max", "o-1", 100),
            (c, "latest", "max", "o-2", 300),
            (c, "first", "min", "o-1", 100),
            (c, "first", "min", "o-2", 300),
        ],
        {c: {"orders": 2}},
    )
    assert await store.rows([c]) == [{"orders": 2, "latest": 300, "first": 100}]
    assert await store.top("latest", 5) == [(c, 300)]

    await add([(c, "latest", "max", "o-2", None), (c, "latest", "max", "o-3", 50)])
    assert await store.rows([c]) == [{"orders": 2, "latest": 100, "first": 100}]
    assert await store.top("latest", 5) == [(c, 100)]

    await add([(c, "first", "min", "o-1", None), (c, "first", "min", "o-2", -7)])
    assert await store.rows([c]) == [{"orders": 2, "latest": 100, "first": -7}]

    await add(
        [
            (c, "latest", "max", "o-1", None),
            (c, "latest", "max", "o-3", None),
            (c, "first", "min", "o-2", None),
        ]
    )
    assert await store.rows([c]) == [{"orders": 2}]
    assert await store.top("latest", 5) == []
    snapshot = await store.snapshot()
    assert snapshot.rows == {c: {"orders": 2}}
    assert snapshot.ranks == {}
    assert await store.groups() == [c]


async def test_a_stale_write_changes_no_extreme(store: ProjectionStore) -> None:
    assert await store.write(
        {}, {}, {"orders:0": 0}, {"orders:0": -1}, (), [("c-1", "latest", "max", "o-1", 5)]
    )
    assert not await store.write(
        {}, {}, {"orders:0": 1}, {"orders:0": 3}, (), [("c-1", "latest", "max", "o-1", None)]
    )
    assert await store.rows(["c-1"]) == [{"latest": 5}]


async def test_drop_empties_the_version_alone(make_store: MakeStore) -> None:
    store, other_version, other_name = (
        make_store("contract", "v1"),
        make_store("contract", "v2"),
        make_store("contract_b", "v1"),
    )
    for s in (store, other_version, other_name):
        assert await s.write(
            {"o-1": entity(1)}, {G1: {"units": 1}}, {"orders:0": 0}, {"orders:0": -1}, ["units"]
        )
    kept = [await s.snapshot() for s in (other_version, other_name)]

    await store.drop()

    assert await store.snapshot() == Snapshot({}, {}, {})
    assert await store.marks() == {}
    assert await store.groups() == []
    assert await store.rows([G1]) == [{}]
    assert await store.load(["o-1"]) == {"o-1": None}
    assert await store.top("units", 10) == []
    assert [await s.snapshot() for s in (other_version, other_name)] == kept
    assert kept[0].ranks == {"units": {G1: 1}}

    # and a dropped version starts again from no marks
    assert await store.write({}, {G1: {"units": 2}}, {"orders:0": 0}, {"orders:0": -1})
    assert await store.rows([G1]) == [{"units": 2}]


async def test_a_second_rebuild_of_a_projection_is_refused_while_the_first_lives(
    settings: Settings,
) -> None:
    """Two rebuilds of one projection would drop each other's version: the second is
    refused while the first shows signs of life, and takes over one that died."""
    from projections.projection_store import ProjectionVersions, RebuildInProgress

    redis = Redis.from_url(settings.redis_uri, decode_responses=True)
    versions = ProjectionVersions(redis, settings.redis_prefix)
    try:
        first = await versions.begin_build("sku_sales")
        with pytest.raises(RebuildInProgress):
            await versions.begin_build("sku_sales")
        await versions.still_building("sku_sales", first)
        second = await versions.begin_build("sku_sales", stale_after_s=0.0)  # first "died"
        assert second != first
        with pytest.raises(RebuildInProgress):  # the first finds it was taken over
            await versions.still_building("sku_sales", first)
        with pytest.raises(RebuildInProgress):
            await versions.activate("sku_sales", first)
        await versions.abandon("sku_sales", first)  # drops its own version only
        assert await versions.building() == {"sku_sales": second}
        assert await versions.activate("sku_sales", second) == "v1"
        assert await versions.active_of("sku_sales") == second
        assert await versions.building() == {}
    finally:
        await redis.aclose()


async def test_a_retired_version_takes_no_write(settings: Settings) -> None:
    """A writer that has not yet seen a rebuild's switch must not bring back keys of the
    version the rebuild drops: a version's store, as ``ProjectionVersions`` hands it
    out, writes only while the version is active or being built."""
    from projections.projection_store import ProjectionVersions, VersionRetired

    redis = Redis.from_url(settings.redis_uri, decode_responses=True)
    versions = ProjectionVersions(redis, settings.redis_prefix)
    one_row = ({}, {G1: {"units": 1}}, {"orders:0": 0}, {"orders:0": -1})
    try:
        v1 = versions.store("sku_sales", "v1")  # never rebuilt: v1 is the active one
        assert await v1.write(*one_row)
        assert await v1.live_marks() == {"orders:0": 0}
        with pytest.raises(VersionRetired):  # no such version in use
            await versions.store("sku_sales", "v9").write(*one_row)

        building = await versions.begin_build("sku_sales")
        new = versions.store("sku_sales", building)
        assert await new.write(*one_row)
        assert await v1.write({}, {G1: {"units": 1}}, {"orders:0": 1}, {"orders:0": 0})

        assert await versions.activate("sku_sales", building) == "v1"
        with pytest.raises(VersionRetired):
            await v1.write({}, {G1: {"units": 1}}, {"orders:0": 2}, {"orders:0": 1})
        with pytest.raises(VersionRetired):
            await v1.live_marks()
        assert await v1.rows([G1]) == [{"units": 2}]  # as it was when retired
        await versions.drop("sku_sales", "v1")
        assert await v1.marks() == {} and await v1.rows([G1]) == [{}]
        assert [k async for k in redis.scan_iter(match=v1.prefix + "*")] == []
        assert await new.rows([G1]) == [{"units": 1}]
    finally:
        await redis.aclose()
