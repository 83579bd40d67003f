"""The retry layer's contract, with calls that fail the way Redis calls do."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis import exceptions as rex

from streams.retry import RetryPolicy, StorageUnavailable


class Flaky:
    """Fails with the given errors, in order, then answers."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Counts:
    def __init__(self) -> None:
        self.retries = 0
        self.recovers = 0

    def policy(self, budget_s: float) -> RetryPolicy:
        async def recover() -> None:
            self.recovers += 1

        def on_retry() -> None:
            self.retries += 1

        return RetryPolicy(budget_s, on_retry=on_retry, recover=recover)


async def test_a_call_that_succeeds_runs_once_and_tells_nobody() -> None:
    c, call = Counts(), Flaky()
    assert await c.policy(5).run(call) == "ok"
    assert (call.calls, c.retries, c.recovers) == (1, 0, 0)


@pytest.mark.parametrize("error", [rex.ConnectionError("reset"), rex.TimeoutError("slow"),
                                   rex.ResponseError("READONLY You can't write"), OSError("x")])
async def test_transient_failures_are_retried_with_a_recover_before_each_retry(
    error: Exception,
) -> None:
    c, call = Counts(), Flaky(error, error)
    assert await c.policy(5).run(call) == "ok"
    assert (call.calls, c.retries, c.recovers) == (3, 2, 2)


async def test_a_refusal_is_unavailable_at_once() -> None:
    c, call = Counts(), Flaky(rex.ResponseError("NOPERM no"))
    with pytest.raises(StorageUnavailable, match="NOPERM"):
        await c.policy(5).run(call)
    assert (call.calls, c.retries) == (1, 0)


async def test_a_bug_is_raised_as_it_is() -> None:
    call = Flaky(KeyError("bug"))
    with pytest.raises(KeyError):
        await RetryPolicy(5).run(call)
    assert call.calls == 1


async def test_a_refusal_after_a_retry_is_unavailable_too() -> None:
    call = Flaky(rex.ConnectionError("reset"), rex.ResponseError("NOAUTH"))
    with pytest.raises(StorageUnavailable, match="NOAUTH"):
        await RetryPolicy(5).run(call)
    assert call.calls == 2


async def test_the_budget_counts_from_the_first_attempt() -> None:
    async def slow_failure() -> None:
        await asyncio.sleep(0.3)
        raise rex.TimeoutError("frozen")

    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        await RetryPolicy(0.2).run(slow_failure)
    # The first attempt alone used the budget: no second one.
    assert time.monotonic() - started < 0.6

    call = Flaky(*[rex.ConnectionError("refused")] * 1000)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match="refused"):
        await RetryPolicy(1.0).run(call)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5 and call.calls > 2
