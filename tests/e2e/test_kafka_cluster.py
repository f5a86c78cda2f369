"""A Kafka cluster that loses nothing (issue 11): ``EVENTFOLD_KAFKA_BROKERS=3`` starts a
three-broker KRaft cluster (replication factor 3, ``min.insync.replicas=2``) under the
stack's supervisor, with the processor and both APIs. While more than 10,000 events go
through the producer API, the broker leading ``orders`` partition 0 is killed with
SIGKILL and started again later. Every event answered 202 must be in the read models
once, the processor must live through the leader changes without a restart, and the
API must answer 503 with Retry-After, never an error or a false 202, while it cannot
get an event acknowledged.

Black-box: the stack script, HTTP and the ``eventfold`` command, on a stack folder and
ports of its own (``.stack/cluster-test``, 19192 and up)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from eventfold.settings import Settings
from tests.support.scenario import wait_caught_up
from tests.support.stack import ROOT, stack

STACK_DIR = ROOT / ".stack" / "cluster-test"
PORTS = {
    "EVENTFOLD_KAFKA_PORT": 19192,  # brokers 2 and 3: +10, +20 (stack/stack.sh)
    "EVENTFOLD_KAFKA_CONTROLLER_PORT": 19193,
    "EVENTFOLD_KAFKA_SASL_PORT": 19194,
    "EVENTFOLD_MONGO_PORT": 17117,
    "EVENTFOLD_FERRETDB_DEBUG_PORT": 18188,
    "EVENTFOLD_REDIS_PORT": 16479,
    "EVENTFOLD_PRODUCER_PORT": 18101,
    "EVENTFOLD_QUERY_PORT": 18102,
}
BOOTSTRAP = ",".join(f"127.0.0.1:{PORTS['EVENTFOLD_KAFKA_PORT'] + 10 * i}" for i in range(3))
ENV = {
    "EVENTFOLD_STACK_DIR": str(STACK_DIR),
    "EVENTFOLD_KAFKA_BROKERS": "3",
    "EVENTFOLD_AUTH_DISABLED": "true",
    **{name: str(port) for name, port in PORTS.items()},
}
PRODUCER = f"http://127.0.0.1:{PORTS['EVENTFOLD_PRODUCER_PORT']}"
QUERY = f"http://127.0.0.1:{PORTS['EVENTFOLD_QUERY_PORT']}"

ORDERS = 3_400  # three events each: 10,200 events
ORDERS_PER_REQUEST = 25
CLIENTS = 4


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """The three brokers, FerretDB, Redis, the processor and both APIs, from a fresh
    folder; stopped at the end (the folder stays for its logs until the next run)."""
    shutil.rmtree(STACK_DIR, ignore_errors=True)
    started = stack("up-all", extra_env=ENV, check=False)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield
    finally:
        stack("down", extra_env=ENV, check=False)


def pid_of(name: str) -> int:
    return int((STACK_DIR / "run" / f"{name}.pid").read_text())


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in "ZX"


def order_events(n: int) -> list[dict[str, Any]]:
    """An order, its payment's authorization and capture, each with its own event id."""
    order_id = f"o-{n}"
    placed = {
        "order_id": order_id,
        "customer_id": f"c-{n % 100}",
        "currency": "EUR",
        "items": [{"sku": f"S-{n % 7}", "quantity": 1 + n % 3, "unit_price": "4.50"}],
    }
    amount = f"{4.5 * (1 + n % 3):.2f}"
    payment = {"payment_id": f"p-{n}", "order_id": order_id, "amount": amount, "currency": "EUR"}
    return [
        {"type": "OrderPlaced", "event_id": str(uuid.uuid4()), "data": placed},
        {
            "type": "PaymentAuthorized",
            "event_id": str(uuid.uuid4()),
            "data": {**payment, "method": "card"},
        },
        {"type": "PaymentCaptured", "event_id": str(uuid.uuid4()), "data": payment},
    ]


@dataclass
class Publishing:
    """What the producer API answered, request by request."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    refusals_without_retry_after: int = 0
    no_answer: int = 0
    requests_done: int = 0

    async def send_all(
        self, client: httpx.AsyncClient, batches: list[list[dict[str, Any]]]
    ) -> None:
        """Each batch until it is answered 202: a 503 is retried with the same event
        ids after its Retry-After (a copy that reached Kafka anyway is the same event)."""
        for batch in batches:
            deadline = time.monotonic() + 180
            while True:
                try:
                    response = await client.post("/v1/events", json=batch)
                except httpx.TransportError:
                    # no answer (a kept-alive connection the server had just closed):
                    # unknown outcome, so the same batch again, as any client would
                    self.no_answer += 1
                    assert time.monotonic() < deadline, "no answer for one batch for 180 s"
                    await asyncio.sleep(1)
                    continue
                self.answers[response.status_code] += 1
                if response.status_code == 202:
                    self.accepted.extend(batch)
                    break
                assert response.status_code == 503, response.text
                retry_after = response.headers.get("retry-after")
                if retry_after is None:
                    self.refusals_without_retry_after += 1
                assert time.monotonic() < deadline, "the API refused one batch for 180 s"
                await asyncio.sleep(min(float(retry_after or 1), 5.0))
            self.requests_done += 1


async def orders_partition_0() -> dict[str, Any]:
    """Its leader, replicas and in-sync replicas, from the cluster's metadata."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        (topic,) = await admin.describe_topics(["orders"])
    finally:
        await admin.close()
    (partition,) = [p for p in topic["partitions"] if p["partition"] == 0]
    return dict(partition)


