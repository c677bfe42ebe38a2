"""The one source of a file's core metadata, for sync, repair and resolution alike.

Core metadata is trusted only when it provably describes the file:

* **Advertised** (PEP 658/714: the page says the ``.metadata`` exists): its
  bytes must have the advertised hash (else the file fails, as for a file
  whose bytes fail theirs), and it must name the file's own project and
  version; metadata naming anything else is not used.
* **Unadvertised** (``--probe-metadata``, wheels only): some indexes serve
  ``.metadata`` without saying so. Nothing vouches for those bytes, so they
  are used only when they equal the wheel's own ``*.dist-info/METADATA``,
  read from the wheel's bytes when a small wheel was just downloaded, else
  with a few range requests (:mod:`oci_pypi_sync.index.remote_wheel`).

Anything else leaves the file without core metadata, with a note saying why
(the sync report carries it). Resolution needs dependencies rather than
bytes to store: advertised metadata under the same rules, else the wheel's
own METADATA, read directly (what a probe would be checked against anyway).

With a cache (:mod:`oci_pypi_sync.index.cache`, the state file), metadata
seen once is never fetched again: advertised metadata is kept under its own
sha256 (and checked against it when read back), a wheel's METADATA under
the wheel's sha256.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from oci_pypi_sync.engine.flight import SingleFlight
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.errors import DigestMismatchError, IndexError_, is_fatal
from oci_pypi_sync.index.cache import IndexCache, metadata_key, wheel_metadata_key
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.metadata import parse_core_metadata, verify_metadata
from oci_pypi_sync.index.records import CoreMetadata, DistributionFile
from oci_pypi_sync.index.remote_wheel import RemoteWheelError, read_metadata_member

__all__ = [
    "MetadataChoice",
    "MetadataScope",
    "MetadataSource",
    "names_release",
    "wheel_metadata",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MetadataChoice:
    """The core metadata to use for a file (``raw`` as served), or why there is none."""

    raw: bytes | None
    metadata: CoreMetadata | None = None
    note: str | None = None


_NONE = MetadataChoice(None)


@dataclass
class MetadataScope:
    """Core metadata shared by the files of one release, fetched once per hash.

    The platform wheels and the sdist of a release usually advertise one
    metadata hash. The first small wheel of the release to download
    promises its METADATA to the others (:meth:`promise`), so none of them
    needs the ``.metadata`` file; failing that, one of them fetches it.
    """

    _fetched: SingleFlight[str] = field(default_factory=lambda: SingleFlight(keep=True))
    _promised: dict[str, asyncio.Future[bytes | None]] = field(default_factory=dict)

    def promise(self, sha256: str) -> asyncio.Future[bytes | None] | None:
        """A promise of the METADATA with this hash, for the caller to keep; ``None``: taken."""
        if sha256 in self._promised:
            return None
        promised = self._promised[sha256] = asyncio.get_running_loop().create_future()
        return promised

    def promised(self, sha256: str) -> asyncio.Future[bytes | None] | None:
        return self._promised.get(sha256)

    async def fetch_once(self, sha256: str, fetch: Callable[[], Awaitable[bytes]]) -> bytes:
        """The bytes with this hash, fetched by the first file that asks."""
        return await self._fetched.run(sha256, fetch)


def names_release(metadata: CoreMetadata, project: str, version: str) -> bool:
    """Whether core metadata names this project (normalized) and version (PEP 440 equal)."""
    if metadata.name is None or metadata.version is None:
        return False
    if canonicalize_name(metadata.name) != canonicalize_name(project):
        return False
    try:
        return Version(metadata.version) == Version(version)
    except InvalidVersion:
        return metadata.version == version


def wheel_metadata(data: bytes | bytearray, filename: str) -> bytes | None:
    """The ``METADATA`` of a wheel held in memory, if it has a readable one within the bounds.

    CPU work (run it in a thread): a small wheel may still be a zip bomb,
    which the shared reader refuses without inflating it whole. Without a
    usable member the caller reads the metadata another way.
    """
    try:
        return read_metadata_member(io.BytesIO(data), filename)
    except IndexError_ as exc:
        log.debug("%s: METADATA not read from the wheel: %s", filename, exc)
        return None


class MetadataSource:
    """Core metadata from one index, under the rules of this module."""

    def __init__(
        self,
        index: IndexClient,
        *,
        probe: bool,
        retry: RetryPolicy,
        cache: IndexCache | None = None,
    ) -> None:
        self.index = index
        self.probe = probe
        self.retry = retry
        self.cache = cache

    async def for_file(
        self,
        file: DistributionFile,
        project: str,
        version: str,
        *,
        is_wheel: bool,
        wheel: bytes | None = None,
        scope: MetadataScope | None = None,
    ) -> MetadataChoice:
        """The core metadata to store with a file, or none and why.

        ``wheel`` is the wheel's own METADATA when the caller has it (a
        small wheel just downloaded); ``scope`` shares fetches within a
        release.
        """
        if file.core_metadata is not None:
            raw = await self._advertised(file, wheel, scope)
            return _checked(raw, project, version, "its core metadata")
        if not (self.probe and is_wheel):
            return _NONE
        probed = await with_retries(
            self.retry,
            f"{file.filename}: .metadata",
            lambda: self.index.get_core_metadata(file, probe=True),
        )
        if probed is None:
            return _NONE
        try:
            own = wheel if wheel is not None else await self._wheel_metadata(file)
        except RemoteWheelError as exc:
            return MetadataChoice(
                None,
                note=f"its unadvertised .metadata is not stored: the wheel's own METADATA, "
                f"to check it against, cannot be read ({exc})",
            )
        if own != probed.raw:
            return MetadataChoice(
                None,
                note="its unadvertised .metadata is not stored: it differs from the wheel's "
                "own METADATA",
            )
        return _checked(probed.raw, project, version, "its .metadata")

    async def dependencies(
        self, file: DistributionFile, project: str, version: str, *, is_wheel: bool
    ) -> MetadataChoice:
        """The metadata a resolver reads a file's dependencies from, or why there is none.

        Advertised metadata (checked as for storing); else, for a wheel, the
        wheel's own METADATA; an sdist without advertised metadata has none.
        """
        if file.core_metadata is not None:
            try:
                raw = await self._advertised(file, None, None)
            except DigestMismatchError as exc:
                return MetadataChoice(
                    None, note=f"its advertised core metadata fails its hash: {exc}"
                )
            except IndexError_ as exc:
                if is_fatal(exc):
                    raise
                return MetadataChoice(None, note=f"its core metadata could not be read: {exc}")
            choice = _checked(raw, project, version, f"the core metadata of {file.filename}")
            if choice.metadata is not None or not is_wheel:
                return choice
        if not is_wheel:
            return MetadataChoice(
                None,
                note=f"{file.filename} is an sdist without static core metadata "
                "(its dependencies are known only by building it)",
            )
        try:
            raw = await self._wheel_metadata(file)
        except IndexError_ as exc:
            if is_fatal(exc):
                raise
            return MetadataChoice(
                None, note=f"the METADATA of {file.filename} cannot be read: {exc}"
            )
        return _checked(raw, project, version, f"the METADATA of {file.filename}")

    async def _advertised(
        self, file: DistributionFile, wheel: bytes | None, scope: MetadataScope | None
    ) -> bytes:
        """The advertised bytes: a wheel's own METADATA when it has the hash, else fetched."""
        ref = file.core_metadata
        assert ref is not None
        sha256 = ref.sha256
        if sha256 is not None and wheel is not None and _sha256(wheel) == sha256:
            return wheel
        if sha256 is not None and scope is not None:
            promised = scope.promised(sha256)
            if promised is not None:
                kept = await asyncio.shield(promised)
                if kept is not None and _sha256(kept) == sha256:
                    return kept
            return await scope.fetch_once(sha256, lambda: self._fetch_advertised(file))
        return await self._fetch_advertised(file)

    async def _fetch_advertised(self, file: DistributionFile) -> bytes:
        ref = file.core_metadata
        assert ref is not None
        key = metadata_key(ref.sha256) if ref.sha256 else None
        kept = self._kept(key)
        if kept is not None:
            try:
                verify_metadata(kept, ref, f"{file.filename}.metadata")
            except DigestMismatchError:
                log.debug("%s: kept core metadata fails its hash; fetched again", file.filename)
            else:
                return kept
        found = await with_retries(
            self.retry,
            f"{file.filename}: core metadata",
            lambda: self.index.get_core_metadata(file),
        )
        if found is None:  # pragma: no cover - advertised metadata is fetched or raises
            raise IndexError_(f"the index gave no core metadata for {file.filename}")
        self._keep(key, found.raw)
        return found.raw

    async def _wheel_metadata(self, file: DistributionFile) -> bytes:
        key = wheel_metadata_key(file.sha256) if file.sha256 else None
        kept = self._kept(key)
        if kept is not None:
            return kept
        raw = await with_retries(
            self.retry,
            f"{file.filename}: METADATA",
            lambda: self.index.get_wheel_metadata(file),
        )
        self._keep(key, raw)
        return raw

    def _kept(self, key: str | None) -> bytes | None:
        return self.cache.stored_metadata(key) if self.cache is not None and key else None

    def _keep(self, key: str | None, raw: bytes) -> None:
        if self.cache is not None and key:
            self.cache.record_metadata(key, raw)


def _checked(raw: bytes, project: str, version: str, what: str) -> MetadataChoice:
    """``raw`` if it names the file's release, else none with the reason."""
    metadata = parse_core_metadata(raw)
    if names_release(metadata, project, version):
        return MetadataChoice(raw, metadata)
    named = f"{metadata.name or '(no name)'} {metadata.version or '(no version)'}"
    return MetadataChoice(None, note=f"{what} names {named}, not {project} {version}; not used")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
