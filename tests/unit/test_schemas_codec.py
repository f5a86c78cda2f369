"""Avro single-object encoding: round trips, schema evolution, bad input."""

from __future__ import annotations

import copy
import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import avro.schema
import pytest
from fastavro import schemaless_writer
from fastavro.schema import fingerprint
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec
from schemas.codec import (
    MARKER,
    REGISTRY,
    CodecError,
    DecodeError,
    SchemaLoadError,
    SchemaRegistry,
    UnknownSchemaError,
    decode,
    decode_record,
    encode,
    encode_with,
    fingerprint_hex,
)
from schemas.events import (
    EVENT_TYPES,
    OrderItem,
    OrderPlaced,
    OrderPlacedData,
    event_to_json,
    parse_event,
)
from schemas.examples import EXAMPLES

SHIPPED = Path(codec.__file__).parent / "avro"


@pytest.mark.parametrize("type_name", sorted(EXAMPLES))
def test_every_type_round_trips(type_name: str) -> None:
    event = parse_event(EXAMPLES[type_name])
    payload = encode(event)
    back = decode(payload)
    assert type(back) is EVENT_TYPES[type_name]
    assert back == event
    assert event_to_json(back) == event_to_json(event)


def test_header_is_marker_plus_fingerprint_of_latest_schema() -> None:
    payload = encode(parse_event(EXAMPLES["OrderPlaced"]))
    assert payload[:2] == b"\xc3\x01" == MARKER
    assert payload[2:10].hex() == fingerprint_hex("OrderPlaced", 2)
    assert REGISTRY.latest("OrderPlaced").version == 2


def test_fingerprint_byte_order_matches_the_java_reference() -> None:
    # Known CRC-64-AVRO values from Avro's shared test data (as Java signed longs);
    # single-object encoding writes them little-endian.
    for schema, value in [('"null"', 7195948357588979594), ('"int"', 8247732601305521295)]:
        wire = bytes.fromhex(fingerprint(schema, "CRC-64-AVRO"))
        assert int.from_bytes(wire, "little", signed=True) == value


