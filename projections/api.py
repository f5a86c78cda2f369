"""Write your own projection: the public definition the projection engine runs.

A projection folds the events of one *entity* (an order, a customer: the key the
events' topic is partitioned by) into a JSON state, and derives from that state
what it shows:

* ``rows``: numbers grouped by any key you choose (a SKU and a day, a payment
  method and an hour, a customer, ...). Each entity contributes its rows, and a
  group's row is the sum of every entity's contribution. The engine stores the
  contributions and adds only the difference when an entity changes, so an event
  costs the same whatever the group's history, and a redelivered event changes
  nothing.
* ``view``: one JSON document per entity, served as it is; with ``documents``, the
  views are also stored as documents (MongoDB, a collection per version) and listed
  by the fields they name (``GET /v1/projections/{name}?status=flagged``).

A measure of ``rows`` may instead be the highest or lowest of the entities' values
(``maxima``, ``minima``: a customer's latest order), and a ``rows`` projection may keep
its groups ranked by some of its measures (``ranked``: the top customers by points,
read highest first).

The fold and the derivations are plain functions of data (no I/O). The engine does
the rest: batching, exactly-once application (a per-partition mark written with the
state, and each entity's event ids), blue/green rebuilds (``eventfold replay
--projection NAME``), ``eventfold verify``, dead letters per projection (an event
whose fold raises is dead-lettered for that projection alone) and read-your-writes
over ``GET /v1/projections/{name}/{key}``.

Events of different topics (``orders`` and ``payments``) can arrive in either order
relative to each other, so derive ``rows`` and ``view`` from what the state holds,
not from the order the events came in: a refund folded before its order was placed
must end in the same rows as the other way round.

Register a projection under the ``eventfold.projections`` entry point group of your
package (``name = "your_package.module:projection"``); ``EVENTFOLD_PROJECTIONS_DISABLED``
switches registered ones off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
import bson.errors
import orjson

from projections.state import State, StateType
from schemas.catalog import CARRIES, KEY_FIELD_OF_TOPIC, TOPIC_OF_TYPE
from schemas.events import Event

JSON = Any
"""A JSON value (dict, list, str, int, float, bool, None): what a state may hold."""
Rows = Mapping[str, Mapping[str, int]]
"""Group key -> measure -> an integer (money in minor units, e.g. ``to_units``)."""
Fold = Callable[[JSON, Event], JSON]
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
FIELD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
"""A field of a document that a list may filter on (when ``Documents.fields`` is empty)."""
GROUP_SEPARATOR = "|"
"""Joins the parts of a composite group key (``group_key("SKU-1", "2026-12-03")``)."""


class ProjectionError(ValueError):
    """A projection definition the engine cannot run."""


def group_key(*parts: str) -> str:
    """A composite group key; its parts must not contain the separator."""
    for part in parts:
        if GROUP_SEPARATOR in part:
            raise ValueError(f"a group key part contains {GROUP_SEPARATOR!r}: {part!r}")
    return GROUP_SEPARATOR.join(parts)


def names_measure(names: tuple[str, ...], measure: str) -> bool:
    """Whether ``names`` name ``measure``: itself, or its family (the part before ``|``)."""
    return bool(names) and (measure in names or measure.partition(GROUP_SEPARATOR)[0] in names)


Index = tuple[tuple[str, int], ...]
"""An index of documents: its fields in order, each 1 (ascending) or -1 (descending)."""
VIEW_FIELD = "_view"
"""The field of a document holding the rest of its view, as one JSON string."""
STATE_FIELD = "_state"
"""The field of a document holding the state its view was derived from."""


@dataclass(frozen=True)
class Documents:
    """How the views of a projection are stored as documents (a MongoDB collection per
    version, one document per entity) and queried. The built-in order and customer read
    models are stored this way, and so are the views of a ``Projection`` given one
    (``Projection.documents``): listed over HTTP filtered by its ``fields``.

    ``fields``: the view's fields stored as fields of their own: what queries filter and
    sort on, and indexes cover. The rest of the view is stored as one JSON string
    (``_view``): a document store's cost of writing a document grows with its number of
    values (FerretDB's: 0.9 ms per document of 75 values, 0.08 ms for a dozen fields
    and a 3 KB string, inserts of 1,000). Empty: every field of the view as its own,
    for a small and flat view.

    ``indexes``: created where the server reads them (``ReadModels.ensure_indexes``)."""

    fields: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.fields, str):
            raise ProjectionError(f"Documents fields is a tuple of names: ({self.fields!r},)")
        for name in self.fields:
            if (
                not isinstance(name, str)
                or not name
                or name.startswith(("_", "$"))
                or "." in name
                or "\0" in name
            ):
                raise ProjectionError(
                    f"Documents field {name!r}: a non-empty name, without '.' and not"
                    " starting with '_' (the document's own fields: _id, _view, _state)"
                    " or '$'"
                )
        if len(set(self.fields)) != len(self.fields):
            raise ProjectionError(f"Documents fields name one twice: {self.fields!r}")
        for index in self.indexes:
            if not index:
                raise ProjectionError("Documents index with no field")
            for part in index:
                if not (isinstance(part, tuple) and len(part) == 2 and part[1] in (1, -1)):
                    raise ProjectionError(
                        f"Documents index part {part!r}: (field, 1) or (field, -1)"
                    )
                field_name = part[0]
                stored = field_name in self.fields if self.fields else True
                if field_name != "_id" and (not stored or field_name.startswith("_")):
                    raise ProjectionError(
                        f"Documents index on {field_name!r}: not a field of its own"
                        f" ({', '.join(self.fields) or 'the view'}, or _id)"
                    )

    def filters_on(self, name: str) -> bool:
        """Whether a list of the documents may filter on ``name``: a field of its own
        (any field of the view when ``fields`` is empty)."""
        if self.fields:
            return name in self.fields
        return FIELD_NAME.fullmatch(name) is not None

    def unstorable(self, view: Mapping[str, Any]) -> str | None:
        """What keeps a view (as JSON holds it) from being stored as a document (None:
        nothing): a field of its own that is not a document's (a name starting with
        ``_`` or ``$``, or with ``.``), an integer beyond 64 bits, or a document larger
        than a server takes. The rest of a view with ``fields`` is one JSON string,
        which holds anything."""
        own = view.items() if not self.fields else ((k, view[k]) for k in self.fields if k in view)
        for name, value in own:
            wrong = _unstorable(value, str(name), top=True)
            if wrong is not None:
                return wrong
        try:
            size = len(bson.encode(self.document("", view, None)))
        except (bson.errors.BSONError, OverflowError, TypeError) as exc:
            return f"not BSON: {exc}"
        if size > MAX_DOCUMENT_BYTES:
            return f"{size:,} bytes as a document, beyond {MAX_DOCUMENT_BYTES:,}"
        return None

    @property
    def read(self) -> tuple[str, ...] | None:
        """The fields to read of a document to show its view (None: all)."""
        return (*self.fields, VIEW_FIELD) if self.fields else None

    def document(
        self, key: str, view: Mapping[str, Any], state: str | None, packed: str | None = None
    ) -> dict[str, Any]:
        """The stored document of an entity's view and the state it was derived from
        (None: the state is kept elsewhere, as a ``Projection``'s is). ``packed``: the
        view as JSON, when the caller has it (a hot cache holds the same string); the
        document's own fields win over those in it (``view_of``)."""
        kept = {} if state is None else {STATE_FIELD: state}
        if not self.fields:
            return {"_id": key, **view, **kept}
        if packed is None:
            rest = {k: v for k, v in view.items() if k not in self.fields}
            packed = orjson.dumps(rest).decode()
        own = {k: view[k] for k in self.fields if k in view}  # a field it lacks stays absent
        return {"_id": key, **own, VIEW_FIELD: packed, **kept}

    @staticmethod
    def view_of(doc: Mapping[str, Any]) -> dict[str, Any]:
        """The view a stored document shows: its ``_view`` and its own fields (which
        win, so a field changed in place is seen: ``eventfold verify`` finds it)."""
        packed = doc.get(VIEW_FIELD)
        view: dict[str, Any] = orjson.loads(packed) if isinstance(packed, str) else {}
        view.update((k, v) for k, v in doc.items() if not k.startswith("_"))
        return view


FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
"""A field of a view that a definition names (``Lookup``)."""


@dataclass(frozen=True)
class Lookup:
    """An entity's view shows some fields of another projection's view, found by a field
    of its own, and is derived again when that other view changes: an order shows its
    customer's name, tier and country, and a customer's new name reaches each of its
    orders. The built-in order read model is joined to the customers this way (the
    processor's join keeps the link both ways, through internal topics repartitioned
    by each side's key); the projection engine for installed projections does not run
    lookups yet, so only the built-ins (typed states, run by the join) take one.

    ``projection``: the projection whose view is looked up. ``key``: the field of this
    view holding that view's key. ``fields``: the fields of that view shown. ``into``:
    the field of this view that holds them (None until the other view is known)."""

    projection: str
    key: str
    fields: tuple[str, ...]
    into: str

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.projection):
            raise ProjectionError(f"Lookup projection {self.projection!r}: not a projection name")
        if isinstance(self.fields, str) or not self.fields:
            raise ProjectionError(f"Lookup fields: a non-empty tuple of names, not {self.fields!r}")
        for name in (self.key, self.into, *self.fields):
            if not isinstance(name, str) or not FIELD.fullmatch(name):
                raise ProjectionError(
                    f"Lookup field {name!r}: a letter, then letters, digits or _ (64 at most)"
                )
        if len(set(self.fields)) != len(self.fields):
            raise ProjectionError(f"Lookup fields name one twice: {self.fields!r}")
        if self.key == self.into:
            raise ProjectionError(f"Lookup into {self.into!r}: the key's own field")

    def block(self, other: Mapping[str, Any]) -> dict[str, Any]:
        """What this view shows of ``other`` (a field it lacks shows as None)."""
        return {name: other.get(name) for name in self.fields}

    def holds(self, block: Mapping[str, Any]) -> bool:
        """Whether ``block`` is one this lookup makes (its fields, no others)."""
        return set(block) == set(self.fields)


