"""Fault injection: every scenario ends by comparing the read models with a reference
fold of all published events: zero lost, zero applied twice.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from producers.demo import generate
from tests.conftest import eventually, isolated_settings, settings_env
from tests.integration.test_producer_kafka import read_all
from tests.support.processes import Workers
from tests.support.scenario import (
    publish,
    read_model_differences,
    wait_caught_up,
    wait_progress,
)
from tests.support.stack import StackPorts, stack

ORDERS = 60  # about 5 events each


@pytest.fixture
async def deployment(servers: StackPorts) -> AsyncIterator[Settings]:
    settings = isolated_settings(servers)
    await ensure_topics(settings)
    yield settings


@pytest.fixture
def workers(deployment: Settings, tmp_path: Path) -> Iterator[Workers]:
    """Processor processes of the deployment (started by the test), stopped at the end."""
    started = Workers(deployment, settings_env(deployment), tmp_path)
    yield started
    started.stop_all()


async def group_members(settings: Settings) -> int:
    """Members of the processors' consumer group, as the broker sees them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        group = f"{settings.topic_prefix}{settings.consumer_group}"
        (response,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    _error, _group, _state, _ptype, _protocol, members, *_ = response.groups[0]
    return len(members)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def children_of(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def events(seed: int) -> list[dict[str, Any]]:
    return generate(seed, ORDERS)


async def test_worker_killed_mid_stream_applies_nothing_twice(
    deployment: Settings,
    workers: Workers,
) -> None:
    stream = events(1)
    first = workers.start()
    assert first.proc is not None
    # the projection worker is spawned as the processor starts, before it logs "Ready"
    pid = first.proc.pid
    (projection_worker,) = await eventually(
        lambda: asyncio.to_thread(children_of, pid), lambda found: len(found) == 1
    )
    await publish(deployment, stream)
    await wait_progress(deployment, at_least=len(stream) // 4)
    first.stop(signal.SIGKILL)  # no chance to commit what it wrote last
    # its projection worker dies with it (no orphan keeps writing)
    await eventually(
        lambda: asyncio.to_thread(alive, projection_worker), lambda running: not running
    )
    # restarted on its own data dir, as its supervisor does: the tables it kept on
    # disk hold writes their changelogs never got, so it restores them from those
    first.start()
    # said when the processor starts, which Faust may log a little after "Ready"
    await asyncio.to_thread(first.wait_for_log, "did not stop cleanly", 30.0)
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []


async def test_poison_messages_go_to_the_dlq_and_the_stream_keeps_flowing(
    deployment: Settings,
    workers: Workers,
) -> None:
    stream = events(2)
    workers.start()
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers, acks="all")
    await producer.start()
    try:
        poison = await producer.send_and_wait(
            deployment.topic("orders"), b"\x00not avro", key=b"o-poison"
        )
    finally:
        await producer.stop()
    await publish(deployment, stream)
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []
    letters = await read_all(deployment, "orders.dlq")
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert letters[0].value == b"\x00not avro"
    assert headers["dlq-reason"] == b"undecodable"
    assert headers["dlq-original-topic"] == b"orders"
    assert headers["dlq-original-partition"] == str(poison.partition).encode()
    assert headers["dlq-original-offset"] == str(poison.offset).encode()
    assert headers["dlq-error-type"]


@pytest.mark.parametrize(("server", "outage_s"), [("ferretdb", 30.0), ("redis", 5.0)])
async def test_a_store_outage_is_waited_out_and_nothing_is_lost(
    server: str,
    outage_s: float,
    deployment: Settings,
    workers: Workers,
) -> None:
    stream = events(3)
    worker = workers.start()
    half = len(stream) // 2
    await publish(deployment, stream[:half])
    await wait_progress(deployment, at_least=half // 3)
    stack("stop", server)
    try:
        await publish(deployment, stream[half:])  # Kafka still takes writes
        worker.wait_for_log("dependency unavailable", 60)  # the processor noticed ...
        await asyncio.sleep(outage_s)  # ... and the outage lasts this long
        assert worker.proc is not None and worker.proc.poll() is None  # it waited, alive
    finally:
        restarted = stack("up", check=False)
    assert restarted.returncode == 0, restarted.stderr
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []


async def test_two_workers_split_partitions_and_survive_losing_one(
    deployment: Settings,
    workers: Workers,
) -> None:
    stream = events(4)
    first = workers.start()
    workers.start()
    assert await eventually(lambda: group_members(deployment), lambda n: n == 2) == 2
    half = len(stream) // 2
    await publish(deployment, stream[:half])
    await wait_progress(deployment, at_least=half // 3)
    first.stop(signal.SIGTERM)  # its partitions move to the second worker
    assert await eventually(lambda: group_members(deployment), lambda n: n == 1) == 1
    await publish(deployment, stream[half:])
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []


async def test_processing_resumes_after_a_kafka_broker_restart(
    deployment: Settings,
    workers: Workers,
) -> None:
    stream = events(5)
    workers.start()
    half = len(stream) // 2
    await publish(deployment, stream[:half])
    await wait_progress(deployment, at_least=half // 3)
    stack("stop", "kafka")
    restarted = stack("up", check=False)
    assert restarted.returncode == 0, restarted.stderr
    # A broker that just restarted takes a while to lead every partition it holds again
    # (hundreds, late in a test session): the producer may wait longer than usual.
    await publish(deployment.model_copy(update={"kafka_timeout_s": 60.0}), stream[half:])
    await wait_caught_up(deployment)
    assert await read_model_differences(deployment) == []
