"""The sync's provenance step: fetch a file's PEP 740 provenance, verify it, store its referrers.

Per file, before any of its bytes are written: fetch the provenance the
page advertises and verify it offline against the file's name and sha256
and the project's pinned publishers (:mod:`oci_pypi_sync.provenance`). A
file whose provenance fails is not mirrored; under ``require`` (or a pin)
neither is a file without provenance. Once the file's manifest is stored,
its provenance becomes referrers of that manifest (the provenance artifact
and one Sigstore bundle per attestation) and its index entries record the
provenance artifact. Provenance can grow upstream, so it is fetched again
on every sync of the file; when it is unchanged the referrer's digest is
the one the entry records and nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from oci_pypi_sync.engine.referrers import attach_referrers
from oci_pypi_sync.engine.results import FileProvenance
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.errors import ProvenanceError
from oci_pypi_sync.format import (
    A_PROVENANCE,
    Descriptor,
    Referrer,
    bundle_referrer,
    provenance_annotations,
    provenance_referrer,
)
from oci_pypi_sync.provenance.policy import ProvenanceOptions

if TYPE_CHECKING:
    from oci_pypi_sync.engine.writer import Writer
    from oci_pypi_sync.index.client import IndexClient
    from oci_pypi_sync.index.records import DistributionFile
    from oci_pypi_sync.provenance.verify import ProvenanceVerifier, VerifiedProvenance

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckedProvenance:
    """A file's provenance before the file is written: its bytes and what verified."""

    provenance: bytes
    verified: VerifiedProvenance


class ProvenanceStep:
    """Fetches, verifies and stores provenance for one sync run."""

    def __init__(
        self,
        index: IndexClient,
        writer: Writer,
        options: ProvenanceOptions,
        retry: RetryPolicy,
        *,
        recheck: bool = False,
    ) -> None:
        self.index = index
        self.writer = writer
        self.options = options
        self._retry = retry
        self._recheck = recheck
        self._verifier: ProvenanceVerifier | None = None

    @property
    def active(self) -> bool:
        return self.options.policy != "ignore"

    def _sigstore(self) -> ProvenanceVerifier:
        """The verifier, its trusted root loaded here once (verification runs in threads)."""
        if self._verifier is None:
            from oci_pypi_sync.provenance.verify import ProvenanceVerifier

            verifier = ProvenanceVerifier(self.options.trusted_root)
            verifier.load()
            self._verifier = verifier
        return self._verifier

    def prepare(self) -> None:
        """Load a ``--trusted-root`` before the run starts, so a bad file stops it at once."""
        if self.active and self.options.trusted_root is not None:
            self._sigstore()

    async def check(self, project: str, file: DistributionFile) -> CheckedProvenance | None:
        """The file's verified provenance; ``None`` when it has none and may go without.

        Raises :class:`ProvenanceError` when the file must not be mirrored:
        its provenance fails, or it has none and the policy or a pin needs it.
        """
        if not self.active:
            return None
        pins = self.options.pins(project)
        provenance = await with_retries(
            self._retry,
            f"{project}: {file.filename}: provenance",
            lambda: self.index.get_provenance(file),
        )
        if provenance is None:
            if pins:
                raise ProvenanceError(
                    f"no provenance, and {project} is pinned to the trusted publisher "
                    f"{', '.join(str(p) for p in pins)}"
                )
            if self.options.policy == "require":
                raise ProvenanceError(
                    "the index serves no provenance for it (--provenance=require)"
                )
            return None
        sha256 = file.sha256 or ""
        verifier = self._sigstore()
        verified = await asyncio.to_thread(
            verifier.verify, provenance, file.filename, sha256, trusted=pins
        )
        return CheckedProvenance(provenance, verified)

    async def _stored(self, repo: str, referrer: Referrer) -> bool:
        digest = referrer.manifest.descriptor.digest
        return await with_retries(
            self._retry,
            f"{repo}: {digest}: check",
            lambda: self.writer.store.has_manifest(repo, digest),
        )

    async def store_referrers(
        self,
        repo: str,
        filename: str,
        subject: Descriptor,
        checked: CheckedProvenance,
        entries: Sequence[Descriptor],
    ) -> tuple[tuple[Descriptor, ...], FileProvenance]:
        """Write the referrers of the file's manifest unless stored already; the new entries."""
        referrer = provenance_referrer(subject, filename, checked.provenance)
        notes = provenance_annotations(referrer)
        publishers = tuple(str(p) for p in checked.verified.publishers)
        count = len(checked.verified.attestations)
        recorded = {e.annotations.get(A_PROVENANCE) for e in entries}
        if recorded == {notes[A_PROVENANCE]} and not (
            # --recheck also writes back referrers found missing (what verify reports)
            self._recheck and not await self._stored(repo, referrer)
        ):
            return tuple(entries), FileProvenance("unchanged", publishers, count)
        bundles: list[Referrer] = [
            bundle_referrer(subject, filename, attestation.bundle, attestation.predicate_type)
            for attestation in checked.verified.attestations
            if attestation.bundle is not None
        ]
        superseded = [d for d in recorded if d and d != notes[A_PROVENANCE]]
        await with_retries(
            self._retry,
            f"{repo}: {filename}: provenance referrers",
            lambda: attach_referrers(
                self.writer, repo, subject.digest, [referrer, *bundles], replaces=superseded
            ),
        )
        log.info("%s: provenance stored (%s)", filename, ", ".join(publishers))
        annotated = tuple(
            replace(entry, annotations={**entry.annotations, **notes}) for entry in entries
        )
        return annotated, FileProvenance("stored", publishers, count)
