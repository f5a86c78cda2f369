"""The active read-model versions, kept in memory and checked with each request.

Why: which version of each projection queries read is named by the ``meta``
document in MongoDB. Reading it on every request cost a FerretDB round trip,
slower than the Redis read of the data itself, for a value that changes only
when a rebuild starts, switches or retires a version. Every such change raises
a Redis counter after the meta document is written (``Stores.meta_stamp_key``).
So the versions are kept here with the stamp they were read at, and a request
reads the stamp in the same Redis round trip as its data (a non-transactional
pipeline: ``GET`` stamp + ``HGET``), or with one ``GET`` before its MongoDB
query. When the stamp moved, the meta document is read again and the request
retried: a switch is followed by the first request after ``Stores.activate``
returns, with no TTL to wait for, and MongoDB is not read on the hot path.

The stamp is read before the meta document (and written after it), so versions
are never paired with a stamp newer than the meta they were read from. Entries
older than ``MAX_AGE_S`` are read again anyway: that bounds how long a stale
entry survives a writer that died between its meta update and the stamp
increment, or a Redis that lost the stamp and counted back to the same value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from projections.read_models import ReadModels, Stores

MAX_AGE_S = 30.0
RETRIES = 5  # stamp moves within one request; more means the meta changes constantly
MAX_IDLE = 64  # connections kept for _stamp_and_hget; more go back to the pool
_Replies = tuple[Any, Any]  # of GET stamp and HGET: values, or a Redis error reply


def _resp(*args: str) -> bytes:
    """One Redis command in the protocol's encoding (RESP arrays of bulk strings)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@dataclass(frozen=True, eq=False)
class Active:
    """The active versions and the meta stamp they were read at."""

    models: ReadModels
    stamp: str | None
    read_at: float


class ActiveVersions:
    """The active versions of one process, re-read only when the meta stamp moves."""

    def __init__(self, stores: Stores, max_age_s: float = MAX_AGE_S) -> None:
        self._stores = stores
        self._key = stores.meta_stamp_key
        self._max_age_s = max_age_s
        self._active: Active | None = None
        self._lock = asyncio.Lock()
        self._idle: list[AbstractConnection] = []  # see _stamp_and_hget
        # the batch being collected (see _stamp_and_hget): each command and its waiter
        self._joining: list[tuple[bytes, asyncio.Future[_Replies | None] | None]] | None = None
        self._timeout_s: float | None = stores.redis.connection_pool.connection_kwargs.get(
            "socket_timeout"
        )
        self._get_stamp = _resp("GET", self._key)

    def _valid(self, active: Active | None) -> bool:
        return active is not None and time.monotonic() - active.read_at < self._max_age_s

    async def cached(self) -> Active:
        """The versions in memory, without a round trip (read when missing or too old).

        Unchecked: the caller reads the stamp with its data (``hget``)."""
        active = self._active
        if active is not None and self._valid(active):
            return active
        return await self.refresh(active)

    async def current(self) -> Active:
        """The versions checked against the stamp: one Redis ``GET`` (and the meta
        document only when the stamp moved)."""
        active = await self.cached()
        stamp = await self._stamp()
        if stamp == active.stamp:
            return active
        return await self.refresh(active, stamp)

    async def models(self) -> ReadModels:
        """The read models of ``current()``."""
        return (await self.current()).models

    async def refresh(self, stale: Active | None, seen: str | None = None) -> Active:
        """Read the versions again, since ``stale`` is out of date (too old, or
        ``seen`` is a newer stamp). Requests noticing it at once read them once: a
        caller whose entry was replaced meanwhile gets the new one."""
        async with self._lock:
            latest = self._active
            if (
                latest is not None
                and latest is not stale
                and self._valid(latest)
                and (stale is None or seen is None or latest.stamp == seen)
            ):
                return latest
            stamp = await self._stamp()  # before the meta document
            models = await self._stores.active()
            self._active = Active(models, stamp, time.monotonic())
            return self._active

    async def hget(
        self,
        active: Active,
        key: Callable[[ReadModels], str],
        field: str,
    ) -> tuple[Active, str | None]:
        """``field`` of the hash ``key(models)`` of the active versions, read in one
        round trip with the stamp; when the stamp moved, read again from the versions
        now active. Returns the versions the value was read from, and the value."""
        for _ in range(RETRIES):
            stamp, value = await self._stamp_and_hget(key(active.models), field)
            if stamp == active.stamp:
                return active, value
            active = await self.refresh(active, stamp)
        # The meta document keeps changing: answer from the versions read last.
        return active, cast(str | None, await self._stores.redis.hget(key(active.models), field))

    async def _stamp_and_hget(self, key: str, field: str) -> tuple[str | None, str | None]:
        """``GET`` stamp and ``HGET key field``, pipelined on one connection, with the
        same pair of the other requests of this turn of the event loop.

        A non-transactional pipeline written out by hand, on connections this object
        keeps (taken from the client's pool, given back when dropped or closed):
        redis-py's ``Pipeline`` object, its pool's locked get/release, its command
        packing and its three timeouts per exchange (a ``wait_for`` on the write, one
        per reply) cost about 80 us of CPU per request here, more than a third of the
        request (measured with wrk). One timeout of the client's ``socket_timeout``
        bounds the whole exchange instead.

        The first request of a turn of the event loop leads a batch: it yields once,
        the requests that run meanwhile (those whose bytes arrived with its own) join
        it, and the leader sends all their commands in one write and reads all their
        replies. A socket write costs tens of microseconds of CPU here, in this process
        and in Redis's, about as much as the rest of the request; under load, a batch
        takes several requests. Every request still reads its own stamp with its own
        value. On a connection error or a timeout the connection is dropped and each
        request of the batch reads again through the ``Pipeline``, with redis-py's
        retries."""
        command = self._get_stamp + _resp("HGET", key, field)
        batch = self._joining
        if batch is not None:
            waiter: asyncio.Future[_Replies | None] = asyncio.get_running_loop().create_future()
            batch.append((command, waiter))
            replies = await waiter
        else:
            replies = await self._lead(command)
        if replies is None:  # the batch's connection failed: read alone, with retries
            pipe = self._stores.redis.pipeline(transaction=False)
            pipe.get(self._key)
            pipe.hget(key, field)
            replies = tuple(await pipe.execute())
        stamp, value = replies
        if isinstance(stamp, ResponseError):
            raise stamp
        if isinstance(value, ResponseError):
            raise value
        return cast(str | None, stamp), cast(str | None, value)

    async def _lead(self, command: bytes) -> _Replies | None:
        """Collect the batch ``command`` starts, exchange it, answer those who joined
        (None to each when the connection failed, and to each still waiting when the
        leader stops with an exception, a cancellation too), and return the leader's
        replies."""
        batch: list[tuple[bytes, asyncio.Future[_Replies | None] | None]] = [(command, None)]
        self._joining = batch
        try:
            try:
                await asyncio.sleep(0)  # the other requests of this turn join
            finally:
                self._joining = None
            replies = await self._exchange(b"".join(c for c, _ in batch), 2 * len(batch))
            for i, (_, waiter) in enumerate(batch):
                if waiter is not None and not waiter.done():
                    waiter.set_result(
                        None if replies is None else (replies[2 * i], replies[2 * i + 1])
                    )
        finally:
            for _, waiter in batch:
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        return None if replies is None else (replies[0], replies[1])

    async def _exchange(self, packed: bytes, count: int) -> list[Any] | None:
        """Send ``packed`` and read ``count`` replies (a Redis error reply as its
        exception) on a kept connection; None when the connection failed or timed out
        (it is dropped)."""
        conn = self._idle.pop() if self._idle else await self._take()
        replies: list[Any] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                await conn.send_packed_command(packed, check_health=False)
                while len(replies) < count:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:  # read whole: the connection stays in step
                        replies.append(exc)
        except (RedisConnectionError, RedisTimeoutError, OSError):  # TimeoutError too
            await self._give_back(conn, drop=True)
            return None
        except BaseException:
            await self._give_back(conn, drop=True)  # replies may be left unread
            raise
        if len(self._idle) < MAX_IDLE:
            self._idle.append(conn)
        else:
            await self._give_back(conn)
        return replies

    async def _take(self) -> AbstractConnection:
        """A connection of the client's pool, without timeouts of its own."""
        conn = await self._stores.redis.connection_pool.get_connection()
        conn.socket_timeout = None
        return conn

    async def _give_back(self, conn: AbstractConnection, drop: bool = False) -> None:
        conn.socket_timeout = self._timeout_s
        if drop:
            await conn.disconnect()
        await self._stores.redis.connection_pool.release(conn)

    async def _stamp(self) -> str | None:
        return cast(str | None, await self._stores.redis.get(self._key))
