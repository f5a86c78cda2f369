"""`eventfold schemas`: the CLI face of the compatibility check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from eventfold.cli import main

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def test_shipped_schemas_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schemas", "--quiet"]) == 0
    assert "all schemas compatible" in capsys.readouterr().err


def test_an_incompatible_new_version_is_refused_naming_the_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    candidate = tmp_path / "avro"
    shutil.copytree(SCHEMAS, candidate)
    v1 = json.loads((candidate / "OrderShipped" / "v1.avsc").read_text())
    data = next(f for f in v1["fields"] if f["name"] == "data")
    data["type"]["fields"].append({"name": "warehouse", "type": "string"})  # no default
    (candidate / "OrderShipped" / "v2.avsc").write_text(json.dumps(v1))
    assert main(["schemas", "--quiet", "--dir", str(candidate)]) == 1
    err = capsys.readouterr().err
    assert "OrderShipped" in err
    assert "warehouse" in err
