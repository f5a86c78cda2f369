"""The read-model versions a live processor writes to, read again every few seconds."""

from __future__ import annotations

import time

from projections.projector import Targets
from projections.read_models import PROJECTIONS, Stores


class LiveTargets:
    """The read-model versions records are written to (re-read every ``ttl_s``): the
    active version of each projection, and the one a rebuild is building."""

    def __init__(self, stores: Stores, ttl_s: float) -> None:
        self._stores = stores
        self._ttl_s = ttl_s
        self._cached: Targets | None = None
        self._versions: dict[str, list[str]] = {}
        self._read_at = float("-inf")

    async def __call__(self) -> Targets:
        if self._cached is None or time.monotonic() - self._read_at > self._ttl_s:
            versions = await self._stores.targets()
            if self._cached is None or versions != self._versions:
                for v in set(versions["orders"]):
                    await self._stores.version(v).ensure_indexes()
                self._cached = Targets(
                    *([self._stores.version(v) for v in versions[p]] for p in PROJECTIONS)
                )
                self._versions = versions
            self._read_at = time.monotonic()
        return self._cached
