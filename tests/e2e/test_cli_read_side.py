"""The read side's commands as a user runs them (``eventfold replay``, ``verify``,
``status``, ``drop``): settings from the environment, exit codes, what they print."""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime
from decimal import Decimal
from io import BytesIO

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastavro import schemaless_writer
from rich.console import Console

from eventfold import cli
from eventfold.consistency import token_of
from eventfold.settings import Settings
from producers.demo import generate
from projections.read_models import PROJECTIONS, Stores
from schemas.codec import REGISTRY
from schemas.events import event_to_json, parse_event
from schemas.examples import EXAMPLES
from tests.conftest import settings_env
from tests.support.processes import ProcessorProcess
from tests.support.scenario import publish, wait_caught_up


class Cli:
    """``eventfold`` with the deployment's settings in its environment, output captured."""

    def __init__(self, deployment: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, value in settings_env(deployment).items():
            monkeypatch.setenv(name, value)
        self._out = io.StringIO()
        monkeypatch.setattr(
            cli, "console", Console(file=self._out, width=250, force_terminal=False)
        )

    async def __call__(self, *argv: str) -> tuple[int, str]:
        """Exit code and what this command printed."""
        self._out.seek(0)
        self._out.truncate()
        code = await asyncio.to_thread(cli.main, list(argv))
        return code, self._out.getvalue()


def projection_rows(status: str) -> dict[str, list[str]]:
    """The ``projections`` table of ``eventfold status``: projection -> its cells."""
    rows = {}
    for line in status.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 3 and cells[0] in PROJECTIONS:  # not the lag table's rows
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.timeout(600)
async def test_replay_verify_status_and_drop_from_the_command_line(
    processor: ProcessorProcess,
    deployment: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = Cli(deployment, monkeypatch)
    await publish(deployment, generate(21, 40))
    await wait_caught_up(deployment)

    code, out = await run("verify")
    assert code == 0 and "identical" in out, out

    code, out = await run("replay", "--resume", "--quiet")
    assert code == 1 and "no interrupted rebuild to resume" in out, out

    code, out = await run("replay", "--all", "--quiet", "--grace-s", "0")
    assert code == 0, out
    rebuilt = re.search(r"rebuilt orders, customers, redis as (v\d+)", out)
    assert rebuilt is not None, out
    version = rebuilt.group(1)
    stores = Stores(deployment)
    try:
        # it returned once the new version was active, for every projection
        assert await stores.active_versions() == dict.fromkeys(PROJECTIONS, version)
        code, out = await run("status")
        assert code == 0
        assert projection_rows(out) == {p: [version, "-"] for p in PROJECTIONS}, out

        code, out = await run("verify")
        assert code == 0 and f"{version} vs a fresh fold of the topics" in out, out

        # a document that differs from the fold: verify names it and exits 1
        models = await stores.active()
        doc = await models.orders.find_one({})
        assert doc is not None
        await models.orders.update_one({"_id": doc["_id"]}, {"$set": {"status": "lost"}})
        code, out = await run("verify")
        assert code == 1, out
        assert f"orders/{doc['_id']}.status: expected" in out and "stored 'lost'" in out, out

        code, out = await run("drop")
        assert code == 0 and "dropped: v1" in out, out  # grace 0: due at once
        code, out = await run("drop", version)
        assert code == 1 and f"{version} is in use" in out, out  # never the active one
    finally:
        await stores.close()


def capture_beyond_the_bound(order_id: str) -> bytes:
    """A PaymentCaptured of 10^15 as the wire format allows it (16 integer digits) and
    the read models cannot count it: what another producer, or this one before the
    bound, could have published (the producer API refuses it)."""
    sv = REGISTRY.latest("PaymentCaptured")
    record = event_to_json(parse_event(EXAMPLES["PaymentCaptured"]))
    record["occurred_at"] = datetime.now(UTC)
    record["data"].update(order_id=order_id, amount=Decimal("1000000000000000"))
    out = BytesIO()
    out.write(sv.header)
    schemaless_writer(out, sv.parsed, record)
    return out.getvalue()


@pytest.mark.timeout(600)
async def test_a_record_the_processors_dead_letter_is_left_out_by_replay_and_verify(
    processor: ProcessorProcess,
    deployment: Settings,
    monkeypatch: pytest.MonkeyPatch,
    producer_api: httpx.AsyncClient,
    query_api: httpx.AsyncClient,
) -> None:
    """Issue 11: such a record used to stop every rebuild (and verify) for good, and a
    consistency token covering it was satisfied by the next record of its partition."""
    run = Cli(deployment, monkeypatch)
    events = generate(43, 12)
    await publish(deployment, events)
    order_id = next(e["data"]["order_id"] for e in events if e["type"] == "OrderPlaced")
    producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap_servers)
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            deployment.topic("payments"), capture_beyond_the_bound(order_id), order_id.encode()
        )
    finally:
        await producer.stop()
    # a valid record after it on its partition, so catching up means getting past it
    failed = {"payment_id": "p-after", "order_id": order_id, "reason": "declined"}
    published = await producer_api.post(
        "/v1/events", json={"type": "PaymentFailed", "data": failed}
    )
    assert published.status_code == 202, published.text
    after = published.json()["events"][0]
    await wait_caught_up(deployment)

    # read-your-writes: the valid record's token is served; one covering the dead letter
    # is a 409 naming it, never the view without its write
    good = await query_api.get(
        f"/v1/orders/{order_id}",
        headers={"X-Consistency-Token": published.json()["consistency_token"]},
    )
    assert good.status_code == 200, good.text
    both = token_of(
        [
            ("payments", sent.partition, sent.offset),
            ("payments", after["partition"], after["offset"]),
        ]
    )
    answer = await query_api.get(f"/v1/orders/{order_id}", headers={"X-Consistency-Token": both})
    assert answer.status_code == 409, answer.text
    (letter,) = answer.json()["dead_letters"]
    assert letter.startswith(f"payments:{sent.partition}@{sent.offset} undecodable: "), letter
    assert "below 10^12" in answer.json()["detail"]

    code, out = await run("replay", "--all", "--quiet", "--grace-s", "0")
    assert code == 0, out
    assert "left out 1 records the processors dead-letter" in out, out
    assert f"payments:{sent.partition}@{sent.offset}: undecodable" in out, out
    assert "below 10^12" in out, out

    code, out = await run("verify")
    assert code == 0 and "identical" in out, out
    assert "1 undecodable records left out of the fold" in out, out
