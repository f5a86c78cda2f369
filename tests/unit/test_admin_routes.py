"""The admin API's place in the query API's OpenAPI document (no servers needed)."""

from __future__ import annotations

from typing import get_args

from eventfold.settings import Settings
from query_api.admin import DLQ_TOPICS, DlqTopic
from query_api.api import create_app

ACTIONS = {
    ("post", "/v1/admin/rebuilds"),
    ("delete", "/v1/admin/rebuilds/current"),
    ("delete", "/v1/admin/versions/{version}"),
    ("post", "/v1/admin/dead-letters/redrive"),
}


def test_every_admin_route_is_documented_with_its_refusals() -> None:
    doc = create_app(Settings(api_keys={"k": ["read"]})).openapi()
    admin = {
        (method, path): operation
        for path, methods in doc["paths"].items()
        if path.startswith("/v1/admin/")
        for method, operation in methods.items()
    }
    assert ACTIONS <= set(admin)
    assert ("get", "/v1/admin/rebuilds/events") in admin
    assert ("get", "/v1/admin/orders/{order_id}") in admin
    for key, operation in admin.items():
        assert {"401", "403"} <= set(operation["responses"]), key
        if key in ACTIONS:
            assert "409" in operation["responses"], key
            assert "admin" in operation["description"], key
    assert not any(p.startswith("/console") for p in doc["paths"])  # pages, not API


def test_the_dead_letter_topics_are_those_of_the_catalog() -> None:
    assert set(get_args(DlqTopic)) == set(DLQ_TOPICS)


async def test_an_instance_samples_for_the_charts_from_its_start_unless_told_not_to() -> None:
    for history in (True, False):
        # nothing listens on port 1: a sample fails and is retried, which is a gap in
        # the charts; the API itself is not bothered
        settings = Settings(console_history=history, kafka_port=1, redis_port=1, mongo_port=1)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            assert (app.state.admin.sampler._task is not None) is history
