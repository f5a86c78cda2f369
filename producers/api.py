"""Producer HTTP API: ``POST /v1/events`` validates, publishes, answers 202 with positions.

A batch is validated whole before anything is published; 202 means Kafka
(acks=all) acknowledged every event; Kafka unavailable means 503, never a false 202.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from pydantic import BaseModel, ValidationError

from eventfold.settings import Settings
from producers.client import EventPublisher, PublishError
from schemas.events import parse_events

MAX_BODY_BYTES = 1_048_576


class EventReceipt(BaseModel):
    event_id: str
    type: str
    topic: str
    partition: int
    offset: int


class PublishResponse(BaseModel):
    events: list[EventReceipt]
    consistency_token: str


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    publisher = EventPublisher(settings)
    registry = CollectorRegistry()
    accepted = Counter("eventfold_events_accepted", "Events acknowledged by Kafka", ["type"],
                       registry=registry)
    rejected = Counter("eventfold_requests_rejected", "Requests refused", ["reason"],
                       registry=registry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await publisher.stop()

    app = FastAPI(title="Eventfold producer API", version="1", lifespan=lifespan)

    @app.post("/v1/events", status_code=202, response_model=PublishResponse,
              responses={413: {}, 422: {}, 503: {}})
    async def publish_events(request: Request) -> Any:
        """Publish one envelope or a JSON array of envelopes."""
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            rejected.labels("too_large").inc()
            return JSONResponse({"detail": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            rejected.labels("invalid_json").inc()
            return JSONResponse({"detail": [{"loc": ["body"], "msg": f"invalid JSON: {exc}",
                                             "type": "json_invalid"}]}, status_code=422)
        try:
            events = parse_events(payload)
        except ValidationError as exc:
            rejected.labels("invalid_event").inc()
            errors = exc.errors(include_url=False, include_context=False, include_input=False)
            return JSONResponse({"detail": json.loads(json.dumps(errors, default=str))},
                                status_code=422)
        if not events:
            return JSONResponse({"detail": [{"loc": ["body"], "msg": "empty batch",
                                             "type": "too_short"}]}, status_code=422)
        try:
            result = await publisher.publish_many(
                events,
                correlation_id=request.headers.get("x-correlation-id"),
                traceparent=request.headers.get("traceparent"),
            )
        except PublishError as exc:
            rejected.labels("kafka_unavailable").inc()
            return JSONResponse({"detail": str(exc)}, status_code=503,
                                headers={"Retry-After": "5"})
        for r in result.receipts:
            accepted.labels(r.type).inc()
        return PublishResponse(
            events=[EventReceipt(**r.__dict__) for r in result.receipts],
            consistency_token=result.consistency_token,
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


