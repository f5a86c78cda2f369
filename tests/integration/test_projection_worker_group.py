"""The projection workers' consumer group on the real Kafka: with several workers, each
gets partition p of every source topic, so an order's events on ``orders`` and
``payments`` have one writer (the marks check per partition cannot order two). Four
workers: with two, Kafka's default round-robin happens to give the same."""

from __future__ import annotations

import asyncio

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from stream_processors.projection_worker import group_consumer
from tests.conftest import eventually


async def test_each_worker_gets_partition_p_of_every_topic(settings: Settings) -> None:
    await ensure_topics(settings)
    topics = [settings.topic(t) for t in ("orders", "payments")]
    workers = [group_consumer(settings) for _ in range(4)]
    try:
        for worker in workers:
            await worker.start()
            worker.subscribe(topics)

        async def assigned() -> list[set[tuple[str, int]]]:
            await asyncio.gather(*(w.getmany(timeout_ms=200) for w in workers))
            return [{(tp.topic, tp.partition) for tp in w.assignment()} for w in workers]

        def settled(found: list[set[tuple[str, int]]]) -> bool:
            every = set().union(*found)
            return all(found) and len(every) == 2 * settings.topic_partitions == sum(
                len(f) for f in found
            )

        found = await eventually(assigned, settled, within_s=60)
        for mine in found:
            by_topic = {t: {p for topic, p in mine if topic == t} for t in topics}
            assert by_topic[topics[0]] == by_topic[topics[1]] != set()
    finally:
        for worker in workers:
            await worker.stop()
