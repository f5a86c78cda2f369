"""Schema-driven fuzzing of both HTTP APIs (schemathesis), and the query API's access rules.

Every operation of each OpenAPI document is called with generated requests
(valid and invalid) against the in-process ASGI app backed by the real stores;
each answer must not be a 5xx and must match the documented status codes,
content types, headers and bodies. The read models are seeded first, and
generated ids and consistency tokens are swapped for seeded ones in about half
of the requests, so the GET paths also answer from real documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import Case, HookContext, checks

from eventfold.settings import Settings
from producers.api import create_app as create_producer_app
from producers.client import EventPublisher
from projections.applier import Applier
from projections.projection_store import ProjectionVersions
from projections.projector import Projector
from projections.read_models import Stores
from projections.registry import enabled
from projections.state import Positioned
from query_api.api import create_app as create_query_app
from schemas.events import parse_event

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]
FUZZ = hypothesis_settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
STREAM = "/v1/orders/{order_id}/events"  # Server-Sent Events: never ends by itself
STREAM_FUZZ = hypothesis_settings(FUZZ, max_examples=5)
STREAM_READ_S = 0.3

CUSTOMERS = {"c-alice": ("Alice", "gold", "FR"), "c-bob": ("Bob", "silver", "DE")}
ORDERS = {"o-1": ("c-alice", True), "o-2": ("c-bob", False), "o-3": ("c-bob", True)}
SEEDED_IDS = {"order_id": sorted(ORDERS), "customer_id": sorted(CUSTOMERS)}
TOKEN_PARAMETERS = ("x-consistency-token", "consistency_token")
seed_token: dict[str, str] = {}  # the consistency token of the seed, set by `seeded`


def _envelopes() -> list[dict[str, Any]]:
    """Two customers, three orders (o-1 Alice's and paid, o-2 Bob's, o-3 Bob's, paid, shipped).

    Every test has its own topics, database and Redis keys, so fixed ids do not collide."""
    at = "2026-03-01T10:00:00Z"
    events: list[dict[str, Any]] = [
        {
            "type": "CustomerRegistered",
            "data": {
                "customer_id": cid,
                "name": name,
                "email": f"{cid}@example.com",
                "tier": tier,
                "country": country,
            },
        }
        for cid, (name, tier, country) in CUSTOMERS.items()
    ]
    for order_id, (cid, paid) in ORDERS.items():
        events.append(
            {
                "type": "OrderPlaced",
                "data": {
                    "order_id": order_id,
                    "customer_id": cid,
                    "currency": "EUR",
                    "items": [{"sku": "A-1", "quantity": 2, "unit_price": "9.99"}],
                },
            }
        )
        if paid:
            events.append(
                {
                    "type": "PaymentCaptured",
                    "data": {
                        "payment_id": f"p-{order_id}",
                        "order_id": order_id,
                        "amount": "19.98",
                        "currency": "EUR",
                    },
                }
            )
    events.append(
        {
            "type": "OrderShipped",
            "data": {"order_id": "o-3", "carrier": "DHL", "tracking_number": "JD0146000031"},
        }
    )
    return [
        {**e, "event_id": f"00000000-0000-4000-8000-{n:012d}", "occurred_at": at}
        for n, e in enumerate(events)
    ]


@pytest.fixture
async def seeded(topics: Settings) -> AsyncIterator[Settings]:
    """Settings whose active read models hold the seed: published to Kafka, then projected."""
    events = [parse_event(e) for e in _envelopes()]
    async with EventPublisher(topics) as publisher:
        result = await publisher.publish_many(events)
    seed_token["token"] = result.consistency_token
    stores = Stores(topics)
    try:
        models = await stores.active()
        await models.ensure_indexes()
        projector = Projector(models)
        for event, receipt in zip(events, result.receipts, strict=True):
            await projector.apply(event, receipt.topic, receipt.partition, receipt.offset)
        # and the registered projections, so the seed's token is applied there too
        positioned = [
            Positioned(e, r.topic, r.partition, r.offset)
            for e, r in zip(events, result.receipts, strict=True)
        ]
        highest = {p.mark: p.offset for p in positioned}
        versions = ProjectionVersions(stores.redis, topics.redis_prefix)
        for projection in enabled(topics).values():
            applier = Applier(projection, versions.store(projection.name, "v1"))
            await applier.start()
            await applier.apply(positioned, highest)
        yield topics
        await models.drop()
        await stores.mongo.drop_database(topics.mongo_db)
    finally:
        seed_token.clear()
        await stores.close()


# The documents are read from the apps themselves; they do not depend on the settings, so
# they are loaded at import and each request goes to the app of the test's isolated settings.
PLACEHOLDER = Settings(auth_disabled=True)
query_schema = schemathesis.openapi.from_asgi("/openapi.json", create_query_app(PLACEHOLDER))
producer_schema = schemathesis.openapi.from_asgi("/openapi.json", create_producer_app(PLACEHOLDER))


def _sometimes_seeded(values: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """``values`` as generated, or with its ids and consistency token taken from the seed."""
    if not values:
        return st.just(values)
    ids = {k: st.sampled_from(SEEDED_IDS[k]) for k in values if k in SEEDED_IDS}
    tokens = {
        k: st.builds(lambda: seed_token["token"]) for k in values if k.lower() in TOKEN_PARAMETERS
    }
    if not ids and not tokens:
        return st.just(values)
    return st.one_of(
        st.just(values), st.fixed_dictionaries({**ids, **tokens}).map(lambda s: {**values, **s})
    )


@query_schema.hook
def flatmap_path_parameters(_: HookContext, values: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _sometimes_seeded(values)


@query_schema.hook
def flatmap_query(_: HookContext, values: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _sometimes_seeded(values)


@query_schema.hook
def flatmap_headers(_: HookContext, values: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _sometimes_seeded(values)


@pytest.fixture
def query_app(seeded: Settings) -> FastAPI:
    return create_query_app(seeded)


@pytest.fixture
def producer_app(topics: Settings) -> FastAPI:
    return create_producer_app(topics)


@query_schema.exclude(path=STREAM).parametrize()
@FUZZ
def test_query_api_conforms_to_its_openapi_document(case: Case, query_app: FastAPI) -> None:
    case.call_and_validate(app=query_app, checks=CHECKS)


@query_schema.include(path=STREAM).parametrize()
@STREAM_FUZZ
def test_query_api_event_stream_conforms_to_its_openapi_document(
    case: Case,
    query_app: FastAPI,
) -> None:
    """An open stream never ends: the answer is what arrived within a short read timeout."""
    case.call_and_validate(app=query_app, checks=CHECKS, timeout=STREAM_READ_S)


@producer_schema.parametrize()
@FUZZ
def test_producer_api_conforms_to_its_openapi_document(
    case: Case,
    producer_app: FastAPI,
) -> None:
    case.call_and_validate(app=producer_app, checks=CHECKS)


# --- authentication and NoSQL injection (plain requests) --------------------

V1_GETS = [
    "/v1/orders/o-1",
    "/v1/orders",
    "/v1/customers/top",
    "/v1/customers/c-alice",
    "/v1/stats",
]


@pytest.fixture
async def secured_query_api(seeded: Settings) -> AsyncIterator[httpx.AsyncClient]:
    secured = seeded.model_copy(
        update={"auth_disabled": False, "api_keys": {"r": ["read"], "w": ["write"]}}
    )
    app = create_query_app(secured)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://query", timeout=30
    ) as client:
        yield client
    await app.state.stores.close()


async def test_query_api_needs_a_read_key_and_passes_ids_as_plain_strings(
    secured_query_api: httpx.AsyncClient,
) -> None:
    api = secured_query_api
    read = {"X-API-Key": "r"}
    for path in V1_GETS:
        anonymous = await api.get(path)
        assert anonymous.status_code == 401, (path, anonymous.text)
        assert anonymous.headers["www-authenticate"] == "Bearer"
        assert (await api.get(path, headers={"X-API-Key": "nope"})).status_code == 401, path
        assert (await api.get(path, headers={"X-API-Key": "w"})).status_code == 403, path
        bearer = await api.get(path, headers={"Authorization": "Bearer w"})
        assert bearer.status_code == 403, path
        assert (await api.get(path, headers=read)).status_code == 200, path

    everything = (await api.get("/v1/orders", headers=read)).json()["items"]
    assert sorted(o["order_id"] for o in everything) == sorted(ORDERS)  # a leak would show
    alice = await api.get("/v1/orders", params={"customer_id": "c-alice"}, headers=read)
    assert [o["order_id"] for o in alice.json()["items"]] == ["o-1"]

    # operators in a value are plain strings: they match no customer
    for value in ('{"$ne": null}', '{"$gt": ""}', '{"$regex": ".*"}', "$ne", '{"$exists": true}'):
        answer = await api.get("/v1/orders", params={"customer_id": value}, headers=read)
        assert answer.status_code == 200, (value, answer.text)
        assert answer.json() == {"items": [], "next_cursor": None}, value
    # bracket syntax is no operator either, just an unknown parameter: ignored
    for params in ({"customer_id[$ne]": "x"}, {"status[$ne]": "paid"}, {"_id[$gt]": ""}):
        answer = await api.get("/v1/orders", params=params, headers=read)
        assert answer.status_code == 200, (params, answer.text)
        assert answer.json()["items"] == everything, params
    for name in ("status", "limit"):
        answer = await api.get("/v1/orders", params={name: '{"$ne": null}'}, headers=read)
        assert answer.status_code == 422, (name, answer.text)

    for path in (
        '/v1/customers/{"$gt": ""}',
        '/v1/customers/{"$ne": null}',
        "/v1/customers/$where",
        '/v1/orders/{"$ne":1}',
        '/v1/orders/{"$gt":""}',
        "/v1/orders/.*",
    ):
        answer = await api.get(path, headers=read)
        assert answer.status_code == 404, (path, answer.text)
        assert set(answer.json()) == {"detail"}, path
    bob = await api.get("/v1/customers/c-bob", headers=read)
    assert (bob.json()["name"], bob.json()["order_count"]) == ("Bob", 2)