async def replication_factors() -> set[int]:
    """The replica counts of every partition of every topic of the cluster: the source
    and internal topics, the tables' changelogs, the consumer offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        names = await admin.list_topics()
        assert {"orders", "payments", "customers", "__consumer_offsets"} <= set(names), names
        assert any(name.endswith("-changelog") for name in names), names
        topics = await admin.describe_topics(list(names))
    finally:
        await admin.close()
    return {len(p["replicas"]) for topic in topics for p in topic["partitions"]}


async def leadership_moved_from(broker: int) -> dict[str, Any]:
    """Once the controller fenced ``broker``: another leader, two in sync."""
    deadline = time.monotonic() + 90
    partition: Any = None
    while time.monotonic() < deadline:
        try:
            partition = await orders_partition_0()
        except KafkaError as exc:  # asked the dead broker: the metadata still lists it
            partition = exc
        else:
            if partition["leader"] not in (broker, -1) and broker not in partition["isr"]:
                return dict(partition)
        await asyncio.sleep(0.5)
    raise AssertionError(f"broker {broker} still leads or is in sync after 90 s: {partition}")


def verify() -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "EVENTFOLD_KAFKA_BOOTSTRAP": BOOTSTRAP,
        "EVENTFOLD_MONGO_PORT": str(PORTS["EVENTFOLD_MONGO_PORT"]),
        "EVENTFOLD_REDIS_PORT": str(PORTS["EVENTFOLD_REDIS_PORT"]),
    }
    eventfold = Path(sys.executable).parent / "eventfold"
    return subprocess.run(
        [str(eventfold), "verify"], env=env, text=True, capture_output=True, timeout=300
    )


@pytest.mark.timeout(900)
async def test_a_broker_killed_mid_stream_loses_no_accepted_event(cluster: None) -> None:
    assert await replication_factors() == {3}  # every topic, internal ones included
    before = await orders_partition_0()
    assert len(before["isr"]) == 3, before
    victim_id = int(before["leader"])
    victim = "kafka" if victim_id == 1 else f"kafka-{victim_id}"
    processor, producer_api = pid_of("processor"), pid_of("producer-api")

    orders = [order_events(n) for n in range(ORDERS)]
    batches = [
        [e for order in orders[i : i + ORDERS_PER_REQUEST] for e in order]
        for i in range(0, ORDERS, ORDERS_PER_REQUEST)
    ]
    third = len(batches) // 3
    publishing = Publishing()
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=PRODUCER, timeout=60) as client:

        async def publish(part: list[list[dict[str, Any]]]) -> None:
            await asyncio.gather(
                *(publishing.send_all(client, part[k::CLIENTS]) for k in range(CLIENTS))
            )

        await publish(batches[:third])
        # The partition's leader dies without a goodbye, and stays down ...
        os.kill(pid_of(victim), signal.SIGKILL)
        # (else supervisord starts it again at once)
        stopped = await asyncio.to_thread(stack, "stop", victim, extra_env=ENV)
        assert stopped.returncode == 0
        # ... while the second third is published, and until the controller moved the
        # leadership to a surviving replica: the window in which a send can fail.
        _, after = await asyncio.gather(
            publish(batches[third : 2 * third]), leadership_moved_from(victim_id)
        )
        assert len(after["isr"]) == 2, after
        # Back, it catches up as a follower while the rest is published.
        restarted = await asyncio.to_thread(stack, "up", extra_env=ENV, check=False)
        assert restarted.returncode == 0, restarted.stderr[-3000:]
        await publish(batches[2 * third :])

    accepted = publishing.accepted
    print(  # shown with -s: what the outage cost the publishers
        f"{len(accepted)} events accepted in {time.monotonic() - started:.1f} s; "
        f"answers {dict(publishing.answers)}, {publishing.no_answer} without an answer; "
        f"broker {victim_id} killed"
    )
    assert len(accepted) == 3 * ORDERS >= 10_000
    assert set(publishing.answers) <= {202, 503}, publishing.answers
    assert publishing.refusals_without_retry_after == 0
    assert alive(pid_of(victim)) and stack("status", extra_env=ENV).stdout.count(": running") == 8

    await wait_caught_up(
        Settings(
            kafka_bootstrap=BOOTSTRAP,
            mongo_port=PORTS["EVENTFOLD_MONGO_PORT"],
            redis_port=PORTS["EVENTFOLD_REDIS_PORT"],
        )
    )
    result = await asyncio.to_thread(verify)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "identical" in result.stdout + result.stderr

    # Counted: each order's timeline holds exactly the events accepted for it, and the
    # captured amount once.
    expected: dict[str, list[str]] = {}
    for e in accepted:
        expected.setdefault(e["data"]["order_id"], []).append(e["event_id"])
    async with httpx.AsyncClient(base_url=QUERY, timeout=30) as client:
        seen: dict[str, list[str]] = {}
        paid_twice = []
        for order_id in expected:
            response = await client.get(f"/v1/orders/{order_id}")
            assert response.status_code == 200, (order_id, response.text)
            view = response.json()
            seen[order_id] = sorted(t["event_id"] for t in view["timeline"])
            if view["amount_paid"] != view["total"] or view["status"] != "paid":
                paid_twice.append(view)
    assert seen == {order_id: sorted(ids) for order_id, ids in expected.items()}
    assert paid_twice == []

    # The processor and the producer API lived through it: the same processes.
    assert pid_of("processor") == processor and alive(processor)
    assert pid_of("producer-api") == producer_api and alive(producer_api)
