"""Shared fixtures: the real servers (started once per session) and per-test isolation."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from eventfold.settings import Settings
from tests.support.stack import StackPorts, is_running, stack

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if f"{os.sep}integration{os.sep}" in path:
            item.add_marker(pytest.mark.integration)
        if f"{os.sep}e2e{os.sep}" in path:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def servers() -> Iterator[StackPorts]:
    """Kafka, FerretDB and Redis from stack/stack.sh, once per session.

    A stack already running from an earlier session is reused and left running."""
    started_here = not is_running()
    if started_here:
        result = stack("up", check=False)
        if result.returncode != 0:
            pytest.fail(f"could not start the test stack:\n{result.stderr}")
    yield StackPorts.from_env()
    if started_here and not os.environ.get("EVENTFOLD_TEST_KEEP_STACK"):
        stack("down")


def unique_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def isolated_settings(servers: StackPorts, **overrides: Any) -> Settings:
    """A deployment of its own on the session's servers: own topics, database and
    Redis keys, so tests never see each other's data. API keys are off unless
    ``overrides`` configure them."""
    name = unique_name()
    fields: dict[str, Any] = {
        "kafka_port": servers.kafka_port,
        "mongo_port": servers.mongo_port,
        "redis_port": servers.redis_port,
        "topic_prefix": f"{name}-",
        "mongo_db": name,
        "redis_prefix": f"{name}:",
        "auth_disabled": "api_keys" not in overrides,
        # the many query APIs of the suite sample for the console's charts only once
        # it is opened (test_console opens it)
        "console_history": False,
    }
    return Settings(**(fields | overrides))


@pytest.fixture
def settings(servers: StackPorts) -> Settings:
    """Settings isolated from every other test."""
    return isolated_settings(servers)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess the same settings."""
    fields = (
        "kafka_port",
        "mongo_port",
        "redis_port",
        "topic_prefix",
        "mongo_db",
        "redis_prefix",
        "kafka_timeout_s",
        "consistency_timeout_s",
        "auth_disabled",
    )
    return {f"EVENTFOLD_{f.upper()}": str(getattr(settings, f)) for f in fields}


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool] = bool,
    within_s: float = 30.0,
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until ``accept`` holds for its result (a wait for a condition)."""
    deadline = time.monotonic() + within_s
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within_s}s; last: {value!r}")
        await asyncio.sleep(interval)


@pytest.fixture
async def topics(settings: Settings) -> AsyncIterator[Settings]:
    from eventfold.topics import ensure_topics

    await ensure_topics(settings)
    yield settings
