"""The ``eventfold`` command: operate the platform from a shell."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from eventfold.settings import Settings
from eventfold.topics import ensure_topics

if TYPE_CHECKING:
    from projections.api import Projection
    from projections.overview import ProjectionRow
    from projections.read_models import Stores

console = Console(stderr=True)
Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


async def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    created = await ensure_topics(settings)
    console.print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


@contextmanager
def rebuild_bar(label: str, quiet: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar for a rebuild; yields the callback the rebuild reports to."""
    columns = (
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=quiet) as bar:
        task = bar.add_task(label, total=None, rate="-")

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:,.0f}" if elapsed > 0 else "-"
            bar.update(task, completed=done, total=total, rate=rate)

        yield progress


def split_projections(names: Sequence[str]) -> tuple[tuple[str, ...], list[Projection]]:
    """The core read models named (canonical order) and the registered projections named
    (in the order given). ValueError naming what is known for an unknown name (a
    ``ProjectionError``, also a ValueError, when a registered projection does not load).

    The registry is loaded only when a name is not a core one, so a package whose
    projection is broken does not stop the core read models' commands."""
    from projections.read_models import PROJECTIONS

    others = list(dict.fromkeys(n for n in names if n not in PROJECTIONS))
    core = tuple(p for p in PROJECTIONS if p in names)
    if not others:
        return core, []
    from projections.registry import registered

    known = registered()
    unknown = [n for n in others if n not in known]
    if unknown:
        raise ValueError(
            f"unknown projection(s) {', '.join(unknown)}; known: the core read models "
            f"{', '.join(PROJECTIONS)} and the registered projections "
            f"{', '.join(known) or '(none)'} (see 'eventfold projections')"
        )
    return core, [known[n] for n in others]


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Core read models: one rebuild of those named (all by default); registered
    projections: one rebuild each, after the core one."""
    from projections.read_models import PROJECTIONS, Stores

    try:
        core, registered = split_projections(args.projection or PROJECTIONS)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    core_only = [
        option
        for option, given in (
            ("--abort", args.abort),
            ("--resume", args.resume),
            ("--since", args.since),
        )
        if given
    ]
    if registered and core_only:
        console.print(
            f"[red]{', '.join(core_only)}: for the core read models only "
            f"({', '.join(PROJECTIONS)}), not {', '.join(p.name for p in registered)}[/red] "
            "(a registered projection is always rebuilt from the beginning of its topics, "
            "and an interrupted rebuild of one is dropped)"
        )
        return 2
    await ensure_topics(settings)
    stores = Stores(settings)
    try:
        if core or args.abort:
            code = await replay_core(args, settings, stores, core)
            if code:
                return code
        for projection in registered:
            code = await replay_registered(args, settings, stores, projection)
            if code:
                return code
        return 0
    finally:
        await stores.close()


async def replay_core(
    args: argparse.Namespace, settings: Settings, stores: Stores, core: tuple[str, ...]
) -> int:
    from datetime import datetime

    from projections.read_models import NotBuilding
    from projections.replay import RebuildInProgress, abort, rebuild

    if args.abort:
        aborted = await abort(stores)
        console.print(
            f"aborted and dropped: {', '.join(aborted)}" if aborted else "no rebuild in progress"
        )
        return 0
    since = datetime.fromisoformat(args.since) if args.since else None
    if since is not None and since.tzinfo is None:
        console.print("--since needs a time zone, e.g. 2026-01-01T00:00:00Z")
        return 2
    try:
        with rebuild_bar("rebuild", args.quiet) as progress:
            result = await rebuild(
                settings,
                stores,
                projections=core,
                progress=progress,
                resume=args.resume,
                since=since,
                grace_s=args.grace_s,
            )
    except RebuildInProgress as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    except NotBuilding as exc:  # aborted meanwhile: nothing was switched
        console.print(f"[red]{exc}; the active versions are unchanged[/red]")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print(
            "interrupted: continue with 'eventfold replay --resume' "
            "or discard with 'eventfold replay --abort'"
        )
        return 130
    previous = ", ".join(f"{p} {v}" for p, v in result.previous.items())
    left_out = result.undecodable + result.failed
    if left_out:
        console.print(
            f"[yellow]left out {left_out} records the processors dead-letter[/yellow] "
            f"({result.undecodable} undecodable, {result.failed} the projections cannot "
            "take; see 'eventfold dlq list'):"
        )
        for skipped in result.skipped:
            console.print(f"  {skipped}", highlight=False, markup=False)
        if left_out > len(result.skipped):
            console.print(f"  and {left_out - len(result.skipped)} more (the log names each)")
    console.print(
        f"rebuilt {', '.join(result.projections)} as {result.version} from {result.records} "
        f"records ({result.applied} applied, {result.undecodable} undecodable, "
        f"{result.failed} failed) in "
        f"{result.seconds:.1f}s; active: {result.version} (was {previous}; dropped after "
        f"{args.grace_s:.0f}s or by 'eventfold drop <version>')"
    )
    return 0


async def replay_registered(
    args: argparse.Namespace, settings: Settings, stores: Stores, projection: Projection
) -> int:
    """Fold the projection's topics into a new version, switch to it, drop the old one
    (``projections.projection_replay``); the live worker follows the switch."""
    from projections.projection_replay import rebuild
    from projections.projection_store import RebuildInProgress

    name = projection.name
    if name in settings.disabled_projections():
        console.print(
            f"[yellow]{name} is switched off (EVENTFOLD_PROJECTIONS_DISABLED): rebuilt, "
            "but the live worker does not keep it up to date[/yellow]"
        )
    try:
        with rebuild_bar(f"rebuild {name}", args.quiet) as progress:
            result = await rebuild(settings, stores.redis, projection, progress, db=stores.db)
    except (KeyboardInterrupt, asyncio.CancelledError):
        console.print(f"interrupted: the partial rebuild of {name} was dropped; nothing switched")
        return 130
    except RebuildInProgress as exc:
        console.print(f"[red]{exc}[/red] (one that died is replaced after a minute)")
        return 2
    if result.failed:
        console.print(
            f"[yellow]left out {result.failed} event(s) the fold of {name} raised on[/yellow] "
            f"(the live worker dead-letters them: 'eventfold dlq list --projection {name}')"
        )
    console.print(
        f"rebuilt {name} as {result.version} from {result.records} records "
        f"({result.events} of the events it consumes, {result.failed} failed) in "
        f"{result.seconds:.1f}s; active: {result.version} (was {result.previous}, dropped)"
    )
    return 0


async def cmd_drop(args: argparse.Namespace, settings: Settings) -> int:
    from projections.read_models import Stores

    stores = Stores(settings)
    try:
        dropped = await stores.drop_retired(version=args.version)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 1
    finally:
        await stores.close()
    console.print(f"dropped: {', '.join(dropped)}" if dropped else "nothing to drop")
    return 0


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """Compare read models with a fresh fold of the topics: exit code 0 identical, 1 some
    differ, 2 when it cannot compare. Core read models: one comparison of those named
    (all by default); registered projections: each one's active version."""
    from projections.read_models import PROJECTIONS

    try:
        core, registered = split_projections(args.projection or PROJECTIONS)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    if registered and (args.version or args.against):
        console.print(
            f"[red]--version and --against: for the core read models only "
            f"({', '.join(PROJECTIONS)}); a registered projection is verified in its "
            "active version[/red]"
        )
        return 2
    code = await verify_core(args, settings, core) if core else 0
    if code == 2:
        return code
    for projection in registered:
        code = max(code, await verify_registered(settings, projection))
    return code


