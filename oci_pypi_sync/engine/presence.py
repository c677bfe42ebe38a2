"""Who else writes this registry now: leases, so that a run alone pays for no coordination.

A registry has no conditional write. The :class:`~.writer.Writer` merges
a tag by reading it right before the write and reading it again once a
settle delay has passed, so that a writer running beside it cannot drop
its entries unseen. Those two reads per tag are paid for a writer that
is almost never there. Here each writer announces itself instead, with a
lease (:mod:`oci_pypi_sync.format.leases`), and lists the leases every
:data:`LIST_EVERY` seconds; the rules below let a run that finds itself
alone skip both reads, and a run that does not pay for them as before.

* **Visible before writing.** A writer writes no tag until a listing has
  shown its own lease in its slot: every other writer's next listing sees
  it.
* **Quiet.** A listing is quiet when it shows the writer's own lease, no
  other writer's lease alive, and none changed since the listing before
  (a writer may have come and gone in between).
* **A write is confirmed by the next listing**: the first one started
  after the write completed. Quiet, nobody could have read the tag before
  our write and written it after (such a writer held a visible lease
  before its read); otherwise the write gets its settle check.
* **Writing without reading first** from what the run read of the tag
  earlier is allowed while the latest listing was quiet and started less
  than :data:`BLIND_WINDOW` seconds ago, and the earlier read came after
  the latest listing that was not quiet.
* **Settle checks wait BLIND_WINDOW longer**: a writer that has not seen
  our lease yet stops writing without reads within that long after it
  appeared.

A lease is renewed every :data:`RENEW_EVERY` seconds and expires
:data:`LEASE_TTL` seconds after; a writer that crashed holds its slot
until then (plus the clock margin), and meanwhile the others pay the reads.
A store that updates tags under a lock (a layout) needs none of this.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial

from oci_pypi_sync.engine.retry import RetryPolicy, is_concurrent_write, with_retries
from oci_pypi_sync.errors import FATAL_ERRORS, OciPypiError, RegistryError, TargetError
from oci_pypi_sync.format.leases import (
    Lease,
    Seen,
    expiry,
    free_slot,
    is_lease_tag,
    lease_manifest,
    read_lease,
    sight,
)
from oci_pypi_sync.format.media import OCI_MANIFEST
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY
from oci_pypi_sync.stores.protocols import Store

__all__ = ["BLIND_WINDOW", "LIST_EVERY", "Presence"]

log = logging.getLogger(__name__)

#: Seconds between two listings of the leases.
LIST_EVERY = 1.0
#: A quiet listing lets tags be written without a read for this long after it started.
BLIND_WINDOW = 2.0
#: A lease names an expiry this far ahead, and is renewed this often.
LEASE_TTL = 120.0
RENEW_EVERY = 30.0
#: After writing its lease, a writer lists again this many times the write's
#: duration later (at least CONFIRM_FLOOR seconds): a writer that chose the
#: same free slot at the same moment has written by then, and one of them
#: sees its lease gone and moves on.
CONFIRM_FACTOR = 4.0
CONFIRM_FLOOR = 0.05
#: Tries at a slot of its own before a writer gives up.
ACQUIRE_TRIES = 32

#: Called after each listing: (when it started, whether it was quiet).
OnListing = Callable[[float, bool], None]


class Presence:
    """This writer's lease in a registry, and what the latest listing of the leases said."""

    def __init__(
        self,
        store: Store,
        retry: RetryPolicy,
        *,
        prepare: Callable[[], Awaitable[object]],
        on_listing: OnListing,
    ) -> None:
        self.store = store
        self.retry = retry
        self._prepare = prepare  # stores the blob a lease manifest references
        self._on_listing = on_listing
        self._nonce = secrets.token_hex(16)
        self._slot: str | None = None
        self._digest: str | None = None
        self._renewed = 0.0
        self._last: Seen | None = None  # what the latest listing saw
        self._leases: dict[str, Lease | None] = {}  # digest -> what it says (immutable)
        self._quiet_at: float | None = None  # start of the latest listing, if it was quiet
        self._clean_since = float("inf")  # end of the latest listing that was not quiet
        self._first: asyncio.Future[None] | None = None
        self._visible = asyncio.Event()
        self._error: OciPypiError | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- what writes may do ---------------------------------------------------------

    async def begin(self) -> None:
        """Start announcing this writer; return once the leases were first listed.

        What the run reads of a tag after this returns may let the tag be
        written without a read (see :meth:`blind_ok`).
        """
        if self._first is None:
            self._first = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._run())
        await asyncio.shield(self._first)

    async def visible(self) -> None:
        """Wait until other writers can see this one; raise if it cannot be announced."""
        await self.begin()
        await self._visible.wait()
        if isinstance(self._error, FATAL_ERRORS):
            raise self._error
        if self._error is not None:
            raise TargetError(
                f"{self.store.display_name}: cannot hold a writer lease in "
                f"{CATALOG_REPOSITORY}: {self._error}"
            )

    def blind_ok(self, read_at: float) -> bool:
        """Whether a tag read at ``read_at`` (monotonic) may be written without reading again."""
        return (
            self._error is None
            and self._visible.is_set()
            and self._quiet_at is not None
            and time.monotonic() < self._quiet_at + BLIND_WINDOW
            and read_at >= self._clean_since
        )

    async def confirm(self) -> None:
        """List now, so that every write completed so far is confirmed or checked."""
        if self._task is None or self._error is not None:
            return
        await self.visible()
        try:
            await self._list_once()
        except OciPypiError as exc:
            self._fail(exc)

    async def release(self) -> None:
        """Stop listing and release the lease (other writers may take the slot)."""
        if self._task is not None:
            self._task.cancel()
            # A renewal in flight lands before the release, not after it.
            await asyncio.gather(self._task, return_exceptions=True)
        slot = self._slot
        if slot is None or self._error is not None or not self._visible.is_set():
            return
        body = lease_manifest(self._nonce, running=False, expires=datetime.now(UTC))
        try:
            await with_retries(
                self.retry,
                f"{CATALOG_REPOSITORY}:{slot}: release",
                lambda: self.store.put_manifest(CATALOG_REPOSITORY, slot, OCI_MANIFEST, body),
            )
        except OciPypiError as exc:
            log.info("%s:%s not released (%s); it expires", CATALOG_REPOSITORY, slot, exc)

    def cancel(self) -> None:
        """Stop listing; the lease stays until it expires."""
        if self._task is not None:
            self._task.cancel()

    # --- the listing loop --------------------------------------------------------------

    async def _run(self) -> None:
        first = self._first
        assert first is not None
        try:
            await self._list_once()
            first.set_result(None)
            await self._acquire()
            while True:
                await asyncio.sleep(LIST_EVERY)
                if not await self._list_once():
                    # Another writer took the slot for free (this one stalled past
                    # its expiry): no write until a slot is held again.
                    log.info("%s:%s no longer holds this writer's lease", *self._where())
                    await self._acquire()
        except asyncio.CancelledError:
            raise
        except OciPypiError as exc:
            self._fail(exc)
        finally:
            if not first.done():
                first.set_result(None)

    def _fail(self, exc: OciPypiError) -> None:
        if self._error is None:
            log.warning("%s: writer lease lost (%s)", self.store.display_name, exc)
            self._error = exc
        self._quiet_at = None
        self._visible.set()  # wakes the writes waiting, which see the error
        self._on_listing(float("inf"), False)

    async def _acquire(self) -> None:
        """Write a lease into a free slot until a listing shows it there."""
        await self._prepare()
        taken: set[str] = set()
        for _ in range(ACQUIRE_TRIES):
            seen = self._last if self._last is not None else await self._seen()
            slot = free_slot(seen, datetime.now(UTC), frozenset(taken))
            started = time.monotonic()
            try:
                await self._write_lease(slot)
            except RegistryError as exc:
                if not is_concurrent_write(exc):
                    raise
                written = False  # another writer wrote the slot at the same moment
            else:
                written = True
                wait = max(CONFIRM_FLOOR, CONFIRM_FACTOR * (time.monotonic() - started))
                await asyncio.sleep(wait)
            if await self._list_once() and written:
                return
            taken.add(slot)
            log.info("%s:%s was taken by another writer; trying another slot", *self._where())
            # Writers that met on one slot do not all meet again on the next.
            await asyncio.sleep(random.uniform(0, CONFIRM_FLOOR))
        raise TargetError(f"no free writer slot after {ACQUIRE_TRIES} tries")

    def _where(self) -> tuple[str, str]:
        return CATALOG_REPOSITORY, self._slot or "?"

    async def _write_lease(self, slot: str) -> None:
        body = lease_manifest(
            self._nonce, running=True, expires=expiry(datetime.now(UTC), LEASE_TTL)
        )
        self._slot = slot
        self._digest = await with_retries(
            self.retry,
            f"{CATALOG_REPOSITORY}:{slot}: writer lease",
            lambda: self.store.put_manifest(CATALOG_REPOSITORY, slot, OCI_MANIFEST, body),
        )
        self._renewed = time.monotonic()

    async def _list_once(self) -> bool:
        """One listing, judged and told; whether it showed this writer's lease held."""
        async with self._lock:
            if (
                self._slot is not None
                and self._visible.is_set()
                and time.monotonic() - self._renewed >= RENEW_EVERY
            ):
                try:
                    await self._write_lease(self._slot)
                except RegistryError as exc:
                    if not is_concurrent_write(exc):
                        raise
                    # Another writer wrote the slot at the same moment: the
                    # listing below says whose it is now.
            started = time.monotonic()
            seen = await self._seen()
            ended = time.monotonic()
            before, self._last = self._last, seen
            if self._slot is None:
                # The first listing, before this writer's lease: reads from now on
                # see every tag a writer alive or gone before it wrote.
                self._clean_since = ended
                return False
            sighting = sight(seen, before, self._slot, self._digest, datetime.now(UTC))
            if sighting.held:
                self._visible.set()
            else:
                self._visible.clear()
            if sighting.quiet:
                self._quiet_at = started
            else:
                self._quiet_at = None
                self._clean_since = ended
            self._on_listing(started, sighting.quiet)
            return sighting.held

    async def _seen(self) -> Seen:
        """Every lease tag's digest and lease, as the registry holds them now."""
        tags = await with_retries(
            self.retry,
            f"{CATALOG_REPOSITORY}: writer leases",
            lambda: self.store.list_tags(CATALOG_REPOSITORY),
        )
        slots = sorted(tag for tag in tags if is_lease_tag(tag))
        manifests = await asyncio.gather(
            *(
                with_retries(
                    self.retry,
                    f"{CATALOG_REPOSITORY}:{slot}: writer lease",
                    partial(self.store.get_manifest, CATALOG_REPOSITORY, slot),
                )
                for slot in slots
            )
        )
        seen: dict[str, tuple[str, Lease | None]] = {}
        for slot, manifest in zip(slots, manifests, strict=True):
            if manifest is None:
                continue
            if manifest.digest not in self._leases:
                self._leases[manifest.digest] = read_lease(manifest.body)
            seen[slot] = (manifest.digest, self._leases[manifest.digest])
        return seen
