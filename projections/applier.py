"""Applies batches of read records to one version of one projection: the live worker's
and a rebuild's one code path.

Per batch: the events the projection consumes, past its marks, are folded
(``engine.apply_batch``) over the entities it holds in memory or loads in one read,
the events whose fold raised are dead-lettered for this projection, and the changed
entities, the row differences and the raised marks are written in one call. When
that call finds the marks moved (a worker that took the partitions over wrote
first), the batch is folded again on what is stored now. A projection that keeps its
views as documents too (``Projection.documents``) writes them first, under the
version's batch lock, once the marks are seen unmoved (``view_documents``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from projections.api import Projection
from projections.engine import Entity, Outcome, apply_batch
from projections.projection_store import ProjectionStore
from projections.state import Failure, Positioned
from projections.view_documents import ViewDocuments

log = logging.getLogger(__name__)
DeadLetterFor = Callable[[Projection, Failure], Awaitable[None]]
CACHED_ENTITIES = 20_000
"""Entities a projection keeps in memory between batches (least recently used out):
an order's events usually come close together, so most batches find them here."""
CONFLICT_RETRIES = 5


class MarksMoved(RuntimeError):
    """Another writer kept moving the marks of this projection's partitions."""


@dataclass
class AppliedBatch:
    events: int = 0  # folded (or dead-lettered) by this projection
    entities: int = 0  # written
    dead_letters: int = 0


class Applier:
    """One projection version's writer. ``start`` reads the marks; ``reset`` forgets
    what it holds (another worker may have written since: a rebalance). ``documents``:
    where the version's views are kept as documents, for a projection that defines them
    (None for one: a fold whose views are not kept, as ``verify``'s)."""

    def __init__(
        self,
        projection: Projection,
        store: ProjectionStore,
        dead_letter: DeadLetterFor | None = None,
        cached: int = CACHED_ENTITIES,
        documents: ViewDocuments | None = None,
    ) -> None:
        if documents is not None and projection.documents is None:
            raise ValueError(f"{projection.name} defines no documents to keep")
        self.projection = projection
        self.store = store
        self.documents = documents
        self._dead_letter = dead_letter
        self._cached = cached
        self._entities: OrderedDict[str, Entity | None] = OrderedDict()
        self.marks: dict[str, int] = {}

    @property
    def version(self) -> str:
        return self.store.version

    async def start(self) -> None:
        if self.documents is not None:
            await self.documents.prepare()
        self.marks = await self.store.marks()

    async def reset(self) -> None:
        self._entities.clear()
        await self.start()

    def position(self, mark: str) -> int:
        """The offset to read from (one past the mark; 0 with none)."""
        return self.marks.get(mark, -1) + 1

    async def _load(self, keys: Sequence[str]) -> dict[str, Entity | None]:
        held: dict[str, Entity | None] = {}
        missing = []
        for key in keys:
            if key in self._entities:
                self._entities.move_to_end(key)
                held[key] = self._entities[key]
            else:
                missing.append(key)
        held.update(await self.store.load(missing))
        return held

    def _keep(self, entities: Mapping[str, Entity | None]) -> None:
        for key, entity in entities.items():
            self._entities[key] = entity
            self._entities.move_to_end(key)
        while len(self._entities) > self._cached:
            self._entities.popitem(last=False)

    async def apply(self, batch: Sequence[Positioned], highest: Mapping[str, int]) -> AppliedBatch:
        """Apply ``batch`` (decoded events, in offset order per partition) given the
        highest offset read per partition (``highest``: records left out, undecodable
        or of other types, count too)."""
        topics = self.projection.topics
        lettered: set[tuple[str, int]] = set()  # sent already (a retry folds them again)
        for attempt in range(CONFLICT_RETRIES):
            raised = {
                m: o
                for m, o in highest.items()
                if m.rsplit(":", 1)[0] in topics and o > self.marks.get(m, -1)
            }
            if not raised:
                return AppliedBatch()
            mine = [
                p
                for p in batch
                if p.event.type in self.projection.consumes
                and p.offset > self.marks.get(p.mark, -1)
            ]
            keys = list(dict.fromkeys(self.projection.entity_of(p.event) for p in mine))
            stored = await self._load(keys)
            outcome = apply_batch(self.projection, stored, mine)
            for failure in outcome.failures:
                if (failure.at.mark, failure.at.offset) in lettered:
                    continue
                lettered.add((failure.at.mark, failure.at.offset))
                log.warning(
                    "projection %s: %s:%d@%d dead-lettered: %r",
                    self.projection.name,
                    failure.at.topic,
                    failure.at.partition,
                    failure.at.offset,
                    failure.error,
                )
                if self._dead_letter is not None:
                    await self._dead_letter(self.projection, failure)
            expected = {m: self.marks.get(m, -1) for m in raised}
            ranked = {m for row in outcome.deltas.values() for m in row if self.projection.ranks(m)}
            new = {k for k in outcome.entities if stored.get(k) is None}
            if await self._write(outcome, raised, expected, ranked, new):
                self.marks.update(raised)
                self._keep({**stored, **outcome.entities})
                return AppliedBatch(len(mine), len(outcome.entities), len(outcome.failures))
            log.info(
                "projection %s: marks moved under batch (attempt %d), reloading",
                self.projection.name,
                attempt + 1,
            )
            await self.reset()
        raise MarksMoved(f"projection {self.projection.name}: marks kept moving")

    async def _write(
        self,
        outcome: Outcome,
        raised: Mapping[str, int],
        expected: Mapping[str, int],
        ranked: set[str],
        new: set[str],
    ) -> bool:
        """The batch's one script call, after its documents if the projection keeps any;
        False when the marks moved."""
        args = (outcome.entities, outcome.deltas, raised, expected, ranked, outcome.extremes)
        if self.documents is None:
            return await self.store.write(*args)
        async with self.store.batch_lock():  # writers of the version take turns
            marks = await self.store.live_marks()
            if any(marks.get(m, -1) != o for m, o in expected.items()):
                return False
            await self.documents.write({k: e.view for k, e in outcome.entities.items()}, new)
            return await self.store.write(*args)
