"""Records folded into the join pipeline, by whichever processor consumed them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from projections.joins import Enrichment, OrderLink
from projections.projector import Pipeline
from schemas.catalog import ORDER_ENRICHMENT, ORDER_LINKS
from schemas.codec import decode
from stream_processors.outbox import internal_messages
from stream_processors.records import Record

Fold = Callable[[Record], Awaitable[None]]


def fold_with(pipeline: Pipeline) -> Fold:
    """Route a record to its join step (its writes are held until the pipeline flushes)."""

    async def fold(record: Record) -> None:
        at = (record.topic, record.partition, record.offset)
        if record.topic == ORDER_LINKS:
            for link in internal_messages(record, OrderLink.from_doc):
                await pipeline.order_link(link, at)
        elif record.topic == ORDER_ENRICHMENT:
            for message in internal_messages(record, Enrichment.from_doc):
                await pipeline.enrichment(message, at)
        else:
            await pipeline.source_event(decode(record.value), *at)

    return fold


def apply_one_with(pipeline: Pipeline) -> Fold:
    """The record handler's ``process``: one record folded and written (a batch of one)."""
    fold = fold_with(pipeline)

    async def apply_one(record: Record) -> None:
        async with pipeline.folding:
            try:
                await fold(record)
            except BaseException:
                pipeline.discard()  # a retry applies the record again and re-emits its effects
                raise
            batch = await pipeline.detach()
        await batch.write()

    return apply_one
