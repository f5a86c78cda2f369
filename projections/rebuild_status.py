"""How far a rebuild has got, kept where any process can read it.

A rebuild runs wherever it was started (``eventfold replay`` in a terminal, the
console's runner in a query API), and the console shows the progress of any of them:
the rebuild saves its records done and to do in Redis under a key of the version it
builds, at most once a second, and the key expires a day after the last save.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

SAVE_EVERY_S = 1.0
KEPT_S = 24 * 3600


@dataclass(frozen=True)
class RebuildStatus:
    records: int
    total: int
    started_at: float  # seconds since the epoch
    updated_at: float

    @property
    def events_per_s(self) -> float:
        took = self.updated_at - self.started_at
        return self.records / took if took > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        rate = self.events_per_s
        return max(0.0, (self.total - self.records) / rate) if rate > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "total": self.total,
            "events_per_s": round(self.events_per_s, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
            "updated_at": self.updated_at,
        }


class StatusSaver:
    """Saves a rebuild's progress under ``key`` (``save``: at most once a second)."""

    def __init__(self, redis: Redis, key: str) -> None:
        self._redis = redis
        self._key = key
        self._started_at = time.time()
        self._saved_at = float("-inf")

    async def save(self, records: int, total: int, final: bool = False) -> None:
        now = time.time()
        if not final and now - self._saved_at < SAVE_EVERY_S:
            return
        self._saved_at = now
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            self._key,
            mapping={
                "records": records,
                "total": total,
                "started_at": self._started_at,
                "updated_at": now,
            },
        )
        pipe.expire(self._key, KEPT_S)
        await pipe.execute()


async def load_status(redis: Redis, key: str) -> RebuildStatus | None:
    """The progress saved under ``key``; None when nothing was saved (yet)."""
    raw = cast(dict[Any, Any], await redis.hgetall(key))
    if not raw:
        return None
    fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
    try:
        return RebuildStatus(
            int(fields["records"]),
            int(fields["total"]),
            float(fields["started_at"]),
            float(fields["updated_at"]),
        )
    except (KeyError, ValueError):
        return None
