"""Applying a batch of events to a projection, as a pure step: no I/O.

Given what is stored of the batch's entities, ``apply_batch`` folds each entity's
events in offset order (a JSON state with the projection's fold, ``JsonState``, or a
typed one, ``TypedEntityState``) and returns the entities that changed, the difference
their rows make to each group, and the events whose fold (or derivation) raised:
those are left out of the state (dead-lettered by the caller, for this projection
alone) and the entity's other events still apply. An event whose id the entity
already holds is skipped, so a re-published or re-driven event counts once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from projections.api import JSON, Projection
from projections.state import Failure, Folded, Positioned, State

RowsDict = dict[str, dict[str, int]]


class InvalidOutput(TypeError):
    """A projection's fold or derivation returned something the engine cannot store."""


@dataclass(frozen=True)
class Entity:
    """What is stored per entity: the projection's state, the rows it contributes, the
    view it shows, and the ids of the events folded into it (as one JSON string)."""

    encoded: bytes

    @classmethod
    def of(
        cls,
        state: JSON | orjson.Fragment,
        rows: RowsDict,
        view: JSON | None,
        events: Iterable[str],
    ) -> Entity:
        try:
            return cls(
                orjson.dumps({"state": state, "rows": rows, "view": view, "events": sorted(events)})
            )
        except TypeError as exc:
            raise InvalidOutput(f"state or view is not JSON: {exc}") from exc

    @property
    def doc(self) -> dict[str, Any]:
        """A fresh copy of the stored document (the fold may change its state)."""
        loaded: dict[str, Any] = orjson.loads(self.encoded)
        return loaded

    @property
    def shown(self) -> dict[str, Any]:
        """What the entity shows and is made of (its rows, view and event ids), not its
        state: states folded in another cross-topic order may differ in form."""
        doc = self.doc
        del doc["state"]
        return doc

    @property
    def rows(self) -> RowsDict:
        rows: RowsDict = self.doc["rows"]
        return rows

    @property
    def view(self) -> dict[str, Any] | None:
        view: dict[str, Any] | None = self.doc["view"]
        return view


Extreme = tuple[str, str, str, str, int | None]
"""(group, measure, ``max`` or ``min``, entity, its value, or None when it no longer
has one): a change of one entity's value of a measure of ``maxima`` or ``minima``."""
EXACT_SCORE = 2**53
"""Values of ``maxima`` and ``minima`` stay below this in magnitude: a store may keep
them as doubles."""


@dataclass
class Outcome:
    entities: dict[str, Entity] = field(default_factory=dict)  # the changed ones
    deltas: RowsDict = field(default_factory=dict)  # group -> measure -> difference
    extremes: list[Extreme] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def _checked_rows(rows: object) -> RowsDict:
    if not isinstance(rows, Mapping):
        raise InvalidOutput(f"rows must be a mapping of group -> measures, not {rows!r:.100}")
    checked: RowsDict = {}
    for group, measures in rows.items():
        if not isinstance(group, str) or not isinstance(measures, Mapping):
            raise InvalidOutput(f"rows: {group!r:.100} -> {measures!r:.100}")
        row = {}
        for name, value in measures.items():
            if not isinstance(name, str) or type(value) is not int:
                raise InvalidOutput(f"rows[{group!r}]: {name!r} -> {value!r} is not an integer")
            if value:
                row[name] = value
        if row:
            checked[group] = row
    return checked


def derive(projection: Projection, state: JSON, events: Iterable[str]) -> Entity:
    """The entity stored for ``state``: its rows or view, checked."""
    rows: RowsDict = {}
    view = None
    if projection.rows is not None:
        rows = _checked_rows(projection.rows(state))
        if projection.has_extremes:
            _check_extremes(projection, rows)
    elif projection.view is not None:
        view = projection.view(state)
    return _checked(projection, state, rows, view, events)


def _checked(
    projection: Projection,
    state: JSON | orjson.Fragment,
    rows: RowsDict,
    view: object,
    events: Iterable[str],
) -> Entity:
    """The entity of a state, its rows and its view, once the view is seen to be one
    that can be stored (as a document too, for a projection that keeps them)."""
    if view is not None and not isinstance(view, Mapping):
        raise InvalidOutput(f"view must be a mapping or None, not {view!r:.100}")
    shown = view if view is None or isinstance(view, dict) else dict(view)
    entity = Entity.of(state, rows, shown, events)
    if view is not None and projection.documents is not None:
        stored = entity.view  # as JSON holds it: what the document is made of
        wrong = None if stored is None else projection.documents.unstorable(stored)
        if wrong is not None:
            raise InvalidOutput(f"view cannot be stored as a document: {wrong}")
    return entity


