"""The processor's command preloads jemalloc once, and keeps a user's own preloads."""

from __future__ import annotations

from stream_processors.worker import MALLOC_CONF, preload_env


def test_jemalloc_is_preloaded_with_a_decay_that_returns_pages() -> None:
    env = preload_env({"PATH": "/bin"}, "libjemalloc.so.2")
    assert env == {"PATH": "/bin", "LD_PRELOAD": "libjemalloc.so.2", "MALLOC_CONF": MALLOC_CONF}


def test_a_process_that_already_preloads_it_is_not_executed_again() -> None:
    assert preload_env({"LD_PRELOAD": "libjemalloc.so.2"}, "libjemalloc.so.2") is None
    assert preload_env({"LD_PRELOAD": "/opt/lib/libjemalloc.so"}, "libjemalloc.so.2") is None


def test_a_users_preloads_and_malloc_conf_are_kept() -> None:
    env = preload_env(
        {"LD_PRELOAD": "/opt/libtrace.so", "MALLOC_CONF": "narenas:2"}, "libjemalloc.so.2"
    )
    assert env is not None
    assert env["LD_PRELOAD"] == "libjemalloc.so.2:/opt/libtrace.so"
    assert env["MALLOC_CONF"] == "narenas:2"
