"""What an acknowledged read-model write survives is explicit and configurable (issue 11):
MongoDB's write concern (w, journal) on every write; Redis's fsync policy on the stack."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pymongo import WriteConcern

from eventfold.settings import Settings
from projections.read_models import Stores


async def test_read_model_writes_use_the_configured_write_concern(settings: Settings) -> None:
    stores = Stores(settings)
    try:
        assert stores.db.write_concern == WriteConcern(w="majority", j=True)
        models = await stores.active()
        await models.orders.insert_one({"_id": "o-durable"})  # FerretDB takes it
        assert await models.orders.count_documents({"_id": "o-durable"}) == 1
    finally:
        await stores.mongo.drop_database(settings.mongo_db)
        await stores.close()
    one = Stores(settings.model_copy(update={"mongo_write_concern": "1", "mongo_journal": False}))
    try:
        assert one.db.write_concern == WriteConcern(w=1, j=False)
    finally:
        await one.close()
    with pytest.raises(ValidationError):
        Settings(mongo_write_concern="most")


async def test_the_stack_runs_redis_with_the_configured_fsync_policy(settings: Settings) -> None:
    stores = Stores(settings)
    try:
        config = await stores.redis.config_get("appendfsync")
        assert config == {"appendfsync": settings.redis_appendfsync}
        assert (await stores.redis.config_get("appendonly")) == {"appendonly": "yes"}
    finally:
        await stores.close()
