"""The short table of a stream benchmark run: ``python -m benchmarks.table [latest.json]``.

One row per figure of issue 10, with the peer it is read against (measured in the same
run), the ratio, and the issue's target ("Done means"). A figure a phase did not reach
in its time limit says so instead of pretending.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "latest.json"


def _n(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text}{unit}"


def _ratio(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _spread(data: dict[str, Any], key: str) -> str:
    """`` (0.85-1.06x in 3 rounds)`` when the figure is the median of rounds."""
    found = data.get("details", {}).get("rounds", {}).get("figures", {}).get(key)
    if not found or len(found) < 2:
        return ""
    return f" ({min(found):.2f}-{max(found):.2f}x in {len(found)} rounds)"


def rows(data: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    f: dict[str, Any] = data.get("figures", {})
    d: dict[str, Any] = data.get("details", {})

    def short(phase: str) -> str:
        info = d.get(phase, {})
        if info.get("complete") is False:
            why = info.get("not_reached") or f"not reached in {_n(info.get('timeout_s'))} s"
            return f" (NOT REACHED: {why})"
        return ""

    out = [
        (
            "bare consumer (aiokafka + fastavro)",
            _n(f.get("pipeline.bare_consumer_events_per_s"), " ev/s"),
            "",
            "",
            "",
        ),
        (
            "naive sink, per event find_one + replace_one" + short("naive_event"),
            _n(f.get("pipeline.naive_event_events_per_s"), " ev/s"),
            "",
            "",
            "",
        ),
        (
            "naive batch sink, find + bulk_write per poll" + short("naive_batch"),
            _n(f.get("pipeline.naive_batch_events_per_s"), " ev/s"),
            "",
            "",
            "",
        ),
        (
            "live processor catch-up" + short("catchup"),
            _n(f.get("pipeline.catchup_events_per_s"), " ev/s"),
            "naive batch sink",
            _ratio(f.get("pipeline.ratio_to_naive_batch"))
            + _spread(data, "pipeline.ratio_to_naive_batch")
            + " / "
            + _ratio(f.get("pipeline.ratio_to_naive_event"))
            + _spread(data, "pipeline.ratio_to_naive_event")
            + " per-event",
            ">= 1.0x / >= 10x",
        ),
        (
            "rebuild (replay) of the same topics" + short("replay"),
            _n(f.get("replay.events_per_s"), " ev/s"),
            "naive batch sink",
            _ratio(f.get("replay.ratio_to_naive_batch"))
            + _spread(data, "replay.ratio_to_naive_batch"),
            ">= 2x",
        ),
    ]
    fresh = d.get("freshness", {})
    bound = ">= " if fresh.get("lower_bound") else ""
    out.append(
        (
            f"freshness p50 / p99 at {_n(fresh.get('offered_rate'))} ev/s offered"
            + (
                f" ({fresh.get('not_visible')} NOT VISIBLE in "
                f"{_n(fresh.get('not_visible_within_s'))} s)"
                if fresh.get("not_visible")
                else ""
            ),
            f"{bound}{_n(f.get('pipeline.freshness_p50_ms'))} / "
            f"{bound}{_n(f.get('pipeline.freshness_p99_ms'), ' ms')}",
            "",
            "",
            "p99 < 500 ms",
        )
    )
    for c in (4, 32):
        out.append(
            (
                f"GET /v1/orders/{{id}}, wrk {c} connections",
                f"{_n(f.get(f'query.order_rps_c{c}'), ' req/s')}, p99 "
                f"{_n(f.get(f'query.order_p99_ms_c{c}'), ' ms')}",
                f"hello-world {_n(f.get(f'query.hello_rps_c{c}'), ' req/s')}",
                _ratio(f.get(f"query.ratio_to_hello_c{c}")),
                ">= 0.6x, p99 < 10 ms" if c == 4 else "",
            )
        )
    whale = d.get("whale", {})
    out.append(
        (
            f"whale: chunk of {_n(whale.get('chunk_orders'))} orders at "
            f"{_n(f.get('whale.orders_before_last_chunk'))} orders vs at 5",
            f"{_n(whale.get('last_s'))} s vs {_n(whale.get('first_s'))} s",
            "",
            _ratio(f.get("whale.last_to_first_cost")),
            "<= 2",
        )
    )
    verify = f.get("verify.differences")
    events = d.get("verify", {}).get("events")
    out.append(
        (
            f"eventfold verify after the run's traffic ({_n(events)} events)",
            "—" if verify is None else ("identical" if verify == 0 else f"{verify} differences"),
            "a fresh fold",
            "",
            "identical",
        )
    )
    mem = d.get("memory", {})
    reached = f.get("memory.orders_reached")
    label = f"processor RSS with {_n(reached)} orders of state"
    if mem.get("complete") is False:
        why = mem.get("not_reached") or f"not reached in {_n(mem.get('timeout_s'))} s"
        label += f" (target {_n(mem.get('orders_target'))} NOT REACHED: {why})"
    out.append(
        (
            label,
            _n(f.get("memory.processor_rss_mb_200k_orders"), " MB"),
            f"empty {_n(f.get('memory.processor_rss_mb_empty'), ' MB')}",
            "",
            "< 400 MB at 200,000",
        )
    )
    return out


def render(data: dict[str, Any]) -> str:
    header = ("figure", "value", "against", "ratio", "target")
    table = [header, *rows(data)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in table
    ]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    backlog = data.get("details", {}).get("backlog", {})
    run = data.get("run", {})
    lines.insert(
        0,
        f"stream benchmark {run.get('started_at', '')}: backlog "
        f"{_n(backlog.get('events'))} events, {_n(backlog.get('orders'))} orders, "
        f"commit {str(run.get('git_commit', ''))[:10]}"
        f"{' (dirty)' if run.get('git_dirty') else ''}",
    )
    for phase, error in data.get("errors", {}).items():
        lines.append(f"FAILED {phase}: {error}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else RESULTS
    if not path.exists():
        print(f"no results at {path}: run make bench", file=sys.stderr)
        return 1
    print(render(json.loads(path.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
