"""Schema evolution rules and model/schema agreement."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from schemas import codec
from schemas.codec import REGISTRY, SchemaRegistry
from schemas.compatibility import (
    CompatibilityProblem,
    check_all,
    check_models_match_schemas,
    check_schema_pair,
)

SHIPPED = Path(codec.__file__).parent / "avro"


def v1(type_name: str = "OrderPlaced") -> dict[str, Any]:
    return copy.deepcopy(REGISTRY.get(type_name, 1).schema)


def data_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = schema["fields"][2]["type"]["fields"]
    return fields


def item_fields(schema: dict[str, Any]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = data_fields(schema)[3]["type"]["items"]["fields"]
    return fields


def field_named(fields: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(f for f in fields if f["name"] == name)


# --- shipped files --------------------------------------------------------------


def test_shipped_schemas_are_compatible() -> None:
    assert check_all() == []


def test_shipped_models_match_the_latest_schemas() -> None:
    assert check_models_match_schemas() == []


def test_shipped_evolution_is_checked() -> None:
    """check_all really compares OrderPlaced v2 with v1 (a v2 without default fails)."""
    v2 = copy.deepcopy(REGISTRY.latest("OrderPlaced").schema)
    del field_named(data_fields(v2), "channel")["default"]
    problems = check_schema_pair(v2, v1())
    assert [p.field for p in problems] == ["data.channel"]


# --- pairs ----------------------------------------------------------------------


def test_new_required_field_is_refused_and_named() -> None:
    new = v1()
    data_fields(new).append({"name": "coupon", "type": "string"})
    (problem,) = check_schema_pair(new, v1())
    assert problem.field == "data.coupon"
    assert problem.kind == "reader_field_missing_default_value"
    assert "'coupon'" in problem.message and "default" in problem.message
    assert "data.coupon" in str(problem)


def test_new_field_with_default_is_accepted() -> None:
    new = v1()
    data_fields(new).append({"name": "coupon", "type": "string", "default": ""})
    assert check_schema_pair(new, v1()) == []


def test_type_change_in_a_nested_record_is_refused_and_named() -> None:
    new = v1()
    field_named(item_fields(new), "quantity")["type"] = "string"
    (problem,) = check_schema_pair(new, v1())
    assert problem.field == "data.items[].quantity"
    assert problem.kind == "type_mismatch"
    assert "string" in problem.message and "int" in problem.message


def test_int_to_long_promotion_is_accepted_but_not_the_reverse() -> None:
    new = v1()
    field_named(item_fields(new), "quantity")["type"] = "long"
    assert check_schema_pair(new, v1()) == []
    assert [p.field for p in check_schema_pair(v1(), new)] == ["data.items[].quantity"]


def test_removing_a_field_is_accepted() -> None:
    """A reader ignores writer fields it no longer has (the data is skipped)."""
    new = v1()
    data_fields(new)[:] = [f for f in data_fields(new) if f["name"] != "customer_id"]
    assert check_schema_pair(new, v1()) == []


def test_rescaling_money_is_refused() -> None:
    """The avro checker ignores logical types; a new scale would misread old amounts."""
    new = v1()
    field_named(item_fields(new), "unit_price")["type"]["scale"] = 2
    (problem,) = check_schema_pair(new, v1())
    assert problem.field == "data.items[].unit_price"
    assert problem.kind == "logical_type_mismatch"


def test_renaming_a_record_is_refused() -> None:
    new = v1()
    new["fields"][2]["type"]["name"] = "OrderPlacedPayload"
    problems = check_schema_pair(new, v1())
    assert [(p.field, p.kind) for p in problems] == [("data", "name_mismatch")]


def test_making_a_field_nullable_is_accepted_but_not_the_reverse() -> None:
    new = v1("OrderShipped")
    field_named(data_fields(new), "carrier")["type"] = ["null", "string"]
    assert check_schema_pair(new, v1("OrderShipped")) == []
    (problem,) = check_schema_pair(v1("OrderShipped"), new)
    assert problem.field == "data.carrier"
    assert "null" in problem.message.lower()


def test_pair_accepts_json_text() -> None:
    assert check_schema_pair(json.dumps(v1()), json.dumps(v1())) == []


# --- check_all over a folder ----------------------------------------------------------


def _folder(tmp_path: Path) -> Path:
    root = tmp_path / "avro"
    shutil.copytree(SHIPPED, root)
    return root


def test_check_all_reports_type_versions_and_field(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    v3 = copy.deepcopy(REGISTRY.latest("OrderPlaced").schema)
    data_fields(v3).append({"name": "coupon", "type": "string"})
    (root / "OrderPlaced" / "v3.avsc").write_text(json.dumps(v3))
    problems = check_all(SchemaRegistry(root))
    assert problems == [
        CompatibilityProblem("OrderPlaced", 3, w, "data.coupon", p.kind, p.message)
        for w, p in zip((1, 2), problems, strict=True)
    ]
    assert str(problems[0]).startswith("OrderPlaced v3 cannot read v1: field data.coupon:")


def test_check_all_compares_with_every_earlier_version(tmp_path: Path) -> None:
    """v3 drops v2's channel default-less: fine against v2, broken against v1."""
    root = _folder(tmp_path)
    v3 = copy.deepcopy(REGISTRY.latest("OrderPlaced").schema)
    field_named(data_fields(v3), "channel").update(type="string", default="web")
    (root / "OrderPlaced" / "v3.avsc").write_text(json.dumps(v3))
    problems = check_all(SchemaRegistry(root))
    assert [(p.reader_version, p.writer_version, p.field) for p in problems] == [
        (3, 2, "data.channel")
    ]


