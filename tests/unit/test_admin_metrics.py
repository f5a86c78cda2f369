"""The console's latency figures: quantiles from histogram buckets, the ASGI timer."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from query_api.admin_metrics import LatencyMiddleware, bucket_counts, latency_histogram, quantile

INF = float("inf")


def test_quantile_interpolates_within_the_bucket() -> None:
    deltas = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (INF, 100.0)]
    assert quantile(deltas, 0.5) == pytest.approx(0.01)
    assert quantile(deltas, 0.7) == pytest.approx(0.01 + 0.09 * 0.5)
    assert quantile(deltas, 0.99) == pytest.approx(0.1 + 0.9 * 0.9)


def test_quantile_without_requests_or_past_the_last_bound() -> None:
    assert quantile([(0.1, 0.0), (INF, 0.0)], 0.5) is None
    assert quantile([], 0.5) is None
    assert quantile([(0.1, 0.0), (INF, 4.0)], 0.99) == 0.1  # all above the last bound


async def test_the_middleware_times_until_the_response_starts() -> None:
    histogram = latency_histogram(CollectorRegistry())
    sent: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message["type"])

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request"}

    timed = LatencyMiddleware(app, histogram)
    await timed({"type": "http"}, receive, send)
    await timed({"type": "http"}, receive, send)
    await timed({"type": "lifespan"}, receive, send)  # not a request: not counted
    assert sent.count("http.response.start") == 3
    counts = bucket_counts(histogram)
    assert counts[-1] == (INF, 2.0)
    assert counts[0][1] == 2.0  # both well under the first bound (0.5 ms)
