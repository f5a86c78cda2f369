"""Guards on schema evolution, run by the tests and ``eventfold schemas``.

Topics are kept forever and replayed, so a consumer must read every message
ever written: each version of a type must be able to read (as reader) data
written with every earlier version (as writer). The Apache ``avro`` package's
ReaderWriterCompatibilityChecker decides; we only split its verdict per field
so that a problem names the field. It ignores logical types, so we also refuse
a changed logicalType/precision/scale (a rescaled decimal would silently
change every amount). Finally the pydantic models and the latest ``.avsc``
must describe the same fields, or encode/decode would drop or invent data.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    lookup_writer_field,
    schema_name_equals,
)
from pydantic import BaseModel

from schemas.codec import REGISTRY, SchemaRegistry
from schemas.events import EVENT_TYPES


@dataclass(frozen=True)
class CompatibilityProblem:
    type_name: str
    reader_version: int | None  # None from check_schema_pair
    writer_version: int | None
    field: str  # dotted path from the record root, e.g. "data.items[].quantity"
    kind: str  # the checker's incompatibility type, or logical_type_mismatch
    message: str

    def __str__(self) -> str:
        versions = ""
        if self.reader_version is not None:
            versions = f" v{self.reader_version} cannot read v{self.writer_version}"
        return f"{self.type_name}{versions}: field {self.field or '<root>'}: {self.message}"


_LOGICAL_PROPS = ("logicalType", "precision", "scale")


def _logical(schema: avro.schema.Schema) -> tuple[Any, ...]:
    return tuple(schema.props.get(p) for p in _LOGICAL_PROPS)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _compare(
    checker: ReaderWriterCompatibilityChecker,
    reader: avro.schema.Schema,
    writer: avro.schema.Schema,
    path: str,
    type_name: str,
) -> list[CompatibilityProblem]:
    """Walk matching records/arrays so each problem is pinned to one field."""

    def problem(kind: str, message: str, where: str = path) -> CompatibilityProblem:
        return CompatibilityProblem(type_name, None, None, where, kind, message)

    problems: list[CompatibilityProblem] = []
    if reader.type == writer.type and _logical(reader) != _logical(writer):
        problems.append(
            problem(
                "logical_type_mismatch",
                f"logical type changed from {_logical(writer)} to {_logical(reader)} "
                f"({'/'.join(_LOGICAL_PROPS)}); old bytes would be misread",
            )
        )
    if isinstance(reader, avro.schema.RecordSchema) and isinstance(
        writer, avro.schema.RecordSchema
    ):
        if not schema_name_equals(reader, writer):
            problems.append(
                problem("name_mismatch", f"record {reader.fullname} cannot read {writer.fullname}")
            )
        for field in reader.fields:
            writer_field = lookup_writer_field(writer_schema=writer, reader_field=field)
            where = _join(path, field.name)
            if writer_field is not None:
                problems += _compare(checker, field.type, writer_field.type, where, type_name)
            elif not field.has_default:
                problems.append(
                    problem(
                        "reader_field_missing_default_value",
                        f"new field {field.name!r} has no default, so data written "
                        "without it cannot be read; give it a default",
                        where,
                    )
                )
        return problems
    if isinstance(reader, avro.schema.ArraySchema) and isinstance(writer, avro.schema.ArraySchema):
        return problems + _compare(checker, reader.items, writer.items, path + "[]", type_name)
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.compatible:
        kinds = ",".join(sorted({k.value for k in result.incompatibilities}))
        problems.append(problem(kinds, "; ".join(sorted(result.messages))))
    return problems


def _parse(schema: str | dict[str, Any]) -> avro.schema.Schema:
    return avro.schema.parse(schema if isinstance(schema, str) else json.dumps(schema))


def check_schema_pair(
    reader_json: str | dict[str, Any], writer_json: str | dict[str, Any]
) -> list[CompatibilityProblem]:
    """Problems preventing ``reader`` from reading data written with ``writer``."""
    reader, writer = _parse(reader_json), _parse(writer_json)
    type_name = getattr(reader, "name", reader.type)
    checker = ReaderWriterCompatibilityChecker()
    verdict = checker.get_compatibility(reader, writer)  # the authority
    problems = _compare(checker, reader, writer, "", type_name)
    logical = [p for p in problems if p.kind == "logical_type_mismatch"]
    if verdict.compatibility is SchemaCompatibilityType.compatible:
        return logical
    if len(problems) == len(logical):  # the walk could not localise it: report as is
        kinds = ",".join(sorted({k.value for k in verdict.incompatibilities}))
        where = ", ".join(sorted(verdict.locations))
        message = f"{'; '.join(sorted(verdict.messages))} at {where}"
        problems.append(CompatibilityProblem(type_name, None, None, "", kinds, message))
    return problems


def check_all(registry: SchemaRegistry = REGISTRY) -> list[CompatibilityProblem]:
    """Every version of every type against every earlier version of it."""
    problems: list[CompatibilityProblem] = []
    for type_name in registry.type_names():
        versions = registry.versions(type_name)
        for i, new in enumerate(versions):
            for old in versions[:i]:
                problems += [
                    replace(p, reader_version=new.version, writer_version=old.version)
                    for p in check_schema_pair(new.schema, old.schema)
                ]
    return problems


# --- pydantic models against the latest .avsc -------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(type without Annotated/Optional, whether None is allowed)."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            if len(args) != 1:
                return annotation, nullable
            annotation = args[0]
        else:
            return annotation, nullable


_PRIMITIVES: dict[tuple[str, str | None], type] = {
    ("string", None): str,
    ("string", "uuid"): str,
    ("int", None): int,
    ("long", None): int,
    ("long", "timestamp-micros"): datetime,
    ("bytes", "decimal"): Decimal,
    ("boolean", None): bool,
}


def _compare_type(avro_type: Any, annotation: Any, path: str) -> list[str]:
    """Compare one (non-null) Avro type with one python annotation."""
    if isinstance(avro_type, str):
        avro_type = {"type": avro_type}
    kind = avro_type["type"]
    if kind == "record":
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return _compare_record(avro_type, annotation, path)
        return [f"{path}: Avro record, model has {annotation!r}"]
    if kind == "array":
        if typing.get_origin(annotation) is list:
            item = _unwrap(typing.get_args(annotation)[0])[0]
            return _compare_type(avro_type["items"], item, path + "[]")
        return [f"{path}: Avro array, model has {annotation!r}"]
    expected = _PRIMITIVES.get((kind, avro_type.get("logicalType")))
    if expected is None or expected is not annotation:
        return [f"{path}: Avro {avro_type} does not match model type {annotation!r}"]
    return []


# Optional in the model (generated when absent) yet always present on the wire.
_GENERATED = frozenset({"event_id", "occurred_at"})


def _compare_record(record: dict[str, Any], model: type[BaseModel], path: str) -> list[str]:
    problems: list[str] = []
    avro_fields = {f["name"]: f for f in record["fields"]}
    model_fields = {n: f for n, f in model.model_fields.items() if n != "type"}
    for name in avro_fields.keys() - model_fields.keys():
        problems.append(f"{_join(path, name)}: in the .avsc but not in {model.__name__}")
    for name in model_fields.keys() - avro_fields.keys():
        problems.append(f"{_join(path, name)}: in {model.__name__} but not in the .avsc")
    for name in avro_fields.keys() & model_fields.keys():
        where, avro_field, info = _join(path, name), avro_fields[name], model_fields[name]
        annotation, nullable = _unwrap(info.annotation)
        avro_type = avro_field["type"]
        branches = avro_type if isinstance(avro_type, list) else [avro_type]
        non_null = [b for b in branches if b != "null"]
        if ("null" in branches) != nullable:
            problems.append(f"{where}: nullable in one of .avsc/model only")
        if len(non_null) != 1:
            problems.append(f"{where}: unions other than [null, T] are not supported")
            continue
        if where not in _GENERATED and ("default" in avro_field) == info.is_required():
            problems.append(f"{where}: optional (has a default) in one of .avsc/model only")
        elif "default" in avro_field and avro_field["default"] != info.default:
            problems.append(
                f"{where}: default {avro_field['default']!r} in the .avsc, "
                f"{info.default!r} in the model"
            )
        problems += _compare_type(non_null[0], annotation, where)
    return problems


def check_models_match_schemas(registry: SchemaRegistry = REGISTRY) -> list[str]:
    """Differences between each envelope model and its type's latest .avsc."""
    problems = [
        f"{name}: .avsc without a model in schemas.events.EVENT_TYPES"
        for name in registry.type_names()
        if name not in EVENT_TYPES
    ]
    for name, model in EVENT_TYPES.items():
        if name not in registry.type_names():
            problems.append(f"{name}: model without schemas/avro/{name}/v1.avsc")
            continue
        problems += [
            f"{name}: {p}" for p in _compare_record(registry.latest(name).schema, model, "")
        ]
    return sorted(problems)
