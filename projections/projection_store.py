"""Where a projection's state lives: one port, a Redis adapter and an in-memory one.

The port owns the key layout. Per projection and version (``v1``, ``v2``, ... one per
rebuild), under ``{prefix}p:{name}:{version}:``:

* ``marks``: hash, ``topic:partition`` -> the highest offset applied;
* ``entities``: hash, entity key -> the stored entity (``engine.Entity``: state,
  rows, view and the ids of its events);
* ``rows:{group}``: hash, measure -> sum over the entities' contributions;
* ``groups``: set of the group keys ever written;
* ``rank:{measure}``: sorted set, group -> its value of the measure, for each measure
  the projection ranks (``Projection.ranked``), written with the rows; a group whose
  value returns to 0 leaves it, as it leaves the row (scores are doubles: exact up to
  2**53, beyond any money the rows count);
* ``ranks``: set of the ranked measures ever written;
* ``ext:{len(measure)}:{measure}:{group}``: sorted set, entity -> its value, for each
  measure of ``maxima`` or ``minima`` (``Projection``): the row holds the highest (or
  lowest) of them, so an entity whose value goes down (or away) leaves the next one.

A batch is one script call: it checks that the marks of the batch's partitions are
still those the batch was folded on (another worker that took the partitions over
may have moved them: then nothing is written and the caller reloads), then writes
the changed entities, adds the row differences and raises the marks, atomically.
The marks are thus the tracking record written with the state: a worker resumes a
partition from its mark, whatever Kafka's committed offsets say.

Which version is active (and being built) is kept per projection in
``{prefix}projections:active`` / ``:building``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pymongo.asynchronous.database import AsyncDatabase
from redis.asyncio import Redis
from redis.asyncio.lock import Lock

from eventfold.consistency import Runs
from projections.api import Projection
from projections.engine import Entity, Extreme, RowsDict, as_score
from projections.view_documents import MongoViewDocuments, ViewDocuments, collection_name

FIRST_VERSION = "v1"
LOCK_TTL_S = 30.0
"""A batch lock held longer than this (its writer killed) expires."""
LOCK_WAIT_S = 60.0

RANK_LUA = """
local function set_rank(rank_prefix, measure, group, value)
  if value == 0 then
    redis.call('ZREM', rank_prefix .. measure, group)
  else
    redis.call('ZADD', rank_prefix .. measure, value, group)
  end
end
"""
"""A group's place in the ranking of a measure (``RedisRows``' layout), given its row's
value: a group whose value returns to 0 leaves the ranking, as it leaves the row."""

LIVE_LUA = """
local function retired(active_key, building_key, name, version, first)
  if active_key == nil then return false end
  local active = redis.call('HGET', active_key, name) or first
  if active == version then return false end
  local building = redis.call('HGET', building_key, name)
  return not (building and string.sub(building, 1, string.len(version) + 1) == version .. '@')
end
"""
"""Whether a version is neither active nor being built (``ProjectionVersions``' hashes,
``KEYS[5]`` and ``KEYS[6]`` when given): a rebuild switched away from it, and drops it."""

_WRITE = (
    RANK_LUA
    + LIVE_LUA
    + """
local marks, entities, groups, ranks = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local rows_prefix, rank_prefix = ARGV[1], ARGV[5]
if retired(KEYS[5], KEYS[6], ARGV[9], ARGV[10], ARGV[11]) then return -1 end
for f, o in pairs(cjson.decode(ARGV[2])) do
  local cur = redis.call('HGET', marks, f)
  if cur == false then cur = -1 else cur = tonumber(cur) end
  if cur ~= o then return 0 end
end
local ranked = {}
for _, m in ipairs(cjson.decode(ARGV[6])) do
  ranked[m] = true
  redis.call('SADD', ranks, m)
end
local function rank(measure, group, value)
  if ranked[measure] then set_rank(rank_prefix, measure, group, value) end
