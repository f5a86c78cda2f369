"""Runs the join steps (``projections.joins``) and writes their results to the read models.

``Pipeline`` is the one code path for live processing and for rebuilds: it
keeps the keyed state in whatever mapping it is given (a Faust table backed by
a changelog topic in the processors, a dict in a rebuild), hands messages for
the other side of the join to the given senders (Kafka topics, or direct
calls), and writes every changed order and customer to the target read-model
versions through ``BatchWriter``: the records of a batch (a poll of the live
processors, a chunk of a rebuild, or a single event) are folded in memory
first, then each changed document is written once (``Pipeline.flush``).

Documents carry the state they were derived from (``_state``), so a write is a
merge: what is stored and what the writer knows are united, and the view is
derived from the union. Two writers of one document (a rebuild and the live
processor, both writing the version being built; or a worker that lost its
partitions mid-write) therefore never undo each other, whatever their order;
they take turns per batch under the collection's lock (FerretDB's updates are
not atomic, see ``ReadModels.batch_lock``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from pymongo import InsertOne, ReplaceOne
from pymongo.errors import BulkWriteError
from redis.asyncio import Redis

from projections.api import Rows
from projections.builtin.core import customers, orders
from projections.customer_fold import CUSTOMER_EVENT_TYPES
from projections.joins import (
    CustomerSide,
    CustomerState,
    CustomerStep,
    DecodedStates,
    Enrichment,
    OrderLink,
    OrderState,
    OrderStep,
    Reentry,
    enrichment_step,
    fold_order_event,
    state_field,
    stored_state,
    summary_change,
)
from projections.order_fold import order_id_of
from projections.read_models import (
    DERIVED,
    PROJECTIONS,
    CoreReadModel,
    Document,
    ReadModels,
    order_view_of,
    stored_document,
)
from projections.redis_writer import OrderRows, RedisWriter
from projections.state import Cached, Documented
from schemas.events import Event

StateStore = MutableMapping[Any, Any]  # key -> JSON-safe state document
Position = tuple[str, int, int]  # logical topic, partition, offset
T = TypeVar("T")
Doc = dict[str, Any]
ORDERS, CUSTOMERS = orders.name, customers.name
"""The read models the join's two sides write (``builtin.core``)."""


@dataclass(frozen=True)
class Targets:
    """The read-model versions each read model (by name) is written to: the active one,
    and the one being rebuilt."""

    versions: Mapping[str, Sequence[ReadModels]]

    @classmethod
    def of(cls, models: ReadModels, projections: Sequence[str] = PROJECTIONS) -> Targets:
        """``models`` for the given read models, nothing for the others."""
        return cls({p: [models] for p in PROJECTIONS if p in projections})

    def of_model(self, name: str) -> Sequence[ReadModels]:
        return self.versions.get(name, ())


TargetsProvider = Callable[[], Awaitable[Targets]]


