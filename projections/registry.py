"""Which projections exist: the built-in ones and those installed packages register.

A package registers a projection under the ``eventfold.projections`` entry point
group (``[project.entry-points."eventfold.projections"]`` in its pyproject.toml,
``name = "package.module:attribute"``); ``EVENTFOLD_PROJECTIONS_DISABLED`` (names,
comma-separated) switches any of them off.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from eventfold.settings import Settings
from projections.api import Projection, ProjectionError
from projections.builtin.payment_methods import payment_methods
from projections.builtin.sku_sales import sku_sales
from projections.read_models import PROJECTIONS

ENTRY_POINT_GROUP = "eventfold.projections"
BUILT_IN: tuple[Projection, ...] = (sku_sales, payment_methods)
RESERVED = frozenset(PROJECTIONS)
"""The read models the processor's join writes (``projections.read_models``)."""


def _loaded(point: EntryPoint) -> Projection:
    try:
        found = point.load()
    except Exception as exc:
        raise ProjectionError(
            f"entry point {point.name} = {point.value} ({ENTRY_POINT_GROUP}): {exc!r}"
        ) from exc
    if not isinstance(found, Projection):
        raise ProjectionError(
            f"entry point {point.name} = {point.value} ({ENTRY_POINT_GROUP}) "
            f"is a {type(found).__name__}, not a projections.api.Projection"
        )
    joined = [j for j in ("lookup", "totals") if getattr(found, j) is not None]
    if joined:
        raise ProjectionError(
            f"entry point {point.name} = {point.value} ({ENTRY_POINT_GROUP}): {found.name}"
            f" has a {' and '.join(joined)}, which only the processor's join runs (for the"
            " built-in orders and customers); a registered projection shows its own state's"
            " view"
        )
    return found


def registered(points: Iterable[EntryPoint] | None = None) -> dict[str, Projection]:
    """Every projection by name: the built-ins, then the entry points'. Raises
    ProjectionError for one that does not load or a name taken twice."""
    found: dict[str, Projection] = {}
    chosen = entry_points(group=ENTRY_POINT_GROUP) if points is None else points
    for projection in (*BUILT_IN, *(_loaded(p) for p in chosen)):
        if projection.name in RESERVED:
            raise ProjectionError(f"projection name {projection.name!r} is reserved")
        held = found.get(projection.name)
        if held is not None and held is not projection:
            raise ProjectionError(f"two projections are named {projection.name!r}")
        found[projection.name] = projection
    return found


def enabled(
    settings: Settings, points: Iterable[EntryPoint] | None = None
) -> dict[str, Projection]:
    """The registered projections not switched off by ``projections_disabled``; raises
    ProjectionError when it names one that is not registered (a typo would otherwise
    leave a projection running that was meant to be off)."""
    every = registered(points)
    off = settings.disabled_projections()
    unknown = sorted(off - set(every))
    if unknown:
        raise ProjectionError(
            f"EVENTFOLD_PROJECTIONS_DISABLED names unknown projection(s) {', '.join(unknown)}; "
            f"registered: {', '.join(sorted(every))}"
        )
    return {name: p for name, p in every.items() if name not in off}
