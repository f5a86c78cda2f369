"""Event builders shared by the unit tests of the folds and joins."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.events import Event, parse_event

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
_ids = iter(range(1, 10**9))


def event(type_: str, data: dict[str, Any], at: int = 0) -> Event:
    """An event of ``type_``, ``at`` minutes after T0, with a fresh event_id."""
    return parse_event(
        {
            "type": type_,
            "event_id": str(uuid.UUID(int=next(_ids))),
            "occurred_at": (T0 + timedelta(minutes=at)).isoformat(),
            "data": data,
        }
    )
