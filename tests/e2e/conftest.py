"""End-to-end fixtures: one isolated deployment (topics, database, keys, processor) per module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from producers.api import create_app as create_producer_app
from query_api.api import create_app as create_query_app
from tests.conftest import isolated_settings, settings_env
from tests.support.apps import query_client
from tests.support.processes import ProcessorProcess
from tests.support.stack import StackPorts


@pytest.fixture(scope="module")
def deployment(servers: StackPorts) -> Settings:
    return isolated_settings(servers, consistency_timeout_s=20.0)


@pytest.fixture(scope="module")
async def processor(
    deployment: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ProcessorProcess]:
    await ensure_topics(deployment)
    log = tmp_path_factory.mktemp("processor") / "processor.log"
    worker = ProcessorProcess(deployment, settings_env(deployment), log)
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
async def producer_api(deployment: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_producer_app(deployment)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://producer"
    ) as client:
        yield client


@pytest.fixture(scope="module")
async def query_api(deployment: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with query_client(deployment) as client:
        yield client


@pytest.fixture(scope="module")
async def query_server(deployment: Settings) -> AsyncIterator[str]:
    """The query API on a real socket (streaming responses need one: httpx's ASGI
    transport buffers a whole response)."""
    import asyncio
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_query_app(deployment),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
