"""The read-model versions a live processor writes to, read again every few seconds."""

from __future__ import annotations

import time

from projections.projector import Targets
from projections.read_models import DOCUMENTS, PROJECTIONS, Stores


class LiveTargets:
    """The read-model versions records are written to: the active version of each
    projection, and the one a rebuild is building. Calling it reads nothing once they
    are known; the processor calls ``refresh()`` before each batch, which reads them
    again every ``ttl_s`` (a rebuild waits for that before it switches), so a store
    that is down holds up the batch once, not each of its records."""

    def __init__(self, stores: Stores, ttl_s: float) -> None:
        self._stores = stores
        self._ttl_s = ttl_s
        self._cached: Targets | None = None
        self._versions: dict[str, list[str]] = {}
        self._read_at = float("-inf")

    async def __call__(self) -> Targets:
        if self._cached is None:
            return await self.refresh()
        return self._cached

    async def refresh(self) -> Targets:
        """The targets, read again when they are older than ``ttl_s``."""
        if self._cached is None or time.monotonic() - self._read_at > self._ttl_s:
            versions = await self._stores.targets()
            if self._cached is None or versions != self._versions:
                for v in {v for p in DOCUMENTS for v in versions[p]}:
                    await self._stores.version(v).ensure_indexes()
                self._cached = Targets(
                    {p: [self._stores.version(v) for v in versions[p]] for p in PROJECTIONS}
                )
                self._versions = versions
            self._read_at = time.monotonic()
        return self._cached
