"""with_retries: attempts, what counts as transient, and the errors it raises."""

from __future__ import annotations

import asyncio

import pytest

from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.errors import AuthenticationError, RegistryError

FAST = RetryPolicy(attempts=3, initial_wait=0.01, max_wait=0.02, total=5.0)


class Step:
    """Fails with the given errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_a_step_that_succeeds_runs_once() -> None:
    step = Step()
    assert await with_retries(FAST, "ok", step) == "done"
    assert step.calls == 1


async def test_transient_failures_are_retried_and_heard() -> None:
    heard: list[BaseException] = []
    first, second = RegistryError("503", status=503), RegistryError("502", status=502)
    step = Step(first, second)
    assert await with_retries(FAST, "flaky", step, on_retry=heard.append) == "done"
    assert step.calls == 3
    assert heard == [first, second]


async def test_a_non_transient_failure_is_raised_at_once() -> None:
    refused = AuthenticationError("credentials refused")
    step = Step(refused)
    with pytest.raises(AuthenticationError) as caught:
        await with_retries(FAST, "auth", step)
    assert caught.value is refused
    assert step.calls == 1


async def test_the_last_error_is_raised_when_attempts_run_out() -> None:
    errors = [RegistryError(f"50{i}", status=503) for i in range(3)]
    step = Step(*errors)
    with pytest.raises(RegistryError) as caught:
        await with_retries(FAST, "down", step)
    assert caught.value is errors[-1]
    assert step.calls == 3


async def test_one_attempt_means_no_retry() -> None:
    step = Step(RegistryError("503", status=503))
    with pytest.raises(RegistryError):
        await with_retries(RetryPolicy.never(), "once", step)
    assert step.calls == 1


async def test_the_total_time_bounds_the_retries() -> None:
    calls = 0

    async def slow_failure() -> str:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.15)
        raise RegistryError("503", status=503)

    policy = RetryPolicy(attempts=50, initial_wait=0.01, max_wait=0.01, total=0.4)
    with pytest.raises(RegistryError):
        await with_retries(policy, "slow", slow_failure)
    # Each attempt takes at least 0.15 s, so at most four start within the 0.4 s;
    # a slower machine only leaves fewer. The 50 attempts allowed never came.
    assert 1 < calls <= 4
