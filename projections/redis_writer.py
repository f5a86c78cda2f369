"""Redis side of the read models: the order hot cache, the order aggregates (counts by
status, revenue per day and currency, lifetime value per customer and currency, ranked:
the top-customers leaderboard), and per-partition checkpoints.

The aggregates are rows (``projections.api.Rows``, in the layout of
``projection_store.RedisRows``) that each order contributes (``order_fold.order_rows``).
One Lua script replaces each order's contribution guarded by the order's revision
(``OrderState.revision``: its fact count, then the customer offset of its
enrichment): the old rows are subtracted and the new ones added atomically, and only
when the revision is newer than the one Redis holds. A redelivery, a crash between the
MongoDB write and this call, or a replay therefore never counts an event twice (an equal
revision is a no-op). Amounts are integer 1e-4 units, so sums stay exact (HINCRBY); a
ranking holds each group's sum as a double, as a projection's rankings do.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from projections.projection_store import RANK_LUA
from projections.read_models import ReadModels

_APPLY_ORDERS = (
    RANK_LUA
    + """
local groups, ranks = KEYS[1], KEYS[2]
local rows_prefix, rank_prefix = ARGV[1], ARGV[2]
local ranked = {}
for _, m in ipairs(cjson.decode(ARGV[3])) do ranked[m] = true end
local function is_ranked(m)
  if ranked[m] then return true end
  local family = string.match(m, '^([^|]*)|')
  return family ~= nil and ranked[family] == true
end
local function neg(v) if string.sub(v, 1, 1) == '-' then return string.sub(v, 2) end return '-' .. v end
local written, new_groups, ranked_written, new_ranks = {}, {}, {}, {}
local applied = 0
for i = 3, #KEYS do
  local order_key, a = KEYS[i], 3 + (i - 3) * 5
  local facts, customer = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 5])
  local held = redis.call('HMGET', order_key, 'facts', 'customer', 'rows')
  local held_facts, held_customer = tonumber(held[1] or '-1'), tonumber(held[2] or '-2')
  if facts > held_facts or (facts == held_facts and customer > held_customer) then
    local new = cjson.decode(ARGV[a + 2])
    local old = {}
    if held[3] then old = cjson.decode(held[3]) end
    local sums = {}
    local function add(group, measure, value)
      local total = redis.call('HINCRBY', rows_prefix .. group, measure, value)
      sums[group .. '\0' .. measure] = {group, measure, total}
    end
    for group, row in pairs(old) do
      local now = new[group] or {}
      for measure, value in pairs(row) do
        if now[measure] ~= value then add(group, measure, neg(value)) end
      end
    end
    for group, row in pairs(new) do
      local before = old[group] or {}
      for measure, value in pairs(row) do
        if before[measure] ~= value then add(group, measure, value) end
      end
    end
    for _, s in pairs(sums) do
      local group, measure, total = s[1], s[2], s[3]
      if total == 0 then
        redis.call('HDEL', rows_prefix .. group, measure)
      elseif not written[group] then
        written[group] = true
        table.insert(new_groups, group)
      end
      if is_ranked(measure) then
        if not ranked_written[measure] then
          ranked_written[measure] = true
          table.insert(new_ranks, measure)
        end
        set_rank(rank_prefix, measure, group, total)
      end
    end
    redis.call('HSET', order_key, 'facts', ARGV[a + 1], 'customer', ARGV[a + 5], 'rows', ARGV[a + 2], 'view', ARGV[a + 3])
    redis.call('PUBLISH', ARGV[a + 4], ARGV[a + 3])
    applied = applied + 1
  end
end
for i = 1, #new_groups, 500 do
  redis.call('SADD', groups, unpack(new_groups, i, math.min(i + 499, #new_groups)))
end
if #new_ranks > 0 then redis.call('SADD', ranks, unpack(new_ranks)) end
return applied
"""
)
"""Applies the rows of many orders (``RedisWriter.apply_orders``), each on its own
exactly as one call per order would: a script call carries up to ``ORDERS_PER_CALL`` of
them. The values travel as decimal strings (Lua numbers are doubles; HINCRBY takes the
exact integers); a measure whose value an order does not change is not touched."""

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
class OrderRows:
    """One order's Redis update: its rows and view at a revision."""

    order_id: str
    revision: tuple[int, int]
    rows: Mapping[str, Mapping[str, int]]
    view_json: str


def _as_strings(rows: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, str]]:
    """Values as decimal strings: Lua numbers are doubles, HINCRBY wants exact integers."""
    return {group: {m: str(v) for m, v in row.items()} for group, row in rows.items()}


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
        self,
        pipe: Pipeline,
        models: ReadModels,
        orders: Sequence[OrderRows],
        ranked: Collection[str],
    ) -> None:
        """Queue the replacement of each order's rows in ``models``' version (measures
        named in ``ranked``, or of a family named there, kept ranked); the script leaves
        an order alone when Redis already holds its revision or a newer one."""
        layout = models.aggregates
        ranked_json = orjson.dumps(sorted(ranked)).decode()
        for start in range(0, len(orders), ORDERS_PER_CALL):
            chunk = orders[start : start + ORDERS_PER_CALL]
            keys = [layout.groups_key, layout.ranks_key]
            args: list[Any] = [layout.rows_prefix, layout.rank_prefix, ranked_json]
            for order in chunk:
                keys.append(models.order_key(order.order_id))
                args += (
                    order.revision[0],
                    orjson.dumps(_as_strings(order.rows)).decode(),
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
