"""Producer API contract against the real broker: round trips, bad input, auth."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from eventfold.settings import Settings
from eventfold.topics import end_offsets, ensure_topics
from producers.api import create_app
from schemas.catalog import TOPICS
from schemas.codec import decode
from schemas.events import event_to_json, parse_event
from schemas.examples import EXAMPLES
from tests.conftest import isolated_settings
from tests.integration.test_producer_kafka import read_all
from tests.support.stack import StackPorts

WRITE_KEY, READ_KEY = "test-write-key", "test-read-key"


@pytest.fixture(scope="module")
async def deployment(servers: StackPorts) -> Settings:
    settings = isolated_settings(servers, api_keys={WRITE_KEY: ["write"], READ_KEY: ["read"]})
    await ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def api(deployment: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(deployment)),
        base_url="http://producer",
        headers={"X-API-Key": WRITE_KEY},
    ) as client:
        yield client


async def total_records(settings: Settings) -> int:
    return sum((await end_offsets(settings)).values())


async def test_every_event_type_round_trips_http_kafka_decode(
    api: httpx.AsyncClient,
    deployment: Settings,
) -> None:
    before = {t: len(await read_all(deployment, t)) for t in TOPICS}
    response = await api.post("/v1/events", json=list(EXAMPLES.values()))
    assert response.status_code == 202, response.text
    receipts = response.json()["events"]
    assert [r["type"] for r in receipts] == list(EXAMPLES)
    for topic in TOPICS:
        records = (await read_all(deployment, topic))[before[topic] :]
        expected = [parse_event(e) for e in EXAMPLES.values() if parse_event(e).topic == topic]
        assert [decode(r.value) for r in records] == expected
        assert [r.key.decode() for r in records] == [e.key for e in expected]
        assert {dict(r.headers)["event-type"].decode() for r in records} == {
            e.type for e in expected
        }


def mutated(path: list[Any], value: Any, base: str = "OrderPlaced") -> dict[str, Any]:
    event = copy.deepcopy(EXAMPLES[base])
    target: Any = event
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return event


BAD_ENVELOPES = {
    "wrong type of field": (mutated(["data", "items", 0, "quantity"], "two"), "quantity"),
    "missing field": (mutated(["data", "customer_id"], KeyError), "customer_id"),
    "negative quantity": (mutated(["data", "items", 0, "quantity"], -1), "quantity"),
    "zero quantity": (mutated(["data", "items", 0, "quantity"], 0), "quantity"),
    "float money": (mutated(["data", "items", 0, "unit_price"], 9.99), "unit_price"),
    "negative money": (mutated(["data", "items", 0, "unit_price"], "-1.00"), "unit_price"),
    "unknown type": ({**EXAMPLES["OrderPlaced"], "type": "OrderTeleported"}, "type"),
    "wrong currency code": (mutated(["data", "currency"], "EURO"), "currency"),
    "lowercase currency": (mutated(["data", "currency"], "eur"), "currency"),
    "naive timestamp": (mutated(["occurred_at"], "2026-01-01T10:00:00"), "occurred_at"),
    "bad event_id": (mutated(["event_id"], "not-a-uuid"), "event_id"),
    "empty items": (mutated(["data", "items"], []), "items"),
    "extra field": (mutated(["data", "colour"], "red"), "colour"),
    "payment amount zero": (mutated(["data", "amount"], "0", "PaymentCaptured"), "amount"),
    "amount the read models cannot count": (
        mutated(["data", "amount"], "1000000000000000", "PaymentCaptured"),
        "amount",
    ),
    "not an object": ("OrderPlaced", "body"),
}


@pytest.mark.parametrize("case", list(BAD_ENVELOPES))
async def test_bad_envelope_gets_422_naming_the_field_and_publishes_nothing(
    case: str,
    api: httpx.AsyncClient,
    deployment: Settings,
) -> None:
    envelope, field = BAD_ENVELOPES[case]
    before = await total_records(deployment)
    # alone, and as the second item of a batch whose first item is valid
    for body, index in ((envelope, None), ([EXAMPLES["OrderPlaced"], envelope], 1)):
        response = await api.post("/v1/events", json=body)
        assert response.status_code == 422, (case, response.text)
        locs = [[str(p) for p in e["loc"]] for e in response.json()["detail"]]
        assert any(field in loc or field == "body" for loc in locs), (case, locs)
        if index is not None and field != "body":
            assert any(loc and loc[0] == str(index) for loc in locs), (case, locs)
    assert await total_records(deployment) == before


async def test_an_amount_beyond_the_read_models_bound_is_refused_naming_the_bound(
    api: httpx.AsyncClient,
) -> None:
    """Issue 11: 16 integer digits fit the wire format but not the read models' 64-bit
    counters; such an event was accepted, then bricked every rebuild."""
    response = await api.post(
        "/v1/events", json=mutated(["data", "amount"], "1000000000000000", "PaymentCaptured")
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == "amount"
    assert "below 10^12" in error["msg"]


async def test_invalid_json_empty_batch_and_oversize_body(
    api: httpx.AsyncClient,
    deployment: Settings,
) -> None:
    before = await total_records(deployment)
    response = await api.post(
        "/v1/events",
        content=b'{"type": "OrderPlaced", ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert "invalid JSON" in response.json()["detail"][0]["msg"]
    assert (await api.post("/v1/events", json=[])).status_code == 422
    ten_mb = json.dumps([EXAMPLES["OrderPlaced"]] * 32_000).encode()
    assert len(ten_mb) > 10_000_000
    response = await api.post(
        "/v1/events", content=ten_mb, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert await total_records(deployment) == before


async def test_writes_need_a_key_with_the_write_scope(deployment: Settings) -> None:
    transport = httpx.ASGITransport(app=create_app(deployment))
    async with httpx.AsyncClient(transport=transport, base_url="http://producer") as client:
        body = EXAMPLES["OrderCancelled"]
        assert (await client.post("/v1/events", json=body)).status_code == 401
        assert (
            await client.post("/v1/events", json=body, headers={"X-API-Key": "nope"})
        ).status_code == 401
        assert (
            await client.post("/v1/events", json=body, headers={"X-API-Key": READ_KEY})
        ).status_code == 403
        ok = await client.post(
            "/v1/events", json=body, headers={"Authorization": f"Bearer {WRITE_KEY}"}
        )
        assert ok.status_code == 202


async def test_retried_post_with_same_event_id_is_one_event_downstream(
    api: httpx.AsyncClient,
    deployment: Settings,
) -> None:
    from projections.order_fold import reference_fold

    event = EXAMPLES["PaymentCaptured"]
    first = await api.post("/v1/events", json=event)
    second = await api.post("/v1/events", json=event)
    assert first.status_code == second.status_code == 202
    assert first.json()["events"][0]["offset"] != second.json()["events"][0]["offset"]
    records = [decode(r.value) for r in await read_all(deployment, "payments")]
    same = [e for e in records if e.event_id == event["event_id"]]
    assert len(same) >= 2  # Kafka holds the retry ...
    facts = reference_fold(same)[event["data"]["order_id"]]
    assert len(facts.payment_events) == 1  # ... the fold applies it once
    assert event_to_json(facts.payment_events[0])["event_id"] == event["event_id"]


async def test_deeply_nested_json_is_a_422_and_the_server_stays_healthy(
    api: httpx.AsyncClient,
    deployment: Settings,
) -> None:
    """Issue 11: 100,000 nested ``[`` was an uncaught RecursionError (500)."""
    before = await total_records(deployment)
    json_headers = {"content-type": "application/json"}
    for body in (b"[" * 100_000 + b"]" * 100_000, b"[" * 40 + b"{}" + b"]" * 40):
        response = await api.post("/v1/events", content=body, headers=json_headers)
        assert response.status_code == 422, response.text
        assert "nested deeper than 32 levels" in response.json()["detail"][0]["msg"]
    deep_field = mutated(["data", "colour"], json.loads("[" * 35 + "]" * 35))
    response = await api.post("/v1/events", json=deep_field)
    assert response.status_code == 422
    assert (await api.post("/v1/events", json=EXAMPLES["OrderPlaced"])).status_code == 202
    assert await total_records(deployment) == before + 1


async def test_only_json_from_the_same_or_a_configured_origin_is_taken(
    api: httpx.AsyncClient,
    deployment: Settings,
) -> None:
    """Issue 11: any web page could publish to a local stack with a ``text/plain`` POST
    (a "simple" cross-origin request, sent without a preflight)."""
    before = await total_records(deployment)
    body = json.dumps(EXAMPLES["OrderPlaced"])
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {} if content_type is None else {"content-type": content_type}
        response = await api.post("/v1/events", content=body, headers=headers)
        assert response.status_code == 415, (content_type, response.text)
        assert "application/json" in response.json()["detail"]
    response = await api.post(
        "/v1/events", json=EXAMPLES["OrderPlaced"], headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "EVENTFOLD_CORS_ORIGINS" in response.json()["detail"]
    assert await total_records(deployment) == before

    same_origin = {"origin": "http://producer", "content-type": "application/json; charset=utf-8"}
    response = await api.post("/v1/events", content=body, headers=same_origin)
    assert response.status_code == 202, response.text

    allowed = deployment.model_copy(update={"cors_origins": ["https://app.example"]})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(allowed)),
        base_url="http://producer",
        headers={"X-API-Key": WRITE_KEY, "origin": "https://app.example"},
    ) as configured:
        preflight = await configured.options(
            "/v1/events",
            headers={
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        response = await configured.post("/v1/events", json=EXAMPLES["OrderPlaced"])
        assert response.status_code == 202, response.text
    assert await total_records(deployment) == before + 2


async def test_with_keys_off_a_same_origin_page_must_be_on_localhost(
    deployment: Settings,
) -> None:
    """A page at http://attacker.example:8001 whose name is re-pointed to 127.0.0.1 (DNS
    rebinding) sends its requests to the local API as "same origin": with API keys
    off, only a page served from a loopback name may publish."""
    open_stack = deployment.model_copy(update={"auth_disabled": True})
    before = await total_records(deployment)
    app = create_app(open_stack)
    for host, expected in (
        ("attacker.example:8001", 403),
        ("127.0.0.1:8001", 202),
        ("localhost:8001", 202),
        ("[::1]:8001", 202),
    ):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=f"http://{host}"
        ) as client:
            response = await client.post(
                "/v1/events", json=EXAMPLES["OrderPlaced"], headers={"origin": f"http://{host}"}
            )
        assert response.status_code == expected, (host, response.text)
        if expected == 403:
            assert "only pages from localhost" in response.json()["detail"]
    assert await total_records(deployment) == before + 3


async def test_a_batch_over_the_cap_is_a_422_and_publishes_nothing(deployment: Settings) -> None:
    """Issue 11: a batch's size was bounded only by the body size."""
    capped = deployment.model_copy(update={"max_batch_events": 3})
    before = await total_records(deployment)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(capped)),
        base_url="http://producer",
        headers={"X-API-Key": WRITE_KEY},
    ) as client:
        response = await client.post("/v1/events", json=[EXAMPLES["OrderPlaced"]] * 4)
        assert response.status_code == 422
        assert "at most 3 events per request (got 4)" in response.json()["detail"][0]["msg"]
        assert await total_records(deployment) == before
        assert (
            await client.post("/v1/events", json=[EXAMPLES["OrderPlaced"]] * 3)
        ).status_code == 202
        metrics = (await client.get("/metrics")).text
        assert "eventfold_producer_batch_events_limit 3.0" in metrics
        schema = (await client.get("/openapi.json")).json()
        body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
        assert body["schema"]["oneOf"][1]["maxItems"] == 3
    assert await total_records(deployment) == before + 3
