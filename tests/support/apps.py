"""The query API in the test's own process, started and stopped as a server would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from eventfold.settings import Settings
from query_api.api import create_app


@asynccontextmanager
async def query_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a query API on ``settings``, its lifespan run around the block."""
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://query", timeout=30
        ) as client,
    ):
        yield client