def _strip_logical(node: Any) -> Any:
    if isinstance(node, dict):
        if "logicalType" in node:
            return node["type"]
        return {k: _strip_logical(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_strip_logical(v) for v in node]
    return node


@pytest.mark.parametrize("sv", [sv for t in REGISTRY.type_names() for sv in REGISTRY.versions(t)])
def test_fingerprints_agree_with_the_avro_reference_package(sv: codec.SchemaVersion) -> None:
    # The spec's canonical form writes primitives with a logical type as the bare
    # primitive name ("string"); avro-python keeps {"type": "string"}, so compare
    # it on the schema without logical types: an independent CRC-64 implementation.
    assert "logicalType" not in sv.canonical_form
    reference = avro.schema.parse(json.dumps(_strip_logical(sv.schema)))
    assert reference.canonical_form == sv.canonical_form
    assert reference.fingerprint("CRC-64-AVRO") == sv.fingerprint


def test_registry_lookups() -> None:
    versions = REGISTRY.versions("OrderPlaced")
    assert [sv.version for sv in versions] == [1, 2]
    assert len({sv.fingerprint for sv in versions}) == 2
    for sv in versions:
        assert REGISTRY.by_fingerprint(sv.fingerprint) is sv
        assert len(sv.fingerprint) == 8
    assert set(REGISTRY.type_names()) == set(EVENT_TYPES)
    assert [sv.version for sv in REGISTRY.versions("OrderDelivered")] == [1]
    with pytest.raises(UnknownSchemaError, match="OrderTeleported"):
        REGISTRY.latest("OrderTeleported")
    with pytest.raises(UnknownSchemaError, match="no schema version 9"):
        fingerprint_hex("OrderPlaced", 9)


# --- evolution ------------------------------------------------------------------


def test_v1_payload_read_with_v2_reader_gets_the_default() -> None:
    event = parse_event(EXAMPLES["OrderPlaced"])
    assert isinstance(event, OrderPlaced)
    assert event.data.channel == "web"
    old = encode_with(event, 1)
    assert old[2:10].hex() == fingerprint_hex("OrderPlaced", 1) != fingerprint_hex("OrderPlaced", 2)
    back = decode(old)
    assert isinstance(back, OrderPlaced)
    assert back.data.channel is None
    assert back.data.items == event.data.items
    assert back.event_id == event.event_id and back.occurred_at == event.occurred_at


def test_v1_record_is_resolved_by_avro_into_the_v2_reader() -> None:
    """The default comes from the reader schema, not only from the pydantic model."""
    event = parse_event(EXAMPLES["OrderPlaced"])
    writer, record = decode_record(encode_with(event, 1))
    assert (writer.type_name, writer.version) == ("OrderPlaced", 1)
    assert "channel" in record["data"] and record["data"]["channel"] is None
    writer, record = decode_record(encode(event))
    assert (writer.version, record["data"]["channel"]) == (2, "web")


def test_decode_with_an_explicit_registry(tmp_path: Path) -> None:
    """A consumer that only knows v1 refuses v2 payloads instead of misreading them."""
    root = tmp_path / "avro"
    shutil.copytree(SHIPPED, root)
    (root / "OrderPlaced" / "v2.avsc").unlink()
    old_consumer = SchemaRegistry(root)
    event = parse_event(EXAMPLES["OrderPlaced"])
    assert decode(encode_with(event, 1), old_consumer).type == "OrderPlaced"
    with pytest.raises(UnknownSchemaError, match=fingerprint_hex("OrderPlaced", 2)):
        decode(encode(event), old_consumer)


def test_v1_and_v2_payloads_of_the_same_event_differ_only_by_the_new_field() -> None:
    event = parse_event(EXAMPLES["OrderPlaced"])
    without_channel = event.model_copy(
        update={"data": event.data.model_copy(update={"channel": None})}
    )
    assert decode(encode_with(event, 1)) == without_channel


def test_a_new_version_is_a_new_file(tmp_path: Path) -> None:
    shutil.copytree(SHIPPED, tmp_path / "avro")
    v2 = json.loads((SHIPPED / "OrderDelivered" / "v1.avsc").read_text())
    v2["fields"][2]["type"]["fields"].append(
        {"name": "signed_by", "type": ["null", "string"], "default": None}
    )
    (tmp_path / "avro" / "OrderDelivered" / "v2.avsc").write_text(json.dumps(v2))
    registry = SchemaRegistry(tmp_path / "avro")
    assert registry.latest("OrderDelivered").version == 2
    assert registry.latest("OrderPlaced").fingerprint == REGISTRY.latest("OrderPlaced").fingerprint


# --- hypothesis: any valid OrderPlaced survives the wire ---------------------------

_ids = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=128).filter(
    lambda s: s.strip() == s != ""
)
_money = st.decimals(min_value=0, max_value=Decimal("999999999999.9999"), places=4, allow_nan=False)
_items = st.builds(OrderItem, sku=_ids, quantity=st.integers(1, 2**31 - 1), unit_price=_money)
_order_placed = st.builds(
    OrderPlaced,
    event_id=st.uuids().map(str),
    occurred_at=st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        ),
    ),
    data=st.builds(
        OrderPlacedData,
        order_id=_ids,
        customer_id=_ids,
        currency=st.sampled_from(["EUR", "USD", "JPY", "KWD", "CHF"]),
        items=st.lists(_items, min_size=1, max_size=5),
        channel=st.none() | st.sampled_from(["web", "mobile", "pos"]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(_order_placed)
def test_any_order_placed_round_trips(event: OrderPlaced) -> None:
    back = decode(encode(event))
    assert back == event
    assert event_to_json(back) == event_to_json(event)
    old = decode(encode_with(event, 1))
    assert isinstance(old, OrderPlaced)
    assert old.data.items == event.data.items


# --- bad input ----------------------------------------------------------------------


@pytest.fixture
def payload() -> bytes:
    return encode(parse_event(EXAMPLES["OrderPlaced"]))


def test_errors_are_value_errors() -> None:
    assert issubclass(DecodeError, CodecError)
    assert issubclass(UnknownSchemaError, CodecError)
    assert issubclass(CodecError, ValueError)


def test_bad_marker(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="bad marker"):
        decode(b"\x00\x01" + payload[2:])
    with pytest.raises(DecodeError, match="bad marker"):
        decode(json.dumps(EXAMPLES["OrderPlaced"]).encode())


def test_unknown_fingerprint(payload: bytes) -> None:
    with pytest.raises(UnknownSchemaError, match="0123456789abcdef"):
        decode(MARKER + bytes.fromhex("0123456789abcdef") + payload[10:])


@pytest.mark.parametrize("length", [0, 1, 2, 9])
def test_truncated_header(payload: bytes, length: int) -> None:
    with pytest.raises(DecodeError, match="shorter than the 10-byte header"):
        decode(payload[:length])


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_body(payload: bytes, cut: int) -> None:
    with pytest.raises(DecodeError, match="OrderPlaced v2: truncated or corrupt body"):
        decode(payload[:-cut])


def test_header_without_body(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="truncated"):
        decode(payload[:10])


def test_trailing_bytes(payload: bytes) -> None:
    with pytest.raises(DecodeError, match="2 trailing bytes"):
        decode(payload + b"\x00\x00")


def test_body_that_breaks_the_model_is_refused() -> None:
    sv = REGISTRY.latest("OrderPlaced")
    record = event_to_json(parse_event(EXAMPLES["OrderPlaced"]))
    record = copy.deepcopy(record)
    record["occurred_at"] = datetime(2024, 1, 1, tzinfo=UTC)
    record["data"]["items"][0]["quantity"] = -3
    record["data"]["items"][0]["unit_price"] = Decimal("9.99")
    record["data"]["items"][1]["unit_price"] = Decimal("1")
    out = BytesIO()
    out.write(sv.header)
    schemaless_writer(out, sv.parsed, record)
    with pytest.raises(
        DecodeError,
        match=r"invalid content: data\.items\.0\.quantity: Input should be greater than 0",
    ):
        decode(out.getvalue())


def test_an_amount_the_read_models_cannot_count_is_undecodable() -> None:
    """The wire format has room for 16 integer digits, the read models for 12: such a
    record (from another producer, or published before the bound) is undecodable, so
    the processors dead-letter it and a rebuild and verify skip it, all alike."""
    sv = REGISTRY.latest("PaymentCaptured")
    record = event_to_json(parse_event(EXAMPLES["PaymentCaptured"]))
    record["occurred_at"] = datetime(2024, 1, 1, tzinfo=UTC)
    record["data"]["amount"] = Decimal("1000000000000000")
    out = BytesIO()
    out.write(sv.header)
    schemaless_writer(out, sv.parsed, record)
    with pytest.raises(DecodeError, match=r"data\.amount: .*below 10\^12"):
        decode(out.getvalue())


def _with_event_id(event_id: str) -> bytes:
    """An OrderPlaced payload whose event id is spelled ``event_id`` (another producer's)."""
    sv = REGISTRY.latest("OrderPlaced")
    record = event_to_json(parse_event(EXAMPLES["OrderPlaced"]))
    record["occurred_at"] = datetime(2024, 1, 1, tzinfo=UTC)
    for item in record["data"]["items"]:
        item["unit_price"] = Decimal(item["unit_price"])
    record["event_id"] = event_id
    out = BytesIO()
    out.write(sv.header)
    schemaless_writer(out, sv.parsed, record)
    return out.getvalue()


@pytest.mark.parametrize(
    "spelling",
    [
        "0b6f6aa6-4e7f-48c5-b391-e06a0dc5ef0a",
        "0B6F6AA6-4E7F-48C5-B391-E06A0DC5EF0A",
        "0b6f6aa64e7f48c5b391e06a0dc5ef0a",
        "{0b6f6aa6-4e7f-48c5-b391-e06a0dc5ef0a}",
        "urn:uuid:0b6f6aa6-4e7f-48c5-b391-e06a0dc5ef0a",
        " 0b6f6aa6-4e7f-48c5-b391-e06a0dc5ef0a",  # padded: never a UUID on the wire
        " 0b6f6aa64e7f48c5b391e06a0dc5ef0",  # 31 digits and a space: uuid.UUID takes it
        "not-a-uuid",
    ],
)
def test_an_event_id_decodes_as_avros_uuid_type_reads_it(spelling: str) -> None:
    """Event ids are read as the strings on the wire (not as ``UUID`` objects), and one
    in any other than the canonical spelling as fastavro's ``uuid`` logical type read it,
    ``uuid.UUID(text)``: the same records decode, to the same ids, as before."""
    try:
        expected = str(uuid.UUID(spelling))
    except ValueError:
        with pytest.raises(DecodeError, match=r"event_id .* is not a UUID"):
            decode(_with_event_id(spelling))
    else:
        assert decode(_with_event_id(spelling)).event_id == expected


def test_accepts_memoryview_and_bytearray(payload: bytes) -> None:
    assert decode(bytearray(payload)) == decode(memoryview(payload)) == decode(payload)


# --- registry loading refuses malformed schema folders -----------------------------


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "avro"
    shutil.copytree(SHIPPED, root)
    return root


def test_gap_in_versions_is_refused(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    (root / "OrderPlaced" / "v2.avsc").rename(root / "OrderPlaced" / "v3.avsc")
    with pytest.raises(SchemaLoadError, match=r"OrderPlaced: versions must be v1\.\.vN"):
        SchemaRegistry(root)


def test_record_name_must_match_the_folder(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    shutil.copy(root / "OrderShipped" / "v1.avsc", root / "OrderDelivered" / "v2.avsc")
    with pytest.raises(SchemaLoadError, match=r"OrderDelivered/v2\.avsc: must be a record named"):
        SchemaRegistry(root)


def test_same_canonical_form_twice_is_refused(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    v2 = json.loads((root / "OrderDelivered" / "v1.avsc").read_text())
    v2["doc"] = "only the doc changed, so the fingerprint did not"
    (root / "OrderDelivered" / "v2.avsc").write_text(json.dumps(v2))
    with pytest.raises(SchemaLoadError, match="same canonical form"):
        SchemaRegistry(root)


@pytest.mark.parametrize(("name", "text"), [("v1.avsc", "{not json"), ("version2.avsc", "{}")])
def test_malformed_files_are_refused(tmp_path: Path, name: str, text: str) -> None:
    root = _copy(tmp_path)
    (root / "OrderDelivered" / name).write_text(text)
    with pytest.raises(SchemaLoadError, match="OrderDelivered/"):
        SchemaRegistry(root)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([sv for t in REGISTRY.type_names() for sv in REGISTRY.versions(t)]),
    st.binary(max_size=200),
)
def test_garbage_body_raises_only_codec_errors(sv: codec.SchemaVersion, body: bytes) -> None:
    try:
        event = decode(sv.header + body)
    except CodecError:
        return
    assert event.type == sv.type_name  # rare: the bytes happened to be a valid event
