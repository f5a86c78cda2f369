"""Dead letters against the real broker: listed with their reasons and origins, re-driven
to their original topics once (progress in the re-drive consumer group), selectively."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import uuid
from typing import Any

import pytest
from rich.console import Console

from eventfold import cli
from eventfold.settings import Settings
from schemas.codec import DecodeError, encode
from schemas.events import parse_event
from schemas.examples import EXAMPLES
from stream_processors.dead_letters import KafkaDeadLetterSink
from stream_processors.dlq_admin import (
    REDRIVEN_FROM_HEADER,
    list_dead_letters,
    redrive,
    redrive_group,
)
from stream_processors.records import DeadLetter, Record
from tests.conftest import settings_env
from tests.integration.test_producer_kafka import closed_port, read_all

GARBAGE = b"\x00\x01not avro at all, just bytes"


def captured(event_id: str | None = None) -> tuple[dict[str, Any], bytes]:
    envelope = copy.deepcopy(EXAMPLES["PaymentCaptured"])
    envelope["event_id"] = event_id or str(uuid.uuid4())
    return envelope, encode(parse_event(envelope))


async def dead_letter(settings: Settings, letters: list[DeadLetter]) -> None:
    sink = KafkaDeadLetterSink(settings)
    try:
        for letter in letters:
            await sink(letter)
    finally:
        await sink.close()


def garbage_letter(offset: int = 17) -> DeadLetter:
    record = Record(
        "orders",
        2,
        offset,
        b"o-garbage",
        GARBAGE,
        headers=[
            ("event-type", b"OrderPlaced"),
            ("correlation-id", b"corr-g"),
            ("x-not-kept", b"dropped by the sink"),
        ],
    )
    return DeadLetter(record, "undecodable", DecodeError("bad marker 0001: not Avro"))


def payment_letter(offset: int = 99) -> tuple[DeadLetter, dict[str, Any]]:
    envelope, value = captured()
    record = Record(
        "payments",
        4,
        offset,
        b"o-1",
        value,
        headers=[
            ("event-type", b"PaymentCaptured"),
            ("event-id", envelope["event_id"].encode()),
            ("correlation-id", b"corr-p"),
        ],
    )
    return DeadLetter(record, "processing_failed", RuntimeError("projection bug")), envelope


@pytest.fixture
async def letters(topics: Settings) -> dict[str, Any]:
    """One undecodable dead letter on orders.dlq, one valid Avro event on payments.dlq."""
    payment, envelope = payment_letter()
    await dead_letter(topics, [garbage_letter(), payment])
    return {"garbage": garbage_letter(), "payment": payment, "envelope": envelope}


def by_topic(views: list[Any]) -> dict[str, Any]:
    return {v.dlq_topic: v for v in views}


async def test_list_shows_reasons_origins_and_content(
    topics: Settings,
    letters: dict[str, Any],
) -> None:
    views = await list_dead_letters(topics)
    assert len(views) == 2
    found = by_topic(views)
    garbage, payment = found["orders.dlq"], found["payments.dlq"]

    assert (garbage.original_topic, garbage.original_partition, garbage.original_offset) == (
        "orders",
        2,
        17,
    )
    assert garbage.reason == "undecodable"
    assert garbage.error_type == "DecodeError"
    assert "bad marker 0001" in (garbage.error or "")
    assert garbage.key == "o-garbage"
    assert garbage.event_type == "OrderPlaced"
    assert garbage.correlation_id == "corr-g"
    assert not garbage.decodable and garbage.envelope is None
    assert garbage.preview_hex == GARBAGE[:32].hex(" ")
    assert garbage.redriven is False

    assert (payment.original_topic, payment.original_partition, payment.original_offset) == (
        "payments",
        4,
        99,
    )
    assert payment.reason == "processing_failed"
    assert payment.error_type == "RuntimeError"
    assert payment.error == "RuntimeError: projection bug"
    assert payment.event_id == letters["envelope"]["event_id"]
    assert payment.decodable and payment.preview_hex is None
    assert payment.envelope is not None
    assert payment.envelope["data"]["amount"] == "140.48"
    assert payment.envelope["event_id"] == letters["envelope"]["event_id"]
    assert payment.redriven is False

    only_payments = await list_dead_letters(topics, topics=("payments",))
    assert [v.dlq_topic for v in only_payments] == ["payments.dlq"]
    assert len(await list_dead_letters(topics, limit=1)) == 1


async def test_redrive_puts_them_back_once_and_list_flags_them(
    topics: Settings,
    letters: dict[str, Any],
) -> None:
    dlq_records = {
        r.value: r for t in ("orders.dlq", "payments.dlq") for r in await read_all(topics, t)
    }
    result = await redrive(topics)
    assert result.ok, result.error
    assert sorted(r.topic for r in result.redriven) == ["orders", "payments"]
    assert [r.ref.split(":")[0] for r in result.undecodable] == ["orders.dlq"]
    assert "dead-letter them again" in result.render()

    for topic, letter in (("orders", letters["garbage"]), ("payments", letters["payment"])):
        records = await read_all(topics, topic)
        assert len(records) == 1, topic
        back = records[0]
        assert back.key == letter.record.key
        assert back.value == letter.record.value
        assert back.partition == letter.record.partition  # the original partition
        headers = dict(back.headers)
        source = dlq_records[letter.record.value]
        assert headers[REDRIVEN_FROM_HEADER] == (
            f"{topic}.dlq:{source.partition}:{source.offset}".encode()
        )
        assert headers["event-type"] == dict(letter.record.headers)["event-type"]
        assert headers["correlation-id"] == dict(letter.record.headers)["correlation-id"]
        assert not [k for k in headers if k.startswith("dlq-") and k != REDRIVEN_FROM_HEADER]
        assert "x-not-kept" not in headers
        landed = next(r for r in result.redriven if r.topic == topic)
        assert (landed.partition, landed.offset) == (back.partition, back.offset)

    again = await redrive(topics)
    assert again.ok and again.redriven == []
    assert again.already_redriven == 2
    assert len(await read_all(topics, "orders")) == 1
    assert len(await read_all(topics, "payments")) == 1
    assert all(v.redriven for v in await list_dead_letters(topics))


async def test_only_new_dead_letters_are_redriven_by_a_later_run(
    topics: Settings,
    letters: dict[str, Any],
) -> None:
    assert len((await redrive(topics)).redriven) == 2
    newer, envelope = payment_letter(offset=123)
    await dead_letter(topics, [newer])

    views = await list_dead_letters(topics)
    assert sorted((v.dlq_topic, v.original_offset, v.redriven) for v in views) == [
        ("orders.dlq", 17, True),
        ("payments.dlq", 99, True),
        ("payments.dlq", 123, False),
    ]

    result = await redrive(topics)
    assert [(r.topic, r.key) for r in result.redriven] == [("payments", "o-1")]
    assert result.already_redriven == 2
    payments = await read_all(topics, "payments")
    assert [dict(r.headers)["event-id"].decode() for r in payments].count(envelope["event_id"]) == 1
    assert len(payments) == 2


async def test_decodable_only_leaves_the_garbage_pending_for_a_later_run(
    topics: Settings,
    letters: dict[str, Any],
) -> None:
    result = await redrive(topics, decodable_only=True)
    assert result.ok, result.error
    assert [r.topic for r in result.redriven] == ["payments"]
    assert [s.ref.split(":")[0] for s in result.skipped] == ["orders.dlq"]
    assert "not decodable" in result.skipped[0].why
    assert await read_all(topics, "orders") == []
    assert len(await read_all(topics, "payments")) == 1

    flags = {v.dlq_topic: v.redriven for v in await list_dead_letters(topics)}
    assert flags == {"orders.dlq": False, "payments.dlq": True}

    # The skipped one is behind the committed offset, yet a full run still finds it.
    rest = await redrive(topics)
    assert [r.topic for r in rest.redriven] == ["orders"]
    assert (await read_all(topics, "orders"))[0].value == GARBAGE
    assert len(await read_all(topics, "payments")) == 1
    assert (await redrive(topics)).redriven == []


async def test_dry_run_publishes_and_records_nothing(
    topics: Settings,
    letters: dict[str, Any],
) -> None:
    result = await redrive(topics, dry_run=True)
    assert result.ok, result.error
    assert sorted(r.topic for r in result.redriven) == ["orders", "payments"]
    assert all(r.offset is None for r in result.redriven)
    assert result.render().startswith("dry run: would re-drive 2")
    assert await read_all(topics, "orders") == []
    assert await read_all(topics, "payments") == []
    assert not any(v.redriven for v in await list_dead_letters(topics))
    assert len((await redrive(topics)).redriven) == 2  # the real run still has everything


async def test_a_topic_and_selected_offsets(topics: Settings, letters: dict[str, Any]) -> None:
    second, _ = payment_letter(offset=200)
    third, _ = payment_letter(offset=201)
    await dead_letter(topics, [second, third])  # same key o-1: same dlq partition
    views = [v for v in await list_dead_letters(topics, topics=("payments",))]
    assert len(views) == 3 and len({v.dlq_partition for v in views}) == 1
    middle = sorted(views, key=lambda v: v.dlq_offset)[1]

    picked = await redrive(
        topics, topic="payments.dlq", only_offsets=[(middle.dlq_partition, middle.dlq_offset)]
    )
    assert [r.ref for r in picked.redriven] == [middle.ref]
    assert picked.skipped == []
    flags = {
        v.original_offset: v.redriven for v in await list_dead_letters(topics, topics=("payments",))
    }
    assert flags == {99: False, 200: True, 201: False}

    rest = await redrive(topics, topic="payments")
    origin = {v.ref: v.original_offset for v in views}
    assert sorted(origin[r.ref] or -1 for r in rest.redriven) == [99, 201]
    assert await read_all(topics, "orders") == []  # orders.dlq was not asked for
    assert len(await read_all(topics, "payments")) == 3


@pytest.fixture
def cli_env(topics: Settings, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    for name, value in settings_env(topics).items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250, force_terminal=False))
    return out


async def test_cli_list_json_and_redrive(
    topics: Settings,
    letters: dict[str, Any],
    cli_env: io.StringIO,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert await asyncio.to_thread(cli.main, ["dlq", "list", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted((j["dlq_topic"], j["reason"], j["redriven"]) for j in lines) == [
        ("orders.dlq", "undecodable", False),
        ("payments.dlq", "processing_failed", False),
    ]

    assert await asyncio.to_thread(cli.main, ["dlq", "redrive", "--dry-run"]) == 0
    assert "dry run: would re-drive 2" in cli_env.getvalue()
    assert await read_all(topics, "orders") == []

    assert (
        await asyncio.to_thread(
            cli.main, ["dlq", "redrive", "--topic", "payments", "--decodable-only"]
        )
        == 0
    )
    assert "re-drove 1 dead letter(s) (payments: 1)" in cli_env.getvalue()
    assert len(await read_all(topics, "payments")) == 1

    assert await asyncio.to_thread(cli.main, ["dlq", "redrive"]) == 0
    assert "will dead-letter them again" in cli_env.getvalue()
    assert len(await read_all(topics, "orders")) == 1

    capsys.readouterr()
    monkeypatch.setenv("COLUMNS", "250")  # the table's width when stdout is not a terminal
    assert await asyncio.to_thread(cli.main, ["dlq", "list", "--topic", "orders"]) == 0
    table = capsys.readouterr().out
    assert "orders.dlq" in table and "payments.dlq" not in table
    assert "undecodable" in table and "o-garbage" in table


async def test_cli_redrive_exit_code_2_when_kafka_is_unreachable(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unreachable = settings.model_copy(update={"kafka_port": closed_port(), "kafka_timeout_s": 2.0})
    for name, value in settings_env(unreachable).items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250, force_terminal=False))
    assert await asyncio.to_thread(cli.main, ["dlq", "redrive"]) == 2
    assert "Kafka failed" in out.getvalue()
    result = await redrive(unreachable)
    assert not result.ok and result.redriven == []


async def test_progress_lives_in_the_redrive_group(
    topics: Settings,
    letters: dict[str, Any],
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    await redrive(topics, decodable_only=True)
    admin = AIOKafkaAdminClient(bootstrap_servers=topics.bootstrap_servers)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(redrive_group(topics))
    finally:
        await admin.close()
    by_topic = {tp.topic: (c.offset, c.metadata) for tp, c in committed.items()}
    assert set(by_topic) == {topics.topic("orders.dlq"), topics.topic("payments.dlq")}
    garbage_offset = by_topic[topics.topic("orders.dlq")][0] - 1
    assert by_topic[topics.topic("orders.dlq")][1] == f"v1;pending={garbage_offset}"
    assert by_topic[topics.topic("payments.dlq")][1] == "v1"
