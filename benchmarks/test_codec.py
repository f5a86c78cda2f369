"""Codec: Avro encode/decode of demo events, per core (CPU time of this process).

Two readings of the same rounds, interleaved:
- raw fastavro against the ``avro`` reference package (a *baseline*: the
  library the hot path does not use; ratio = speed-up), on the same records
  and the same schemas, byte-for-byte the same output;
- the product's ``schemas.codec.encode`` / ``decode`` (pydantic dump/validate,
  single-object header, schema resolution) against raw fastavro (a *ceiling*:
  the Avro work alone; ratio = share of the time that is Avro).
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import avro.io
import avro.schema
from fastavro import schemaless_reader, schemaless_writer

from benchmarks.conftest import demo_envelopes
from benchmarks.measure import Figure, Report, best_cpu_rates
from schemas.codec import HEADER_LENGTH, REGISTRY, SchemaVersion, decode, encode
from schemas.events import parse_event

ORDERS = 600  # about 3,000 events
ROUNDS = 5
_SCALE = Decimal("0.0001")


def _at_schema_scale(value: Any) -> Any:
    """avro-python writes a Decimal's own digits without rescaling to the schema's scale
    (Decimal("9.99") would read back as 0.0999 at scale 4); fastavro rescales."""
    if isinstance(value, Decimal):
        return value.quantize(_SCALE)
    if isinstance(value, dict):
        return {k: _at_schema_scale(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_at_schema_scale(v) for v in value]
    return value


def test_codec_fastavro_against_avro_reference(report: Report) -> None:
    events = [parse_event(e) for e in demo_envelopes(ORDERS)]
    n = len(events)
    writers: dict[str, tuple[SchemaVersion, avro.io.DatumWriter, avro.io.DatumReader]] = {}
    records: list[tuple[SchemaVersion, dict[str, Any], dict[str, Any]]] = []
    for event in events:
        sv = REGISTRY.latest(event.type)
        if event.type not in writers:
            schema = avro.schema.parse(json.dumps(sv.schema))
            writers[event.type] = (
                sv,
                avro.io.DatumWriter(schema),
                avro.io.DatumReader(schema, schema),
            )
        record = event.model_dump()
        record.pop("type")  # not a field of the Avro record (the reference refuses extras)
        records.append((sv, record, _at_schema_scale(record)))
    payloads = [encode(e) for e in events]
    bodies = [p[HEADER_LENGTH:] for p in payloads]

    def fastavro_encode() -> int:
        for sv, record, _ in records:
            out = io.BytesIO()
            schemaless_writer(out, sv.parsed, record)
        return n

    def avro_encode() -> int:
        for sv, _, scaled in records:
            out = io.BytesIO()
            writers[sv.type_name][1].write(scaled, avro.io.BinaryEncoder(out))
        return n

    def fastavro_decode() -> int:
        for (sv, _, _), body in zip(records, bodies, strict=True):
            schemaless_reader(io.BytesIO(body), sv.parsed, None)
        return n

    def avro_decode() -> int:
        for (sv, _, _), body in zip(records, bodies, strict=True):
            writers[sv.type_name][2].read(avro.io.BinaryDecoder(io.BytesIO(body)))
        return n

    def codec_encode() -> int:
        for event in events:
            encode(event)
        return n

    def codec_decode() -> int:
        for payload in payloads:
            decode(payload)
        return n

    # sanity: both libraries write the same bytes, and the product's codec round-trips
    for (sv, _, scaled), body in list(zip(records, bodies, strict=True))[:200]:
        out = io.BytesIO()
        writers[sv.type_name][1].write(scaled, avro.io.BinaryEncoder(out))
        assert out.getvalue() == body, sv.type_name
    assert [decode(p) for p in payloads[:200]] == events[:200]

    rates = best_cpu_rates(
        {
            "fastavro_encode": fastavro_encode,
            "avro_encode": avro_encode,
            "fastavro_decode": fastavro_decode,
            "avro_decode": avro_decode,
            "codec_encode": codec_encode,
            "codec_decode": codec_decode,
        },
        rounds=ROUNDS,
    )
    best = {name: max(values) for name, values in rates.items()}
    common = {
        "events": n,
        "rounds": ROUNDS,
        "mean_payload_bytes": round(sum(map(len, payloads)) / n, 1),
        "all_rounds": {k: [round(v) for v in vs] for k, vs in rates.items()},
    }
    unit = "ev/s/core"
    figures = [
        Figure(
            "codec.encode fastavro",
            best["fastavro_encode"],
            unit,
            best["avro_encode"],
            "avro reference encode",
            kind="baseline",
            details=common,
        ),
        Figure(
            "codec.decode fastavro",
            best["fastavro_decode"],
            unit,
            best["avro_decode"],
            "avro reference decode",
            kind="baseline",
            details=common,
        ),
        Figure(
            "codec.encode product (schemas.codec)",
            best["codec_encode"],
            unit,
            best["fastavro_encode"],
            "raw fastavro encode",
            details=common,
        ),
        Figure(
            "codec.decode product (schemas.codec)",
            best["codec_decode"],
            unit,
            best["fastavro_decode"],
            "raw fastavro decode",
            details=common,
        ),
    ]
    for figure in figures:
        report.add(figure)
        assert figure.ratio > 0
