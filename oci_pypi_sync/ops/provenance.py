"""``verify --provenance``: every stored attestation verified again, offline, against the blob.

For each file of each version index: the provenance artifact its entries
record is read (its subject must be the file's manifest), and the
provenance object it holds is verified as a sync verifies it, against the
digest of the file's layer (the bytes the mirror serves) and its filename,
with the trusted root and the pins given. The Sigstore bundles listed in
the file's referrers fallback tag must each be one of the provenance's
attestations. Nothing is fetched from an index: only the mirror is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from packaging.utils import NormalizedName

from oci_pypi_sync.errors import (
    AuthenticationError,
    OciPypiError,
    ProvenanceError,
    RegistryUnreachableError,
)
from oci_pypi_sync.format import (
    A_PROVENANCE,
    A_PROVENANCE_SHA256,
    OCI_INDEX,
    OCI_VERSION,
    PROVENANCE_ARTIFACT,
    SIGSTORE_BUNDLE,
    TITLE,
    Descriptor,
    entry_filename,
    is_release_tag,
    parse_referrer,
    parse_referrers_index,
    parse_release_index,
    referrers_tag,
    tag_version,
)
from oci_pypi_sync.plan.select import version_sort_key
from oci_pypi_sync.provenance.publishers import Publisher, PublisherChange, publisher_changes

if TYPE_CHECKING:
    from oci_pypi_sync.provenance.verify import ProvenanceVerifier, VerifiedProvenance
    from oci_pypi_sync.stores.protocols import Store

log = logging.getLogger(__name__)

FATAL_ERRORS = (RegistryUnreachableError, AuthenticationError)
#: The most a stored provenance object or bundle may hold (as when it is fetched).
MAX_BLOB_BYTES = 4 << 20

ProvenanceFault = Literal["failed", "missing"]


@dataclass(frozen=True, slots=True)
class ProvenanceFinding:
    """A file whose stored provenance fails (``failed``), or that has none (``missing``)."""

    kind: ProvenanceFault
    repository: str
    version: str
    filename: str
    detail: str


@dataclass(frozen=True, slots=True)
class ProvenanceReport:
    """What ``verify --provenance`` found.

    ``failures`` are files whose provenance does not verify (or, for a
    pinned project, that have none); ``without`` are files the mirror holds
    no provenance for; ``publishers`` are the verified publishers per
    project.
    """

    target: str
    files_checked: int = 0
    files_verified: int = 0
    attestations_verified: int = 0
    bundles_checked: int = 0
    failures: tuple[ProvenanceFinding, ...] = ()
    without: tuple[ProvenanceFinding, ...] = ()
    publishers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    changes: tuple[PublisherChange, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class _FileCheck:
    version: str
    filename: str
    publishers: tuple[str, ...] = ()
    attestations: int = 0
    bundles: int = 0
    finding: ProvenanceFinding | None = None


class _Auditor:
    def __init__(
        self,
        store: Store,
        verifier: ProvenanceVerifier,
        pins: Mapping[NormalizedName, tuple[Publisher, ...]],
    ) -> None:
        self.store = store
        self.verifier = verifier
        self.pins = pins

    async def releases(self, repo: str) -> list[tuple[str, tuple[Descriptor, ...]]]:
        """The project's versions and their entries (version tags only)."""
        found = []
        for tag in await self.store.list_tags(repo):
            if not is_release_tag(tag):
                continue
            stored = await self.store.get_manifest(repo, tag)
            if stored is None or stored.media_type != OCI_INDEX:
                continue
            try:
                data, entries = parse_release_index(stored.body)
            except (ValueError, KeyError, TypeError):
                continue
            version = (data.get("annotations") or {}).get(OCI_VERSION) or tag_version(tag) or tag
            found.append((str(version), entries))
        return found

    async def check_file(self, repo: str, version: str, entry: Descriptor) -> _FileCheck:
        title = entry_filename(entry) or entry.digest
        pins = self.pins.get(NormalizedName(repo), ())

        def finding(kind: ProvenanceFault, detail: str) -> _FileCheck:
            return _FileCheck(
                version, title, finding=ProvenanceFinding(kind, repo, version, title, detail)
            )

        referrer_digest = entry.annotations.get(A_PROVENANCE)
        if referrer_digest is None:
            if pins:
                pinned = ", ".join(str(p) for p in pins)
                return finding("failed", f"no provenance, and {repo} is pinned to {pinned}")
            return finding("missing", "no provenance in the mirror")
        try:
            file_manifest = await self.store.get_manifest(repo, entry.digest)
            if file_manifest is None:
                return finding("failed", f"the file's manifest {entry.digest} is missing")
            layer = Descriptor.from_json(json.loads(file_manifest.body)["layers"][0])
            filename = layer.annotations.get(TITLE, title)
            sha256 = layer.digest.removeprefix("sha256:")
            stored = await self.store.get_manifest(repo, referrer_digest)
            if stored is None:
                return finding("failed", f"the provenance artifact {referrer_digest} is missing")
            referrer = parse_referrer(stored.body)
            if referrer.artifact_type != PROVENANCE_ARTIFACT:
                return finding("failed", f"{referrer_digest} is not a provenance artifact")
            if referrer.subject.digest != entry.digest:
                return finding(
                    "failed", f"the provenance artifact is about {referrer.subject.digest}"
                )
            recorded = entry.annotations.get(A_PROVENANCE_SHA256)
            if recorded is not None and referrer.layer.digest != f"sha256:{recorded}":
                return finding("failed", "the index entry records another provenance object")
            provenance = await read_blob(self.store, repo, referrer.layer)
            verified = await asyncio.to_thread(
                self.verifier.verify, provenance, filename, sha256, trusted=pins
            )
            bundles = await self.check_bundles(repo, entry.digest, verified)
        except FATAL_ERRORS:
            raise
        except (OciPypiError, ValueError, KeyError, TypeError, IndexError) as exc:
            return finding("failed", str(exc))
        publishers = tuple(str(p) for p in verified.publishers)
        return _FileCheck(version, title, publishers, len(verified.attestations), bundles)

    async def check_bundles(self, repo: str, subject: str, verified: VerifiedProvenance) -> int:
        """Each Sigstore bundle listed for the file must be one of its verified attestations."""
        listing = await self.store.get_manifest(repo, referrers_tag(subject))
        if listing is None:
            return 0
        checked = 0
        for item in parse_referrers_index(listing.body):
            if item.get("artifactType") != SIGSTORE_BUNDLE:
                continue
            stored = await self.store.get_manifest(repo, str(item["digest"]))
            if stored is None:
                raise ProvenanceError(f"the Sigstore bundle referrer {item['digest']} is missing")
            bundle = await read_blob(self.store, repo, parse_referrer(stored.body).layer)
            if not verified.holds_bundle(bundle):
                raise ProvenanceError(
                    f"the Sigstore bundle {item['digest']} is not one of the provenance's "
                    "attestations"
                )
            checked += 1
        return checked


