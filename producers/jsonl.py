"""Publish a JSON-lines file of event envelopes: one envelope per line.

Every line is validated on its own (``schemas.events.parse_event``); a line
that is not JSON or not a valid envelope is a *rejection* (line number and a
readable reason) and is never published. Valid events are published in file
order, in batches, through the Python producer client, under one correlation
id for the whole file.

If Kafka fails mid-file, publishing stops and the summary says exactly where
every valid line stands: ``accepted`` (acknowledged by Kafka), ``unconfirmed``
(the batch in flight when the failure happened: some of its events may have
been stored, so re-publish them only if they carry an ``event_id``, the
idempotency key) and ``not_published`` (never sent). The rest of the file is
still validated, so its rejections are reported too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from eventfold.resilience import CircuitOpenError
from eventfold.settings import Settings
from producers.client import EventPublisher, PublishError, PublishResult
from schemas.events import Event, parse_event

DEFAULT_BATCH_SIZE = 500

PUBLISH_FAILURES = (PublishError, CircuitOpenError)
"""What the producer client raises when Kafka did not take the events."""

Progress = Callable[[int, int], None]
"""``progress(lines_done, lines_total)``: non-blank lines handled so far, of all."""


class Publisher(Protocol):
    """What this module needs of ``producers.client.EventPublisher``."""

    async def publish_many(
        self,
        events: Sequence[Event],
        *,
        correlation_id: str | None = None,
        traceparent: str | None = None,
    ) -> PublishResult: ...


@dataclass
class PublishSummary:
    """Outcome of publishing one file; every non-blank line is in exactly one bucket:
    accepted, ``rejected``, ``unconfirmed`` or ``not_published``."""

    path: str
    correlation_id: str
    lines: int = 0
    """non-blank lines read"""
    accepted: int = 0
    """events Kafka acknowledged"""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(line number, reason) of every invalid line, in file order"""
    counts_by_type: dict[str, int] = field(default_factory=dict)
    """accepted events per type"""
    elapsed_s: float = 0.0
    error: str | None = None
    """why publishing stopped, when it did"""
    unconfirmed: list[int] = field(default_factory=list)
    """valid lines of the batch that failed: sent, but not acknowledged"""
    not_published: list[int] = field(default_factory=list)
    """valid lines never sent because publishing had stopped"""

    @property
    def events_per_s(self) -> float:
        return self.accepted / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def exit_code(self) -> int:
        """0 all accepted, 1 some lines rejected, 2 publishing failed."""
        if self.failed:
            return 2
        return 1 if self.rejected else 0

    def render(self, max_reasons: int = 20) -> RenderableType:
        """The summary for a terminal: counts, the first ``max_reasons`` rejections
        (how many more there are), and where publishing stopped if it did."""
        table = Table(title=f"publish {self.path}", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_row("lines", f"{self.lines:,}")
        table.add_row("accepted", f"[green]{self.accepted:,}")
        for type_, count in self.counts_by_type.items():
            table.add_row(f"  {type_}", f"{count:,}")
        table.add_row("rejected", f"[red]{len(self.rejected):,}" if self.rejected else "0")
        if self.failed:
            table.add_row("unconfirmed", f"[yellow]{len(self.unconfirmed):,}")
            table.add_row("not published", f"[yellow]{len(self.not_published):,}")
        table.add_row("elapsed", f"{self.elapsed_s:.2f} s")
        table.add_row("rate", f"{self.events_per_s:,.0f} events/s")
        table.add_row("correlation id", self.correlation_id)
        parts: list[RenderableType] = [table]
        if self.rejected:
            reasons = Table(title="rejected lines (not published)", title_justify="left")
            reasons.add_column("line", justify="right")
            reasons.add_column("reason", overflow="fold")
            for line_no, reason in self.rejected[:max_reasons]:
                reasons.add_row(str(line_no), reason)
            parts.append(reasons)
            if len(self.rejected) > max_reasons:
                parts.append(
                    Text(f"... and {len(self.rejected) - max_reasons:,} more rejected lines")
                )
        if self.failed:
            parts.append(Text.assemble(("publishing stopped: ", "bold red"), str(self.error)))
            parts.append(Text(f"{self.accepted:,} events were acknowledged before the failure."))
            if self.unconfirmed:
                parts.append(
                    Text(
                        "sent but not acknowledged (may or may not be stored; re-publishing is "
                        "safe for envelopes with an event_id): lines "
                        + line_ranges(self.unconfirmed, limit=20)
                    )
                )
            if self.not_published:
                parts.append(
                    Text("not published: lines " + line_ranges(self.not_published, limit=20))
                )
        return Group(*parts)


def count_lines(path: str | Path) -> int:
    """Non-blank lines of the file (the total a progress bar counts towards)."""
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def format_validation_error(error: ValidationError, envelope: object = None) -> str:
    """One readable line per field error: ``data.items[0].quantity: Input should be ...``."""
    tag = envelope.get("type") if isinstance(envelope, dict) else None
    parts = []
    for err in error.errors(include_url=False):
        loc = list(err["loc"])
        if loc and tag is not None and loc[0] == tag:
            loc = loc[1:]  # the discriminated union's branch name, not a field
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            loc, message = ["type"], f"unknown event type {tag!r}"
        elif err["type"] == "union_tag_not_found":
            loc, message = ["type"], "missing: every envelope needs a type, e.g. 'OrderPlaced'"
        parts.append(f"{_format_loc(loc)}: {message}" if loc else message)
    return "; ".join(parts)


def _format_loc(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_line(raw: bytes) -> Event | str:
    """The event of one line, or the reason it is rejected."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 text (byte {exc.start})"
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(obj, dict):
        return f"expected a JSON object (one event envelope), got {type(obj).__name__}"
    try:
        return parse_event(obj)
    except ValidationError as exc:
        return format_validation_error(exc, obj)


def read_lines(path: str | Path) -> Iterator[tuple[int, Event | str]]:
    """(line number, event or rejection reason) for every non-blank line; numbers are 1-based
    and count blank lines too, so they match an editor's."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            stripped = raw.strip()
            if stripped:
                yield line_no, parse_line(stripped)


async def publish_jsonl(
    path: str | Path,
    settings: Settings,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    total: int | None = None,
    publisher: Publisher | None = None,
) -> PublishSummary:
    """Validate every line of ``path`` and publish the valid events in batches.

    ``total`` is the number of non-blank lines when the caller counted them
    already (``count_lines``). Without ``publisher`` one ``EventPublisher`` is
    started for the file and stopped afterwards. Raises OSError when the file
    cannot be read; a Kafka failure is reported in the summary, not raised.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    total = count_lines(path) if total is None else total
    summary = PublishSummary(path=str(path), correlation_id=str(uuid.uuid4()))
    counts: Counter[str] = Counter()
    owned: EventPublisher | None = None
    if publisher is None:
        publisher = owned = EventPublisher(settings)
    active: Publisher = publisher
    started = time.perf_counter()
    batch: list[Event] = []
    batch_lines: list[int] = []

    def report() -> None:
        if progress is not None:
            progress(summary.lines, max(total, summary.lines))

    async def flush() -> None:
        if summary.failed:
            summary.not_published += batch_lines
        elif batch:
            try:
                await active.publish_many(batch, correlation_id=summary.correlation_id)
            except PUBLISH_FAILURES as exc:
                summary.error = str(exc)
                summary.unconfirmed += batch_lines
            else:
                summary.accepted += len(batch)
                counts.update(e.type for e in batch)
        batch.clear()
        batch_lines.clear()
        report()

    try:
        if owned is not None:
            try:
                await owned.start()
            except PUBLISH_FAILURES as exc:
                summary.error = str(exc)  # nothing sent: every valid line is not_published
        for line_no, parsed in read_lines(path):
            summary.lines += 1
            if isinstance(parsed, str):
                summary.rejected.append((line_no, parsed))
            else:
                batch.append(parsed)
                batch_lines.append(line_no)
            if len(batch) >= batch_size:
                await flush()
        await flush()
    finally:
        if owned is not None:
            await owned.stop()
        summary.elapsed_s = time.perf_counter() - started
        summary.counts_by_type = dict(sorted(counts.items()))
    return summary


def line_ranges(numbers: Sequence[int], limit: int | None = None) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``"1-3, 7, 9-10"`` (input ascending); at most ``limit``
    ranges, then how many more were left out."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    shown = spans if limit is None else spans[:limit]
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in shown)
    if len(spans) > len(shown):
        text += f", ... ({len(spans) - len(shown)} more ranges)"
    return text