end
local n = tonumber(ARGV[4])
local i = 12
for _ = 1, n do
  redis.call('HSET', entities, ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, tonumber(ARGV[8]) do
  local group, measure, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local entity, value = ARGV[i + 3], ARGV[i + 4]
  local values = ARGV[7] .. string.len(measure) .. ':' .. measure .. ':' .. group
  if value == '' then
    redis.call('ZREM', values, entity)
  else
    redis.call('ZADD', values, value, entity)
  end
  local top
  if kind == 'max' then
    top = redis.call('ZREVRANGE', values, 0, 0, 'WITHSCORES')
  else
    top = redis.call('ZRANGE', values, 0, 0, 'WITHSCORES')
  end
  local key = rows_prefix .. group
  if #top == 0 then
    redis.call('HDEL', key, measure)
    rank(measure, group, 0)
  else
    local best = tonumber(top[2])
    redis.call('HSET', key, measure, string.format('%d', best))
    rank(measure, group, best)
  end
  redis.call('SADD', groups, group)
  i = i + 5
end
while i <= #ARGV do
  local key = rows_prefix .. ARGV[i]
  local value = redis.call('HINCRBY', key, ARGV[i + 1], ARGV[i + 2])
  if value == 0 then
    redis.call('HDEL', key, ARGV[i + 1])
  end
  rank(ARGV[i + 1], ARGV[i], value)
  redis.call('SADD', groups, ARGV[i])
  i = i + 3
end
for f, o in pairs(cjson.decode(ARGV[3])) do
  redis.call('HSET', marks, f, string.format('%d', o))
end
return 1
"""
)


def _read_rows_lua(groups: str, ranks: str) -> str:
    """Lua reading every row and ranking of ``RedisRows``' layout into ``rows`` and
    ``ranks`` (name, flat pairs, name, ...), given the keys of the two sets."""
    return f"""
local rows, ranks = {{}}, {{}}
for _, g in ipairs(redis.call('SMEMBERS', {groups})) do
  table.insert(rows, g)
  table.insert(rows, redis.call('HGETALL', ARGV[1] .. g))
end
for _, m in ipairs(redis.call('SMEMBERS', {ranks})) do
  table.insert(ranks, m)
  table.insert(ranks, redis.call('ZRANGE', ARGV[2] .. m, 0, -1, 'WITHSCORES'))
end
"""


_LIVE_MARKS = (
    LIVE_LUA
    + """
if retired(KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3]) then return -1 end
return redis.call('HGETALL', KEYS[1])
"""
)

_SNAPSHOT = _read_rows_lua("KEYS[3]", "KEYS[4]") + (
    "return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), rows, ranks}\n"
)
_ROWS_SNAPSHOT = _read_rows_lua("KEYS[1]", "KEYS[2]") + "return {rows, ranks}\n"

_TOP = """
local out = {}
for _, g in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  table.insert(out, g)
  table.insert(out, redis.call('HGET', ARGV[1] .. g, ARGV[3]) or '0')
end
return out
"""


_SWAP = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if (held or '') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
return 1
"""

_ACTIVATE = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

REBUILD_STALE_S = 60.0
"""A rebuild of a projection shows it is alive at least this often (after each batch it
writes); an entry older than this is one that died, and a new rebuild replaces it."""


class VersionRetired(RuntimeError):
    """The version written to is neither active nor being built any more (a rebuild
    switched away from it, or took the build over): the writer follows the switch."""


class RebuildInProgress(RuntimeError):
    """Another rebuild of the projection is running (or took this one over)."""


@dataclass(frozen=True)
class Snapshot:
    """Everything a version holds, read at one instant (for ``verify``)."""

    marks: dict[str, int]
    entities: dict[str, Entity]
    rows: RowsDict
    ranks: RowsDict = field(default_factory=dict)
    """Ranked measure -> group -> value, as the rankings hold them (non-empty ones; a
    ranking's scores are doubles, see ``engine.rankings``)."""


