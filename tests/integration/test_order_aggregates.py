"""The order aggregates in real Redis: each order's rows (``order_fold.order_rows``)
replaced by revision, summed into rows and rankings in a projection's layout, and read
back through the store port as the query API reads them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping

import pytest

from eventfold.settings import Settings
from projections.engine import RowsDict, rankings
from projections.order_fold import customer_group, ranked_measure
from projections.read_models import ReadModels, Stores
from projections.redis_writer import ORDERS_PER_CALL, OrderRows, RedisWriter

Rows = Mapping[str, Mapping[str, int]]


@pytest.fixture
async def models(settings: Settings) -> AsyncIterator[ReadModels]:
    stores = Stores(settings)
    version = stores.version(f"v{uuid.uuid4().hex[:6]}")
    yield version
    await version.drop()
    await stores.close()


async def apply(models: ReadModels, *orders: tuple[str, tuple[int, int], Rows]) -> None:
    writer = RedisWriter(models.redis)
    pipe = writer.pipeline()
    updates = [OrderRows(order_id, rev, rows, "{}") for order_id, rev, rows in orders]
    await writer.apply_orders(pipe, models, updates, ("ltv",))
    await pipe.execute()


def summed(*contributions: Rows) -> RowsDict:
    total: RowsDict = {}
    for rows in contributions:
        for group, row in rows.items():
            for measure, value in row.items():
                held = total.setdefault(group, {})
                held[measure] = held.get(measure, 0) + value
    return {g: kept for g, r in total.items() if (kept := {m: v for m, v in r.items() if v})}


def paid(customer: str, units: int, day: str = "2026-02-01") -> Rows:
    return {
        "status": {"paid": 1},
        "revenue": {f"{day}|EUR": units},
        customer_group(customer): {"ltv|EUR": units},
    }


async def assert_sums(models: ReadModels, *contributions: Rows) -> None:
    """The stored rows and rankings are those of the orders' latest rows, summed."""
    rows, ranks = await models.aggregates.snapshot()
    assert rows == summed(*contributions)
    assert ranks == rankings(summed(*contributions), ranked_measure)


async def test_an_order_s_new_rows_replace_its_old_ones(models: ReadModels) -> None:
    placed: Rows = {"status": {"placed": 1}}
    await apply(models, ("o-1", (1, -1), placed), ("o-2", (1, -1), placed))
    assert await models.status_counts() == {"placed": 2}
    await apply(models, ("o-1", (2, -1), paid("c-1", 200_000)))
    await assert_sums(models, paid("c-1", 200_000), placed)
    assert await models.status_counts() == {"placed": 1, "paid": 1}
    assert await models.revenue() == {"2026-02-01|EUR": 200_000}
    assert await models.top("EUR", 10) == [("c-1", 200_000)]

    refunded: Rows = {"status": {"refunded": 1}}  # its revenue and lifetime value gone
    await apply(models, ("o-1", (3, -1), refunded))
    await assert_sums(models, refunded, placed)
    assert await models.revenue() == {}
    assert await models.top("EUR", 10) == []  # left the ranking at 0, not kept there


async def test_an_older_or_equal_revision_changes_nothing(models: ReadModels) -> None:
    await apply(models, ("o-1", (3, 7), paid("c-1", 100)))
    await apply(models, ("o-1", (3, 7), paid("c-1", 999)))  # redelivered: equal
    await apply(models, ("o-1", (2, 9), paid("c-2", 999)))  # fewer facts: older
    await apply(models, ("o-1", (3, 5), paid("c-2", 999)))  # an older enrichment
    await assert_sums(models, paid("c-1", 100))
    await apply(models, ("o-1", (3, 8), paid("c-2", 100)))  # a newer enrichment: moves
    await assert_sums(models, paid("c-2", 100))
    assert await models.top("EUR", 10) == [("c-2", 100)]


async def test_customers_rank_by_lifetime_value_per_currency(models: ReadModels) -> None:
    # customer ids that look like the other groups, or hold the separator, stay customers
    customers = ("status", "revenue", "a|b", "c-1")
    orders = [
        (f"o-{i}", (1, -1), paid(c, (i + 1) * 1_000, day=f"2026-02-0{i + 1}"))
        for i, c in enumerate(customers)
    ]
    usd: Rows = {"status": {"paid": 1}, customer_group("c-1"): {"ltv|USD": 5}}
    await apply(models, *orders, ("o-usd", (1, -1), usd))
    await assert_sums(models, *(rows for _, _, rows in orders), usd)
    assert await models.top("EUR", 2) == [("c-1", 4_000), ("a|b", 3_000)]
    assert await models.top("USD", 10) == [("c-1", 5)]
    assert await models.status_counts() == {"paid": 5}


async def test_many_orders_in_one_batch_take_several_script_calls(models: ReadModels) -> None:
    orders = [
        (f"o-{i}", (1, -1), paid(f"c-{i % 7}", 10 + i)) for i in range(2 * ORDERS_PER_CALL + 3)
    ]
    await apply(models, *orders)
    await assert_sums(models, *(rows for _, _, rows in orders))
    assert await models.status_counts() == {"paid": len(orders)}
