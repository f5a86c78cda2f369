"""A processor's tables on disk are kept after a clean stop and restored from their
changelogs after any other (``stream_processors.table_dir``)."""

from __future__ import annotations

from pathlib import Path

from stream_processors.table_dir import mark_clean_stop, trust_or_forget


def _tables(root: Path) -> Path:
    tabledir = root / "tables"
    (tabledir / "customer-state-0.db").mkdir(parents=True)
    (tabledir / "customer-state-0.db" / "CURRENT").write_text("MANIFEST-000001\n")
    return tabledir


def test_the_tables_of_a_clean_stop_are_kept(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    mark_clean_stop(tabledir)
    assert trust_or_forget(tabledir) is False
    assert (tabledir / "customer-state-0.db" / "CURRENT").exists()


def test_a_run_that_crashes_after_a_clean_start_leaves_no_mark(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    mark_clean_stop(tabledir)
    trust_or_forget(tabledir)  # this run starts; it is killed before it stops
    assert trust_or_forget(tabledir) is True  # the next one restores from changelogs
    assert tabledir.is_dir() and list(tabledir.iterdir()) == []


def test_the_tables_of_an_unclean_stop_are_removed(tmp_path: Path) -> None:
    tabledir = _tables(tmp_path)
    assert trust_or_forget(tabledir) is True
    assert list(tabledir.iterdir()) == []


def test_a_first_start_has_nothing_to_remove(tmp_path: Path) -> None:
    assert trust_or_forget(tmp_path / "tables") is False
    assert (tmp_path / "tables").is_dir()