class ProjectionStore(Protocol):
    """One version of one projection."""

    version: str

    async def marks(self) -> dict[str, int]: ...

    async def live_marks(self) -> dict[str, int]:
        """The marks, if the version is still written to; ``VersionRetired`` if a rebuild
        switched away from it."""
        ...

    async def load(self, keys: Sequence[str]) -> dict[str, Entity | None]: ...

    async def write(
        self,
        entities: Mapping[str, Entity],
        deltas: RowsDict,
        marks: Mapping[str, int],
        expected: Mapping[str, int],
        ranked: Collection[str] = (),
        extremes: Sequence[Extreme] = (),
    ) -> bool:
        """Apply a batch if the ``expected`` marks (-1: none) still hold; False if not.
        The groups of ``deltas`` (and of ``extremes``, the entities' values of measures
        that are a maximum or minimum, not a sum) are kept ranked by each measure in
        ``ranked``."""
        ...

    async def rows(self, groups: Sequence[str]) -> list[dict[str, int]]: ...

    async def top(self, measure: str, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` groups with the highest values of a ranked measure, highest
        first (equal values: the group keys in descending order, as Redis ranks them)."""
        ...

    async def groups(self) -> list[str]: ...

    async def snapshot(self) -> Snapshot: ...

    async def drop(self) -> None: ...

    def batch_lock(self) -> AbstractAsyncContextManager[Any]:
        """Held around a batch whose documents are written apart from its script call
        (``view_documents``): one writer of the version at a time."""
        ...


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def version_prefix(prefix: str, name: str, version: str) -> str:
    """What every Redis key of one version of one projection starts with."""
    return f"{prefix}p:{name}:{version}:"


def _rows_and_ranks(flat_rows: list[Any], flat_ranks: list[Any]) -> tuple[RowsDict, RowsDict]:
    """Rows and rankings from a snapshot script's reply (name, flat pairs, name, ...)."""
    rows: RowsDict = {}
    for group, flat in zip(flat_rows[::2], flat_rows[1::2], strict=True):
        if flat:
            rows[str(group)] = {k: int(v) for k, v in _pairs(flat).items()}
    ranks: RowsDict = {}
    for measure, flat in zip(flat_ranks[::2], flat_ranks[1::2], strict=True):
        if flat:
            ranks[str(measure)] = {k: int(float(v)) for k, v in _pairs(flat).items()}
    return rows, ranks


class RedisRows:
    """Rows and their rankings under one key prefix, the layout declared once: a
    projection version's (``RedisProjectionStore``) and the join's order aggregates
    (``ReadModels.aggregates``). Writers add to it in their own scripts (the keys are
    these attributes); this reads it.

    * ``rows:{group}``: hash, measure -> value; ``groups``: the groups ever written;
    * ``rank:{measure}``: sorted set, group -> value, for each ranked measure;
      ``ranks``: the ranked measures ever written."""

    PATTERNS = ("rows:*", "groups", "rank:*", "ranks")
    """Every key of the layout, as ``SCAN`` patterns under the prefix."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self.groups_key = prefix + "groups"
        self.rows_prefix = prefix + "rows:"
        self.ranks_key = prefix + "ranks"
        self.rank_prefix = prefix + "rank:"
        self._top = redis.register_script(_TOP)
        self._snapshot = redis.register_script(_ROWS_SNAPSHOT)

    async def rows(self, groups: Sequence[str]) -> list[dict[str, int]]:
        pipe = self._redis.pipeline(transaction=False)
        for group in groups:
            pipe.hgetall(self.rows_prefix + group)
        return [{k: int(v) for k, v in row.items()} for row in await pipe.execute()]

    async def top(self, measure: str, limit: int) -> list[tuple[str, int]]:
        """The ``limit`` groups with the highest values of a ranked measure, highest
        first, each with its row's value (exact, where the ranking holds a double)."""
        if limit < 1:
            return []
        flat = await self._top(
            keys=[self.rank_prefix + measure], args=[self.rows_prefix, limit, measure]
        )
        return [(str(group), int(value)) for group, value in _pairs(flat).items()]

    async def groups(self) -> list[str]:
        return sorted(str(g) for g in await self._redis.smembers(self.groups_key))

    async def snapshot(self) -> tuple[RowsDict, RowsDict]:
        """Every non-empty row, and every ranking (measure -> group -> score), read at one
        instant."""
        flat_rows, flat_ranks = await self._snapshot(
            keys=[self.groups_key, self.ranks_key], args=[self.rows_prefix, self.rank_prefix]
        )
        return _rows_and_ranks(flat_rows, flat_ranks)


class RedisProjectionStore:
    """``versions``: the keys of the active and building hashes (``ProjectionVersions``);
    given, a write to a version that is neither raises ``VersionRetired`` and writes
    nothing, so a writer that has not yet seen a switch does not bring back keys of
    the version the rebuild dropped."""

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        name: str,
        version: str,
        versions: tuple[str, str] | None = None,
    ) -> None:
        self._redis = redis
        self.name = name
        self.version = version
        self._versions = versions
        self.prefix = version_prefix(prefix, name, version)
        self._marks = self.prefix + "marks"
        self._entities = self.prefix + "entities"
        self._layout = RedisRows(redis, self.prefix)
        self._groups = self._layout.groups_key
        self._rows = self._layout.rows_prefix
        self._ranks = self._layout.ranks_key
        self._rank = self._layout.rank_prefix
        self._extremes = self.prefix + "ext:"
        self._write = redis.register_script(_WRITE)
        self._snapshot = redis.register_script(_SNAPSHOT)
        self._live_marks = redis.register_script(_LIVE_MARKS)
        self._lock = self.prefix + "lock"

    async def marks(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in (await self._redis.hgetall(self._marks)).items()}

    async def live_marks(self) -> dict[str, int]:
        """The marks, if the version is still written to (``VersionRetired`` if not)."""
        if self._versions is None:
            return await self.marks()
        found = await self._live_marks(
            keys=[self._marks, *self._versions], args=[self.name, self.version, FIRST_VERSION]
        )
        if found == -1:
            raise VersionRetired(f"{self.name} {self.version} is retired")
        return {str(k): int(v) for k, v in _pairs(found).items()}

    async def load(self, keys: Sequence[str]) -> dict[str, Entity | None]:
        if not keys:
            return {}
        found = await self._redis.hmget(self._entities, list(keys))
        return {
            k: None if v is None else Entity(_bytes(v)) for k, v in zip(keys, found, strict=True)
        }

    async def write(
        self,
        entities: Mapping[str, Entity],
        deltas: RowsDict,
        marks: Mapping[str, int],
        expected: Mapping[str, int],
        ranked: Collection[str] = (),
        extremes: Sequence[Extreme] = (),
    ) -> bool:
        args: list[str | int] = [
            self._rows,
            orjson.dumps(dict(expected)).decode(),
            orjson.dumps(dict(marks)).decode(),
            len(entities),
            self._rank,
            orjson.dumps(sorted(ranked)).decode(),
            self._extremes,
            len(extremes),
            self.name,
            self.version,
            FIRST_VERSION,
        ]
        for key, entity in entities.items():
            args += [key, entity.encoded.decode()]
        for group, measure, kind, entity_key, value in extremes:
            args += [group, measure, kind, entity_key, "" if value is None else value]
        for group, row in deltas.items():
            for name, value in row.items():
                args += [group, name, value]
        keys = [self._marks, self._entities, self._groups, self._ranks, *(self._versions or ())]
        done = await self._write(keys=keys, args=args)
        if done == -1:
            raise VersionRetired(f"{self.name} {self.version} is retired")
        return bool(done)

    async def rows(self, groups: Sequence[str]) -> list[dict[str, int]]:
        return await self._layout.rows(groups)

    async def top(self, measure: str, limit: int) -> list[tuple[str, int]]:
        return await self._layout.top(measure, limit)

    async def groups(self) -> list[str]:
        return await self._layout.groups()

    async def snapshot(self) -> Snapshot:
        marks, entities, flat_rows, flat_ranks = await self._snapshot(
            keys=[self._marks, self._entities, self._groups, self._ranks],
            args=[self._rows, self._rank],
        )
        rows, ranks = _rows_and_ranks(flat_rows, flat_ranks)
        return Snapshot(
            {k: int(v) for k, v in _pairs(marks).items()},
            {k: Entity(_bytes(v)) for k, v in _pairs(entities).items()},
            rows,
            ranks,
        )

    async def drop(self) -> None:
        """Every key of the version but its batch lock (held by the caller, maybe)."""
        async for key in self._redis.scan_iter(match=self.prefix + "*", count=1000):
            if key != self._lock:
                await self._redis.unlink(key)

    def batch_lock(self) -> Lock:
        return Lock(
            self._redis,
            self._lock,
            timeout=LOCK_TTL_S,
            sleep=0.002,
            blocking_timeout=LOCK_WAIT_S,
        )


class MemoryProjectionStore:
    """The same contract in a dict (unit tests of the engine and the runner)."""

    def __init__(self, version: str = FIRST_VERSION) -> None:
        self.version = version
        self._marks: dict[str, int] = {}
        self._entities: dict[str, Entity] = {}
        self._rows: RowsDict = {}
        self._ranks: RowsDict = {}  # measure -> group -> value, as the rankings hold them
        self._extremes: dict[tuple[str, str], dict[str, int]] = {}  # entity -> value
        self._lock = asyncio.Lock()

    async def marks(self) -> dict[str, int]:
        return dict(self._marks)

    async def live_marks(self) -> dict[str, int]:
        return dict(self._marks)

    async def load(self, keys: Sequence[str]) -> dict[str, Entity | None]:
        return {k: self._entities.get(k) for k in keys}

    async def write(
        self,
        entities: Mapping[str, Entity],
        deltas: RowsDict,
        marks: Mapping[str, int],
        expected: Mapping[str, int],
        ranked: Collection[str] = (),
        extremes: Sequence[Extreme] = (),
    ) -> bool:
        if any(self._marks.get(f, -1) != o for f, o in expected.items()):
            return False
        for measure in ranked:
            self._ranks.setdefault(measure, {})
        self._entities.update(entities)
        touched: list[tuple[str, str]] = []
        for group, measure, kind, entity_key, value in extremes:
            values = self._extremes.setdefault((group, measure), {})
            if value is None:
                values.pop(entity_key, None)
            else:
                values[entity_key] = value
            row = self._rows.setdefault(group, {})
            if values:
                row[measure] = (max if kind == "max" else min)(values.values())
            else:
                row.pop(measure, None)
            touched.append((group, measure))
        for group, row in deltas.items():
            held = self._rows.setdefault(group, {})
            for name, value in row.items():
                held[name] = held.get(name, 0) + value
                if not held[name]:
                    del held[name]
                touched.append((group, name))
        for group, measure in touched:  # as the script ranks: what this write ranks
            if measure in ranked:
                value = self._rows[group].get(measure, 0)
                ranking = self._ranks[measure]
                if value:
                    ranking[group] = value
                else:
                    ranking.pop(group, None)
        self._marks.update(marks)
        return True

    async def rows(self, groups: Sequence[str]) -> list[dict[str, int]]:
        return [dict(self._rows.get(g, {})) for g in groups]

    async def top(self, measure: str, limit: int) -> list[tuple[str, int]]:
        if limit < 1:
            return []
        ranking = self._ranks.get(measure, {}).items()
        ranked = sorted(ranking, key=lambda gv: (float(gv[1]), gv[0]), reverse=True)[:limit]
        return [(g, self._rows.get(g, {}).get(measure, 0)) for g, _ in ranked]

    async def groups(self) -> list[str]:
        return sorted(self._rows)

    async def snapshot(self) -> Snapshot:
        return Snapshot(
            dict(self._marks),
            dict(self._entities),
            {g: dict(r) for g, r in self._rows.items() if r},
            {m: {g: as_score(v) for g, v in r.items()} for m, r in self._ranks.items() if r},
        )

    async def drop(self) -> None:
        self._marks.clear()
        self._entities.clear()
        self._rows.clear()
        self._ranks.clear()
        self._extremes.clear()

    def batch_lock(self) -> asyncio.Lock:
        return self._lock


class ProjectionVersions:
    """Per projection: the active version, the one being built, dead letters; and the
    stores of each version (its documents in ``db``, for a projection that keeps them)."""

    def __init__(self, redis: Redis, prefix: str, db: AsyncDatabase[Any] | None = None) -> None:
        self._redis = redis
        self._prefix = prefix
        self._db = db
        self._active = f"{prefix}projections:active"
        self._building = f"{prefix}projections:building"
        self._swap = redis.register_script(_SWAP)
        self._activate = redis.register_script(_ACTIVATE)

    def store(self, name: str, version: str) -> RedisProjectionStore:
        """A version's store, whose writes stop once the version is retired."""
        return RedisProjectionStore(
            self._redis, self._prefix, name, version, (self._active, self._building)
        )

    def documents(self, projection: Projection, version: str) -> ViewDocuments | None:
        """The documents of a version of ``projection`` (None: it keeps none)."""
        if projection.documents is None:
            return None
        if self._db is None:
            raise RuntimeError(f"{projection.name} keeps documents: MongoDB is needed")
        return MongoViewDocuments.of(self._db, projection.name, version, projection.documents)

    async def drop(self, name: str, version: str) -> None:
        """Everything a version holds: its keys, and its documents' collection. Under its
        batch lock: a writer of documents in the middle of a batch finishes first, and
        the next one finds the version retired before it writes (``live_marks``)."""
        store = self.store(name, version)
        async with store.batch_lock():
            await store.drop()
            if self._db is not None:
                await self._db.drop_collection(collection_name(name, version))

    def status_key(self, name: str, version: str) -> str:
        """Where a rebuild of the version saves its progress (``rebuild_status``); dropped
        with the version."""
        return version_prefix(self._prefix, name, version) + "rebuild_status"

    async def active(self) -> dict[str, str]:
        """Projection -> active version (projections never rebuilt are on ``v1``)."""
        return {str(k): str(v) for k, v in (await self._redis.hgetall(self._active)).items()}

    async def active_of(self, name: str) -> str:
        return str(await self._redis.hget(self._active, name) or FIRST_VERSION)

    async def building(self) -> dict[str, str]:
        """Projection -> the version a rebuild in progress builds."""
        held = await self._redis.hgetall(self._building)
        return {str(k): str(v).partition("@")[0] for k, v in held.items()}

    async def begin_build(self, name: str, stale_after_s: float = REBUILD_STALE_S) -> str:
        """Allocate a new version for a rebuild of ``name``; RebuildInProgress while
        another rebuild of it is alive (it calls ``still_building`` as it goes). One that
        died (no sign for ``stale_after_s``) is dropped and replaced."""
        held = await self._redis.hget(self._building, name)
        if held is not None:
            version, _, at = str(held).partition("@")
            if time.time() - float(at or 0) < stale_after_s:
                raise RebuildInProgress(f"a rebuild of {name} ({version}) is in progress")
            await self.drop(name, version)
        number = await self._redis.incr(f"{self._prefix}projections:seq:{name}")
        active = await self.active_of(name)
        while f"v{number}" == active or number < 2:
            number = await self._redis.incr(f"{self._prefix}projections:seq:{name}")
        version = f"v{number}"
        if not await self._claim(name, held, f"{version}@{time.time()}"):
            raise RebuildInProgress(f"another rebuild of {name} started meanwhile")
        return version

    async def _claim(self, name: str, expected: object, value: str | None) -> bool:
        """Set (or with None delete) the building entry of ``name`` if it still is
        ``expected`` (None: absent)."""
        done = await self._swap(
            keys=[self._building],
            args=[name, "" if expected is None else str(expected), value or ""],
        )
        return bool(done)

    async def _entry(self, name: str, version: str) -> str | None:
        held = await self._redis.hget(self._building, name)
        return str(held) if held is not None and str(held).partition("@")[0] == version else None

    async def still_building(self, name: str, version: str) -> None:
        """A rebuild's sign of life; RebuildInProgress when another one took over."""
        held = await self._entry(name, version)
        if held is None or not await self._claim(name, held, f"{version}@{time.time()}"):
            raise RebuildInProgress(f"the rebuild of {name} ({version}) was taken over")

    async def activate(self, name: str, version: str) -> str:
        """Make ``version`` active if it is still the one being built; returns the
        version it replaced (dropped by the caller)."""
        previous = await self.active_of(name)
        held = await self._entry(name, version)
        if held is None or not await self._activate(
            keys=[self._building, self._active], args=[name, held, version]
        ):
            raise RebuildInProgress(f"the rebuild of {name} ({version}) was taken over")
        return previous

    async def abandon(self, name: str, version: str) -> None:
        """Drop ``version``, and its building entry if it still is this rebuild's."""
        held = await self._entry(name, version)
        if held is not None:
            await self._claim(name, held, None)
        await self.drop(name, version)

    def _dead_letters_key(self, name: str, topic: str, partition: int) -> str:
        return f"{self._prefix}p:{name}:dead-letters:{topic}:{partition}"

    async def record_dead_letter(
        self, name: str, topic: str, partition: int, offset: int, why: str
    ) -> None:
        await self._redis.zadd(
            self._dead_letters_key(name, topic, partition), {f"{offset} {why}": offset}
        )

    async def dead_letters_in(self, name: str, runs: Runs) -> list[str]:
        """``topic:partition@offset reason`` of each record of ``runs`` that ``name``
        dead-lettered."""
        pipe = self._redis.pipeline(transaction=False)
        asked = []
        for topic, parts in runs.items():
            for partition, found in parts.items():
                for first, last in found:
                    pipe.zrangebyscore(self._dead_letters_key(name, topic, partition), first, last)
                    asked.append(f"{topic}:{partition}")
        if not asked:
            return []
        answers = await pipe.execute()
        return [f"{w}@{e}" for w, entries in zip(asked, answers, strict=True) for e in entries]