def _check_extremes(projection: Projection, rows: RowsDict) -> None:
    for group, row in rows.items():
        for name, value in row.items():
            if abs(value) >= EXACT_SCORE and projection.extreme(name) is not None:
                raise InvalidOutput(
                    f"rows[{group!r}]: {name!r} -> {value} is beyond 2**53 in magnitude"
                    f" (a measure of maxima or minima is kept as a double)"
                )


def _new_state(projection: Projection) -> JSON:
    initial, _ = projection.json_fold
    return orjson.loads(orjson.dumps(initial()))


@dataclass(frozen=True, slots=True)
class JsonState:
    """A registered projection's state of one entity (``state.State``): the stored
    ``Entity`` (None for one not seen before), folded by the projection's fold."""

    projection: Projection
    entity: Entity | None = None

    def with_events(self, events: Sequence[Positioned]) -> Folded[JsonState]:
        projection, stored = self.projection, self.entity
        doc = stored.doc if stored is not None else None
        seen = list(doc["events"]) if doc is not None else []
        known = set(seen)
        fresh = []
        for p in events:  # each event once: a batch may hold a re-published copy too
            if p.event.event_id not in known:
                known.add(p.event.event_id)
                fresh.append(p)
        if not fresh:
            return Folded(None)
        start = doc["state"] if doc is not None else _new_state(projection)
        _, fold = projection.json_fold
        try:  # the common case: the whole batch of the entity at once, on one copy
            state = start
            for p in fresh:
                state = fold(state, p.event)
            all_ids = [*seen, *(p.event.event_id for p in fresh)]
            return Folded(JsonState(projection, derive(projection, state, all_ids)))
        except Exception:  # find the events that raise, fold the others
            pass
        # the fold may have changed ``start`` in place: begin again from a fresh copy each
        # time (``fold_each`` would do the same, copying the event ids per event)
        failures: list[Failure] = []
        entity: Entity | None = stored
        state_json = orjson.dumps(doc["state"] if doc is not None else _new_state(projection))
        applied = list(seen)
        for p in fresh:
            try:
                state = fold(orjson.loads(state_json), p.event)
                candidate = derive(projection, state, [*applied, p.event.event_id])
            except Exception as exc:
                failures.append(Failure(p, exc))
                continue
            entity, applied = candidate, [*applied, p.event.event_id]
            state_json = orjson.dumps(candidate.doc["state"])
        changed = None if entity is stored or entity is None else JsonState(projection, entity)
        return Folded(changed, failures)

    def view(self) -> dict[str, Any] | None:
        return None if self.entity is None else self.entity.view

    def to_json(self) -> bytes:
        if self.entity is None:  # not seen before: no events, so no rows and no view
            return Entity.of(_new_state(self.projection), {}, None, ()).encoded
        return self.entity.encoded


@dataclass(frozen=True)
class JsonStates:
    """The states of a registered projection (``state.StateType``)."""

    projection: Projection

    def initial(self, key: str) -> JsonState:
        return JsonState(self.projection)

    def from_json(self, stored: bytes) -> JsonState:
        return JsonState(self.projection, Entity(stored))


def _typed_entity(projection: Projection, state: State) -> Entity:
    """The entity stored for a typed state: its JSON as the state, its view, no rows
    and no event ids (the state guards itself)."""
    return _checked(projection, orjson.Fragment(state.to_json()), {}, state.view(), ())


@dataclass(frozen=True, slots=True)
class TypedEntityState:
    """A typed state (``Projection.states``) as the projection engine stores it: inside
    an ``Entity`` (``state``: the typed state's JSON; its ``view``), so that the stores,
    the rebuild, ``verify`` and the read endpoint treat it as any other entity."""

    projection: Projection
    state: State
    entity: Entity | None = None

    @classmethod
    def of(cls, projection: Projection, key: str, entity: Entity | None) -> TypedEntityState:
        states = projection.states
        assert states is not None
        if entity is None:
            return cls(projection, states.initial(key))
        return cls(projection, states.from_json(orjson.dumps(entity.doc["state"])), entity)

    def with_events(self, events: Sequence[Positioned]) -> Folded[TypedEntityState]:
        projection = self.projection
        folded = self.state.with_events(events)
        if folded.state is None:
            return Folded(None, folded.failures)
        try:  # the common case: the batch's state shows a view that can be stored
            new = TypedEntityState(
                projection, folded.state, _typed_entity(projection, folded.state)
            )
            return Folded(new, folded.failures)
        except Exception:  # find the events whose views cannot be shown, fold the others
            pass
        failures: list[Failure] = []
        current = self
        for p in events:
            step = current.state.with_events([p])
            failures.extend(step.failures)
            if step.state is None:
                continue
            try:
                candidate = _typed_entity(projection, step.state)
            except Exception as exc:
                failures.append(Failure(p, exc))
                continue
            current = TypedEntityState(projection, step.state, candidate)
        return Folded(None if current is self else current, failures)

    def view(self) -> dict[str, Any] | None:
        return None if self.entity is None else self.entity.view

    def to_json(self) -> bytes:
        if self.entity is None:  # not seen before
            return _typed_entity(self.projection, self.state).encoded
        return self.entity.encoded


