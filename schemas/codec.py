"""Avro single-object encoding of events: the bytes of every Kafka message value.

Layout (Avro spec, "Single object encoding"): marker ``C3 01``, the 8-byte
little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
Canonical Form, then the Avro binary body. The fingerprint lets a consumer
find the exact writer schema among the ``.avsc`` files it ships with, and
fastavro resolves the body into the newest schema of that event type, so old
messages stay readable after a schema gains a field.

New versions are files, not code: the registry loads every
``schemas/avro/<Type>/v<N>.avsc`` at import and writes with the highest N.

fastavro does the hot path with schemas parsed once up front (its canonical
form is the spec's; avro-python's keeps ``{"type": "string"}`` for logical
types and would give fingerprints Java consumers do not know). Measured with
timeit on one core of this machine (Python 3.11, fastavro 1.13, pydantic
2.14; best of 7, the machine was shared so runs vary by ~30%) for the
92-byte OrderPlaced example with two items: encode ~50k/s (20 us), decode
~38k/s (26 us, of which ~11 us re-validate the pydantic model), decode of a
v1 payload resolved into v2 ~28k/s (36 us). Over the benchmark's traffic (20,000
records of every type, 2026-12-04): 13 us per record, half of it Avro (event ids read
as strings: ``_for_reading``), half the model's validation; 15.4 us before.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.resources.abc import Traversable
from io import BytesIO
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form
from pydantic import ValidationError

from schemas.events import CANONICAL_UUID, EVENT_TYPES, Event, EventBase

MARKER = b"\xc3\x01"
HEADER_LENGTH = len(MARKER) + 8
NAMESPACE = "eventfold.events"
_VERSION_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


class CodecError(ValueError):
    """Bytes that are not a valid event, or an event that cannot be written."""


class UnknownSchemaError(CodecError):
    """No shipped schema has this fingerprint (or this type/version)."""


class DecodeError(CodecError):
    """Malformed payload: bad marker, truncated or trailing bytes, invalid content."""


class SchemaLoadError(Exception):
    """A shipped .avsc file is malformed; raised at import, never at run time."""


@dataclass(frozen=True)
class SchemaVersion:
    """One ``.avsc`` file, parsed once."""

    type_name: str
    version: int
    path: str
    schema: dict[str, Any] = field(repr=False)  # the JSON as written
    parsed: dict[str, Any] = field(repr=False)  # fastavro's parsed form
    reading: dict[str, Any] = field(repr=False)  # the same, for decoding (``_for_reading``)
    canonical_form: str = field(repr=False)
    fingerprint: bytes  # 8 bytes, CRC-64-AVRO, little-endian as on the wire

    @property
    def header(self) -> bytes:
        return MARKER + self.fingerprint


EVENT_ID_FIELD = "event_id"
"""The envelope's one field of Avro's ``uuid`` logical type."""


def _for_reading(schema: dict[str, Any]) -> dict[str, Any]:
    """The envelope's schema with its event id read as the string on the wire (the same
    bytes: a ``uuid`` is a string). fastavro would make a ``UUID`` of every id, which the
    model turns back into the same string: 3 of the 15 us a record's decoding took. An
    id in any other than the canonical spelling is still read as fastavro read it
    (``decode_record``), so what decodes, and to which id, is what it was."""
    return {
        **schema,
        "fields": [
            {**f, "type": {k: v for k, v in f["type"].items() if k != "logicalType"}}
            if f.get("name") == EVENT_ID_FIELD
            and isinstance(f.get("type"), dict)
            and f["type"].get("logicalType") == "uuid"
            else f
            for f in schema.get("fields", [])
        ],
    }


def _load(type_name: str, entry: Traversable, version: int) -> SchemaVersion:
    where = f"{type_name}/{entry.name}"
    try:
        schema = json.loads(entry.read_text(encoding="utf-8"))
        parsed = cast(dict[str, Any], parse_schema(schema))
        reading = cast(dict[str, Any], parse_schema(_for_reading(schema)))
        canonical = to_parsing_canonical_form(schema)
    except Exception as exc:  # json, fastavro parse errors: all fatal, say where
        raise SchemaLoadError(f"{where}: {exc}") from exc
    if (
        schema.get("type") != "record"
        or schema.get("name") != type_name
        or schema.get("namespace") != NAMESPACE
    ):
        raise SchemaLoadError(
            f"{where}: must be a record named {type_name!r} in namespace {NAMESPACE!r}"
        )
    return SchemaVersion(
        type_name=type_name,
        version=version,
        path=where,
        schema=schema,
        parsed=parsed,
        reading=reading,
        canonical_form=canonical,
        fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
    )


class SchemaRegistry:
    """Every shipped schema version, by type and by fingerprint."""

    def __init__(self, root: Traversable | Path | None = None) -> None:
        root = root if root is not None else files("schemas").joinpath("avro")
        self._versions: dict[str, tuple[SchemaVersion, ...]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for type_dir in sorted(root.iterdir(), key=lambda e: e.name):
            if not type_dir.is_dir() or type_dir.name.startswith(("_", ".")):
                continue
            loaded = []
            for entry in type_dir.iterdir():
                if entry.name.endswith(".avsc"):
                    match = _VERSION_FILE.fullmatch(entry.name)
                    if match is None:
                        raise SchemaLoadError(f"{type_dir.name}/{entry.name}: expected vN.avsc")
                    loaded.append(_load(type_dir.name, entry, int(match.group(1))))
            loaded.sort(key=lambda sv: sv.version)
            if [sv.version for sv in loaded] != list(range(1, len(loaded) + 1)):
                raise SchemaLoadError(f"{type_dir.name}: versions must be v1..vN without gaps")
            for sv in loaded:
                # Canonical form ignores defaults, docs and logical types, so a
                # version differing only in those would be indistinguishable.
                if (clash := self._by_fingerprint.get(sv.fingerprint)) is not None:
                    raise SchemaLoadError(f"{sv.path} has the same canonical form as {clash.path}")
                self._by_fingerprint[sv.fingerprint] = sv
            if loaded:
                self._versions[type_dir.name] = tuple(loaded)

    def type_names(self) -> tuple[str, ...]:
        return tuple(self._versions)

    def versions(self, type_name: str) -> tuple[SchemaVersion, ...]:
        """All versions of a type, oldest first."""
        try:
            return self._versions[type_name]
        except KeyError:
            raise UnknownSchemaError(
                f"no schema for event type {type_name!r}; known: {', '.join(self._versions)}"
            ) from None

    def latest(self, type_name: str) -> SchemaVersion:
        """The reader schema, and the writer schema of new messages."""
        return self.versions(type_name)[-1]

    def get(self, type_name: str, version: int) -> SchemaVersion:
        for sv in self.versions(type_name):
            if sv.version == version:
                return sv
        raise UnknownSchemaError(f"{type_name} has no schema version {version}")

    def by_fingerprint(self, fp: bytes) -> SchemaVersion:
        try:
            return self._by_fingerprint[fp]
        except KeyError:
            raise UnknownSchemaError(
                f"no known schema has fingerprint {fp.hex()}: written by a newer "
                "producer, or not an Eventfold event"
            ) from None


REGISTRY = SchemaRegistry()


def _write(event: EventBase, sv: SchemaVersion) -> bytes:
    out = BytesIO()
    out.write(sv.header)
    try:
        schemaless_writer(out, sv.parsed, event.model_dump())
    except (ValueError, TypeError) as exc:
        raise CodecError(f"cannot encode {sv.type_name} with v{sv.version}: {exc}") from exc
    return out.getvalue()


def encode(event: EventBase) -> bytes:
    """Single-object encoding with the latest schema of the event's type."""
    return _write(event, REGISTRY.latest(event.type))