async def verify_registered(settings: Settings, projection: Projection) -> int:
    from projections.projection_replay import SHOWN_DIFFERENCES, verify
    from projections.read_models import Stores

    stores = Stores(settings)
    try:
        check = await verify(settings, stores.redis, projection, db=stores.db)
    finally:
        await stores.close()
    for line in check.differences:
        console.print(Text.assemble(("diff", "red"), " ", line), highlight=False)
    found = len(check.differences)
    held = f"{check.entities} entities" + (
        f", {check.groups} groups" if projection.kind == "rows" else ""
    )
    console.print(
        f"{projection.name} {check.version} vs a fresh fold of its topics: {held}; "
        + (
            "identical"
            if check.identical
            else f"{found}{'+' if found >= SHOWN_DIFFERENCES else ''} difference(s)"
        )
    )
    return 0 if check.identical else 1


async def verify_core(args: argparse.Namespace, settings: Settings, core: Sequence[str]) -> int:
    """Compare a read-model version with a fresh reference fold (or with another version)."""
    from projections.read_models import PROJECTIONS, Stores
    from projections.verify import (
        differences,
        read_source_events,
        reference_snapshot,
        stored_snapshot,
    )

    stores = Stores(settings)
    try:
        if args.version:
            models, held = await stores.holding(args.version)
            if not set(core) & set(held):
                raise ValueError(f"{args.version} holds none of {', '.join(core)}")
        else:
            models, held = await stores.active(), PROJECTIONS
        held = tuple(p for p in held if p in core)
        actual = await stored_snapshot(models)
        if args.against:
            other, other_held = await stores.holding(args.against)
            held = tuple(p for p in held if p in other_held)
            expected, what = await stored_snapshot(other), args.against
        else:
            source = await read_source_events(settings)
            expected, what = reference_snapshot(source), "a fresh fold of the topics"
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    finally:
        await stores.close()
    version = models.version
    if not args.against and source.undecodable:
        console.print(
            f"[yellow]{source.undecodable} undecodable records left out of the fold[/yellow] "
            "(the processors dead-letter them; see 'eventfold dlq list')"
        )
    if expected.left_out:
        console.print(
            f"[yellow]{len(expected.left_out)} events the read models cannot show left out "
            "of the fold[/yellow] (the processors dead-letter them):"
        )
        for line in expected.left_out[:20]:
            console.print(f"  {line}", highlight=False)
    console.print(f"comparing {', '.join(held)}")
    found = differences(expected, actual, projections=held)
    for line in found:
        console.print(f"[red]diff[/red] {line}", highlight=False)
    console.print(
        f"{version} vs {what}: {len(actual.orders)} orders, "
        f"{len(actual.customers)} customers; "
        + ("identical" if not found else f"{len(found)} difference(s)")
    )
    return 1 if found else 0


def render_projections(rows: Sequence[ProjectionRow]) -> Any:
    from rich.table import Table

    table = Table(
        title="projections",
        caption="lag: records not applied yet; registered projections: past their active "
        "version's marks; core read models: past the processor's consumer group",
    )
    for column in ("projection", "enabled", "kind", "active", "building", "lag", "topics"):
        table.add_column(column, justify="right" if column == "lag" else "left")
    table.add_column("description", overflow="fold")
    for r in rows:
        table.add_row(
            r.name,
            "yes" if r.enabled else "no",
            r.kind if r.documents is None else f"{r.kind} + documents",
            r.active,
            r.building or "-",
            "-" if r.lag is None else f"{r.lag:,}",
            ", ".join(r.topics),
            r.description,
        )
    return table


async def cmd_projections(args: argparse.Namespace, settings: Settings) -> int:
    """Exit code 0; 2 when a registered projection does not load or Kafka failed."""
    import json

    from projections.overview import gather_projections
    from projections.read_models import Stores

    stores = Stores(settings)
    try:
        rows, warning = await gather_projections(settings, stores)
    except ValueError as exc:  # ProjectionError: an entry point that does not load
        console.print(f"[red]{exc}[/red]")
        return 2
    except (OSError, RuntimeError, TimeoutError) as exc:  # KafkaError is a RuntimeError
        console.print(
            f"[red]Kafka unavailable at {settings.bootstrap_servers}: "
            f"{type(exc).__name__}: {exc}[/red]"
        )
        return 2
    finally:
        await stores.close()
    if warning:
        console.print(f"[yellow]{warning}[/yellow]")
    if args.json:
        sys.stdout.write(json.dumps([asdict(r) for r in rows]) + "\n")
        sys.stdout.flush()
    else:
        Console().print(render_projections(rows))
    return 0


