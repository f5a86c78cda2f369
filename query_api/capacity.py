"""Per-instance caps on what a client can hold open: live streams, consistency waits.

Each open SSE stream and each request waiting on a consistency token holds memory
and Redis work for as long as the client likes; without a cap, a few hundred idle
clients exhaust the instance (and, through Redis, the processors' writes). Past
its cap a request is refused at once with 503 and ``Retry-After``, and ``/metrics``
shows each cap and how much of it is in use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Gauge

RETRY_AFTER_S = 5


class OverCapacity(Exception):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"too many {what} on this instance (at most {limit}); retry later")
        self.what = what
        self.limit = limit


class Capacity:
    """At most ``limit`` holders at a time; ``hold()`` raises ``OverCapacity`` past it."""

    def __init__(self, what: str, limit: int, metric: str, registry: CollectorRegistry) -> None:
        self.what = what
        self.limit = limit
        self.held = 0
        Gauge(f"{metric}_open", f"{what} open now", registry=registry).set_function(
            lambda: self.held
        )
        Gauge(f"{metric}_limit", f"{what} allowed at a time", registry=registry).set(limit)

    def check(self) -> None:
        """Raise ``OverCapacity`` when full."""
        if self.held >= self.limit:
            raise OverCapacity(self.what, self.limit)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Checked, then held for the block."""
        place = self.reserve()
        try:
            yield
        finally:
            place.release()

    def reserve(self) -> Place:
        """Checked, and held from now until ``Place.release``: for a streaming body,
        whose route must answer 503 before it runs, and which must count from that
        moment (counted only once it ran, a burst of requests got past the cap)."""
        self.check()
        self.held += 1
        return Place(self)


class Place:
    """One place of a ``Capacity``, given back once (``release`` is idempotent)."""

    def __init__(self, capacity: Capacity) -> None:
        self._capacity: Capacity | None = capacity

    def release(self) -> None:
        if self._capacity is not None:
            self._capacity.held -= 1
            self._capacity = None