def _add(deltas: RowsDict, rows: Mapping[str, Mapping[str, int]], sign: int) -> None:
    for group, measures in rows.items():
        row = deltas.setdefault(group, {})
        for name, value in measures.items():
            row[name] = row.get(name, 0) + sign * value


def apply_batch(
    projection: Projection,
    stored: Mapping[str, Entity | None],
    events: Sequence[Positioned],
) -> Outcome:
    """Fold ``events`` (in the order given: offset order within each partition) into
    the ``stored`` entities (every entity the events name must be a key)."""
    by_entity: dict[str, list[Positioned]] = {}
    for p in events:
        by_entity.setdefault(projection.entity_of(p.event), []).append(p)
    outcome = Outcome()
    for key, its_events in by_entity.items():
        before = stored[key]
        folded: Folded[JsonState] | Folded[TypedEntityState] = (
            TypedEntityState.of(projection, key, before).with_events(its_events)
            if projection.typed
            else JsonState(projection, before).with_events(its_events)
        )
        outcome.failures.extend(folded.failures)
        if folded.state is None or folded.state.entity is None:
            continue
        after = folded.state.entity
        outcome.entities[key] = after
        if projection.rows is None:
            continue
        old, new = before.rows if before is not None else {}, after.rows
        if projection.has_extremes:
            old, old_extremes = _split(projection, old)
            new, new_extremes = _split(projection, new)
            for group, measure in sorted(old_extremes.keys() | new_extremes.keys()):
                value = new_extremes.get((group, measure))
                if value != old_extremes.get((group, measure)):
                    kind = str(projection.extreme(measure))
                    outcome.extremes.append((group, measure, kind, key, value))
        _add(outcome.deltas, old, -1)
        _add(outcome.deltas, new, 1)
    outcome.deltas = {
        g: kept
        for g, row in outcome.deltas.items()
        if (kept := {k: v for k, v in row.items() if v})
    }
    return outcome


def _split(projection: Projection, rows: RowsDict) -> tuple[RowsDict, dict[tuple[str, str], int]]:
    """An entity's rows: the measures summed, and (group, measure) -> value of the others."""
    sums: RowsDict = {}
    extremes: dict[tuple[str, str], int] = {}
    for group, row in rows.items():
        for name, value in row.items():
            if projection.extreme(name) is None:
                sums.setdefault(group, {})[name] = value
            else:
                extremes[group, name] = value
    return sums, extremes


def sum_rows(entities: Iterable[Entity], projection: Projection | None = None) -> RowsDict:
    """Each group's row from the entities' contributions, what the stored rows must
    equal: their sum, or for a measure of ``projection``'s maxima or minima, the highest
    or lowest."""
    total: RowsDict = {}
    for entity in entities:
        if projection is None or not projection.has_extremes:
            _add(total, entity.rows, 1)
            continue
        sums, extremes = _split(projection, entity.rows)
        _add(total, sums, 1)
        for (group, name), value in extremes.items():
            row = total.setdefault(group, {})
            pick = max if projection.extreme(name) == "max" else min
            row[name] = value if name not in row else pick(row[name], value)
    return {g: kept for g, row in total.items() if (kept := {k: v for k, v in row.items() if v})}


def as_score(value: int) -> int:
    """A value as a ranking holds it: a double, exact below 2**53 (a row's sum is exact at
    any size; only the order of two groups beyond that may be off by a rounding)."""
    return int(float(value))


def rankings(rows: RowsDict, ranks: Callable[[str], bool]) -> RowsDict:
    """Each ranked measure's groups and values (``as_score``), as the rows hold them:
    what the stored rankings must equal."""
    found: RowsDict = {}
    for group, row in rows.items():
        for measure, value in row.items():
            if value and ranks(measure):
                found.setdefault(measure, {})[group] = as_score(value)
    return found
