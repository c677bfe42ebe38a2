"""When and how to try a step again: transient faults only, jittered backoff, bounded.

Only steps that are safe to repeat are wrapped (reads, HEADs, a whole
blob upload that starts a new session, a manifest PUT by digest, a tag PUT
of an index whose children are stored). A ``Retry-After`` from a 429 or 503
is honoured, up to the policy's longest wait. Every retry is bounded in
count and in total time, so a fault that never stops ends as a failure of
that step, never as a hang.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from oci_pypi_sync.errors import (
    AuthenticationError,
    DigestMismatchError,
    IndexError_,
    IndexUnreachableError,
    InsecureLocationError,
    InvalidPageError,
    LimitExceededError,
    ProjectNotFoundError,
    RegistryError,
    RegistryUnreachableError,
    SizeMismatchError,
    UnsupportedApiVersionError,
    UnsupportedUrlError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUSES = frozenset({408, 413, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts per step, backoff bounds, and a cap on total time."""

    attempts: int = 5
    initial_wait: float = 0.5
    max_wait: float = 30.0
    total: float = 300.0

    @classmethod
    def never(cls) -> RetryPolicy:
        return cls(attempts=1)


def is_concurrent_write(exc: RegistryError) -> bool:
    """Whether a registry refused a tag's write because another writer wrote it at once.

    Two PUTs of one tag at the same moment: Distribution refuses one of them
    ``DIGEST_INVALID`` (the digest is computed from the bytes sent, so it is
    not about them), or answers a 5xx.
    """
    return exc.code == "DIGEST_INVALID" or (exc.status is not None and exc.status >= 500)


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed.

    Connection failures, timeouts, truncated or corrupted transfers (a
    digest or size mismatch may be a cut connection) and the statuses of an
    overloaded or restarting server are transient; a refusal of our
    credentials, a missing project, an unreadable page, an input past one of
    the bounds of :mod:`oci_pypi_sync.limits` or a URL that is not HTTP
    are not.
    """
    if isinstance(
        exc,
        AuthenticationError
        | ProjectNotFoundError
        | UnsupportedApiVersionError
        | LimitExceededError
        | UnsupportedUrlError
        | InvalidPageError
        | InsecureLocationError,
    ):
        return False
    if isinstance(exc, RegistryUnreachableError | IndexUnreachableError):
        return True
    if isinstance(exc, DigestMismatchError | SizeMismatchError):
        return True
    if isinstance(exc, RegistryError | IndexError_):
        status = exc.status
        return status is None or status in TRANSIENT_STATUSES
    return False


class _Wait:
    """Jittered exponential backoff, or the server's Retry-After when it asks for longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, state: RetryCallState) -> float:
        policy = self._policy
        exponent = max(0, state.attempt_number - 1)
        wait: float = min(policy.max_wait, policy.initial_wait * float(2**exponent))
        wait += random.uniform(0.0, policy.initial_wait)  # jitter, not cryptography
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        retry_after = exc.retry_after if isinstance(exc, IndexError_ | RegistryError) else None
        if retry_after is not None and retry_after > wait:
            wait = min(retry_after, self._policy.max_wait)
        return wait


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        sleep = state.next_action.sleep if state.next_action is not None else 0.0
        log.info("%s: %s; attempt %d, retrying in %.1fs", what, exc, state.attempt_number, sleep)

    return before_sleep


async def with_retries(
    policy: RetryPolicy,
    what: str,
    step: Callable[[], Awaitable[T]],
    *,
    transient: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``step`` until it succeeds, a non-transient error, or the policy runs out.

    The last error is raised as it is (not wrapped), so callers see the
    same exception types with or without retries. ``transient`` decides
    which errors are worth another attempt; ``on_retry`` hears each of them.
    """

    # Most steps succeed at once: the first attempt runs without tenacity's
    # bookkeeping (a few percent of a sync's CPU), and only a failure enters
    # the retry loop, where it counts as the loop's first attempt.
    started = time.monotonic()
    try:
        return await step()
    except Exception as exc:
        first_failure: Exception = exc
    if policy.attempts <= 1 or not transient(first_failure):
        raise first_failure

    def retry_on(exc: BaseException) -> bool:
        again = transient(exc)
        if again and on_retry is not None:
            on_retry(exc)
        return again

    replayed = False

    async def attempt_step() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_failure
        return await step()

    remaining = max(0.0, policy.total - (time.monotonic() - started))
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, policy.attempts)) | stop_after_delay(remaining),
        wait=_Wait(policy),
        retry=retry_if_exception(retry_on),
        before_sleep=_log_retry(what),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await attempt_step()
    raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover
