"""Redis side of the read models: status hot cache, counts by status, revenue per
day and currency, top-customers leaderboard, and per-partition checkpoints.

One Lua script applies each order's *absolute* contribution (from
``order_fold.redis_contribution``) guarded by the order's revision
(``OrderState.revision``: its fact count, then the customer offset of its
enrichment): the old contribution is subtracted and the new one added
atomically, and only when the revision is newer than the one Redis holds. A
redelivery, a crash between the MongoDB write and this call, or a replay
therefore never counts an event twice (an equal revision is a no-op).
Amounts are integer 1e-4 units, so counters stay exact (HINCRBY).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from projections.read_models import ReadModels

_APPLY_ORDERS = """
local counts_key, revenue_key, top_prefix = KEYS[1], KEYS[2], KEYS[3]
local function neg(v) if string.sub(v, 1, 1) == '-' then return string.sub(v, 2) end return '-' .. v end
local applied = 0
for i = 4, #KEYS do
  local order_key, a = KEYS[i], (i - 4) * 5
  local facts, customer = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 5])
  local held = redis.call('HMGET', order_key, 'facts', 'customer', 'contribution')
  local held_facts, held_customer = tonumber(held[1] or '-1'), tonumber(held[2] or '-2')
  if facts > held_facts or (facts == held_facts and customer > held_customer) then
    if held[3] then
      local old = cjson.decode(held[3])
      redis.call('HINCRBY', counts_key, old.status, -1)
      for k, v in pairs(old.revenue) do redis.call('HINCRBY', revenue_key, k, neg(v)) end
      if old.customer_id ~= cjson.null then
        for cur, v in pairs(old.ltv) do redis.call('ZINCRBY', top_prefix .. cur, neg(v), old.customer_id) end
      end
    end
    local new = cjson.decode(ARGV[a + 2])
    redis.call('HINCRBY', counts_key, new.status, 1)
    for k, v in pairs(new.revenue) do redis.call('HINCRBY', revenue_key, k, v) end
    if new.customer_id ~= cjson.null then
      for cur, v in pairs(new.ltv) do redis.call('ZINCRBY', top_prefix .. cur, v, new.customer_id) end
    end
    redis.call('HSET', order_key, 'facts', ARGV[a + 1], 'customer', ARGV[a + 5], 'contribution', ARGV[a + 2], 'status', new.status, 'view', ARGV[a + 3])
    redis.call('PUBLISH', ARGV[a + 4], ARGV[a + 3])
    applied = applied + 1
  end
end
return applied
"""
"""Applies the contributions of many orders (``RedisWriter.apply_orders``), each on its
own exactly as one call per order would: a script call carries up to
``ORDERS_PER_CALL`` of them."""

ORDERS_PER_CALL = 200
"""Orders per script call: one call per order cost the processor more (packing and
parsing a command each) than the script's work; a call of many holds Redis for its
duration (about 20 us per order), so they are cut in calls of this many."""

_RAISE_MARKS = """
for _, key in ipairs(KEYS) do
  for i = 1, #ARGV, 2 do
    local current = tonumber(redis.call('HGET', key, ARGV[i]) or '-1')
    if tonumber(ARGV[i + 1]) > current then redis.call('HSET', key, ARGV[i], ARGV[i + 1]) end
  end
end
return 1
"""


@dataclass(frozen=True)
class OrderContribution:
    """One order's Redis update: its contribution and view at a revision."""

    order_id: str
    revision: tuple[int, int]
    contribution: dict[str, Any]
    view_json: str


def _as_strings(contribution: dict[str, Any]) -> dict[str, Any]:
    """Units as decimal strings: Lua numbers are doubles, HINCRBY wants exact integers."""
    return {
        "status": contribution["status"],
        "customer_id": contribution["customer_id"],
        "revenue": {k: str(v) for k, v in contribution["revenue"].items()},
        "ltv": {k: str(v) for k, v in contribution["ltv"].items()},
    }


class RedisWriter:
    """Queues a batch's Redis updates into one pipeline: order contributions of any
    read-model version first, then the applied marks, so one round trip per batch
    (plus the script check of ``Pipeline.execute``) carries them all, in that order."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._apply_orders = redis.register_script(_APPLY_ORDERS)
        self._raise_marks = redis.register_script(_RAISE_MARKS)

    def pipeline(self) -> Pipeline:
        """Not a transaction: each script is atomic, and a batch cut short is written
        again whole (the revision guard and the marks' maximum make that harmless)."""
        return self._redis.pipeline(transaction=False)

    async def apply_orders(
        self, pipe: Pipeline, models: ReadModels, orders: Sequence[OrderContribution]
    ) -> None:
        """Queue the replacement of each order's contribution in ``models``' version; the
        script leaves an order alone when Redis already holds its revision or a newer
        one."""
        for start in range(0, len(orders), ORDERS_PER_CALL):
            chunk = orders[start : start + ORDERS_PER_CALL]
            keys = [models.status_counts_key, models.revenue_key, models.top_key("")]
            args: list[Any] = []
            for order in chunk:
                keys.append(models.order_key(order.order_id))
                args += (
                    order.revision[0],
                    orjson.dumps(_as_strings(order.contribution)).decode(),
                    order.view_json,
                    models.changes_channel(order.order_id),
                    order.revision[1],
                )
            await self._apply_orders(keys=keys, args=args, client=pipe)

    async def raise_marks(self, pipe: Pipeline, keys: list[str], marks: Mapping[str, int]) -> None:
        """Queue raising the applied-position marks (``topic:partition`` -> offset) in
        each of ``keys`` (checkpoint hashes of one version, so one slot), never lowering
        one.

        Read-your-writes waits on these marks, so they are queued only after every
        write of the records they cover (order, Redis, customer view) is done or queued
        before them in the same pipeline."""
        if marks:
            await self._raise_marks(
                keys=keys,
                args=[x for field, offset in marks.items() for x in (field, offset)],
                client=pipe,
            )
