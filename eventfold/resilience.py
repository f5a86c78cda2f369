"""The resilience trio from the seed article: timeouts, retries with backoff, circuit breakers.

Retries come from tenacity; the breaker is small enough to keep here. A breaker
stops hammering a dependency that keeps failing: after ``failure_threshold``
consecutive failures it opens and fails fast for ``reset_after_s``, then lets one
trial call through (half-open); success closes it, failure opens it again.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(RuntimeError):
    """The breaker is open: the dependency failed repeatedly and is given time to recover."""

    def __init__(self, name: str, retry_in_s: float) -> None:
        super().__init__(f"circuit '{name}' is open; retry in {retry_in_s:.1f}s")
        self.retry_in_s = retry_in_s


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        reset_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = asyncio.Lock()

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def retry_in_s(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.reset_after_s - (self._clock() - self._opened_at))

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        counts_as_failure: tuple[type[BaseException], ...] = (Exception,),
    ) -> T:
        """Run ``operation`` through the breaker."""
        state = self.state
        if state is BreakerState.OPEN:
            raise CircuitOpenError(self.name, self.retry_in_s())
        if state is BreakerState.HALF_OPEN:
            if self._trial.locked():  # one trial at a time; the others fail fast
                raise CircuitOpenError(self.name, self.retry_in_s())
            async with self._trial:
                return await self._run(operation, counts_as_failure)
        return await self._run(operation, counts_as_failure)

    async def _run(
        self,
        operation: Callable[[], Awaitable[T]],
        counts_as_failure: tuple[type[BaseException], ...],
    ) -> T:
        try:
            result = await operation()
        except counts_as_failure:
            self.record_failure()
            raise
        self.record_success()
        return result
