"""Single flight: one piece of work per key at a time, its outcome shared by every caller.

Concurrent uploads of one digest make registries answer 500 or
``DIGEST_INVALID``; concurrent page reads in ``serve`` would hit the store
once per client. Both ask here. The shared task is shielded, so a caller
that is cancelled does not cancel the work for the others. With ``keep``, a
success is remembered for the life of the object (a blob written once per
run); a failure never is, so the next caller tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar, cast

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

__all__ = ["SingleFlight"]


class SingleFlight(Generic[K]):
    """Run one ``fetch`` per key at a time; callers arriving meanwhile await the same result."""

    def __init__(self, *, keep: bool = False) -> None:
        self._keep = keep
        self._tasks: dict[K, asyncio.Task[Any]] = {}

    def joined(self, key: K) -> bool:
        """Whether a call for ``key`` is running, or (with ``keep``) has succeeded."""
        return key in self._tasks

    async def run(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        task = self._tasks.get(key)
        if task is None:

            async def call() -> V:
                return await fetch()

            task = asyncio.ensure_future(call())
            self._tasks[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return cast(V, await asyncio.shield(task))

    def forget(self, key: K) -> None:
        """Drop a remembered outcome (the thing it stood for changed since)."""
        task = self._tasks.get(key)
        if task is not None and task.done():
            del self._tasks[key]

    def _finished(self, key: K, task: asyncio.Task[Any]) -> None:
        failed = task.cancelled() or task.exception() is not None
        if (failed or not self._keep) and self._tasks.get(key) is task:
            del self._tasks[key]
