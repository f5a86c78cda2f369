"""The ``eventfold`` command: operate the platform from a shell."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from eventfold.settings import Settings
from eventfold.topics import ensure_topics

console = Console(stderr=True)
Command = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]


async def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    created = await ensure_topics(settings)
    console.print(f"created: {', '.join(created)}" if created else "all topics exist")
    return 0


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from projections.read_models import Stores
    from projections.replay import rebuild

    await ensure_topics(settings)
    stores = Stores(settings)
    columns = (TextColumn("[bold]rebuild"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, disable=args.quiet) as bar:
            task = bar.add_task("rebuild", total=None, rate="-")

            def progress(done: int, total: int) -> None:
                elapsed = bar.tasks[0].elapsed or 0.0
                rate = f"{done / elapsed:,.0f}" if elapsed > 0 else "-"
                bar.update(task, completed=done, total=total, rate=rate)

            result = await rebuild(settings, stores, progress=progress,
                                   drop_previous=not args.keep_previous)
    finally:
        await stores.close()
    console.print(
        f"rebuilt {result.version} from {result.records} records "
        f"({result.applied} applied, {result.undecodable} undecodable) in {result.seconds:.1f}s; "
        f"active: {result.version} (was {result.previous}"
        f"{', dropped' if result.dropped_previous else ''})"
    )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventfold", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("topics", help="create the Kafka topics that are missing")
    replay = sub.add_parser("replay", help="rebuild the read models from the topics")
    replay.add_argument("--all", action="store_true", help="every projection (the default)")
    replay.add_argument("--keep-previous", action="store_true",
                        help="keep the previously active version instead of dropping it")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    sub.add_parser("status", help="active read-model version, lag per partition")
    return parser


COMMANDS: dict[str, Command] = {
    "topics": cmd_topics,
    "replay": cmd_replay,
    "status": cmd_status,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(COMMANDS[args.command](args, Settings()))


if __name__ == "__main__":
    sys.exit(main())
