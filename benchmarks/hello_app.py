"""A FastAPI hello-world: the reference the stream benchmark serves the query API against,
with the same server and settings (``uvicorn --factory benchmarks.hello_app:create_app``,
or ``benchmarks.hello_app:app``). ``GET /hello`` and ``GET /`` answer a small JSON object.
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


app = create_app()
