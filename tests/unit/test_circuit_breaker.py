from __future__ import annotations

import pytest

from eventfold.resilience import BreakerState, CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


async def fail() -> None:
    raise Boom


async def succeed() -> str:
    return "ok"


async def test_opens_after_consecutive_failures_and_fails_fast() -> None:
    clock = Clock()
    breaker = CircuitBreaker("dep", failure_threshold=3, reset_after_s=10, clock=clock)
    for _ in range(3):
        with pytest.raises(Boom):
            await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as raised:
        await breaker.call(succeed)
    assert raised.value.retry_in_s == pytest.approx(10)


async def test_a_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker("dep", failure_threshold=2, clock=Clock())
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert await breaker.call(succeed) == "ok"
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_trial_closes_on_success_and_reopens_on_failure() -> None:
    clock = Clock()
    breaker = CircuitBreaker("dep", failure_threshold=1, reset_after_s=5, clock=clock)
    with pytest.raises(Boom):
        await breaker.call(fail)
    clock.now = 5.0
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(Boom):
        await breaker.call(fail)
    assert breaker.state is BreakerState.OPEN  # one failed trial re-opens it at once
    clock.now = 10.0
    assert await breaker.call(succeed) == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_errors_not_counted_as_failures_pass_through() -> None:
    breaker = CircuitBreaker("dep", failure_threshold=1, clock=Clock())
    with pytest.raises(Boom):
        await breaker.call(fail, counts_as_failure=(KeyError,))
    assert breaker.state is BreakerState.CLOSED
