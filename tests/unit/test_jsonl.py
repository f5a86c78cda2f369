"""Publishing a JSON-lines file: per-line validation, batching, and honest failure reports."""

from __future__ import annotations

import copy
import io
import json
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from eventfold.settings import Settings
from producers.client import PublishError, PublishResult
from producers.jsonl import count_lines, line_ranges, parse_line, publish_jsonl, read_lines
from schemas.events import Event
from schemas.examples import EXAMPLES


def envelope(type_name: str, **data: Any) -> dict[str, Any]:
    e = copy.deepcopy(EXAMPLES[type_name])
    e["event_id"] = str(uuid.uuid4())
    e["data"].update(data)
    return e


def line(obj: Any) -> str:
    return json.dumps(obj)


class RecordingPublisher:
    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[list[Event]] = []
        self.correlation_ids: set[str | None] = set()
        self.fail_on_call = fail_on_call
        self.calls = 0

    async def publish_many(
        self,
        events: Sequence[Event],
        *,
        correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> PublishResult:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise PublishError("Kafka did not acknowledge the events: test")
        self.batches.append(list(events))
        self.correlation_ids.add(correlation_id)
        return PublishResult([], "token")

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for batch in self.batches for e in batch]


def write(tmp_path: Path, lines: Sequence[str | bytes]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")
    return path


def reason_of(raw: str | bytes) -> str:
    parsed = parse_line(raw if isinstance(raw, bytes) else raw.encode())
    assert isinstance(parsed, str), parsed
    return parsed


# --- one line ---------------------------------------------------------------------------------


def test_a_valid_line_parses_to_its_event() -> None:
    e = envelope("PaymentCaptured")
    event = parse_line(line(e).encode())
    assert not isinstance(event, str)
    assert (event.type, event.event_id) == ("PaymentCaptured", e["event_id"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"type": "OrderPlaced", ', "invalid JSON"),
        ('[{"type": "OrderDelivered"}]', "expected a JSON object"),
        ('"OrderDelivered"', "expected a JSON object"),
        ('{"type": "OrderTeleported", "data": {}}', "type: unknown event type 'OrderTeleported'"),
        ('{"data": {"order_id": "o-1"}}', "type: missing"),
        (b'{"type": "OrderDelivered", "data": {"order_id": "o-\xff"}}', "not UTF-8"),
        (
            '{"type": "OrderDelivered", "data": {"order_id": "o-1", "colour": "red"}}',
            "data.colour: Extra inputs are not permitted",
        ),
        ('{"type": "OrderDelivered", "data": {}}', "data.order_id: Field required"),
    ],
)
def test_invalid_lines_have_readable_reasons(raw: str | bytes, expected: str) -> None:
    assert expected in reason_of(raw)


def test_a_reason_names_every_bad_field_with_its_location() -> None:
    bad = envelope("OrderPlaced")
    bad["data"]["currency"] = "eur"
    bad["data"]["items"][1]["quantity"] = 0
    bad["data"]["items"][0]["unit_price"] = 9.99
    reason = reason_of(line(bad))
    assert "data.currency: currency must be upper case: use 'EUR'" in reason
    assert "data.items[1].quantity: Input should be greater than 0" in reason
    assert "data.items[0].unit_price: money must be exact" in reason
    assert "OrderPlaced" not in reason  # the union branch is not a field
    assert "Value error" not in reason


def test_line_numbers_count_blank_lines_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [line(envelope("OrderDelivered")), "", "   ", line(envelope("OrderShipped")), "{bad"],
    )
    numbered = list(read_lines(path))
    assert [n for n, _ in numbered] == [1, 4, 5]
    assert isinstance(numbered[2][1], str)
    assert count_lines(path) == 3


def test_line_ranges() -> None:
    assert line_ranges([]) == ""
    assert line_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert line_ranges([1, 3, 5, 7], limit=2) == "1, 3, ... (2 more ranges)"


# --- a file ---------------------------------------------------------------------------------


