"""Server-Sent Events: each change of one order's view, as it happens.

The projector publishes every new view of an order on a Redis channel of its
read-model version (inside the same Lua script that stores it). All the streams
of an instance share one subscribing connection (``ChangeHub``). A stream
subscribes first and then sends the current view, so no change falls between
the two; it follows the active version when a rebuild switches it (checking,
each poll interval, the versions the query API keeps in memory: a Redis read of
the meta stamp, not of the meta document).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from projections.read_models import ReadModels
from query_api.models import public_order

log = logging.getLogger(__name__)
HEARTBEAT_S = 15.0
RECONNECT_S = 1.0
CLOSE_WAIT_S = 2.0
HUB_POLL_S = 0.05
"""How long the hub's reader waits for a message before serving queued subscriptions."""
FOLLOWER_BACKLOG = 16


def sse(event: str, data: str, event_id: str | None = None) -> bytes:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.splitlines() or [""]]
    return ("\n".join(lines) + "\n\n").encode()


def _public(view_json: str) -> str:
    """The stored view as GET /v1/orders/{order_id} answers it; ASCII only, so no
    character splits the ``data:`` line (``str.splitlines`` splits at U+2028 too)."""
    return json.dumps(public_order(view_json), separators=(",", ":"))


class ChangeHub:
    """One Redis pub/sub connection for every stream of this instance.

    A connection per stream let a few hundred idle clients exhaust Redis's
    connections (and with them the processors' writes). The hub subscribes to a
    channel while at least one stream follows it and hands each message to that
    channel's streams. One task owns the pub/sub connection: subscriptions are
    queued to it and done between reads, and a caller returns once its channel is
    subscribed (so a change published after that reaches it)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._followers: dict[str, set[asyncio.Queue[str]]] = {}
        self._requests: asyncio.Queue[tuple[str, str, asyncio.Future[None]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def follow(self, channel: str) -> asyncio.Queue[str]:
        """A queue of the channel's messages from now on (the latest few)."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=FOLLOWER_BACKLOG)
        followers = self._followers.setdefault(channel, set())
        followers.add(queue)
        if len(followers) == 1:
            await self._request("subscribe", channel)
        return queue

    async def unfollow(self, channel: str, queue: asyncio.Queue[str]) -> None:
        followers = self._followers.get(channel, set())
        followers.discard(queue)
        if not followers and self._followers.pop(channel, None) is not None:
            await self._request("unsubscribe", channel)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if task.get_loop() is asyncio.get_running_loop():
            task.cancel()
            # bounded: a shutdown must not hang on a Redis connection being torn down
            await asyncio.wait({task}, timeout=CLOSE_WAIT_S)
        else:  # started by requests served on another loop (an ASGI test client's)
            task.get_loop().call_soon_threadsafe(task.cancel)

    async def _request(self, action: str, channel: str) -> None:
        running = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not running:
            # one reader per instance; a new one when the loop serving requests changed
            self._requests = asyncio.Queue()
            self._task = asyncio.create_task(self._run())
        done: asyncio.Future[None] = running.create_future()
        await self._requests.put((action, channel, done))
        task = self._task
        await asyncio.wait([done, task], return_when=asyncio.FIRST_COMPLETED)
        if not done.done():  # the reader ended (its error is the answer)
            done.cancel()
            task.result()
            raise ConnectionError("the live streams' Redis subscription ended")
        done.result()

    async def _run(self) -> None:
        pubsub = self._redis.pubsub()
        try:
            if self._followers:  # a reader after one that ended: the channels followed
                await pubsub.subscribe(*self._followers)
            while True:
                if not pubsub.channels:  # nothing to read: wait for a subscription
                    await self._serve(pubsub, await self._requests.get())
                while not self._requests.empty():
                    await self._serve(pubsub, self._requests.get_nowait())
                if not pubsub.channels:
                    continue
                try:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=HUB_POLL_S
                    )
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    # redis-py reconnects and subscribes again on the next read
                    log.warning("live streams' Redis subscription lost (%r); retrying", exc)
                    await asyncio.sleep(RECONNECT_S)
                    continue
                if message is not None and message["type"] == "message":
                    self._deliver(str(message["channel"]), str(message["data"]))
        finally:
            await pubsub.aclose()

    @staticmethod
    async def _serve(pubsub: PubSub, request: tuple[str, str, asyncio.Future[None]]) -> None:
        action, channel, done = request
        try:
            await (pubsub.subscribe if action == "subscribe" else pubsub.unsubscribe)(channel)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            raise
        if not done.done():
            done.set_result(None)

    def _deliver(self, channel: str, data: str) -> None:
        for queue in self._followers.get(channel, ()):
            if queue.full():  # a slow reader: only the latest views matter
                queue.get_nowait()
            queue.put_nowait(data)


async def order_changes(
    order_id: str,
    active: Callable[[], Awaitable[ReadModels]],
    disconnected: Callable[[], Awaitable[bool]],
    hub: ChangeHub,
    poll_s: float = 1.0,
) -> AsyncGenerator[bytes, None]:
    """The SSE byte stream of one order: its current view, then every new one."""
    models = await active()
    channel = models.changes_channel(order_id)
    queue = await hub.follow(channel)
    try:
        current = await models.redis.hget(models.order_key(order_id), "view")
        last_sent = None
        if current is not None:
            last_sent = current
            yield sse("order", _public(str(current)))
        idle = 0.0
        while not await disconnected():
            try:
                data: str | None = await asyncio.wait_for(queue.get(), poll_s)
            except TimeoutError:
                data = None
            if data is not None and data != last_sent:
                last_sent = data
                idle = 0.0
                yield sse("order", _public(data))
                continue
            idle += poll_s
            if idle >= HEARTBEAT_S:
                idle = 0.0
                yield b": keep-alive\n\n"
            latest = await active()
            if latest.version != models.version:  # a rebuild switched versions
                await hub.unfollow(channel, queue)
                models = latest
                channel = models.changes_channel(order_id)
                queue = await hub.follow(channel)
    finally:
        await hub.unfollow(channel, queue)