def public_view(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The view a stored document shows (an order's or a customer's)."""
    return order_view_of(doc)


def stored_customer(doc: Mapping[str, Any] | None) -> CustomerState | None:
    """The customer state a stored customer document was derived from (None: none)."""
    state = stored_state(doc)
    return None if state is None else CustomerState.from_doc(state)


@dataclass(frozen=True)
class Merge:
    """Given the stored document (or None), the state to store, or None when it is as new
    (``state.Documented.merged_with``)."""

    state: Documented

    @property
    def mark(self) -> object:
        """What tells two written states of the document apart (``WrittenLast``)."""
        return self.state.mark

    def __call__(self, stored: Document | None) -> Documented | None:
        return self.state.merged_with(stored_state(stored))


class WrittenLast:
    """The documents one writer wrote last, per collection, each with the mark of what
    it holds (an order's revision, a customer's state).

    The live processor's batches mostly rewrite documents they wrote themselves a
    moment ago; its states cover what it wrote (a key's state only grows while its
    partition is owned), so as long as no other writer wrote the collection since, the
    stored document is the one it wrote and the batch need not read it back to merge
    (measured: the ``find`` took about a third of a batch's write). Every batch names
    its writer in the collection's writer key under the batch lock
    (``ReadModels.claim_writes``); finding another name there, a writer forgets what it
    knew of that collection, and reads and merges as before. A failed write forgets it
    too, as does a rebalance (``Pipeline.invalidate``). Bounded: the least recently
    written documents are forgotten first."""

    def __init__(self, size: int = 20_000) -> None:
        self.name = uuid.uuid4().hex
        self._size = size
        self._docs: dict[str, OrderedDict[str, object]] = {}

    def of(self, collection: str) -> Mapping[str, object]:
        return self._docs.get(collection, {})

    def forget(self, collection: str | None = None) -> None:
        if collection is None:
            self._docs.clear()
        else:
            self._docs.pop(collection, None)

    def remember(self, collection: str, written: Sequence[tuple[str, object]]) -> None:
        docs = self._docs.setdefault(collection, OrderedDict())
        for doc_id, mark in written:
            docs[doc_id] = mark
            docs.move_to_end(doc_id)
        while len(docs) > self._size:
            docs.popitem(last=False)


DETACH_TURN_EVERY = 50
"""Orders linked or encoded between two turns of the event loop when a batch is
detached: the join's links and the states' encoding took 0.1 to 0.25 s of a batch's
fold without a turn, during which the batch before, being written meanwhile, could
neither send its next command nor take an answer (as ``records.YIELD_EVERY``)."""
FIND_CHUNK = 1000
"""Ids per ``find`` of stored documents (one query per chunk)."""
BULK_CHUNK = 1000
"""Statements per ``bulk_write`` command (FerretDB 1.24 as released hangs on one that
matches 100 or more documents: the stack builds it patched, see stack/stack.sh)."""
DUPLICATE_KEY = 11000
INSERT_CHUNK = 500
"""Documents per ``insert_many`` of a writer of fresh documents (``BatchWriter``)."""


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


@dataclass
class _Held:
    """What a batch changed: the latest state of each document per read model, and the
    highest offset applied per partition, with the versions they go to."""

    states: dict[str, dict[str, tuple[Targets, Documented]]] = field(default_factory=dict)
    marks: dict[tuple[str, int], tuple[Targets, int]] = field(default_factory=dict)


class BatchWriter:
    """Writes what a batch of records changed, each document once, with a fixed number
    of round trips per batch whatever its size.

    The pipeline hands it every changed state of a read model kept as documents
    (``write``: each knows its key and how to merge with what is stored,
    ``state.Documented``) and every applied position (``checkpoint``); nothing is
    written until ``flush``:

    1. per target version and collection, under that collection's batch lock
       (``ReadModels.batch_lock``), one ``find`` of the stored documents and one
       ``bulk_write`` of the merged ones (``ordered=False``);
    2. with them, one Redis pipeline of each view's contribution to the read models
       derived from its (``read_models.DERIVED``: the orders' ``redis``) in every
       target version (FerretDB and Redis work at the same time);
    3. then one Redis pipeline of the applied marks, which read-your-writes waits on.

    A flush that fails forgets nothing: flushing again writes the same merges
    (harmless). ``discard`` drops what is held (the caller re-applies the records
    one by one)."""

    def __init__(self, fresh: bool = False, written: WrittenLast | None = None) -> None:
        """``fresh``: most documents written are new (a rebuild's version). ``written``:
        what this writer's earlier batches wrote (kept across them by the pipeline)."""
        self._held = _Held()
        self._redis: dict[int, RedisWriter] = {}
        self._fresh = fresh
        self._written = written or WrittenLast()

    @property
    def pending(self) -> int:
        """Documents waiting to be written."""
        return sum(len(states) for states in self._held.states.values())

    def pending_of(self, name: str) -> int:
        """Documents of read model ``name`` waiting to be written."""
        return len(self._held.states.get(name, {}))

    def hold_of(self, name: str, other: BatchWriter) -> None:
        """Take over the documents of read model ``name`` that ``other`` holds, to write
        them later, with what this writer is given (a rebuild writes each customer once
        that way)."""
        self._held.states[name] = other._held.states.pop(name, {})

    def write(self, name: str, targets: Targets, state: Documented) -> None:
        """Hold ``state`` as the latest of its document in read model ``name``."""
        self._held.states.setdefault(name, {})[state.key] = (targets, state)

    def checkpoint(self, targets: Targets, topic: str, partition: int, offset: int) -> None:
        held = self._held.marks.get((topic, partition))
        if held is None or held[1] < offset:
            self._held.marks[(topic, partition)] = (targets, offset)

    def discard(self) -> None:
        self._held = _Held()

    def _redis_of(self, redis: Redis) -> RedisWriter:
        """One writer (and its registered scripts) per connection pool."""
        writer = self._redis.get(id(redis))
        if writer is None:
            writer = self._redis[id(redis)] = RedisWriter(redis)
        return writer

    async def flush(self, before_marks: Awaitable[Any] | None = None) -> None:
        """Write what is held; ``before_marks`` (the batch's messages to Kafka) is awaited
        with the documents, before any mark is raised."""
        held = self._held
        # The derived rows first, before any I/O: a state that cannot be shown fails the
        # batch here.
        derived = [
            (model, [(targets, state, rows(state.view())) for targets, state in states.values()])
            for name, states in held.states.items()
            for model in DERIVED.get(name, ())
            if (rows := model.rows) is not None
        ]
        by_collection: dict[tuple[int, str], tuple[ReadModels, list[tuple[str, Merge]]]] = {}
        for name, states in held.states.items():
            for targets, state in states.values():
                for models in targets.of_model(name):
                    by_collection.setdefault((id(models), name), (models, []))[1].append(
                        (state.key, Merge(state))
                    )
        outcomes = await asyncio.gather(
            *(
                self._write_documents(models, projection, items)
                for (_, projection), (models, items) in by_collection.items()
            ),
            # Redis takes the contributions while FerretDB writes (another process, often
            # another core); only the marks wait for both.
            *(self._write_contributions(model, updates) for model, updates in derived),
            *([before_marks] if before_marks is not None else []),
            return_exceptions=True,
        )  # every write ends before the flush does, even on errors
        failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
        if failed is not None:
            raise failed
        await self._raise_marks(held)
        for states in held.states.values():
            for _, state in states.values():
                state.forget_encoded()  # the states stay cached: keep them small
        if self._held is held:
            self._held = _Held()

    async def _write_contributions(
        self, model: CoreReadModel, updates: list[tuple[Targets, Documented, Rows]]
    ) -> None:
        """Each view's rows in the derived read model ``model`` and the view in its cache,
        in one pipeline per Redis and script calls of many views
        (``RedisWriter.apply_orders``)."""
        pipes: dict[int, tuple[RedisWriter, Any]] = {}
        by_version: dict[tuple[int, str], tuple[ReadModels, list[OrderRows]]] = {}
        name = model.name
        for targets, state, rows in updates:
            cached = cast(Cached, state)
            update = OrderRows(cached.key, cached.revision, rows, cached.packed_view())
            for models in targets.of_model(name):
                version = models.for_projection(name)
                key = (id(models.redis), version.versions[name])
                by_version.setdefault(key, (version, []))[1].append(update)
        for version, batch in by_version.values():
            writer, pipe = self._pipe_of(pipes, version)
            await writer.apply_orders(pipe, version, batch, model.ranked)
        for _, pipe in pipes.values():
            await pipe.execute()

    async def _raise_marks(self, held: _Held) -> None:
        """The applied marks of every target version (read-your-writes waits on them), in
        one pipeline per Redis, once everything they stand for is written."""
        pipes: dict[int, tuple[RedisWriter, Any]] = {}
        marks: dict[tuple[int, str], tuple[ReadModels, list[str], dict[str, int]]] = {}
        for (topic, partition), (targets, offset) in held.marks.items():
            for projection, versions in targets.versions.items():
                for models in versions:
                    version = models.for_projection(projection)
                    entry = marks.setdefault(
                        (id(models.redis), version.versions[projection]), (version, [], {})
                    )
                    key = version.checkpoints_key(projection)
                    if key not in entry[1]:
                        entry[1].append(key)
                    entry[2][f"{topic}:{partition}"] = max(
                        offset, entry[2].get(f"{topic}:{partition}", -1)
                    )
        for models, keys, version_marks in marks.values():
            writer, pipe = self._pipe_of(pipes, models)
            await writer.raise_marks(pipe, keys, version_marks)
        for _, pipe in pipes.values():
            await pipe.execute()

    def _pipe_of(
        self, pipes: dict[int, tuple[RedisWriter, Any]], models: ReadModels
    ) -> tuple[RedisWriter, Any]:
        """The pipeline of ``models``' Redis in ``pipes`` (created on first use)."""
        if id(models.redis) not in pipes:
            writer = self._redis_of(models.redis)
            pipes[id(models.redis)] = (writer, writer.pipeline())
        return pipes[id(models.redis)]

    async def _write_documents(
        self, models: ReadModels, projection: str, items: list[tuple[str, Merge]]
    ) -> None:
        """Read-merge-write of many documents of one collection under its batch lock:
        one find and one bulk write (per chunk). A writer of ``fresh`` documents inserts
        them first and reads and merges only those that were there (duplicate keys). A
        document this writer wrote last, with nobody else writing the collection since,
        is not read (``WrittenLast``)."""
        collection = models.db[models.collection(projection)]
        name = f"{models.db.name}.{collection.name}"
        async with models.batch_lock(projection):
            if not await models.claim_writes(projection, self._written.name):
                self._written.forget(name)
            try:
                await self._merge_and_write(collection, name, projection, items)
            except BaseException:
                self._written.forget(name)  # what is stored is not known any more
                raise

    async def _merge_and_write(
        self, collection: Any, name: str, projection: str, items: list[tuple[str, Merge]]
    ) -> None:
        if self._fresh:
            items = await self._insert_new(collection, projection, items)
        known = self._written.of(name)
        writes: list[InsertOne[Document] | ReplaceOne[Document]] = []
        marks: list[tuple[str, object]] = []
        unread: list[tuple[str, Merge]] = []
        for doc_id, merge in items:
            mark = known.get(doc_id)
            if mark is None:
                unread.append((doc_id, merge))
            elif mark != merge.mark:  # the state covers what is stored: it is the merge
                writes.append(ReplaceOne({"_id": doc_id}, self._document(projection, merge.state)))
                marks.append((doc_id, merge.mark))
        if unread:
            stored: dict[str, Document] = {}
            for chunk in _chunks([doc_id for doc_id, _ in unread], FIND_CHUNK):
                # The merges need the stored state only, not the view derived from it.
                query = collection.find({"_id": {"$in": list(chunk)}}, projection=["_state"])
                async for found in query:
                    stored[found["_id"]] = found
            for doc_id, merge in unread:
                before = stored.get(doc_id)
                merged = merge(before)
                if merged is None:
                    continue
                doc = self._document(projection, merged)
                # By _id alone: the lock excludes other writers, and FerretDB scans the
                # whole collection for any other filter.
                writes.append(
                    InsertOne(doc) if before is None else ReplaceOne({"_id": doc_id}, doc)
                )
                # what is stored now is this writer's state when it covers the merge
                if merged is merge.state or merged == merge.state:
                    marks.append((doc_id, merge.mark))
        for part in _chunks(writes, BULK_CHUNK):
            await collection.bulk_write(list(part), ordered=False)
        if not self._fresh:
            self._written.remember(name, marks)

    @staticmethod
    def _document(projection: str, state: Documented) -> Document:
        return stored_document(
            projection, state.key, state.view(), state_field(state), state.packed_view()
        )

    @staticmethod
    async def _insert_new(
        collection: Any, projection: str, items: list[tuple[str, Merge]]
    ) -> list[tuple[str, Merge]]:
        """Insert every document as if none were stored (``ordered=False``: the others
        go in when one is a duplicate); returns the items whose document was there,
        to be merged with it."""
        there: list[tuple[str, Merge]] = []

        async def insert(start: int, docs: list[Document]) -> None:
            try:
                await collection.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != DUPLICATE_KEY for e in errors):
                    raise
                there.extend(items[start + e["index"]] for e in errors)

        # Each chunk is encoded while the one before is being inserted (FerretDB works
        # on another core).
        inserting: asyncio.Future[None] | None = None
        try:
            for start in range(0, len(items), INSERT_CHUNK):
                docs = []
                for _, merge in items[start : start + INSERT_CHUNK]:
                    docs.append(BatchWriter._document(projection, merge.state))
                if inserting is not None:
                    await inserting
                inserting = asyncio.ensure_future(insert(start, docs))
            if inserting is not None:
                await inserting
        finally:
            if inserting is not None and not inserting.done():
                inserting.cancel()
        return there


LinkSender = Callable[[OrderLink], Awaitable[None]]
EnrichmentSender = Callable[[Enrichment], Awaitable[None]]
SentWaiter = Callable[[], Awaitable[None]]
SentDetacher = Callable[[], Awaitable[SentWaiter]]
"""Senders hand a message over (to Kafka's producer, or in-process); the detacher sends
what the senders hold and returns a waiter for the messages sent since it was last
called, which returns once they are all stored. A batch's write awaits it before raising
the batch's marks, so a raised mark implies that everything its record caused is on its
way (read-your-writes relies on it)."""


@dataclass
class FoldedBatch:
    """What a batch of records changed, detached from the pipeline (the next records
    fold into a new batch)."""

    writer: BatchWriter
    sent: SentWaiter | None = None

    async def write(self) -> None:
        """Write it; the batch's messages are awaited before any mark is raised. Writing
        again after a failure is harmless (merges).

        The messages (and a processor's table changelogs) go out whatever else fails:
        a write that fails for good has the batch's records applied again one by one,
        which find their states already kept and send nothing again, so what the batch
        kept must be sent here. When the sends fail too, their error is raised (a
        dependency unavailable: the write is retried, and sends again)."""
        if self.sent is None:
            await self.writer.flush(None)
            return
        sending = asyncio.ensure_future(self.sent())
        try:
            await self.writer.flush(sending)
        except BaseException:
            if not sending.done():
                await asyncio.wait([sending])
            if not sending.cancelled() and sending.exception() is not None:
                raise sending.exception() from None  # type: ignore[misc]
            raise


class Pipeline:
    """The join logic bound to state stores, senders and target versions."""

    def __init__(
        self,
        orders: StateStore,
        customers: StateStore,
        targets: TargetsProvider,
        send_link: LinkSender,
        send_enrichment: EnrichmentSender,
        detach_sent: SentDetacher | None = None,
        write_back: bool = False,
        order_context: Reentry | None = None,
        cache_size: int = 5_000,
        fresh: bool = False,
    ) -> None:
        """``write_back``: states changed by the records are stored when they leave the
        cache of decoded states (``DecodedStates``), not at once; for stores nothing
        else reads and that need not survive a crash (a rebuild's).

        ``cache_size``: decoded states kept per side of the join. A batch's writer holds
        every state the batch changed anyway, so a cache as large as a batch's
        documents costs little memory, while a smaller one decodes again the states
        the batch's join steps come back to.

        ``fresh``: the documents written are mostly new (a rebuild's new version): they
        are inserted at once, and read and merged only where one was there.

        ``order_context``: the order side's states are stored once per batch, when it
        is detached, each in the context it was put in (the processors' tables). The
        customer side stores each step's writes at once, in the order that lets a
        redelivered record complete them (``CustomerSide._keep``)."""
        self.orders = orders
        self._orders = DecodedStates(
            orders,
            OrderState.from_stored,
            size=cache_size,
            write_back=write_back or order_context is not None,
            context=order_context,
            encode=OrderState.stored,
        )
        self._sync_on_detach = order_context is not None
        self.customer_side = CustomerSide(customers, cache_size, write_back=write_back)
        self._targets = targets
        self._send_link = send_link
        self._send_enrichment = send_enrichment
        self._detach_sent = detach_sent
        self._fresh = fresh
        self._written = WrittenLast()
        self.writer = BatchWriter(fresh, self._written)
        self._changed: dict[str, tuple[OrderState | None, OrderState, bool]] = {}
        """Per order changed by the records folded since the last detach: its state
        before them, its state now, and whether its summary is to be sent again."""
        self.folding = asyncio.Lock()
        """Held while records are folded and their batch detached: a batch being folded
        and a record applied alone (a retry, a hole) never share a writer."""

    async def detach(self, hold_customers: bool = False) -> FoldedBatch:
        """The batch folded since the last detach, to be written; the next records fold
        into a new one. The links of the orders it changed are sent first.
        ``hold_customers``: its customer documents are left to the next batch."""
        await self._send_links()
        if self._sync_on_detach:
            await self._orders.sync_in_turns(DETACH_TURN_EVERY)
        sent = None if self._detach_sent is None else await self._detach_sent()
        batch = FoldedBatch(self.writer, sent)
        self.writer = BatchWriter(self._fresh, self._written)
        if hold_customers:
            self.writer.hold_of(CUSTOMERS, batch.writer)
        return batch

    async def flush(self) -> None:
        """Write what the records applied since the last flush changed, and wait for the
        messages they sent; marks last (see ``BatchWriter``)."""
        await (await self.detach()).write()

    def discard(self) -> None:
        """Forget the unwritten effects (the records are applied again, one by one)."""
        self.writer.discard()
        self._changed.clear()

    async def _send_links(self) -> None:
        """One link per changed order, from its state before the batch to its state now
        (``summary_change``): an order's summary is computed once per batch, and the
        customer side gets its latest only."""
        changed, self._changed = self._changed, {}
        for i, (before, after, resend) in enumerate(changed.values()):
            if i % DETACH_TURN_EVERY == DETACH_TURN_EVERY - 1:
                await asyncio.sleep(0)
            link = summary_change(before, after, resend)
            if link is not None:
                await self._send_link(link)

    def invalidate(self) -> None:
        """The state stores changed under the pipeline (a rebalance restored them)."""
        self._orders.invalidate()
        self.customer_side.invalidate()
        self._written.forget()

    async def rewrite_customers(self, customer_ids: Iterable[str]) -> None:
        """Write these customers' documents with the batch being folded, as they are now
        (a resumed rebuild restored them: their documents may hold their profiles only)."""
        targets = await self._targets()
        for customer_id in customer_ids:
            state = self.customer_side.state(customer_id)
            if state is not None:
                self.writer.write(CUSTOMERS, targets, state)

    async def source_event(self, event: Event, topic: str, partition: int, offset: int) -> bool:
        """Apply one record of ``orders``, ``payments`` or ``customers``; False when it had
        been applied before (its effects are re-emitted all the same)."""
        targets = await self._targets()
        if isinstance(event, CUSTOMER_EVENT_TYPES):
            customer_step = self.customer_side.apply_profile(event, offset)
            await self._customer_effects(targets, customer_step)
            duplicate = customer_step.duplicate
        else:
            order_id = order_id_of(event)
            before = self._order(order_id)
            state, duplicate = fold_order_event(before, event, offset, order_id)
            self._order_changed(targets, before, state, duplicate)
        # Read-your-writes waits on this mark: raised only once every write is done.
        self.writer.checkpoint(targets, topic, partition, offset)
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
        step = self.customer_side.apply_link(link)
        await self._customer_effects(targets, step)
        await self._checkpoint_internal(targets, at)

    async def _checkpoint_internal(self, targets: Targets, at: Position | None) -> None:
        """Internal messages handed over in-process (a rebuild) have no position."""
        if at is not None:
            self.writer.checkpoint(targets, *at)

    def _order(self, order_id: str) -> OrderState | None:
        return self._orders.get(order_id)

    def _order_changed(
        self, targets: Targets, before: OrderState | None, state: OrderState, duplicate: bool
    ) -> None:
        """An order event was folded: the state is saved before any await, so no other
        record of this key can interleave between reading and saving it; its link goes
        out when the batch is detached (``_send_links``)."""
        if not duplicate:
            self._orders.put(state.order_id, state)
        self._write_order(targets, state)
        known = self._changed.get(state.order_id)
        if known is None:
            self._changed[state.order_id] = (before, state, duplicate)
        else:
            self._changed[state.order_id] = (known[0], state, known[2] or duplicate)

    def _write_order(self, targets: Targets, state: OrderState) -> None:
        if state.offsets:  # only an enrichment known: no order to show yet
            self.writer.write(ORDERS, targets, state)

    async def _order_effects(self, targets: Targets, step: OrderStep) -> None:
        if not step.duplicate:
            self._orders.put(step.state.order_id, step.state)
        self._write_order(targets, step.state)
        if step.link is not None:
            await self._send_link(step.link)

    async def _customer_effects(self, targets: Targets, step: CustomerStep) -> None:
        self.writer.write(CUSTOMERS, targets, step.state)
        for message in step.enrichments:  # one by one: a task each cost more than a send
            await self._send_enrichment(message)


class Projector:
    """A pipeline in one process, state in memory, writing one read-model version (or the
    given targets): the rebuild engine's, and the tests'.

    ``buffered``: documents are written on ``flush`` only, once each (a rebuild's
    batches), and states are stored write-back; otherwise after every event."""

    def __init__(
        self,
        models: ReadModels,
        targets: Targets | None = None,
        buffered: bool = False,
        state: tuple[StateStore, StateStore] | None = None,
        cache_size: int = 5_000,
    ) -> None:
        """``state``: the order side's and the customer side's stores (dicts when not
        given; a rebuild gives stores on disk); ``cache_size``: see ``Pipeline``."""
        self.models = models
        self._buffered = buffered
        fixed = targets or Targets.of(models)

        async def provide() -> Targets:
            return fixed

        orders, customers = state or ({}, {})
        self.pipeline = Pipeline(
            orders,
            customers,
            provide,
            self._link,
            self._enrich,
            write_back=buffered,
            cache_size=cache_size,
            fresh=buffered,
        )

    async def flush(self) -> None:
        """Write what the events applied since the last flush changed."""
        await self.pipeline.flush()

    async def _link(self, link: OrderLink) -> None:
        await self.pipeline.order_link(link)

    async def _enrich(self, message: Enrichment) -> None:
        await self.pipeline.enrichment(message)

    async def apply(self, event: Event, topic: str, partition: int, offset: int) -> bool:
        applied = await self.pipeline.source_event(event, topic, partition, offset)
        if not self._buffered:
            await self.flush()
        return applied