async def cmd_new_projection(args: argparse.Namespace, settings: Settings) -> int:
    """Exit code 0 written, 2 refused (nothing written)."""
    from pathlib import Path

    from eventfold.scaffold import ScaffoldError, scaffold

    try:
        made = scaffold(args.name, Path(args.dir))
    except ScaffoldError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    console.print(f"wrote {made.module} and {made.test} (run: pytest {made.test})", highlight=False)
    console.print(
        "register it in your package's pyproject.toml, then install the package "
        "(pip install -e .) and check 'eventfold projections':"
    )
    sys.stdout.write(made.entry_point + "\n")
    sys.stdout.flush()
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from projections.read_models import Stores
    from projections.status import gather_status

    stores = Stores(settings)
    try:
        report = await gather_status(settings, stores)
    finally:
        await stores.close()
    console.print(report.render())
    return 0


async def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    """Exit code 0 all lines published, 1 some lines rejected, 2 publishing failed."""
    from producers.jsonl import count_lines, publish_jsonl

    if args.batch_size < 1:
        console.print(f"[red]--batch-size must be at least 1, got {args.batch_size}")
        return 2
    try:
        total = count_lines(args.file)
    except OSError as exc:
        console.print(f"[red]cannot read {args.file}: {exc.strerror or exc}")
        return 2
    try:
        await ensure_topics(settings)
    except (OSError, RuntimeError, TimeoutError) as exc:  # KafkaError is a RuntimeError
        console.print(f"[red]Kafka unavailable at {settings.bootstrap_servers}: {exc}")
        return 2
    columns = (
        TextColumn("[bold]publish"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=args.quiet) as bar:
        task = bar.add_task("publish", total=total)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = await publish_jsonl(
            args.file, settings, batch_size=args.batch_size, progress=progress, total=total
        )
    console.print(summary.render())
    return summary.exit_code


async def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Exit code 0 all demo events published, 2 publishing failed."""
    import random

    from producers.demo import run_demo

    if not args.rate >= 0 or args.orders < 0:  # `not >=` also refuses nan
        console.print("[red]--rate and --orders must not be negative")
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    try:
        await ensure_topics(settings)
    except (OSError, RuntimeError, TimeoutError) as exc:  # KafkaError is a RuntimeError
        console.print(f"[red]Kafka unavailable at {settings.bootstrap_servers}: {exc}")
        return 2
    columns = (
        TextColumn(f"[bold]demo (seed {seed})"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("events"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=args.quiet) as bar:
        task = bar.add_task("demo", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        summary = await run_demo(settings, args.rate or None, args.orders, seed, progress)
    console.print(summary.render())
    return 2 if summary.error is not None else 0


async def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    """Every version of every schema must be readable by each later one (backward
    compatible), and the pydantic models must match the latest schemas."""
    from pathlib import Path

    from rich.table import Table

    from schemas.catalog import TOPIC_OF_TYPE
    from schemas.codec import REGISTRY, SchemaLoadError, SchemaRegistry
    from schemas.compatibility import check_all, check_models_match_schemas

    try:
        registry = SchemaRegistry(Path(args.dir)) if args.dir else REGISTRY
    except SchemaLoadError as exc:
        console.print(f"[red]invalid schema folder:[/red] {exc}")
        return 1
    table = Table(title="event schemas (Avro single-object encoding)")
    for column in ("type", "version", "fingerprint (header bytes)", "topic"):
        table.add_column(column)
    for type_name in registry.type_names():
        for version in registry.versions(type_name):
            table.add_row(
                type_name,
                f"v{version.version}",
                version.fingerprint.hex(),
                TOPIC_OF_TYPE[type_name],
            )
    if not args.quiet:
        Console().print(table)
    problems = [str(p) for p in check_all(registry)] + check_models_match_schemas(registry)
    for problem in problems:
        console.print(f"[red]incompatible:[/red] {problem}")
    console.print("all schemas compatible" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


async def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    """``dlq list``: exit code 0 (2 when Kafka failed). ``dlq redrive``: 0 done, 2 when
    Kafka failed (what was re-driven before the failure is recorded)."""
    import json

    from schemas.catalog import DEAD_LETTER_SOURCES
    from stream_processors.dlq_admin import list_dead_letters, redrive, render_table

    if args.dlq_command == "redrive":
        result = await redrive(
            settings, topic=args.topic, dry_run=args.dry_run, decodable_only=args.decodable_only
        )
        console.print(result.render())
        return 0 if result.ok else 2
    if args.limit is not None and args.limit < 1:
        console.print(f"[red]--limit must be at least 1, got {args.limit}")
        return 2
    try:
        topics = (args.topic,) if args.topic else DEAD_LETTER_SOURCES
        views = await list_dead_letters(
            settings, topics, limit=args.limit, projection=args.projection
        )
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:  # KafkaError: RuntimeError
        console.print(
            f"[red]cannot read the dead letters at {settings.bootstrap_servers}: "
            f"{type(exc).__name__}: {exc}"
        )
        return 2
    if args.json:
        for view in views:
            sys.stdout.write(json.dumps(view.to_json()) + "\n")
        sys.stdout.flush()
    else:
        Console().print(render_table(views))
    pending = sum(not v.redriven for v in views)
    capped = args.limit is not None and len(views) == args.limit
    console.print(
        f"{len(views)} dead letter(s)"
        + (f" of projection {args.projection}" if args.projection else "")
        + f", {pending} not re-driven"
        + (" (--limit reached)" if capped else "")
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    from projections.read_models import PROJECTIONS

    parser = argparse.ArgumentParser(prog="eventfold", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("topics", help="create the Kafka topics that are missing")
    replay = sub.add_parser("replay", help="rebuild the read models from the topics")
    which = replay.add_mutually_exclusive_group()
    which.add_argument(
        "--all",
        action="store_true",
        help=f"every core read model ({', '.join(PROJECTIONS)}; the default)",
    )
    which.add_argument(
        "--projection",
        action="append",
        metavar="NAME",
        help="rebuild only this projection (repeatable): a core read model "
        f"({', '.join(PROJECTIONS)}; rebuilt together in one version) or a registered "
        "projection (see 'eventfold projections'; rebuilt into a new version of its own, "
        "switched to and the old one dropped)",
    )
    replay.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted rebuild from its checkpoints (core read models only)",
    )
    replay.add_argument(
        "--abort",
        action="store_true",
        help="abandon and drop the rebuild in progress (core read models only)",
    )
    replay.add_argument(
        "--since",
        help="start at this time (offsets for times) instead of "
        "the earliest offset, e.g. 2026-01-01T00:00:00Z (core read models only)",
    )
    replay.add_argument(
        "--grace-s",
        type=float,
        default=300.0,
        help="keep the previous version this long after the switch (300)",
    )
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("status", help="active read-model version, lag per partition")
    drop = sub.add_parser(
        "drop", help="drop retired read-model versions whose grace period is over, or the one named"
    )
    drop.add_argument("version", nargs="?", help="drop this (inactive) version now")
    verify = sub.add_parser(
        "verify",
        help="compare read models with a fresh fold of the topics "
        "(exit code 0 identical, 1 different, 2 cannot compare)",
    )
    verify.add_argument(
        "--projection",
        action="append",
        metavar="NAME",
        help="verify only this projection (repeatable): a core read model "
        f"({', '.join(PROJECTIONS)}; all of them by default) or a registered projection "
        "(its active version)",
    )
    verify.add_argument(
        "--version", help="the version to check (default: the active one; core read models only)"
    )
    verify.add_argument(
        "--against",
        help="compare with this version instead of a fresh fold (core read models only)",
    )
    listing = sub.add_parser(
        "projections",
        help="every projection: enabled, kind, active version, version being built, lag",
        description="The core read models (orders, customers, redis) and every registered "
        "projection (built-in, or a package's eventfold.projections entry point). Lag: "
        "records of its topics not applied yet. For a registered projection, past the marks "
        "of its active version; for the core read models, past the committed offsets of "
        "the processor's consumer group on the source and internal topics (one figure for "
        "the three). Exit code 0; 2 when a registered projection does not load or Kafka "
        "failed.",
    )
    listing.add_argument(
        "--json", action="store_true", help="a JSON array of objects on stdout instead of a table"
    )
    new = sub.add_parser(
        "new-projection",
        help="write an example projection module and its unit test to start from",
        description="Write NAME.py (a working example projection, written against "
        "projections.api and schemas.events) and test_NAME.py (a unit test of its fold "
        "that passes as written) into DIR, and print the pyproject.toml entry point that "
        "registers it. Refuses an invalid or taken name and existing files (exit code 2).",
    )
    new.add_argument(
        "name",
        metavar="NAME",
        help="the projection's name: lowercase letters, digits and _, starting with a letter",
    )
    new.add_argument(
        "--dir", default=".", metavar="DIR", help="an existing folder (default: the current one)"
    )
    schemas = sub.add_parser("schemas", help="list schema versions, check compatibility")
    schemas.add_argument("--quiet", action="store_true", help="only the check's result")
    schemas.add_argument(
        "--dir",
        help="check this schema folder instead of the installed one (e.g. a candidate new version)",
    )
    publish = sub.add_parser(
        "publish",
        help="publish a JSON-lines file of event envelopes (one per line)",
        description="Validate every line on its own and publish the valid events in batches; "
        "invalid lines are reported, never published. Exit code 0 when every line was "
        "published, 1 when some lines were rejected, 2 when publishing failed.",
    )
    publish.add_argument("file", metavar="FILE.jsonl", help="one JSON envelope per line")
    publish.add_argument(
        "--batch-size",
        type=int,
        default=500,
        metavar="N",
        help="events per publish call (default: %(default)s)",
    )
    publish.add_argument("--quiet", action="store_true", help="no progress bar")
    demo = sub.add_parser(
        "demo",
        help="publish realistic demo traffic at a chosen rate",
        description="Generate a coherent, seeded stream of customers, orders, payments, "
        "shipments, cancellations and refunds, and publish it at the given rate.",
    )
    demo.add_argument(
        "--rate",
        type=float,
        default=200.0,
        metavar="EVENTS_PER_S",
        help="events per second; 0 for as fast as Kafka takes them (default: %(default)s)",
    )
    demo.add_argument(
        "--orders",
        type=int,
        default=500,
        metavar="N",
        help="orders to simulate, about 5 events each (default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="S",
        help="random seed: the same seed gives the same events (default: a new one, printed)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    from schemas.catalog import DEAD_LETTER_SOURCES, dlq_topic

    topic_choices = [*DEAD_LETTER_SOURCES, *map(dlq_topic, DEAD_LETTER_SOURCES)]
    dlq = sub.add_parser(
        "dlq",
        help="list and re-drive dead letters",
        description="Dead letters are the records the processor could not take, in "
        "<topic>.dlq with the reason in headers. Re-driving publishes them back to their "
        "original topic (once: progress is committed for the consumer group "
        "<prefix>eventfold-dlq-redrive), for the processor to take again after a fix.",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser(
        "list",
        help="the dead letters, with reason, origin, content "
        "and whether they were re-driven (exit code 0; "
        "2 when Kafka failed)",
    )
    dlq_list.add_argument("--topic", choices=topic_choices, help="one topic (default: all)")
    dlq_list.add_argument(
        "--limit", type=int, default=None, metavar="N", help="the first N dead letters only"
    )
    dlq_list.add_argument(
        "--projection",
        metavar="NAME",
        help="only the dead letters of this projection (those its fold raised on; "
        "the others are the processor's join's)",
    )
    dlq_list.add_argument(
        "--json", action="store_true", help="one JSON object per line on stdout instead of a table"
    )
    dlq_redrive = dlq_sub.add_parser(
        "redrive",
        help="publish the dead letters not yet re-driven back to their original "
        "topic (exit code 0 done, 2 when Kafka failed)",
    )
    dlq_redrive.add_argument("--topic", choices=topic_choices, help="one topic (default: all)")
    dlq_redrive.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be re-driven; publish and record nothing",
    )
    dlq_redrive.add_argument(
        "--decodable-only",
        action="store_true",
        help="leave the records this command cannot decode in the DLQ "
        "(a later run without the option re-drives them)",
    )
    return parser


COMMANDS: dict[str, Command] = {
    "drop": cmd_drop,
    "verify": cmd_verify,
    "schemas": cmd_schemas,
    "topics": cmd_topics,
    "replay": cmd_replay,
    "status": cmd_status,
    "publish": cmd_publish,
    "demo": cmd_demo,
    "dlq": cmd_dlq,
    "projections": cmd_projections,
    "new-projection": cmd_new_projection,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(COMMANDS[args.command](args, Settings()))


if __name__ == "__main__":
    sys.exit(main())