def encode_with(event: EventBase, version: int) -> bytes:
    """Encode with an older writer schema (tests, and simulating old producers).

    Fields the older schema lacks are dropped.
    """
    return _write(event, REGISTRY.get(event.type, version))


def fingerprint_hex(type_name: str, version: int) -> str:
    return REGISTRY.get(type_name, version).fingerprint.hex()


def event_type(payload: bytes | bytearray | memoryview, registry: SchemaRegistry = REGISTRY) -> str:
    """The event type a payload holds, from its header alone (no body decoded): a consumer
    that wants some types only skips the others at this cost. Raises ``DecodeError`` as
    ``decode`` does for a payload whose header is not one of ours."""
    if len(payload) < HEADER_LENGTH or payload[:2] != MARKER:
        raise DecodeError("not Avro single-object encoding")
    return registry.by_fingerprint(bytes(payload[2:HEADER_LENGTH])).type_name


def decode_record(
    payload: bytes | bytearray | memoryview, registry: SchemaRegistry = REGISTRY
) -> tuple[SchemaVersion, dict[str, Any]]:
    """The writer schema and the Avro record resolved into the latest reader schema.

    No model validation: for tooling that must show a payload the models refuse.
    """
    if len(payload) < HEADER_LENGTH:
        raise DecodeError(
            f"payload of {len(payload)} bytes is shorter than the {HEADER_LENGTH}-byte header"
        )
    if payload[:2] != MARKER:
        raise DecodeError(
            f"bad marker {bytes(payload[:2]).hex()}: not Avro single-object encoding (c301)"
        )
    writer = registry.by_fingerprint(bytes(payload[2:HEADER_LENGTH]))
    reader = registry.latest(writer.type_name)
    body = BytesIO(payload)
    body.seek(HEADER_LENGTH)
    try:
        record = cast(
            dict[str, Any],
            schemaless_reader(body, writer.reading, None if reader is writer else reader.reading),
        )
    except Exception as exc:  # fastavro raises EOFError, ValueError, ... on bad bytes
        raise DecodeError(
            f"{writer.type_name} v{writer.version}: truncated or corrupt body ({exc!r})"
        ) from exc
    if body.tell() != len(payload):
        raise DecodeError(
            f"{writer.type_name} v{writer.version}: "
            f"{len(payload) - body.tell()} trailing bytes after the body"
        )
    event_id = record.get(EVENT_ID_FIELD)
    if isinstance(event_id, str) and not CANONICAL_UUID.fullmatch(event_id):
        try:  # as fastavro's uuid logical type reads it: ``uuid.UUID`` of the text as is
            record[EVENT_ID_FIELD] = uuid.UUID(event_id)
        except ValueError:
            raise DecodeError(
                f"{writer.type_name} v{writer.version}: {EVENT_ID_FIELD} {event_id!r} is not a UUID"
            ) from None
    return writer, record


def decode(payload: bytes | bytearray | memoryview, registry: SchemaRegistry = REGISTRY) -> Event:
    """Inverse of :func:`encode`, for any shipped writer version of the type."""
    writer, record = decode_record(payload, registry)
    model = EVENT_TYPES.get(writer.type_name)
    if model is None:
        raise UnknownSchemaError(f"no model for event type {writer.type_name!r}")
    record["type"] = writer.type_name
    try:
        return cast(Event, model.model_validate(record))
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DecodeError(
            f"{writer.type_name} v{writer.version}: invalid content: {details}"
        ) from exc