async def read_blob(store: Store, repo: str, layer: Descriptor) -> bytes:
    """A small blob in memory, refused past :data:`MAX_BLOB_BYTES`."""
    if layer.size > MAX_BLOB_BYTES:
        raise ProvenanceError(f"{layer.digest} is {layer.size} bytes, too large for provenance")
    data = bytearray()
    async for chunk in store.open_blob(repo, layer.digest):
        data += chunk
        if len(data) > MAX_BLOB_BYTES:
            raise ProvenanceError(f"{layer.digest} is too large for provenance")
    return bytes(data)


async def verify_provenance(
    store: Store,
    *,
    repositories: Sequence[str] | None = None,
    trusted_root: Path | None = None,
    pins: Mapping[NormalizedName, tuple[Publisher, ...]] | None = None,
    jobs: int = 8,
) -> ProvenanceReport:
    """Verify every stored provenance object of ``repositories`` (default: all projects)."""
    from oci_pypi_sync.provenance.verify import ProvenanceVerifier

    verifier = ProvenanceVerifier(trusted_root)
    verifier.load()  # once, here: a bad trusted root stops the check before any file
    auditor = _Auditor(store, verifier, pins or {})
    names = (
        sorted(set(repositories)) if repositories is not None else await store.list_repositories()
    )
    slots = asyncio.Semaphore(max(1, jobs))

    async def one(repo: str, version: str, entry: Descriptor) -> _FileCheck:
        async with slots:
            return await auditor.check_file(repo, version, entry)

    failures: list[ProvenanceFinding] = []
    without: list[ProvenanceFinding] = []
    publishers: dict[str, tuple[str, ...]] = {}
    changes: list[PublisherChange] = []
    files = verified = attestations = bundles = 0
    for repo in names:
        if "." in repo:  # a catalog or another artifact, not a project
            continue
        releases = await auditor.releases(repo)
        unique = [
            (version, entry)
            for version, entries in releases
            for entry in {e.digest: e for e in entries}.values()
        ]
        checks = await asyncio.gather(*(one(repo, v, e) for v, e in unique))
        by_version: dict[str, set[str]] = {}
        for check in checks:
            files += 1
            if check.finding is not None:
                kind = failures if check.finding.kind == "failed" else without
                kind.append(check.finding)
                continue
            verified += 1
            attestations += check.attestations
            bundles += check.bundles
            by_version.setdefault(check.version, set()).update(check.publishers)
        ordered = sorted(by_version.items(), key=lambda item: version_sort_key(item[0]))
        if ordered:
            publishers[repo] = tuple(sorted({p for _, found in ordered for p in found}))
        changes.extend(publisher_changes(repo, ordered))
    return ProvenanceReport(
        target=store.display_name,
        files_checked=files,
        files_verified=verified,
        attestations_verified=attestations,
        bundles_checked=bundles,
        failures=tuple(failures),
        without=tuple(without),
        publishers=publishers,
        changes=tuple(changes),
    )