async def test_valid_lines_are_published_in_batches_in_file_order(tmp_path: Path) -> None:
    events = [
        envelope("CustomerRegistered"),
        envelope("OrderPlaced"),
        envelope("PaymentAuthorized"),
        envelope("PaymentCaptured"),
        envelope("OrderShipped"),
    ]
    path = write(tmp_path, [line(e) for e in events])
    publisher = RecordingPublisher()
    progress: list[tuple[int, int]] = []
    summary = await publish_jsonl(
        path,
        Settings(),
        batch_size=2,
        publisher=publisher,
        progress=lambda d, t: progress.append((d, t)),
    )
    assert [len(b) for b in publisher.batches] == [2, 2, 1]
    assert publisher.event_ids == [e["event_id"] for e in events]
    assert publisher.correlation_ids == {summary.correlation_id}
    assert (summary.lines, summary.accepted, summary.rejected) == (5, 5, [])
    assert summary.counts_by_type == {
        "CustomerRegistered": 1,
        "OrderPlaced": 1,
        "OrderShipped": 1,
        "PaymentAuthorized": 1,
        "PaymentCaptured": 1,
    }
    assert summary.exit_code == 0
    assert summary.events_per_s > 0
    assert progress == [(2, 5), (4, 5), (5, 5)]


async def test_invalid_lines_are_reported_and_never_published(tmp_path: Path) -> None:
    good = [envelope("OrderPlaced"), envelope("OrderCancelled"), envelope("PaymentFailed")]
    bad_money = envelope("PaymentRefunded", amount="-3")
    unknown_field = envelope("OrderDelivered", courier="x")
    lines = [
        line(good[0]),
        "not json",
        line(bad_money),
        "",
        line(good[1]),
        line(unknown_field),
        line(good[2]),
    ]
    path = write(tmp_path, lines)
    publisher = RecordingPublisher()
    summary = await publish_jsonl(path, Settings(), publisher=publisher)
    assert publisher.event_ids == [e["event_id"] for e in good]
    assert summary.accepted == 3
    assert [n for n, _ in summary.rejected] == [2, 3, 6]
    reasons = dict(summary.rejected)
    assert reasons[2].startswith("invalid JSON")
    assert reasons[3] == "data.amount: money must not be negative"
    assert reasons[6] == "data.courier: Extra inputs are not permitted"
    assert summary.exit_code == 1
    assert not summary.unconfirmed and not summary.not_published


async def test_a_publish_failure_stops_and_accounts_for_every_line(tmp_path: Path) -> None:
    lines = [line(envelope("OrderDelivered", order_id=f"o-{i}")) for i in range(1, 8)]
    lines.insert(5, "{oops")  # line 6 is invalid, after the failure point
    path = write(tmp_path, lines)  # valid: lines 1-5 and 7-8
    publisher = RecordingPublisher(fail_on_call=2)
    summary = await publish_jsonl(path, Settings(), batch_size=2, publisher=publisher)
    assert publisher.calls == 2  # nothing is sent after the failure
    assert summary.accepted == 2 and len(publisher.event_ids) == 2
    assert summary.error is not None and "Kafka" in summary.error
    assert summary.unconfirmed == [3, 4]
    assert summary.not_published == [5, 7, 8]
    assert [n for n, _ in summary.rejected] == [6]  # the rest of the file is still checked
    assert summary.exit_code == 2
    assert (
        summary.accepted
        + len(summary.unconfirmed)
        + len(summary.not_published)
        + len(summary.rejected)
        == summary.lines
        == 8
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_kafka_unreachable_publishes_nothing_and_says_so(tmp_path: Path) -> None:
    """The real client against a port nobody listens on (no server needed)."""
    path = write(
        tmp_path, [line(envelope("OrderDelivered")), "{bad", line(envelope("OrderShipped"))]
    )
    settings = Settings(kafka_host="127.0.0.1", kafka_port=closed_port(), kafka_timeout_s=2.0)
    summary = await publish_jsonl(path, settings)
    assert summary.failed and summary.exit_code == 2
    assert summary.accepted == 0
    assert summary.unconfirmed == []
    assert summary.not_published == [1, 3]
    assert [n for n, _ in summary.rejected] == [2]


async def test_the_rendered_summary_shows_twenty_reasons_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    lines = [line(envelope("OrderDelivered"))] + [f"bad line {i}" for i in range(25)]
    path = write(tmp_path, lines)
    summary = await publish_jsonl(path, Settings(), publisher=RecordingPublisher())
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(summary.render())
    text = console.export_text()
    assert "accepted" in text and "rejected" in text
    shown = [n for n in range(2, 27) if f"│ {n:>4} │ invalid JSON" in text]
    assert shown == list(range(2, 22))
    assert "... and 5 more rejected lines" in text


async def test_batch_size_must_be_positive(tmp_path: Path) -> None:
    path = write(tmp_path, [line(envelope("OrderDelivered"))])
    with pytest.raises(ValueError):
        await publish_jsonl(path, Settings(), batch_size=0, publisher=RecordingPublisher())
