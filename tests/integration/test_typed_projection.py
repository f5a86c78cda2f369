"""A registered projection with a typed state, rebuilt from the real topics and verified
against a fresh fold: the built-in order state without its customer lookup
(``tests.unit.test_typed_projections.ORDER_FACTS``, here with its views kept as
documents), whose views must be the order views a reference fold of the published events
calls for."""

from __future__ import annotations

from eventfold.settings import Settings
from eventfold.topics import ensure_topics
from producers.demo import generate
from projections.api import Documents, Projection
from projections.builtin.core import orders
from projections.joins import ORDER_STATES
from projections.order_fold import order_view, reference_fold
from projections.projection_replay import rebuild, verify
from projections.projection_store import ProjectionVersions
from projections.read_models import Stores
from schemas.events import parse_events
from tests.support.scenario import publish

ORDER_FACTS = Projection(
    name="order_facts",
    consumes=orders.consumes,
    states=ORDER_STATES,
    documents=Documents(fields=("customer_id", "status")),
    description="the order views without their customer block, on the projection engine",
)


async def test_a_typed_projection_rebuilds_verifies_and_shows_the_order_views(
    settings: Settings,
) -> None:
    published = generate(21, 60)
    await ensure_topics(settings)
    await publish(settings, published)
    stores = Stores(settings)
    try:
        result = await rebuild(settings, stores.redis, ORDER_FACTS, db=stores.db)
        assert result.events > 0 and result.failed == 0

        check = await verify(settings, stores.redis, ORDER_FACTS, stores.db)
        assert check.identical, check.differences

        versions = ProjectionVersions(stores.redis, settings.redis_prefix, stores.db)
        snapshot = await versions.store(ORDER_FACTS.name, result.version).snapshot()
        shown = {k: e.view for k, e in snapshot.entities.items()}
        expected = {
            k: order_view(f, None) for k, f in reference_fold(parse_events(published)).items()
        }
        assert shown == expected
        documents = versions.documents(ORDER_FACTS, result.version)
        assert documents is not None
        assert await documents.views() == expected
    finally:
        await stores.close()
