"""Producer HTTP API: ``POST /v1/events`` validates, publishes, answers 202 with positions.

A batch is validated whole before anything is published; 202 means Kafka
(acks=all) acknowledged every event; Kafka unavailable means 503 with
Retry-After, never a false 202.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import BaseModel, ValidationError

from eventfold.auth import WRITE, require_scope
from eventfold.resilience import CircuitOpenError
from eventfold.settings import Settings
from producers.client import EventPublisher, PublishError
from schemas.events import EVENT_TYPES
from schemas.examples import EXAMPLES

CORRELATION_HEADER = "X-Correlation-ID"


class EventReceipt(BaseModel):
    event_id: str
    type: str
    topic: str
    partition: int
    offset: int


class PublishResponse(BaseModel):
    events: list[EventReceipt]
    consistency_token: str


class Problem(BaseModel):
    detail: Any


class BodyTooLarge(Exception):
    pass


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refused as soon as it exceeds ``limit`` (never buffered whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def field_errors(exc: ValidationError, batch: bool) -> list[dict[str, Any]]:
    """pydantic's errors, JSON-safe; an unknown ``type`` is located at ``type``, and a
    single envelope's errors are not prefixed with an item index."""
    errors: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = list(error["loc"])
        if error["type"].startswith("union_tag"):
            loc.append("type")
        errors.append({**error, "loc": loc if batch else loc[1:]})
    return list(json.loads(json.dumps(errors, default=str)))


MAX_JSON_DEPTH = 32
"""An event is 5 levels deep (batch, envelope, data, items, item); a body nested deeper
is refused before validation, whose error reports would recurse as deep."""


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) has containers nested more than ``limit`` deep;
    iterative, so any depth is measured without recursion."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return False


LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def refuse_unsafe(
    request: Request, allowed_origins: list[str], auth_disabled: bool = False
) -> tuple[str, int, str] | None:
    """Why a publish request is refused before its body is read, or None.

    A web page can send any other site a "simple" request (a form's or a
    ``text/plain`` POST) without the site's consent: so only ``application/json``
    is taken (415), which a page can send elsewhere only after a CORS preflight; and a
    request a browser marks as coming from another origin is refused (403) unless that
    origin is configured (``EVENTFOLD_CORS_ORIGINS``), so a local stack with auth off
    takes no events from the pages its developer visits. With API keys off, a page of
    the same origin must also be served from a loopback name: a page whose name the
    attacker re-points to 127.0.0.1 (DNS rebinding) is "same origin" by the Host
    header it sends."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return (
            "unsupported_media_type",
            415,
            f"send the events as application/json, not {media_type or 'no content type'}",
        )
    origin = request.headers.get("origin")
    own = f"{request.url.scheme}://{request.url.netloc}"
    if origin is None or origin in allowed_origins:
        return None
    if origin != own:
        return (
            "cross_origin",
            403,
            f"cross-origin request from {origin} refused; allow it with EVENTFOLD_CORS_ORIGINS",
        )
    if auth_disabled and urlsplit(origin).hostname not in LOOPBACK:
        return (
            "cross_origin",
            403,
            f"with API keys off only pages from localhost may publish, not {origin}; "
            "configure it in EVENTFOLD_CORS_ORIGINS, or turn API keys on",
        )
    return None


def problem(status: int, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    publisher = EventPublisher(settings)
    registry = CollectorRegistry()
    accepted = Counter(
        "eventfold_events_accepted", "Events acknowledged by Kafka", ["type"], registry=registry
    )
    rejected = Counter(
        "eventfold_requests_rejected", "Requests refused", ["reason"], registry=registry
    )
    Gauge(
        "eventfold_producer_batch_events_limit", "Events one request may carry", registry=registry
    ).set(settings.max_batch_events)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await publisher.stop()

    app = FastAPI(title="Eventfold producer API", version="1", lifespan=lifespan)
    if settings.cors_origins:  # answers the preflights of the configured origins only
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Authorization", "X-Api-Key", CORRELATION_HEADER],
        )
    writer = Depends(require_scope(settings, WRITE))

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=PublishResponse,
        responses={
            401: {"model": Problem},
            403: {"model": Problem},
            413: {"model": Problem},
            415: {"model": Problem},
            422: {"model": Problem},
            503: {"model": Problem},
        },
        dependencies=[writer],
        # The body is read by hand (size limit, all-or-nothing validation); documented here.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/EventEnvelope"},
                                {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": settings.max_batch_events,
                                    "items": {"$ref": "#/components/schemas/EventEnvelope"},
                                },
                            ]
                        },
                        "examples": {t: {"value": e} for t, e in EXAMPLES.items()},
                    }
                },
            }
        },
    )
    async def publish_events(request: Request) -> Any:
        """Publish one envelope or a JSON array of envelopes (all or nothing at validation)."""
        refused = refuse_unsafe(request, settings.cors_origins, settings.auth_disabled)
        if refused is not None:
            rejected.labels(refused[0]).inc()
            return problem(*refused[1:])
        try:
            body = await read_limited(request, settings.max_body_bytes)
        except BodyTooLarge:
            rejected.labels("too_large").inc()
            return problem(413, f"request body over {settings.max_body_bytes} bytes")
        try:
            payload = json.loads(body)
            too_deep = nested_deeper_than(payload, MAX_JSON_DEPTH)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            rejected.labels("invalid_json").inc()
            return problem(
                422, [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json_invalid"}]
            )
        except RecursionError:  # deeper than the parser's own stack allows
            too_deep = True
        if too_deep:
            rejected.labels("invalid_json").inc()
            return problem(
                422,
                [
                    {
                        "loc": ["body"],
                        "msg": f"JSON nested deeper than {MAX_JSON_DEPTH} levels",
                        "type": "json_too_deep",
                    }
                ],
            )
        if isinstance(payload, list) and len(payload) > settings.max_batch_events:
            rejected.labels("too_many_events").inc()
            return problem(
                422,
                [
                    {
                        "loc": ["body"],
                        "msg": f"at most {settings.max_batch_events} events per request "
                        f"(got {len(payload)}); send the rest in further requests",
                        "type": "too_long",
                    }
                ],
            )
        correlation_id = request.headers.get(CORRELATION_HEADER)
        try:
            result = (
                await publisher.publish_many(
                    payload if isinstance(payload, list) else [payload],
                    correlation_id=correlation_id,
                    traceparent=request.headers.get("traceparent"),
                )
                if payload != []
                else None
            )
        except ValidationError as exc:
            rejected.labels("invalid_event").inc()
            return problem(422, field_errors(exc, batch=isinstance(payload, list)))
        except CircuitOpenError as exc:
            rejected.labels("kafka_unavailable").inc()
            return problem(
                503,
                f"Kafka unavailable: {exc}",
                **{"Retry-After": str(max(1, math.ceil(exc.retry_in_s)))},
            )
        except PublishError as exc:
            rejected.labels("kafka_unavailable").inc()
            return problem(503, str(exc), **{"Retry-After": "5"})
        if result is None:
            rejected.labels("empty_batch").inc()
            return problem(422, [{"loc": ["body"], "msg": "empty batch", "type": "too_short"}])
        for r in result.receipts:
            accepted.labels(r.type).inc()
        response = PublishResponse(
            events=[EventReceipt(**r.__dict__) for r in result.receipts],
            consistency_token=result.consistency_token,
        )
        echo = {CORRELATION_HEADER: correlation_id} if correlation_id else None
        return JSONResponse(response.model_dump(), status_code=202, headers=echo)

    def openapi() -> dict[str, Any]:
        """The generated document plus the event envelope schemas (one per type)."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            refs = []
            for name, model in EVENT_TYPES.items():
                schema = model.model_json_schema(
                    ref_template="#/components/schemas/{model}", mode="validation"
                )
                components.update(schema.pop("$defs", {}))
                if "type" not in schema.get("required", []):
                    schema["required"] = ["type", *schema.get("required", [])]
                components[name] = schema
                refs.append({"$ref": f"#/components/schemas/{name}"})
            components["EventEnvelope"] = {
                "oneOf": refs,
                "discriminator": {
                    "propertyName": "type",
                    "mapping": {n: f"#/components/schemas/{n}" for n in EVENT_TYPES},
                },
            }
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "kafka_circuit": publisher.breaker.state.value}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
