"""``eventfold new-projection``: what it writes works as written (its test passes), and
it refuses names and places it must not write to."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from eventfold import cli
from eventfold.scaffold import ScaffoldError, dotted_module, scaffold
from tests.support.stack import ROOT


def run_generated_tests(test: Path, *path: Path) -> subprocess.CompletedProcess[str]:
    """pytest on a generated test, in a process of its own, as a user runs it: the
    folders on ``path`` and this repository (the ``projections`` and ``schemas`` the
    installed package provides) importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, (*path, ROOT)))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        cwd=test.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_generated_projection_passes_its_generated_test(tmp_path: Path) -> None:
    made = scaffold("order_balance", tmp_path)
    assert (made.module, made.test) == (
        tmp_path / "order_balance.py",
        tmp_path / "test_order_balance.py",
    )
    result = run_generated_tests(made.test, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 passed" in result.stdout
    module = made.module.read_text()
    imports = [line for line in module.splitlines() if line.startswith(("from ", "import "))]
    ours = [
        i.split()[1] for i in imports if i.split()[1].split(".")[0] in ("projections", "schemas")
    ]
    assert ours == ["projections.api", "schemas.events"]  # the public surface only
    assert made.entry_point == (
        '[project.entry-points."eventfold.projections"]\norder_balance = "order_balance:projection"'
    )


def test_in_a_package_the_import_and_entry_point_name_the_package(tmp_path: Path) -> None:
    package = tmp_path / "shop" / "reports"
    package.mkdir(parents=True)
    for folder in (package, package.parent):
        (folder / "__init__.py").write_text("")
    made = scaffold("balances", package)
    assert made.dotted == "shop.reports.balances"
    assert made.entry_point.endswith('balances = "shop.reports.balances:projection"')
    assert "from shop.reports.balances import projection" in made.test.read_text()
    result = run_generated_tests(made.test)  # pytest puts the packages' root on the path
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("OrderBalance", "invalid projection name"),
        ("1st", "invalid projection name"),
        ("order-balance", "invalid projection name"),
        ("a" * 41, "invalid projection name"),
        ("", "invalid projection name"),
        ("orders", "reserved"),
        ("sku_sales", "built-in"),
        ("json", "already an importable module"),
        ("projections", "already an importable module"),
    ],
)
def test_names_it_refuses(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(ScaffoldError, match=why):
        scaffold(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existing", ["order_balance.py", "test_order_balance.py"])
def test_it_never_overwrites_a_file(tmp_path: Path, existing: str) -> None:
    (tmp_path / existing).write_text("mine")
    with pytest.raises(ScaffoldError, match="not overwriting"):
        scaffold("order_balance", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [existing]
    assert (tmp_path / existing).read_text() == "mine"


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="no such directory"):
        scaffold("order_balance", tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_dotted_module_outside_a_package(tmp_path: Path) -> None:
    assert dotted_module(tmp_path, "x") == "x"


def test_the_command_prints_the_entry_point_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=messages, width=500))
    assert cli.main(["new-projection", "order_balance", "--dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == (  # on stdout: to copy, or to pipe
        '[project.entry-points."eventfold.projections"]\n'
        'order_balance = "order_balance:projection"\n'
    )
    assert f"wrote {tmp_path / 'order_balance.py'} and" in messages.getvalue()
    assert cli.main(["new-projection", "order_balance", "--dir", str(tmp_path)]) == 2
    assert "not overwriting" in messages.getvalue()
    assert cli.main(["new-projection", "Bad-Name", "--dir", str(tmp_path)]) == 2
    assert "invalid projection name 'Bad-Name'" in messages.getvalue()
