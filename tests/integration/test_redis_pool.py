"""A process's Redis connections are bounded (issue 11.6): the pool opens at most
``redis_max_connections``, and what asks for more waits for a free one instead of
opening another (before, the pool had no maximum: a few hundred clients could exhaust
Redis's connections and fail the processor's writes platform-wide)."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from eventfold.settings import Settings
from projections.read_models import Stores
from tests.conftest import unique_name


async def connections_named(observer: Redis, name: str) -> int:
    clients = await observer.client_list()
    return sum(1 for c in clients if c.get("name") == name)


async def test_the_pool_opens_at_most_its_maximum_and_the_rest_wait(settings: Settings) -> None:
    name = unique_name()
    bounded = settings.model_copy(update={"redis_max_connections": 2, "redis_client_name": name})
    stores = Stores(bounded)
    observer = Redis(port=settings.redis_port, decode_responses=True)
    try:
        # Eight commands that each hold their connection for 0.3 s, all at once.
        key = f"{settings.redis_prefix}nothing"
        commands = [asyncio.create_task(stores.redis.blpop([key], timeout=0.3)) for _ in range(8)]
        peak = 0
        while not all(c.done() for c in commands):
            peak = max(peak, await connections_named(observer, name))
            await asyncio.sleep(0.02)
        assert [c.result() for c in commands] == [None] * 8  # each ran, none failed
        assert peak == 2
    finally:
        await stores.close()
        await observer.aclose()


def test_the_default_maximum_is_finite_and_named() -> None:
    settings = Settings()
    assert 0 < settings.redis_max_connections <= 1000
    assert settings.redis_client_name == "eventfold"
