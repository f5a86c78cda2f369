"""Server-Sent Events: each change of one order's view, as it happens.

The projector publishes every new view of an order on a Redis channel of its
read-model version (inside the same Lua script that stores it). A stream
subscribes first and then sends the current view, so no change falls between
the two; it follows the active version when a rebuild switches it (checking,
each poll interval, the versions the query API keeps in memory: a Redis read of
the meta stamp, not of the meta document).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

from projections.read_models import ReadModels
from query_api.models import public_order

HEARTBEAT_S = 15.0


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


async def order_changes(
    order_id: str,
    active: Callable[[], Awaitable[ReadModels]],
    disconnected: Callable[[], Awaitable[bool]],
    poll_s: float = 1.0,
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one order: its current view, then every new one."""
    models = await active()
    pubsub = models.redis.pubsub()
    await pubsub.subscribe(models.changes_channel(order_id))
    try:
        current = await models.redis.hget(models.order_key(order_id), "view")
        last_sent = None
        if current is not None:
            last_sent = current
            yield sse("order", _public(str(current)))
        idle = 0.0
        while not await disconnected():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=poll_s)
            if message is not None and message["data"] != last_sent:
                last_sent = message["data"]
                idle = 0.0
                yield sse("order", _public(str(message["data"])))
                continue
            idle += poll_s
            if idle >= HEARTBEAT_S:
                idle = 0.0
                yield b": keep-alive\n\n"
            latest = await active()
            if latest.version != models.version:  # a rebuild switched versions
                await pubsub.unsubscribe(models.changes_channel(order_id))
                models = latest
                await pubsub.subscribe(models.changes_channel(order_id))
    finally:
        await pubsub.aclose()
