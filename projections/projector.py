"""Runs the join steps (``projections.joins``) and writes their results to the read models.

``Pipeline`` is the one code path for live processing and for rebuilds: it
keeps the keyed state in whatever mapping it is given (a Faust table backed by
a changelog topic in the processors, a dict in a rebuild), hands messages for
the other side of the join to the given senders (Kafka topics, or direct
calls), and writes every changed order and customer to the target read-model
versions through ``ReadModelWriter``.

Documents carry the state they were derived from (``_state``), so a write is a
merge: what is stored and what the writer knows are united, and the view is
derived from the union. Two writers of one document (a rebuild and the live
processor, both writing the version being built; or a worker that lost its
partitions mid-write) therefore never undo each other, whatever their order.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from projections.customer_fold import CUSTOMER_EVENT_TYPES
from projections.joins import (
    CustomerState,
    CustomerStep,
    Enrichment,
    OrderLink,
    OrderState,
    OrderStep,
    customer_event_step,
    enrichment_step,
    order_event_step,
    order_link_step,
)
from projections.order_fold import order_id_of, redis_contribution
from projections.read_models import PROJECTIONS, Document, ReadModels
from projections.redis_writer import RedisWriter
from schemas.events import Event

StateStore = MutableMapping[str, Any]  # key -> JSON-safe state document
S = TypeVar("S", OrderState, CustomerState)
Position = tuple[str, int, int]  # logical topic, partition, offset


class ConcurrentUpdateError(RuntimeError):
    """Another writer kept changing the same document; the record will be retried."""


@dataclass(frozen=True)
class Targets:
    """The read-model versions each projection is written to (active + being rebuilt)."""

    orders: Sequence[ReadModels]
    customers: Sequence[ReadModels]
    redis: Sequence[ReadModels]

    @classmethod
    def of(cls, models: ReadModels, projections: Sequence[str] = PROJECTIONS) -> Targets:
        """``models`` for the given projections, nothing for the others."""
        return cls(*([models] if p in projections else [] for p in PROJECTIONS))

    def by_projection(self) -> dict[str, Sequence[ReadModels]]:
        return {"orders": self.orders, "customers": self.customers, "redis": self.redis}


TargetsProvider = Callable[[], Awaitable[Targets]]


def public_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The view part of a stored document (internal fields start with ``_``)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def stored_order(doc: Mapping[str, Any] | None) -> OrderState | None:
    """The state a stored order document was derived from (None: none, or an older layout
    whose content the live state supersedes)."""
    return None if doc is None or "_state" not in doc else OrderState.from_doc(doc["_state"])


def stored_customer(doc: Mapping[str, Any] | None) -> CustomerState | None:
    return None if doc is None or "_state" not in doc else CustomerState.from_doc(doc["_state"])


def _order_merge(state: OrderState) -> Callable[[Document | None], OrderState | None]:
    def merge(stored: Document | None) -> OrderState | None:
        raw = None if stored is None else stored.get("_state")
        if raw is not None and state.covers(raw):
            # The common case (the writer knows more): no need to decode the stored events.
            unchanged = (len(raw["offsets"]) == len(state.offsets)
                         and int(raw.get("customer_offset", -1)) == state.customer_offset)
            return None if unchanged else state
        known = stored_order(stored)
        merged = state if known is None else known.merge(state)
        return None if stored is not None and merged == known else merged

    return merge


def _customer_merge(state: CustomerState) -> Callable[[Document | None], CustomerState | None]:
    def merge(stored: Document | None) -> CustomerState | None:
        known = stored_customer(stored)
        merged = state if known is None else known.merge(state)
        return None if stored is not None and merged == known else merged

    return merge


class ReadModelWriter:
    """Turns states into MongoDB documents and Redis updates in every target version."""

    def __init__(self) -> None:
        self._redis: dict[tuple[str, str], RedisWriter] = {}

    def _redis_of(self, models: ReadModels, projection: str) -> RedisWriter:
        """One writer (and its registered scripts) per version, not one per event."""
        version = models.versions[projection]
        key = (models.redis_prefix, version)
        if key not in self._redis:
            uniform = ReadModels(models.db, models.redis, dict.fromkeys(PROJECTIONS, version),
                                 models.redis_prefix)
            self._redis[key] = RedisWriter(uniform)
        return self._redis[key]

    async def write_order(self, targets: Targets, state: OrderState) -> None:
        if not state.offsets:
            return  # only an enrichment is known: no order to show yet
        for models in targets.orders:
            await self._merge(models, "orders", state.order_id, _order_merge(state))
        view = state.view()
        contribution = redis_contribution(view)
        view_json = json.dumps(view, separators=(",", ":"))
        for models in targets.redis:
            await self._redis_of(models, "redis").apply_order(
                state.order_id, state.revision, contribution, view_json)

    async def write_customer(self, targets: Targets, state: CustomerState) -> None:
        for models in targets.customers:
            await self._merge(models, "customers", state.customer_id, _customer_merge(state))

    async def _merge(self, models: ReadModels, projection: str, doc_id: str,
                     merge: Callable[[Document | None], Any]) -> None:
        """Read-merge-write under the document's lock (see ``ReadModels.document_lock``);
        ``merge`` returns the state to store, or None when the stored one is as new."""
        async with models.document_lock(projection, doc_id):
            stored = await models.db[models.collection(projection)].find_one({"_id": doc_id})
            merged = merge(stored)
            if merged is None:
                return
            doc: Document = {"_id": doc_id, **merged.view(), "_state": merged.to_doc()}
            await self._put(models, projection, stored, doc)

    @staticmethod
    async def _put(models: ReadModels, collection: str, stored: Document | None,
                   doc: Document) -> None:
        # By _id alone: the lock already excludes other writers, and FerretDB
        # scans the whole collection for any other filter.
        if stored is None:
            await models.db[models.collection(collection)].insert_one(doc)
        else:
            await models.db[models.collection(collection)].replace_one({"_id": doc["_id"]}, doc)

    async def checkpoint(self, targets: Targets, topic: str, partition: int, offset: int) -> None:
        """Raise the applied mark of every target projection version."""
        await self._raise_marks(targets, {f"{topic}:{partition}": offset})

    async def _raise_marks(self, targets: Targets, marks: Mapping[str, int]) -> None:
        """Raise ``marks`` (``topic:partition`` -> offset) in every target projection
        version: one call per version."""
        keys: dict[RedisWriter, list[str]] = {}
        for projection, versions in targets.by_projection().items():
            for models in versions:
                writer = self._redis_of(models, projection)
                keys.setdefault(writer, []).append(models.checkpoints_key(projection))
        for writer, version_keys in keys.items():
            await writer.raise_marks(version_keys, marks)

    async def flush(self) -> None:
        """Nothing is held: every write happens when it is asked for."""


class BufferedWriter(ReadModelWriter):
    """A writer for a rebuild: it keeps the latest state of each changed document and
    writes it once per batch (``flush``), instead of once per event.

    A rebuild folds many events of one order or customer per batch, so most of
    the per-event writes would be overwritten within the same batch. The states
    it holds are complete (the rebuild's pipeline saw every earlier record), so
    the same merge writes them; marks are raised after every write of the batch,
    as read-your-writes requires."""

    def __init__(self, concurrency: int = 8) -> None:
        super().__init__()
        self._concurrency = concurrency
        self._orders: dict[str, tuple[Targets, OrderState]] = {}
        self._customers: dict[str, tuple[Targets, CustomerState]] = {}
        self._marks: dict[tuple[str, int], tuple[Targets, int]] = {}

    @property
    def pending(self) -> int:
        """Documents waiting to be written."""
        return len(self._orders) + len(self._customers)

    async def write_order(self, targets: Targets, state: OrderState) -> None:
        if state.offsets:
            self._orders[state.order_id] = (targets, state)

    async def write_customer(self, targets: Targets, state: CustomerState) -> None:
        self._customers[state.customer_id] = (targets, state)

    async def checkpoint(self, targets: Targets, topic: str, partition: int, offset: int) -> None:
        held = self._marks.get((topic, partition))
        if held is None or held[1] < offset:
            self._marks[(topic, partition)] = (targets, offset)

    async def flush(self) -> None:
        """Write what is held; on an error nothing is forgotten, and flushing again is
        harmless (the writes are merges)."""
        slots = asyncio.Semaphore(self._concurrency)

        async def bounded(write: Awaitable[None]) -> None:
            async with slots:
                await write

        outcomes = await asyncio.gather(
            *(bounded(ReadModelWriter.write_order(self, t, s)) for t, s in self._orders.values()),
            *(bounded(ReadModelWriter.write_customer(self, t, s))
              for t, s in self._customers.values()),
            return_exceptions=True)  # every write ends before the flush does, even on errors
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            raise failed
        self._orders.clear()
        self._customers.clear()
        by_targets: dict[int, tuple[Targets, dict[str, int]]] = {}
        for (topic, partition), (targets, offset) in self._marks.items():
            by_targets.setdefault(id(targets), (targets, {}))[1][f"{topic}:{partition}"] = offset
        for targets, marks in by_targets.values():
            await self._raise_marks(targets, marks)
        self._marks.clear()


class DecodedStates(Generic[S]):
    """A state store read through a cache of decoded states.

    Decoding a state (every event of an order, validated) on each record is the
    pipeline's main CPU cost; a decoded state is reused while the store still holds
    the very document it came from (a Faust table hands back what was set; after a
    recovery the documents are new objects and are decoded again)."""

    def __init__(self, store: StateStore, decode: Callable[[Any], S], size: int = 10_000) -> None:
        self._store = store
        self._decode: Callable[[Any], S] = decode
        self._size = size
        self._cache: OrderedDict[str, tuple[Any, S]] = OrderedDict()

    def get(self, key: str) -> S | None:
        doc = self._store.get(key)
        if doc is None:
            return None
        cached = self._cache.get(key)
        if cached is not None and cached[0] is doc:
            self._cache.move_to_end(key)
            return cached[1]
        state = self._decode(doc)
        self._remember(key, doc, state)
        return state

    def put(self, key: str, state: S) -> None:
        doc = state.to_doc()
        self._store[key] = doc
        self._remember(key, self._store.get(key), state)

    def _remember(self, key: str, doc: Any, state: S) -> None:
        self._cache[key] = (doc, state)
        self._cache.move_to_end(key)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)


LinkSender = Callable[[OrderLink], Awaitable[None]]
EnrichmentSender = Callable[[Enrichment], Awaitable[None]]
"""Senders return once the message is stored (in Kafka), so the record's checkpoint,
raised after them, implies that everything it caused is on its way."""


class Pipeline:
    """The join logic bound to state stores, senders and target versions."""

    def __init__(self, orders: StateStore, customers: StateStore, targets: TargetsProvider,
                 send_link: LinkSender, send_enrichment: EnrichmentSender,
                 writer: ReadModelWriter | None = None) -> None:
        self.orders = orders
        self.customers = customers
        self._orders = DecodedStates(orders, OrderState.from_doc)
        self._customers = DecodedStates(customers, CustomerState.from_doc)
        self._targets = targets
        self._send_link = send_link
        self._send_enrichment = send_enrichment
        self._writer = writer or ReadModelWriter()

    async def source_event(self, event: Event, topic: str, partition: int, offset: int) -> bool:
        """Apply one record of ``orders``, ``payments`` or ``customers``; False when it had
        been applied before (its effects are re-emitted all the same)."""
        targets = await self._targets()
        if isinstance(event, CUSTOMER_EVENT_TYPES):
            customer_step = customer_event_step(self._customer(event.key), event, offset,
                                                event.key)
            await self._customer_effects(targets, customer_step)
            duplicate = customer_step.duplicate
        else:
            order_id = order_id_of(event)
            order_step = order_event_step(self._order(order_id), event, offset, order_id)
            await self._order_effects(targets, order_step)
            duplicate = order_step.duplicate
        # Read-your-writes waits on this mark: raised only once every write is done.
        await self._writer.checkpoint(targets, topic, partition, offset)
        return not duplicate

    async def enrichment(self, message: Enrichment, at: Position | None = None) -> None:
        """Apply a message of ``order-enrichment`` (``at``: its topic, partition, offset)."""
        targets = await self._targets()
        step = enrichment_step(self._order(message.order_id), message)
        await self._order_effects(targets, step)
        await self._checkpoint_internal(targets, at)

    async def order_link(self, link: OrderLink, at: Position | None = None) -> None:
        """Apply a message of ``order-links`` (``at``: its topic, partition, offset)."""
        targets = await self._targets()
        step = order_link_step(self._customer(link.customer_id), link)
        await self._customer_effects(targets, step)
        await self._checkpoint_internal(targets, at)

    async def _checkpoint_internal(self, targets: Targets, at: Position | None) -> None:
        """Internal messages handed over in-process (a rebuild) have no position."""
        if at is not None:
            await self._writer.checkpoint(targets, *at)

    def _order(self, order_id: str) -> OrderState | None:
        return self._orders.get(order_id)

    def _customer(self, customer_id: str) -> CustomerState | None:
        return self._customers.get(customer_id)

    async def _order_effects(self, targets: Targets, step: OrderStep) -> None:
        # The state is saved before any await, so no other record of this key can
        # interleave between reading and saving it.
        if not step.duplicate:
            self._orders.put(step.state.order_id, step.state)
        await self._writer.write_order(targets, step.state)
        if step.link is not None:
            await self._send_link(step.link)

    async def _customer_effects(self, targets: Targets, step: CustomerStep) -> None:
        if not step.duplicate:
            self._customers.put(step.state.customer_id, step.state)
        if step.view_changed or step.duplicate:
            await self._writer.write_customer(targets, step.state)
        await asyncio.gather(*(self._send_enrichment(m) for m in step.enrichments))


class Projector:
    """A pipeline in one process, state in memory, writing one read-model version (or the
    given targets): the rebuild engine's, and the tests'.

    ``buffered``: documents are written on ``flush`` only, once each (a rebuild's
    batches); otherwise at every event."""

    def __init__(self, models: ReadModels, targets: Targets | None = None,
                 buffered: bool = False) -> None:
        self.models = models
        fixed = targets or Targets.of(models)

        async def provide() -> Targets:
            return fixed

        self._writer = BufferedWriter() if buffered else ReadModelWriter()
        self.pipeline = Pipeline({}, {}, provide, self._link, self._enrich, self._writer)

    async def flush(self) -> None:
        """Write what a buffered projector holds (nothing to do otherwise)."""
        await self._writer.flush()

    async def _link(self, link: OrderLink) -> None:
        await self.pipeline.order_link(link)

    async def _enrich(self, message: Enrichment) -> None:
        await self.pipeline.enrichment(message)

    async def apply(self, event: Event, topic: str, partition: int, offset: int) -> bool:
        return await self.pipeline.source_event(event, topic, partition, offset)
