"""`eventfold publish` and `eventfold demo` against the real broker: exactly the valid
events land in Kafka, the invalid lines are reported, the exit codes say which happened."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from eventfold import cli
from eventfold.settings import Settings
from producers.demo import generate
from schemas.catalog import KEY_FIELD_OF_TOPIC, TOPIC_OF_TYPE, TOPICS
from schemas.codec import decode
from schemas.events import event_to_json
from schemas.examples import EXAMPLES
from tests.conftest import settings_env
from tests.integration.test_producer_kafka import read_all


def envelope(type_name: str, **data: Any) -> dict[str, Any]:
    e = copy.deepcopy(EXAMPLES[type_name])
    e["event_id"] = str(uuid.uuid4())
    e["data"].update(data)
    return e


@pytest.fixture
def cli_output(topics: Settings, monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """Run the command with the test's settings (from the environment, as a user would)
    and capture what it prints, unwrapped."""
    for name, value in settings_env(topics).items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=250, force_terminal=False))
    return out


async def read_back(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every event of every source topic, decoded, per topic."""
    return {
        topic: [event_to_json(decode(r.value)) for r in await read_all(settings, topic)]
        for topic in TOPICS
    }


async def test_publish_sends_exactly_the_valid_lines_and_reports_the_others(
    topics: Settings,
    cli_output: io.StringIO,
    tmp_path: Path,
) -> None:
    valid = [
        envelope("CustomerRegistered", customer_id="c-42"),
        envelope("OrderPlaced", order_id="o-42", customer_id="c-42"),
        envelope("PaymentAuthorized", order_id="o-42"),
        envelope("PaymentCaptured", order_id="o-42"),
        envelope("OrderShipped", order_id="o-42"),
    ]
    negative_quantity = envelope("OrderPlaced", order_id="o-43")
    negative_quantity["data"]["items"][0]["quantity"] = -2
    lines = [
        json.dumps(valid[0]),
        json.dumps(valid[1]),
        '{"type": "OrderPlaced", "data": ',  # 3: truncated JSON
        json.dumps(negative_quantity),  # 4: invalid field
        "",  # 5: blank, skipped
        json.dumps(valid[2]),
        json.dumps(envelope("PaymentCaptured", currency="EURO")),  # 7: bad currency
        json.dumps(valid[3]),
        json.dumps(valid[4]),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")

    code = await asyncio.to_thread(cli.main, ["publish", str(path), "--batch-size", "2", "--quiet"])

    assert code == 1  # some lines rejected, the rest published
    stored = await read_back(topics)
    all_ids = [e["event_id"] for events in stored.values() for e in events]
    assert sorted(all_ids) == sorted(e["event_id"] for e in valid)  # once each, nothing else
    assert [e["type"] for e in stored["customers"]] == ["CustomerRegistered"]
    assert [e["type"] for e in stored["orders"]] == ["OrderPlaced", "OrderShipped"]  # key order
    assert [e["type"] for e in stored["payments"]] == ["PaymentAuthorized", "PaymentCaptured"]

    text = cli_output.getvalue()
    assert "data.items[0].quantity: Input should be greater than 0" in text
    assert "invalid JSON" in text
    assert "data.currency:" in text and "EURO" in text
    rejected_rows = [
        row for row in text.splitlines() if "│" in row and ("invalid JSON" in row or "data." in row)
    ]
    assert [row.split("│")[1].strip() for row in rejected_rows] == ["3", "4", "7"]


async def test_publish_of_a_clean_file_exits_0(
    topics: Settings,
    cli_output: io.StringIO,
    tmp_path: Path,
) -> None:
    valid = [envelope("OrderDelivered", order_id=f"o-{i}") for i in range(7)]
    path = tmp_path / "clean.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in valid))

    code = await asyncio.to_thread(cli.main, ["publish", str(path), "--quiet"])

    assert code == 0
    stored = await read_back(topics)
    assert sorted(e["event_id"] for e in stored["orders"]) == sorted(e["event_id"] for e in valid)
    assert "rejected lines" not in cli_output.getvalue()


async def test_demo_publishes_the_seeded_stream_in_order(
    topics: Settings,
    cli_output: io.StringIO,
) -> None:
    code = await asyncio.to_thread(
        cli.main, ["demo", "--orders", "25", "--seed", "5", "--rate", "0", "--quiet"]
    )

    assert code == 0
    expected = generate(5, 25)
    stored = await read_back(topics)
    for topic in TOPICS:
        key = KEY_FIELD_OF_TOPIC[topic]
        want = [e for e in expected if TOPIC_OF_TYPE[e["type"]] == topic]
        assert want
        # per key (one partition) Kafka keeps the demo's publish order
        assert ids_per_key(stored[topic], key) == ids_per_key(want, key)
    assert "seed 5" in cli_output.getvalue()


def ids_per_key(events: list[dict[str, Any]], key: str) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for e in events:
        grouped[e["data"][key]].append(e["event_id"])
    return dict(grouped)
