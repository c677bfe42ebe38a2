"""The one component that makes a target hold content: blobs, then manifests, then tags.

``sync``, ``verify --repair`` and ``copy`` all write through a
:class:`Writer`; they differ only in where the bytes come from (the index,
or another store). What the writer guarantees, once for all of them:

* **Children first.** A manifest is written only after every blob it
  references, a tag only after its manifest, so a tag never points at
  missing content, even after a crash.
* **Each blob once per run.** Writes are single-flight per
  (repository, digest): concurrent uploads of one digest make registries
  answer 500 or ``DIGEST_INVALID``. A blob another repository of the target
  holds (seen this run, or recorded in the state file) is mounted instead
  of uploaded, where the store mounts (:class:`~.protocols.MountsBlobs`).
* **Verified before visible.** Bytes are streamed into the store, which
  checks digest and size before the blob becomes visible (a registry gets
  the last chunk only once the digest checks out).
* **Merge, never overwrite.** A tag is written by merging what it holds
  now with ours (:data:`~.protocols.TagMerge`). A store that updates tags
  atomically (a layout, under a lock) does the read-merge-write itself. A
  registry has no conditional write: the tag is read right before the
  write, and read again once a settle delay has passed (long enough for
  another writer's read-merge-write that read before our write to land,
  see :meth:`Writer.settle`); if that other write dropped our entries they
  are merged back, a bounded number of times. A run that finds itself the
  registry's only writer (:mod:`.presence`) skips both reads: the tag as
  the run read it earlier stands for the first, and the next listing of
  the writers' leases for the second.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Literal

from oci_pypi_sync.engine.flight import SingleFlight
from oci_pypi_sync.engine.presence import BLIND_WINDOW, Presence
from oci_pypi_sync.engine.retry import (
    RetryPolicy,
    is_concurrent_write,
    is_transient,
    with_retries,
)
from oci_pypi_sync.errors import (
    FATAL_ERRORS,
    DigestMismatchError,
    OciPypiError,
    RegistryError,
    TargetError,
)
from oci_pypi_sync.format.descriptors import empty_config
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY
from oci_pypi_sync.stores.protocols import (
    CommitsTags,
    DiscardsBlobs,
    ListsReferrers,
    MountsBlobs,
    Store,
    StoredManifest,
    TagMerge,
    TagRead,
    UpdatesTagsAtomically,
)

if TYPE_CHECKING:
    from oci_pypi_sync.state.journal import Journal

__all__ = [
    "BlobOutcome",
    "BlobSource",
    "BlobWrite",
    "Child",
    "ManifestWrite",
    "Writer",
]

log = logging.getLogger(__name__)

#: A fresh stream of a blob's bytes, each time it is called (an upload may start over).
BlobSource = Callable[[], AsyncIterator[bytes]]
BlobOutcome = Literal["uploaded", "present", "mounted"]

#: The settle delay: this many times the slowest read-to-write interval of a
#: tag this run saw, at least SETTLE_FLOOR and at most SETTLE_CEILING seconds.
SETTLE_FACTOR = 4.0
SETTLE_FLOOR = 0.2
SETTLE_CEILING = 5.0
#: How many times a tag is merged again after other writers dropped our entries.
MERGE_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class BlobWrite:
    """How a blob came to be in the repository, and its size when known.

    ``uploaded``: its bytes were sent (``size`` is what was sent);
    ``present``: the repository had it (or this run wrote it already);
    ``mounted``: taken from another repository of the target.
    """

    outcome: BlobOutcome
    size: int | None


@dataclass(frozen=True, slots=True)
class Child:
    """A blob a manifest references, and where its bytes come from.

    ``data`` holds small blobs in memory; ``source`` streams larger ones.
    With neither, the blob must have been written through this writer
    already (a file's bytes, written before its manifest was built).
    """

    digest: str
    size: int | None
    data: bytes | None = None
    source: BlobSource | None = None


@dataclass(frozen=True, slots=True)
class ManifestWrite:
    """A manifest written by digest, and how each of its children came to be stored."""

    digest: str
    children: dict[str, BlobWrite]


@dataclass
class _TagRecord:
    """A tag this run wrote where no lock kept other writers out: checked again later."""

    repo: str
    tag: str
    media_type: str
    merge: TagMerge
    digest: str
    written_at: float
    rounds: int = 1
    #: What the caller of :meth:`Writer.tag` was told the tag holds (the first write's).
    told: str | None = None


@dataclass
class _Counter:
    """Counts the bytes of the latest attempt of an upload; closes what each attempt opened."""

    source: BlobSource
    count: int = 0
    opened: list[AsyncGenerator[bytes, None]] = field(default_factory=list)

    def open(self) -> AsyncIterator[bytes]:
        self.count = 0
        counted = self._counted(self.source())
        self.opened.append(counted)
        return counted

    async def close(self) -> None:
        """Close the streams here, in this task, however the store stopped reading them:
        left to the garbage collector, a download's close fails noisily."""
        opened, self.opened = self.opened, []
        for stream in opened:
            await stream.aclose()

    async def _counted(self, chunks: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in chunks:
                self.count += len(chunk)
                yield chunk
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()


@dataclass
class Writer:
    """Writes blobs, manifests and tags into one store for the length of a run."""

    store: Store
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    journal: Journal | None = None
    _blobs: SingleFlight[tuple[str, str]] = field(default_factory=lambda: SingleFlight(keep=True))
    _manifests: SingleFlight[tuple[str, str]] = field(
        default_factory=lambda: SingleFlight(keep=True)
    )
    # digest -> a repository of the target this run knows holds it (mount source)
    _holders: dict[str, str] = field(default_factory=dict)
    # digest -> the upload of those bytes in flight, which writes into other repositories await
    _uploading: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    # Settle checks not finished yet; a finished one leaves only a tag whose digest moved.
    _checks: set[asyncio.Task[None]] = field(default_factory=set)
    _moved: dict[tuple[str, str], str | None] = field(default_factory=dict)
    _failed: list[Exception] = field(default_factory=list)
    _slowest: float = 0.0
    # The writer lease of a store without atomic tag updates (created on first need),
    # and the tags written since that the next listing of the leases confirms.
    _presence: Presence | None = None
    _pending: list[_TagRecord] = field(default_factory=list)
    remerged: int = 0

    # --- blobs ----------------------------------------------------------------------

    async def blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        source: BlobSource,
        *,
        replace: bool = False,
        remember: bool = False,
    ) -> BlobWrite:
        """Make ``repo`` hold the blob, streamed from ``source`` only if it must be uploaded.

        ``replace`` first drops stored bytes known to be corrupt (where the
        store can). ``remember`` records in the state file where the blob now
        lives, for mounts by later runs (worth it for files, not for configs).
        """
        key = (repo, digest)
        joined = self._blobs.joined(key)
        written: BlobWrite = await self._blobs.run(
            key, lambda: self._write_blob(repo, digest, size, source, replace, remember)
        )
        return BlobWrite("present", written.size) if joined else written

    async def blob_bytes(
        self, repo: str, digest: str, data: bytes, *, replace: bool = False
    ) -> BlobWrite:
        """Make ``repo`` hold a small blob held in memory (a config, core metadata)."""
        key = (repo, digest)
        joined = self._blobs.joined(key)
        written: BlobWrite = await self._blobs.run(
            key, lambda: self._write_blob_bytes(repo, digest, data, replace)
        )
        return BlobWrite("present", written.size) if joined else written

    async def _write_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        source: BlobSource,
        replace: bool,
        remember: bool,
    ) -> BlobWrite:
        if replace:
            await self._discard(repo, digest)
        if await self._mount(repo, digest, consult_journal=remember):
            self._stored(repo, digest, remember)
            return BlobWrite("mounted", size)
        counter = _Counter(source)
        mine: asyncio.Future[None] | None = None
        if isinstance(self.store, MountsBlobs) and digest not in self._uploading:
            mine = self._uploading[digest] = asyncio.get_running_loop().create_future()

        async def attempt() -> bool:
            try:
                return await self.store.put_blob(
                    repo, digest, size, counter.open(), reopen=counter.open
                )
            finally:
                await counter.close()

        try:
            uploaded = await with_retries(
                self.retry, f"{repo}: blob {digest}: upload", attempt, transient=_upload_transient()
            )
        finally:
            if mine is not None:
                del self._uploading[digest]
                mine.set_result(None)
        if replace and not uploaded:
            raise TargetError(
                f"{self.store.display_name} keeps blob {repo}@{digest} and cannot be made to "
                "drop the bytes it holds under that digest"
            )
        self._stored(repo, digest, remember)
        return BlobWrite("uploaded", counter.count) if uploaded else BlobWrite("present", size)

    async def _write_blob_bytes(
        self, repo: str, digest: str, data: bytes, replace: bool
    ) -> BlobWrite:
        if replace:
            await self._discard(repo, digest)
        elif await self._mount(repo, digest, consult_journal=False):
            self._stored(repo, digest, False)
            return BlobWrite("mounted", len(data))
        uploaded = await with_retries(
            self.retry,
            f"{repo}: blob {digest}: upload",
            lambda: self.store.put_blob_bytes(repo, digest, data),
        )
        if replace and not uploaded:
            raise TargetError(
                f"{self.store.display_name} keeps blob {repo}@{digest} and cannot be made to "
                "drop the bytes it holds under that digest"
            )
        self._stored(repo, digest, False)
        return BlobWrite("uploaded" if uploaded else "present", len(data))

    def _stored(self, repo: str, digest: str, remember: bool) -> None:
        self._holders.setdefault(digest, repo)
        if remember and self.journal is not None:
            self.journal.record_blob(repo, digest)

    async def _mount(self, repo: str, digest: str, *, consult_journal: bool) -> bool:
        """Mount the blob from a repository known to hold it: this run's, or the journal's."""
        store = self.store
        if not isinstance(store, MountsBlobs):
            return False
        pending = self._uploading.get(digest)
        if pending is not None:
            # The same bytes are on their way into another repository: mount them after.
            await asyncio.wait([pending])
        sources = []
        holder = self._holders.get(digest)
        if holder is not None and holder != repo:
            sources.append(holder)
        if consult_journal and self.journal is not None:
            sources += [
                r for r in self.journal.blob_repositories(digest) if r != repo and r not in sources
            ]
        for source in sources:
            try:
                mounted = await store.mount_blob(repo, digest, source)
            except FATAL_ERRORS:
                raise
            except OciPypiError as exc:
                log.info("%s: mount of %s from %s failed: %s", repo, digest, source, exc)
                continue
            if mounted:
                log.debug("%s: mounted %s from %s", repo, digest, source)
                return True
        return False

    async def _discard(self, repo: str, digest: str) -> None:
        store = self.store
        if isinstance(store, DiscardsBlobs):
            await store.discard_blob(repo, digest)

    # --- manifests --------------------------------------------------------------------

    async def manifest(
        self,
        repo: str,
        media_type: str,
        body: bytes,
        children: Sequence[Child] = (),
        *,
        replace: frozenset[str] = frozenset(),
    ) -> ManifestWrite:
        """Store ``children``, then the manifest by its digest, written as given (bytes verbatim).

        Digests in ``replace`` are known corrupt in the store: dropped first
        where the store can. A PUT by digest is idempotent and costs what a
        HEAD would, so no presence check precedes it.
        """
        written: dict[str, BlobWrite] = {}
        for child in children:
            if child.data is not None:
                written[child.digest] = await self.blob_bytes(
                    repo, child.digest, child.data, replace=child.digest in replace
                )
            elif child.source is not None:
                written[child.digest] = await self.blob(
                    repo, child.digest, child.size, child.source, replace=child.digest in replace
                )
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        await self._manifests.run(
            (repo, digest),
            lambda: self._put_manifest(repo, digest, media_type, body, digest in replace),
        )
        return ManifestWrite(digest, written)

    async def referrer(self, repo: str, media_type: str, body: bytes) -> bool:
        """Store a manifest that has a ``subject``, by digest; whether the store lists it.

        ``True`` when the store lists it among its subject's referrers itself
        (a registry with the OCI 1.1 referrers API), ``False`` when the
        subject's fallback tag must list it. Its children must be stored.
        """
        store = self.store
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if isinstance(store, ListsReferrers):
            listed: bool = await self._manifests.run(
                (repo, digest),
                lambda: with_retries(
                    self.retry,
                    f"{repo}@{digest}: referrer",
                    lambda: store.put_referrer(repo, digest, media_type, body),
                ),
            )
            return listed
        await self.manifest(repo, media_type, body)
        return False

    async def put_tag(self, repo: str, tag: str, media_type: str, body: bytes) -> str:
        """Tag ``body`` as it is, whatever the tag held (a tag only its own writer writes).

        For artifacts whose merge needs more than the tag's manifest (the
        catalog merges blobs it reads, under its own loop); everything else
        goes through :meth:`tag`. Children must be stored already.
        """
        return await with_retries(
            self.retry,
            f"{repo}:{tag}: tag",
            lambda: self.store.put_manifest(repo, tag, media_type, body),
        )

    async def _put_manifest(
        self, repo: str, digest: str, media_type: str, body: bytes, replace: bool
    ) -> None:
        if replace:
            await self._discard(repo, digest)
        await with_retries(
            self.retry,
            f"{repo}@{digest}: manifest",
            lambda: self.store.put_manifest(repo, digest, media_type, body),
            transient=_manifest_transient(),
        )

    # --- tags ---------------------------------------------------------------------------

    async def tag(
        self,
        repo: str,
        tag: str,
        media_type: str,
        merge: TagMerge,
        *,
        replace: frozenset[str] = frozenset(),
        read: TagRead | None = None,
    ) -> str | None:
        """Tag what ``merge`` makes of the tag's current manifest; the digest tagged after.

        ``None`` when the tag is absent and ``merge`` left it so. Every child
        of the merged manifest must be stored already. The tag is read right
        before the write, whatever the caller saw of it earlier: a tag another
        writer created or changed since (while files were transferred) is
        merged, not overwritten. ``read``, what the caller read of the tag,
        stands for that read while no other writer could have written since
        (:meth:`.presence.Presence.blind_ok`). Digests in ``replace`` are
        known corrupt: dropped first where the store can.
        """
        store = self.store
        for digest in replace:
            await self._discard(repo, digest)
        if isinstance(store, UpdatesTagsAtomically):
            return await with_retries(
                self.retry,
                f"{repo}:{tag}: tag",
                lambda: store.update_tag(repo, tag, media_type, merge),
            )
        return await self._optimistic_tag(repo, tag, media_type, merge, 1, None, read)

    async def _optimistic_tag(
        self,
        repo: str,
        tag: str,
        media_type: str,
        merge: TagMerge,
        rounds: int,
        told: str | None,
        read: TagRead | None = None,
    ) -> str | None:
        """Read, merge, write; the write is confirmed by the next listing of the leases,
        or checked again after the settle delay."""
        presence = self._lease()
        await presence.visible()
        for attempt in range(1, MERGE_ROUNDS + 1):
            started = time.monotonic()
            current: StoredManifest | None
            if attempt == 1 and read is not None and presence.blind_ok(read.read_at):
                current = read.manifest
            else:
                current = await with_retries(
                    self.retry,
                    f"{repo}:{tag}: current index",
                    lambda: self.store.get_manifest(repo, tag),
                )
            body = merge(current)
            if body is None:
                return current.digest if current is not None else None
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            if current is not None and current.digest == digest:
                return digest
            try:
                stored = await with_retries(
                    self.retry,
                    f"{repo}:{tag}: tag",
                    partial(self.store.put_manifest, repo, tag, media_type, body),
                )
            except RegistryError as exc:
                # Two PUTs of one tag at once: Distribution refuses one of
                # them DIGEST_INVALID (or a 5xx). Read what won and merge again.
                if attempt == MERGE_ROUNDS or not is_concurrent_write(exc):
                    raise
                log.info("%s:%s written concurrently (%s); merging again", repo, tag, exc)
                continue
            now = time.monotonic()
            self._slowest = max(self._slowest, now - started)
            first = stored if rounds == 1 else told
            self._pending.append(
                _TagRecord(repo, tag, media_type, merge, stored, now, rounds, first)
            )
            return stored
        raise AssertionError("unreachable: the last round raises or returns")  # pragma: no cover

    @property
    def presence(self) -> Presence | None:
        """This writer's lease in the store, once a tag write or a read for one needed it."""
        return self._presence

    def _lease(self) -> Presence:
        if self._presence is None:
            self._presence = Presence(
                self.store,
                self.retry,
                prepare=self._lease_blob,
                on_listing=self._listed,
            )
        return self._presence

    async def _lease_blob(self) -> None:
        empty = empty_config()
        await self.blob_bytes(CATALOG_REPOSITORY, empty.descriptor.digest, empty.data)

    async def read_point(self) -> float:
        """Call before reading a tag to give to :meth:`tag`; the ``read_at`` to give with it."""
        if not isinstance(self.store, UpdatesTagsAtomically):
            await self._lease().begin()
        return time.monotonic()

    def _listed(self, started: float, quiet: bool) -> None:
        """A listing of the leases: the writes completed before it started are confirmed
        (quiet), or get their settle checks (another writer was, or may have been, there)."""
        due = [record for record in self._pending if record.written_at < started]
        if not due:
            return
        self._pending = [record for record in self._pending if record.written_at >= started]
        if not quiet:
            for record in due:
                self._schedule(record)

    def _schedule(self, record: _TagRecord) -> None:
        check = asyncio.ensure_future(self._checked_later(record))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    def settle_delay(self) -> float:
        """How long after a tag write another writer's stale write could still land.

        A writer that had not seen this one's lease yet may write without a
        read for BLIND_WINDOW seconds after it appeared.
        """
        return BLIND_WINDOW + min(SETTLE_CEILING, max(SETTLE_FLOOR, SETTLE_FACTOR * self._slowest))

    async def _checked_later(self, record: _TagRecord) -> None:
        """The settle check of one tag; a final digest other than the one told is kept.

        A check that fails keeps its error for :meth:`settle` to raise: it may
        end long before anyone awaits it.
        """
        try:
            repo, tag, digest = await self._check_later(record)
        except Exception as exc:
            self._failed.append(exc)
            return
        if digest != record.told:
            self._moved[(repo, tag)] = digest
        else:
            self._moved.pop((repo, tag), None)

    async def _check_later(self, record: _TagRecord) -> tuple[str, str, str | None]:
        """Once the settle delay has passed, see that the tag still holds our entries."""
        wait = record.written_at + self.settle_delay() - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        current = await with_retries(
            self.retry,
            f"{record.repo}:{record.tag}: settle check",
            lambda: self.store.get_manifest(record.repo, record.tag),
        )
        if current is not None and current.digest == record.digest:
            return record.repo, record.tag, record.digest
        merged = record.merge(current)
        if merged is None or (
            current is not None and "sha256:" + hashlib.sha256(merged).hexdigest() == current.digest
        ):
            # Another writer merged ours in (or there is nothing of ours to keep).
            return record.repo, record.tag, current.digest if current is not None else None
        if record.rounds >= MERGE_ROUNDS:
            log.warning(
                "%s:%s: other writers kept replacing it; this run's entries may be missing "
                "until the next sync",
                record.repo,
                record.tag,
            )
            return record.repo, record.tag, current.digest if current is not None else None
        log.info(
            "%s:%s was replaced by another writer without this run's entries; merging again",
            record.repo,
            record.tag,
        )
        self.remerged += 1
        digest = await self._optimistic_tag(
            record.repo,
            record.tag,
            record.media_type,
            record.merge,
            record.rounds + 1,
            record.told,
        )
        return record.repo, record.tag, digest

    async def settle(self) -> dict[tuple[str, str], str | None]:
        """Wait for the settle checks of every tag written without a lock; the tags that moved.

        Each tag a registry holds is read again once the settle delay has
        passed since it was written: a writer whose read came before our write
        and whose write came after our read-back would otherwise drop our
        entries unseen. Returns (repository, tag) -> the digest tagged now,
        for every tag whose digest is no longer the one :meth:`tag` returned
        (another writer merged, or ours were merged back); a check that found
        its tag as written keeps nothing, so a run of a million tags holds
        only the few that moved. Where the run was the only writer, one
        listing of the leases confirms them all instead.
        """
        while self._pending or self._checks:
            if self._pending and self._presence is not None:
                await self._presence.confirm()
            # Not confirmed by a listing (the lease was lost): checked instead.
            for record in self._pending:
                self._schedule(record)
            self._pending = []
            if self._checks:
                await asyncio.gather(*list(self._checks))
        if self._failed:
            failed, self._failed = self._failed, []
            raise failed[0]
        moved, self._moved = self._moved, {}
        return moved

    def commit(self) -> None:
        """At the end of a run: every tag written visible to other tools reading the target.

        A layout commits each tag to its write-ahead log; other tools read
        only ``index.json``, into which this folds the log.
        """
        store = self.store
        if isinstance(store, CommitsTags):
            store.commit()

    def abandon(self) -> None:
        """Stop the pending settle checks (the run is ending without them).

        The writer lease, if any, is left to expire.
        """
        for check in list(self._checks):
            check.cancel()
        self._checks.clear()
        self._pending = []
        if self._presence is not None:
            self._presence.cancel()

    async def close(self) -> None:
        """At the end of a run, after :meth:`settle`: release the writer lease, if any."""
        if self._presence is not None:
            await self._presence.release()


def _upload_transient() -> Callable[[BaseException], bool]:
    """Transient faults, and one more try after a digest mismatch (then it is the source's)."""
    mismatches = 0

    def transient(exc: BaseException) -> bool:
        nonlocal mismatches
        if isinstance(exc, DigestMismatchError):
            mismatches += 1
            return mismatches < 2
        return is_transient(exc)

    return transient


def _manifest_transient() -> Callable[[BaseException], bool]:
    """Transient faults, and a few more tries after a ``DIGEST_INVALID``.

    The digest of a manifest is computed here from the bytes sent, so the
    registry's refusing it is not about them: Distribution answers it while
    another writer's upload of a blob the manifest names rewrites that blob's
    link file (not atomically), as two syncs of one release do.
    """
    refusals = 0

    def transient(exc: BaseException) -> bool:
        nonlocal refusals
        if isinstance(exc, RegistryError) and exc.code == "DIGEST_INVALID":
            refusals += 1
            return refusals < 4
        return is_transient(exc)

    return transient