# --- models against schemas ---------------------------------------------------------


def _latest_order_placed(root: Path) -> tuple[Path, dict[str, Any]]:
    path = root / "OrderPlaced" / "v2.avsc"
    return path, json.loads(path.read_text())


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            lambda s: data_fields(s).append({"name": "coupon", "type": "string"}),
            "data.coupon: in the .avsc but not in OrderPlacedData",
        ),
        (
            lambda s: field_named(data_fields(s), "channel").update(name="source"),
            "data.channel: in OrderPlacedData but not in the .avsc",
        ),
        (
            lambda s: item_fields(s).pop(0),  # sku, in a nested record
            "data.items[].sku: in OrderItem but not in the .avsc",
        ),
        (
            lambda s: field_named(data_fields(s), "channel").pop("default"),
            "data.channel: optional (has a default) in one of .avsc/model only",
        ),
        (
            lambda s: field_named(data_fields(s), "channel").update(type="string", default="web"),
            "data.channel: nullable in one of .avsc/model only",
        ),
        (
            lambda s: field_named(item_fields(s), "quantity").update(type="string"),
            "data.items[].quantity: Avro {'type': 'string'} does not match model type",
        ),
        (
            lambda s: field_named(item_fields(s), "unit_price").update(type="double"),
            "data.items[].unit_price: Avro {'type': 'double'} does not match",
        ),
    ],
)
def test_model_schema_disagreements_are_reported(tmp_path: Path, change: Any, needle: str) -> None:
    root = _folder(tmp_path)
    path, schema = _latest_order_placed(root)
    change(schema)
    path.write_text(json.dumps(schema))
    problems = check_models_match_schemas(SchemaRegistry(root))
    assert any(p.startswith("OrderPlaced: " + needle) for p in problems), problems


def test_schema_without_model_is_reported(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    (root / "OrderLost").mkdir()
    schema = json.loads((root / "OrderDelivered" / "v1.avsc").read_text())
    schema["name"] = "OrderLost"
    schema["fields"][2]["type"]["name"] = "OrderLostData"
    (root / "OrderLost" / "v1.avsc").write_text(json.dumps(schema))
    assert check_models_match_schemas(SchemaRegistry(root)) == [
        "OrderLost: .avsc without a model in schemas.events.EVENT_TYPES"
    ]


def test_model_without_schema_is_reported(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    shutil.rmtree(root / "PaymentFailed")
    assert check_models_match_schemas(SchemaRegistry(root)) == [
        "PaymentFailed: model without schemas/avro/PaymentFailed/v1.avsc"
    ]