TOTAL_KINDS = ("sum", "sum_per_key", "max", "min")
"""How a measure of ``Totals`` adds up its contributions: ``sum`` an integer;
``sum_per_key`` integers per key (an amount per currency; a key at zero is left
out); ``max`` / ``min`` the highest / lowest value contributed (a string or a number;
None contributes nothing)."""


@dataclass(frozen=True)
class Totals:
    """An entity's totals over the views of another projection that name it by a field
    of theirs: a customer's placed orders, its paid amounts per currency and its latest
    order, over the views of its orders. Each of those views contributes
    (``contribution``: measure -> value, from the fields it ``reads``), and an entity
    keeps each one's latest contribution apart from its totals, so a change of one
    costs the same whatever the entity's history: the old contribution is taken out
    and the new one put in (``replaced``).

    A ``max`` / ``min`` never goes back: a contribution replaced or lowered is not
    taken out of it. Give it values that do not change once contributed (an order's
    placement time); for a maximum that can go down, use ``Projection.maxima``, which
    keeps every contribution. The built-in customer view is totalled this way
    (``customer_fold.CUSTOMER_TOTALS``); the projection engine for installed
    projections does not run totals yet, so only the built-ins (typed states, run by the
    join) take them.

    ``projection``: whose views are totalled. ``key``: their field naming this entity.
    ``reads``: the fields of those views the contribution reads (the key with them:
    what the other side sends). ``measures``: measure -> kind (``TOTAL_KINDS``)."""

    projection: str
    key: str
    reads: tuple[str, ...]
    measures: Mapping[str, str]
    contribution: Callable[[Mapping[str, Any]], Mapping[str, Any]]
    fields: tuple[str, ...] = field(init=False)
    """``reads`` and the key: the fields of a view its contribution is made from."""

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.projection):
            raise ProjectionError(f"Totals projection {self.projection!r}: not a projection name")
        if isinstance(self.reads, str):
            raise ProjectionError(f"Totals reads is a tuple of names: ({self.reads!r},)")
        for name in (self.key, *self.reads, *self.measures):
            if not isinstance(name, str) or not FIELD.fullmatch(name):
                raise ProjectionError(
                    f"Totals field or measure {name!r}: a letter, then letters, digits or _"
                    " (64 at most)"
                )
        if not self.measures:
            raise ProjectionError("Totals with no measure")
        for name, kind in self.measures.items():
            if kind not in TOTAL_KINDS:
                raise ProjectionError(
                    f"Totals measure {name!r}: kind {kind!r}, not one of {', '.join(TOTAL_KINDS)}"
                )
        if not callable(self.contribution):
            raise ProjectionError("Totals contribution: a function of a view's fields")
        object.__setattr__(self, "measures", dict(self.measures))
        object.__setattr__(self, "fields", tuple(dict.fromkeys((*self.reads, self.key))))

    def empty(self) -> dict[str, Any]:
        """The totals of an entity nothing contributed to."""
        return {name: _EMPTY[kind]() for name, kind in self.measures.items()}

    def contributed(self, view: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """What ``view`` (its ``fields``) contributes; nothing for None. Raises
        ValueError for a measure the totals do not have."""
        if view is None:
            return {}
        made = self.contribution(view)
        if not made.keys() <= self.measures.keys():
            unknown = sorted(set(made) - set(self.measures))
            raise ValueError(f"a contribution to unknown measure(s) {', '.join(unknown)}")
        return made

    def replaced(
        self,
        totals: Mapping[str, Any],
        old: Mapping[str, Any] | None,
        new: Mapping[str, Any],
    ) -> dict[str, Any]:
        """``totals`` with the contribution of view ``old`` (None: it had none) replaced
        by that of ``new``."""
        was, now = self.contributed(old), self.contributed(new)
        out = {}
        for name, kind in self.measures.items():
            value = totals[name]
            if kind == "sum":
                out[name] = value - was.get(name, 0) + now.get(name, 0)
            elif kind == "sum_per_key":
                summed = dict(value)
                for key, units in was.get(name, {}).items():
                    summed[key] = summed.get(key, 0) - units
                for key, units in now.get(name, {}).items():
                    summed[key] = summed.get(key, 0) + units
                out[name] = {k: u for k, u in sorted(summed.items()) if u}
            else:
                candidates = [v for v in (value, now.get(name)) if v is not None]
                pick = max if kind == "max" else min
                out[name] = pick(candidates) if candidates else None
        return out

    def from_doc(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """Totals as stored (``{measure: value}``, other fields ignored), checked."""
        out: dict[str, Any] = {}
        for name, kind in self.measures.items():
            value = doc[name]
            if kind == "sum":
                out[name] = int(value)
            elif kind == "sum_per_key":
                out[name] = {str(k): int(v) for k, v in value.items()}
            else:
                out[name] = value
        return out


INT64 = 2**63
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""The largest document MongoDB (and FerretDB) stores."""


def _unstorable(value: Any, name: str, top: bool = False) -> str | None:
    if not isinstance(name, str) or name.startswith("$") or "." in name or "\0" in name:
        return f"field {name!r}: not a document's field name"
    if top and name.startswith("_"):
        return f"field {name!r}: a name starting with _ is the document's own"
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < INT64:
        return f"field {name!r}: {value} is beyond 64 bits"
    if isinstance(value, Mapping):
        for k, v in value.items():
            wrong = _unstorable(v, k)
            if wrong is not None:
                return f"{name}.{wrong}" if not wrong.startswith("field") else wrong
    if isinstance(value, list):
        for v in value:
            wrong = _unstorable(v, name)
            if wrong is not None:
                return wrong
    return None


_EMPTY: dict[str, Callable[[], Any]] = {
    "sum": int,
    "sum_per_key": dict,
    "max": lambda: None,
    "min": lambda: None,
}


@dataclass(frozen=True)
class Projection:
    """One read model: what it consumes, its fold and what it shows.

    ``initial`` makes the state of an entity not seen before; ``fold`` returns the
    state after an event (it may change and return the state it was given: the
    engine hands it a copy it owns). Exactly one of ``rows`` and ``view``."""

    name: str
    consumes: tuple[str, ...]
    initial: Callable[[], JSON] | None = None
    fold: Fold | None = None
    rows: Callable[[JSON], Rows] | None = None
    view: Callable[[JSON], Mapping[str, JSON] | None] | None = None
    description: str = ""
    ranked: tuple[str, ...] = ()
    """Measures of ``rows`` whose groups are also kept ranked, highest first (``GET
    /v1/rankings/{name}/{measure}``: the top customers by points). A name ranks the
    measure of that name and each ``name|...`` one (``ltv`` ranks ``ltv|EUR`` and
    ``ltv|USD``, one ranking each). A ranking costs one sorted-set update per changed
    group and measure, so rank only what is read that way."""
    maxima: tuple[str, ...] = ()
    """Measures of ``rows`` whose group value is the highest of its entities' values,
    not their sum (a customer's latest order, as epoch seconds). Named as in
    ``ranked``; values within 2**53 (a double holds them exactly)."""
    minima: tuple[str, ...] = ()
    """The same with the lowest value (a customer's first order)."""
    documents: Documents | None = None
    """For a ``view`` projection: its views are also stored as documents, one per entity
    in a MongoDB collection per version, written in each batch before its marks are
    raised, and listed over HTTP filtered by the fields named here
    (``GET /v1/projections/{name}?field=value``)."""
    states: StateType[State] | None = None
    """A typed state instead of ``initial`` and ``fold`` (``projections.state``: a class
    with ``initial`` and ``from_json``, whose states fold a batch of events with
    ``with_events``, show ``view()`` and store ``to_json()``): its view is what the
    entity shows, so no ``view`` is given. The built-in order and customer read models
    are defined this way (an order's state keeps its events as decoded facts, so that
    its hot path never decodes them again), and the processor's join runs them with
    their lookup and totals; the projection engine runs a registered projection's typed
    state (without lookup or totals) as it runs a JSON one
    (``engine.TypedEntityState``)."""
    lookup: Lookup | None = None
    """Fields of another projection's view this one's view shows (``Lookup``)."""
    totals: Totals | None = None
    """Totals over another projection's views that name this one's entities (``Totals``)."""
    topics: tuple[str, ...] = field(init=False)
    key_field: str = field(init=False)

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise ProjectionError(
                f"projection name {self.name!r}: lowercase letters, digits and _, "
                "starting with a letter, at most 40"
            )
        if not self.consumes:
            raise ProjectionError(f"{self.name}: consumes no event type")
        unknown = sorted(set(self.consumes) - set(TOPIC_OF_TYPE))
        if unknown:
            raise ProjectionError(
                f"{self.name}: unknown event type(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(TOPIC_OF_TYPE))}"
            )
        self._check_state()
        if self.documents is not None:
            if not isinstance(self.documents, Documents):
                raise ProjectionError(
                    f"{self.name}: documents is a projections.api.Documents, not"
                    f" {self.documents!r:.100}"
                )
            if self.rows is not None:
                raise ProjectionError(
                    f"{self.name}: documents store views; a rows projection has none"
                )
        for option in ("ranked", "maxima", "minima"):
            object.__setattr__(self, option, self._measure_names(option))
        both = sorted(set(self.maxima) & set(self.minima))
        if both:
            raise ProjectionError(f"{self.name}: {', '.join(both)} in both maxima and minima")
        topics = tuple(sorted({TOPIC_OF_TYPE[t] for t in self.consumes}))
        keys = {KEY_FIELD_OF_TOPIC[t] for t in topics}
        if len(keys) > 1:
            raise ProjectionError(
                f"{self.name}: its events are keyed by different fields"
                f" ({', '.join(sorted(keys))});"
                " a projection folds the events of one entity: consume topics keyed alike"
                " (orders and payments by order_id, customers by customer_id)"
            )
        object.__setattr__(self, "consumes", tuple(sorted(set(self.consumes))))
        object.__setattr__(self, "topics", topics)
        object.__setattr__(self, "key_field", keys.pop())

    def _check_state(self) -> None:
        if self.states is None:
            if self.initial is None or self.fold is None:
                raise ProjectionError(
                    f"{self.name}: define initial and fold (or a typed state: states)"
                )
            if (self.rows is None) == (self.view is None):
                raise ProjectionError(f"{self.name}: define exactly one of rows and view")
            for joined in ("lookup", "totals"):
                if getattr(self, joined) is not None:
                    raise ProjectionError(
                        f"{self.name}: the projection engine does not run a {joined} over a"
                        " JSON state yet (the built-in order and customer read models, with"
                        " typed states, have them)"
                    )
            return
        if self.initial is not None or self.fold is not None:
            raise ProjectionError(
                f"{self.name}: a typed state (states) folds itself: no initial or fold"
            )
        if self.rows is not None or self.view is not None:
            raise ProjectionError(
                f"{self.name}: a typed state (states) shows its own view: no rows or view"
            )
        for joined, kind in (("lookup", Lookup), ("totals", Totals)):
            value = getattr(self, joined)
            if value is not None and not isinstance(value, kind):
                raise ProjectionError(
                    f"{self.name}: {joined} is a projections.api.{kind.__name__}, not"
                    f" {value!r:.100}"
                )
        for other in (self.lookup, self.totals):
            if other is None:
                continue
            if other.projection == self.name:
                raise ProjectionError(f"{self.name}: a lookup or totals over its own views")
            if (other.projection, self.name) not in CARRIES:
                raise ProjectionError(
                    f"{self.name}: no internal topic carries {other.projection}'s views to it"
                    " (schemas.catalog.CARRIES)"
                )

    @property
    def joined_topics(self) -> tuple[str, ...]:
        """The internal topics that bring this projection what its lookup and totals read
        of other projections' views (``schemas.catalog.CARRIES``)."""
        return tuple(
            CARRIES[other.projection, self.name]
            for other in (self.lookup, self.totals)
            if other is not None
        )

    @property
    def kind(self) -> str:
        """``rows`` or ``view``: what ``GET /v1/projections/{name}/{key}`` serves."""
        return "rows" if self.rows is not None else "view"

    @property
    def json_fold(self) -> tuple[Callable[[], JSON], Fold]:
        """``initial`` and ``fold``; ProjectionError for a typed state (``states``)."""
        if self.initial is None or self.fold is None:
            raise ProjectionError(f"{self.name}: a typed state, not a JSON one")
        return self.initial, self.fold

    @property
    def typed(self) -> bool:
        """Whether the state is typed (``states``), not JSON (``initial`` and ``fold``)."""
        return self.states is not None

    def _measure_names(self, option: str) -> tuple[str, ...]:
        """The measure names of ``option`` (``ranked``, ``maxima``, ``minima``), checked
        and sorted."""
        names = getattr(self, option)
        if isinstance(names, str):
            raise ProjectionError(
                f"{self.name}: {option} is a tuple of measure names, not one string: "
                f"{option}=({names!r},)"
            )
        if names and self.rows is None:
            raise ProjectionError(f"{self.name}: {option} names measures of rows; it has none")
        for measure in names:
            if not isinstance(measure, str) or not measure or GROUP_SEPARATOR in measure:
                raise ProjectionError(
                    f"{self.name}: {option} measure {measure!r}: a non-empty name without"
                    f" {GROUP_SEPARATOR!r} (it names that measure and each"
                    f" name{GROUP_SEPARATOR}...)"
                )
        return tuple(sorted(set(names)))

    def ranks(self, measure: str) -> bool:
        """Whether the groups are kept ranked by ``measure`` (see ``ranked``)."""
        return names_measure(self.ranked, measure)

    def extreme(self, measure: str) -> str | None:
        """``max`` or ``min`` for a measure of ``maxima`` or ``minima``; None for a sum."""
        if names_measure(self.maxima, measure):
            return "max"
        if names_measure(self.minima, measure):
            return "min"
        return None

    @property
    def has_extremes(self) -> bool:
        return bool(self.maxima or self.minima)

    def entity_of(self, event: Event) -> str:
        return str(getattr(event.data, self.key_field))
