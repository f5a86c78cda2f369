"""The pure parts of the dead-letter tooling: progress bookkeeping, headers, views, summaries."""

from __future__ import annotations

import copy
import io
import json
from io import BytesIO

import pytest
from fastavro import schemaless_writer
from rich.console import Console

from eventfold.cli import build_parser
from schemas.codec import REGISTRY, encode
from schemas.events import parse_event
from schemas.examples import EXAMPLES
from stream_processors.dlq_admin import (
    MAX_METADATA_CHARS,
    REDRIVEN_FROM_HEADER,
    RedrivenLetter,
    RedriveProgress,
    RedriveResult,
    SkippedLetter,
    dead_letter_view,
    header_text,
    redrive_headers,
    render_table,
    source_topic,
)

# --- progress -------------------------------------------------------------------------------


def test_a_fresh_group_has_redriven_nothing() -> None:
    for offset, metadata in ((None, None), (-1, ""), (-1, "v1")):
        progress = RedriveProgress.from_commit(offset, metadata)
        assert progress == RedriveProgress(0, ())
        assert not progress.is_redriven(0)
        assert progress.first_needed == 0


def test_an_offset_set_by_kafkas_own_tools_has_nothing_pending() -> None:
    progress = RedriveProgress.from_commit(5, "")
    assert [progress.is_redriven(o) for o in range(7)] == [True] * 5 + [False] * 2
    assert progress.first_needed == 5


def test_skipped_records_stay_pending_below_the_watermark() -> None:
    p = RedriveProgress()
    for offset, redriven in ((0, True), (1, False), (2, False), (3, True), (4, False)):
        p = p.advance(offset, redriven)
    assert p == RedriveProgress(5, ((1, 3), (4, 5)))
    assert [p.is_redriven(o) for o in range(6)] == [True, False, False, True, False, False]
    assert p.first_needed == 1
    assert p.pending_count() == 3
    assert p.metadata() == "v1;pending=1-2,4"


def test_redriving_a_pending_record_later_splits_its_range() -> None:
    p = RedriveProgress(10, ((2, 6),))
    p = p.advance(3, redriven=True)
    assert p == RedriveProgress(10, ((2, 3), (4, 6)))
    assert p.advance(4, redriven=False) == p  # still pending: nothing changes
    p = p.advance(2, True).advance(4, True).advance(5, True)
    assert p == RedriveProgress(10, ())
    assert p.metadata() == "v1"


def test_a_gap_in_offsets_does_not_break_a_pending_range() -> None:
    p = RedriveProgress().advance(0, False).advance(3, False)  # 1 and 2 hold no record
    assert p == RedriveProgress(4, ((0, 4),))


@pytest.mark.parametrize(
    "progress",
    [
        RedriveProgress(0, ()),
        RedriveProgress(7, ()),
        RedriveProgress(7, ((0, 1),)),
        RedriveProgress(100, ((3, 4), (10, 20), (99, 100))),
    ],
)
def test_metadata_round_trips(progress: RedriveProgress) -> None:
    assert RedriveProgress.from_commit(progress.watermark, progress.metadata()) == progress


@pytest.mark.parametrize(
    "metadata",
    [
        "something else",
        "v1;pending=",
        "v1;pending=a",
        "v1;pending=5-3",
        "v1;pending=4,2",
        "v1;pending=3-12",  # beyond the watermark (10)
        "v1;pending=1-3,3",  # overlapping
    ],
)
def test_inconsistent_metadata_is_refused(metadata: str) -> None:
    with pytest.raises(ValueError):
        RedriveProgress.from_commit(10, metadata)


def test_too_many_scattered_pending_records_do_not_fit_in_a_commit() -> None:
    p = RedriveProgress()
    offset = 0
    while p.fits():
        p = p.advance(offset, redriven=False).advance(offset + 1, redriven=True)
        offset += 2
    assert len(p.metadata()) > MAX_METADATA_CHARS
    assert RedriveProgress(10**9, ((0, 10**9 - 1),)).fits()  # one long range is cheap


