"""What ``eventfold projections`` and the console's projections view show: each
projection (the core read models and the registered ones) with its active version,
the version being built, and its lag."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from eventfold.settings import Settings
from eventfold.topics import end_offsets
from projections.api import ProjectionError
from projections.projection_store import FIRST_VERSION
from projections.read_models import CORE, CoreReadModel, Stores
from projections.registry import enabled, registered
from projections.state import mark_of
from schemas.catalog import INTERNAL_TOPICS, TOPICS


def core_topics_of(model: CoreReadModel) -> tuple[str, ...]:
    """The topics a core read model is made from: its definition's, and the internal
    ones its lookup or totals read (a derived one: its source's)."""
    name = model.name if model.derived_from is None else model.derived_from
    definition = next(m.definition for m in CORE if m.name == name)
    if definition is None:
        return (*TOPICS, *INTERNAL_TOPICS)
    return (*definition.topics, *definition.joined_topics)


@dataclass(frozen=True)
class ProjectionRow:
    """One line of ``eventfold projections`` (and one object of its ``--json``)."""

    name: str
    core: bool  # a core read model (the processor's join writes it), or a registered one
    enabled: bool
    kind: str  # "core", "rows" or "view"
    active: str
    building: str | None  # the version a rebuild is writing
    lag: int | None  # records of its topics not applied yet
    lag_from: str  # "marks" (its active version's) or "consumer group" (the processor's)
    topics: tuple[str, ...]
    description: str
    documents: tuple[str, ...] | None = None
    """For a registered projection that keeps its views as documents too: the fields its
    documents are listed by (empty: any field of the view)."""


async def gather_projections(settings: Settings, stores: Stores) -> tuple[list[ProjectionRow], str]:
    """Every projection with its versions and lag, and a warning ("" when none).

    Lag is the number of records on the projection's topics it has not applied: for a
    registered projection, past its active version's marks (the tracking records the
    engine writes with the state); for the core read models, past the processor's
    consumer group's committed offsets over the source and internal topics (one figure
    for the three, as the join writes them together)."""
    every = registered()
    warning = ""
    try:
        on = set(enabled(settings))
    except ProjectionError as exc:
        warning = str(exc)
        on = set(every) - settings.disabled_projections()
    core_topics = (*TOPICS, *INTERNAL_TOPICS)
    wanted = sorted({*core_topics, *(t for p in every.values() for t in p.topics)})
    ends = await end_offsets(settings, wanted)
    committed = {}
    group_known = True
    if ends:  # no topics yet (never created): nothing to ask the group about
        admin = AIOKafkaAdminClient(
            **settings.kafka_client(), request_timeout_ms=int(settings.kafka_timeout_s * 1000)
        )
        await admin.start()
        try:
            committed = await admin.list_consumer_group_offsets(
                settings.processor_app_id, partitions=list(ends)
            )
        except KafkaError as exc:  # no coordinator for the group yet, or Kafka moving
            group_known = False
            warning = warning or f"the core read models' lag is unknown now: {exc}"
        finally:
            await admin.close()
    core_lag = None
    if group_known:
        core_lag = 0
        for tp, end in ends.items():
            if settings.logical_topic(tp.topic) in core_topics:
                at = committed.get(tp)
                core_lag += max(0, end - (at.offset if at is not None and at.offset >= 0 else 0))
    meta = await stores.read_meta()
    rows = [
        ProjectionRow(
            model.name,
            core=True,
            enabled=True,
            kind="core",
            active=meta.active[model.name],
            building=", ".join(b.version for b in meta.building if model.name in b.projections)
            or None,
            lag=core_lag,
            lag_from="consumer group",
            topics=core_topics_of(model),
            description=model.description,
        )
        for model in CORE
    ]
    versions = stores.projection_versions()
    active, building = await versions.active(), await versions.building()
    for name, projection in every.items():
        version = active.get(name, FIRST_VERSION)
        marks = await versions.store(name, version).marks()
        lag = 0
        for tp, end in ends.items():
            topic = settings.logical_topic(tp.topic)
            if topic in projection.topics:
                lag += max(0, end - 1 - marks.get(mark_of(topic, tp.partition), -1))
        rows.append(
            ProjectionRow(
                name,
                core=False,
                enabled=name in on,
                kind=projection.kind,
                active=version,
                building=building.get(name),
                lag=lag,
                lag_from="marks",
                topics=projection.topics,
                description=projection.description,
                documents=None if projection.documents is None else projection.documents.fields,
            )
        )
    return rows, warning
