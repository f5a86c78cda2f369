"""Query API latency: ``GET /v1/orders/{id}`` from the Redis hot cache and from
MongoDB, in process (httpx's ASGI transport: no sockets, no server; the figures are
the application's own cost plus its round trips to Redis and FerretDB).

Half of the projected orders keep their cached view in Redis (hot path), the other
half have it removed (``HDEL view``) so the API falls back to MongoDB. Ceilings,
on the same keys and the same servers: a bare Redis ``HGET`` of the cached view,
and a bare ``find_one`` by ``_id`` with the API's projection. The four kinds of
request alternate one by one, so noise falls on all of them; each is taken
``SAMPLES`` times after a warm-up. Ratios are ceiling latency / API latency.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import httpx

from benchmarks.conftest import demo_envelopes, scaled
from benchmarks.measure import Figure, Report, RoundTrips, count_redis_commands, percentile
from benchmarks.test_projection import records
from eventfold.settings import Settings
from projections.projector import Projector
from projections.read_models import Stores
from query_api.api import ORDER_FIELDS, create_app

ORDERS = 30  # about 150 events projected first
SAMPLES = 300
WARM_UP = 30


async def test_order_lookup_latency(settings: Settings, stores: Stores, report: Report) -> None:
    assert settings.auth_disabled
    models = await stores.active()
    await models.ensure_indexes()
    projector = Projector(models)
    recs = records(demo_envelopes(scaled(ORDERS)))
    for rec in recs:
        await projector.apply(*rec)
    order_ids = sorted({e.key for e, topic, _, _ in recs if topic != "customers"})
    hot, cold = order_ids[0::2], order_ids[1::2]
    for order_id in cold:
        assert await models.redis.hdel(models.order_key(order_id), "view") == 1

    app = create_app(settings)
    count_redis_commands(app.state.stores.redis)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")

    def api(ids: list[str]) -> Callable[[int], Awaitable[None]]:
        async def get(i: int) -> None:
            order_id = ids[i % len(ids)]
            response = await client.get(f"/v1/orders/{order_id}")
            assert response.status_code == 200, response.text
            assert response.json()["order_id"] == order_id

        return get

    async def hget(i: int) -> None:
        view = await stores.redis.hget(models.order_key(hot[i % len(hot)]), "view")
        assert view is not None

    async def find_one(i: int) -> None:
        doc = await models.orders.find_one({"_id": cold[i % len(cold)]}, projection=ORDER_FIELDS)
        assert doc is not None

    kinds = {"hot": api(hot), "mongo": api(cold), "hget": hget, "find_one": find_one}
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    trips = {"hot": RoundTrips(), "mongo": RoundTrips()}
    try:
        for i in range(WARM_UP):
            for run in kinds.values():
                await run(i)
        for kind in ("hot", "mongo"):  # round trips of one request of each path
            with trips[kind].counting():
                await kinds[kind](0)
        for i in range(SAMPLES):
            for kind, run in kinds.items():
                start = time.perf_counter_ns()
                await run(i)
                samples[kind].append((time.perf_counter_ns() - start) / 1e6)
        metrics = (await client.get("/metrics")).text
    finally:
        await client.aclose()
        await app.state.stores.close()

    # sanity: each path was served from where it claims
    served = {
        line.split("{", 1)[1].split("}")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("eventfold_query_requests_total{")
    }
    assert served['endpoint="order",source="redis"'] == WARM_UP + 1 + SAMPLES
    assert served['endpoint="order",source="mongo"'] == WARM_UP + 1 + SAMPLES

    p = {k: {q: percentile(v, q) for q in (50, 95)} for k, v in samples.items()}
    details = {
        "samples": SAMPLES,
        "orders": len(order_ids),
        "ms": {k: {f"p{q}": round(x, 3) for q, x in v.items()} for k, v in p.items()},
        "round_trips_per_request": {k: v.per(1) for k, v in trips.items()},
    }
    for q in (50, 95):
        for path, ceiling, what in (
            ("hot", "hget", "bare Redis HGET"),
            ("mongo", "find_one", "bare find_one by _id"),
        ):
            label = "Redis hot cache" if path == "hot" else "MongoDB path"
            figure = report.add(
                Figure(
                    f"query GET order {label} p{q}",
                    p[path][q],
                    "ms",
                    p[ceiling][q],
                    what,
                    better="lower",
                    details=details,
                )
            )
            assert figure.ratio > 0
    for path, t in trips.items():
        per = t.per(1)
        print(
            f"[bench]   round trips per GET ({path}): mongo "
            f"{ {k: v['calls'] for k, v in per['mongo_ms_by_shape'].items()} }, "
            f"redis {per['redis_by_command']}"
        )