# --- headers and views ----------------------------------------------------------------------


def test_header_text_takes_the_last_value_and_escapes_bad_bytes() -> None:
    headers = [("a", b"1"), ("b", b"\xff"), ("a", b"2")]
    assert header_text(headers, "a") == "2"
    assert header_text(headers, "b") == "\\xff"
    assert header_text(headers, "missing") is None


def test_redrive_headers_drop_the_sinks_headers_and_say_where_from() -> None:
    headers = [
        ("event-type", b"OrderPlaced"),
        ("correlation-id", b"c"),
        ("dlq-reason", b"undecodable"),
        ("dlq-original-offset", b"5"),
        (REDRIVEN_FROM_HEADER, b"orders.dlq:0:1"),
    ]
    assert redrive_headers(headers, "orders.dlq:2:9") == [
        ("event-type", b"OrderPlaced"),
        ("correlation-id", b"c"),
        (REDRIVEN_FROM_HEADER, b"orders.dlq:2:9"),
    ]


def sink_headers(**extra: bytes) -> list[tuple[str, bytes]]:
    return [
        ("event-type", b"PaymentCaptured"),
        ("event-id", b"e-1"),
        ("dlq-reason", b"processing_failed"),
        ("dlq-error-type", b"RuntimeError"),
        ("dlq-error", b"Traceback...\nRuntimeError: boom"),
        ("dlq-original-topic", b"payments"),
        ("dlq-original-partition", b"4"),
        ("dlq-original-offset", b"99"),
        *extra.items(),
    ]


def test_view_of_a_decodable_dead_letter() -> None:
    value = encode(parse_event(EXAMPLES["PaymentCaptured"]))
    view = dead_letter_view(
        "payments.dlq", 1, 7, b"o-1", value, sink_headers(), timestamp_ms=123, redriven=True
    )
    assert view.ref == "payments.dlq:1:7"
    assert (view.original_topic, view.original_partition, view.original_offset) == (
        "payments",
        4,
        99,
    )
    assert (view.reason, view.error_type) == ("processing_failed", "RuntimeError")
    assert (view.event_type, view.event_id, view.key) == ("PaymentCaptured", "e-1", "o-1")
    assert view.decodable and view.decode_error is None and view.preview_hex is None
    assert view.envelope == json.loads(json.dumps(view.envelope))  # JSON already
    assert view.envelope is not None and view.envelope["data"]["amount"] == "140.48"
    assert view.redriven and view.redriven_from is None
    assert view.projection is None  # no dlq-projection header: the processor's join
    as_json = json.loads(json.dumps(view.to_json()))
    assert as_json["ref"] == "payments.dlq:1:7" and as_json["value_bytes"] == len(value)


def test_view_of_garbage_shows_a_hex_preview() -> None:
    value = bytes(range(40))
    view = dead_letter_view(
        "orders.dlq", 0, 3, None, value, [("dlq-original-partition", b"not a number")]
    )
    assert not view.decodable and view.envelope is None
    assert view.preview_hex == bytes(range(32)).hex(" ")
    assert view.decode_error is not None and "marker" in view.decode_error
    assert view.key is None and view.original_partition is None and view.reason is None


def test_view_of_avro_the_models_refuse_shows_the_raw_record() -> None:
    record = parse_event(copy.deepcopy(EXAMPLES["PaymentCaptured"])).model_dump()
    record["data"]["currency"] = "eur"  # not an ISO 4217 code in capitals
    writer = REGISTRY.latest("PaymentCaptured")
    out = BytesIO(writer.header)
    out.seek(0, 2)
    schemaless_writer(out, writer.parsed, record)
    view = dead_letter_view("payments.dlq", 0, 0, b"o-1", out.getvalue(), [])
    assert not view.decodable
    assert view.decode_error is not None and "currency" in view.decode_error
    assert view.envelope is not None
    assert view.envelope["type"] == "PaymentCaptured"
    assert view.envelope["data"]["currency"] == "eur"
    assert view.envelope["data"]["amount"] == "140.4800"
    json.dumps(view.envelope)  # money and times made JSON-safe


