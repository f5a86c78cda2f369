"""The stream processes' event loop (``eventfold.loops``)."""

from __future__ import annotations

import asyncio

import pytest

from eventfold import loops


def test_a_new_loop_is_uvloops_when_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = loops.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, result=42)) == 42
    finally:
        loop.close()


def test_without_uvloop_a_new_loop_is_asyncios(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loops, "uvloop_installed", lambda: False)
    loop = loops.new_event_loop()
    try:
        assert type(loop).__module__.startswith("asyncio.")
        assert loop.run_until_complete(asyncio.sleep(0, result=42)) == 42
    finally:
        loop.close()


def test_faust_is_told_uvloop_unless_the_user_chose_a_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loops, "uvloop_installed", lambda: True)
    assert loops.faust_loop_env({"PATH": "/bin"}) == {"PATH": "/bin", "F_LOOP": "uvloop"}
    assert loops.faust_loop_env({"F_LOOP": "aio"}) == {"F_LOOP": "aio"}
    monkeypatch.setattr(loops, "uvloop_installed", lambda: False)
    assert loops.faust_loop_env({"PATH": "/bin"}) == {"PATH": "/bin"}