def test_table_shows_origin_reason_content_and_flag() -> None:
    good = dead_letter_view(
        "payments.dlq",
        1,
        7,
        b"o-1",
        encode(parse_event(EXAMPLES["PaymentCaptured"])),
        sink_headers(),
        redriven=True,
    )
    bad = dead_letter_view("orders.dlq", 0, 3, b"o-9", b"\x00\x01garbage", [])
    out = io.StringIO()
    Console(file=out, width=300).print(render_table([good, bad]))
    text = out.getvalue()
    assert "payments:4@99" in text and "orders.dlq:0@3" in text and "?:?@?" in text
    assert "│ RuntimeError: boom" in text and "Traceback" not in text
    assert '"amount":"140.48"' in text and "00 01 67" in text
    assert "(1 not re-driven)" in text
    assert "failed in" in text and "│ join " in text


def test_a_projections_dead_letter_names_the_projection() -> None:
    view = dead_letter_view(
        "orders.dlq",
        0,
        5,
        b"o-1",
        encode(parse_event(EXAMPLES["OrderPlaced"])),
        sink_headers(**{"dlq-projection": b"sku_sales"}),
    )
    assert view.projection == "sku_sales"
    assert view.to_json()["projection"] == "sku_sales"
    out = io.StringIO()
    Console(file=out, width=300).print(render_table([view]))
    assert "│ sku_sales " in out.getvalue()


# --- summaries and arguments ----------------------------------------------------------------


def test_summary_warns_about_undecodable_redrives() -> None:
    result = RedriveResult(
        redriven=[
            RedrivenLetter("orders.dlq:0:1", "orders", "o-1", None, decodable=False),
            RedrivenLetter("payments.dlq:0:1", "payments", "o-1", "PaymentCaptured", True),
        ],
        already_redriven=3,
    )
    text = result.render()
    assert text.splitlines()[0] == "re-drove 2 dead letter(s) (orders: 1, payments: 1)"
    assert "1 of them cannot be decoded" in text and "dead-letter them again" in text
    assert "orders.dlq:0:1" in text and "3 dead letter(s) re-driven by earlier runs" in text
    assert result.ok


def test_summary_of_a_dry_run_with_skips_and_a_failure() -> None:
    result = RedriveResult(
        dry_run=True,
        decodable_only=True,
        skipped=[SkippedLetter("orders.dlq:0:1", "not decodable")],
        error="KafkaConnectionError: no broker",
    )
    text = result.render()
    assert text.startswith("dry run: would re-drive 0 dead letter(s)")
    assert "orders.dlq:0:1: not decodable" in text
    assert "Kafka failed: KafkaConnectionError" in text
    assert "cannot be decoded" not in text
    assert not result.ok


def test_topic_names() -> None:
    assert source_topic("orders") == "orders"
    assert source_topic("payments.dlq") == "payments"
    with pytest.raises(ValueError, match="unknown topic"):
        source_topic("orders.dlq.dlq")


def test_cli_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["dlq", "redrive", "--topic", "orders.dlq", "--decodable-only"])
    assert (args.command, args.dlq_command, args.topic) == ("dlq", "redrive", "orders.dlq")
    assert args.decodable_only and not args.dry_run
    args = parser.parse_args(["dlq", "list", "--limit", "5", "--json"])
    assert (args.limit, args.json, args.topic, args.projection) == (5, True, None, None)
    args = parser.parse_args(["dlq", "list", "--projection", "sku_sales"])
    assert args.projection == "sku_sales"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["dlq", "list", "--topic", "shipments"])
    assert exit_info.value.code == 2
