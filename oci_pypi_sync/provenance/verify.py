"""Offline verification of PEP 740 provenance objects, over ``pypi-attestations`` and ``sigstore``.

Every attestation of a provenance object is checked the way the index
checks it at upload: its Sigstore bundle (certificate chain to Fulcio,
signed tlog entry from Rekor, DSSE signature) against the trusted root;
the certificate's identity against the publisher its bundle names; and
the signed in-toto statement, whose single subject must be this file's
name and sha256. Then the publishers are held against the pins. No
network: the trusted root is the one the ``sigstore`` package ships (or a
newer local copy kept by an earlier online ``sigstore`` run), or the file
given with ``--trusted-root``.

This module imports the Sigstore stack (a third of a second), so callers
import it only when there is provenance to verify.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sigstore.errors
from cryptography.x509 import Certificate
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    parse_sdist_filename,
    parse_wheel_filename,
)
from pydantic import ValidationError
from pypi_attestations import (
    Attestation,
    AttestationError,
    AttestationType,
    CircleCIPublisher,
    GitHubPublisher,
    GitLabPublisher,
    GooglePublisher,
    Provenance,
)
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier, policy
from sigstore.verify.policy import VerificationPolicy

from oci_pypi_sync.errors import ProvenanceError, UsageError
from oci_pypi_sync.format.descriptors import canonical_json
from oci_pypi_sync.provenance.publishers import Publisher, untrusted

__all__ = [
    "ProvenanceVerifier",
    "VerifiedAttestation",
    "VerifiedProvenance",
    "check_statement",
]

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.com"
GOOGLE_ISSUER = "https://accounts.google.com"
CIRCLECI_ISSUER = "https://oidc.circleci.com"
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
# Fulcio certificate extensions (Fulcio's OID registry, docs/oid-info.md).
SOURCE_REPOSITORY_DIGEST = "1.3.6.1.4.1.57264.1.13"
SOURCE_REPOSITORY_REF = "1.3.6.1.4.1.57264.1.14"
BUILD_CONFIG_URI = "1.3.6.1.4.1.57264.1.18"
_PREDICATE_TYPES = frozenset(member.value for member in AttestationType)


@dataclass(frozen=True, slots=True)
class VerifiedAttestation:
    """One attestation that verified: its predicate type, and itself as a Sigstore bundle.

    ``bundle`` is the Sigstore bundle (v0.3, canonical JSON) carrying exactly
    this attestation, ``None`` when the conversion would lose part of it (an
    attestation with several transparency log entries). ``key`` identifies
    the attestation's content, to match a stored bundle against it.
    """

    predicate_type: str
    bundle: bytes | None
    key: bytes


@dataclass(frozen=True, slots=True)
class VerifiedProvenance:
    """A provenance object all of whose attestations verified for one file."""

    publishers: tuple[Publisher, ...]
    attestations: tuple[VerifiedAttestation, ...]

    def holds_bundle(self, bundle: bytes) -> bool:
        """Whether a stored Sigstore bundle is one of these attestations, unchanged."""
        try:
            attestation = Attestation.from_bundle(Bundle.from_json(bundle))
        except (AttestationError, sigstore.errors.Error, ValidationError, ValueError):
            return False
        key = _attestation_key(attestation)
        return any(verified.key == key for verified in self.attestations)


class ProvenanceVerifier:
    """Verifies provenance objects against one trusted root, with no network.

    ``trusted_root`` is a Sigstore ``trusted_root.json`` (a newer one brought
    across an air gap); without it, the production root the ``sigstore``
    package holds offline. The root is loaded once, on first use.
    """

    def __init__(self, trusted_root: Path | None = None) -> None:
        self.trusted_root = trusted_root
        self._verifier: Verifier | None = None

    def load(self) -> None:
        """Load the trusted root now (before verifying from several threads at once).

        Raises :class:`UsageError` for a ``trusted_root`` that cannot be
        read, :class:`ProvenanceError` when the default root cannot be loaded.
        """
        if self._verifier is None:
            self._verifier = load_verifier(self.trusted_root)

    def _sigstore(self) -> Verifier:
        self.load()
        assert self._verifier is not None
        return self._verifier

    def verify(
        self,
        provenance: bytes,
        filename: str,
        sha256: str,
        *,
        trusted: Sequence[Publisher] = (),
    ) -> VerifiedProvenance:
        """Verify every attestation of ``provenance`` for the file ``filename`` with ``sha256``.

        ``trusted`` are the publishers pinned for the file's project; when
        given, every publisher of the provenance must be one of them.
        Raises :class:`ProvenanceError` saying what failed.
        """
        parsed = parse_provenance(provenance, filename)
        verifier = self._sigstore()
        publishers: list[Publisher] = []
        verified: list[VerifiedAttestation] = []
        for bundle in parsed.attestation_bundles:
            publisher = publisher_of(bundle.publisher)
            if publisher not in publishers:
                publishers.append(publisher)
            if not bundle.attestations:
                raise ProvenanceError(f"the provenance names {publisher} with no attestation")
            for attestation in bundle.attestations:
                number = len(verified) + 1
                verified.append(
                    _verify_one(verifier, attestation, bundle.publisher, filename, sha256, number)
                )
        if not verified:
            raise ProvenanceError("the provenance holds no attestation")
        refused = untrusted(publishers, trusted)
        if refused:
            pins = ", ".join(str(pin) for pin in trusted)
            raise ProvenanceError(
                f"the provenance names the publisher {', '.join(str(p) for p in refused)}, "
                f"not the trusted publisher ({pins})"
            )
        return VerifiedProvenance(tuple(publishers), tuple(verified))


def load_verifier(trusted_root: Path | None) -> Verifier:
    """A Sigstore verifier over ``trusted_root``, or over the production root held offline."""
    if trusted_root is not None:
        try:
            return Verifier(trusted_root=TrustedRoot.from_file(str(trusted_root)))
        except OSError as exc:
            raise UsageError(
                f"cannot read the trusted root {trusted_root}: {exc.strerror or exc}"
            ) from exc
        except (ValueError, ValidationError, sigstore.errors.Error) as exc:
            raise UsageError(
                f"{trusted_root} is not a Sigstore trusted_root.json: {_first_line(exc)}"
            ) from exc
    # Offline, sigstore logs a warning each time that it will not update the
    # root; that is the point here, so it is kept out of the user's output.
    logging.getLogger("sigstore._internal.tuf").setLevel(logging.ERROR)
    try:
        return Verifier.production(offline=True)
    except (OSError, sigstore.errors.Error) as exc:
        raise ProvenanceError(
            "the Sigstore trusted root could not be loaded offline "
            f"({_first_line(exc)}); give one with --trusted-root FILE"
        ) from exc


def parse_provenance(provenance: bytes, filename: str) -> Provenance:
    """The provenance object, or :class:`ProvenanceError` when it is not one."""
    try:
        return Provenance.model_validate_json(provenance)
    except ValidationError as exc:
        raise ProvenanceError(
            f"the provenance of {filename} is not a PEP 740 provenance object "
            f"({_validation_summary(exc)})"
        ) from None


def publisher_of(model: Any) -> Publisher:
    """Our record of a publisher as ``pypi-attestations`` models it."""
    if isinstance(model, GitHubPublisher):
        return Publisher("github", model.repository, model.workflow)
    if isinstance(model, GitLabPublisher):
        return Publisher("gitlab", model.repository, model.workflow_filepath)
    if isinstance(model, GooglePublisher):
        return Publisher("google", model.email)
    if isinstance(model, CircleCIPublisher):
        return Publisher("circleci", model.project_id, model.pipeline_definition_id)
    raise ProvenanceError(f"unknown publisher kind {type(model).__name__}")  # pragma: no cover


def _verify_one(
    verifier: Verifier,
    attestation: Attestation,
    publisher: Any,
    filename: str,
    sha256: str,
    number: int,
) -> VerifiedAttestation:
    where = f"provenance attestation {number}"
    try:
        bundle = attestation.to_bundle()
        claims = attestation.certificate_claims
    except (AttestationError, ValueError) as exc:
        raise ProvenanceError(f"{where} is malformed: {_first_line(exc)}") from None
    try:
        payload_type, payload = verifier.verify_dsse(bundle, identity_policy(publisher, claims))
    except sigstore.errors.Error as exc:
        raise ProvenanceError(f"{where} does not verify: {_first_line(exc)}") from None
    predicate_type = check_statement(payload_type, payload, filename, sha256, where)
    try:
        lossless = Attestation.from_bundle(bundle) == attestation
    except (AttestationError, ValueError):
        lossless = False
    converted = canonical_json(json.loads(bundle.to_json())) if lossless else None
    return VerifiedAttestation(predicate_type, converted, _attestation_key(attestation))


class _WorkflowPolicy:
    """The certificate's Build Config URI names ``prefix`` at the certificate's own ref or commit.

    A Trusted Publisher knows the workflow file, not the commit or ref it
    ran on; those come from the certificate's own claims (as the index's
    check does).
    """

    def __init__(self, prefix: str, claims: Mapping[str, str]) -> None:
        self.prefix = prefix
        self.claims = claims

    def verify(self, cert: Certificate) -> None:
        suffixes = [
            self.claims[oid]
            for oid in (SOURCE_REPOSITORY_DIGEST, SOURCE_REPOSITORY_REF)
            if oid in self.claims
        ]
        for suffix in suffixes:
            try:
                policy.OIDCBuildConfigURI(f"{self.prefix}@{suffix}").verify(cert)
            except sigstore.errors.VerificationError:
                continue
            return
        actual = self.claims.get(BUILD_CONFIG_URI, "none")
        raise sigstore.errors.VerificationError(
            f"the certificate's build config {actual} is not {self.prefix}"
        )


def identity_policy(publisher: Any, claims: Mapping[str, str]) -> VerificationPolicy:
    """What the signing certificate must say for ``publisher`` (a ``pypi-attestations`` model)."""
    if isinstance(publisher, GitHubPublisher):
        repository = f"https://github.com/{publisher.repository}"
        return policy.AllOf(
            [
                policy.OIDCIssuerV2(GITHUB_ISSUER),
                policy.OIDCSourceRepositoryURI(repository),
                _WorkflowPolicy(f"{repository}/.github/workflows/{publisher.workflow}", claims),
            ]
        )
    if isinstance(publisher, GitLabPublisher):
        repository = f"https://gitlab.com/{publisher.repository}"
        return policy.AllOf(
            [
                policy.OIDCIssuerV2(GITLAB_ISSUER),
                policy.OIDCSourceRepositoryURI(repository),
                _WorkflowPolicy(f"{repository}//{publisher.workflow_filepath}", claims),
            ]
        )
    if isinstance(publisher, GooglePublisher):
        return policy.Identity(identity=publisher.email, issuer=GOOGLE_ISSUER)
    if isinstance(publisher, CircleCIPublisher):
        signer = (
            f"https://circleci.com/api/v2/projects/{publisher.project_id}/"
            f"pipeline-definitions/{publisher.pipeline_definition_id}"
        )
        checks: list[VerificationPolicy] = [
            policy.OIDCIssuerV2(CIRCLECI_ISSUER),
            policy.OIDCBuildSignerURI(signer),
        ]
        if publisher.vcs_origin is not None:
            checks.append(policy.OIDCSourceRepositoryURI(publisher.vcs_origin))
        if publisher.vcs_ref is not None:
            checks.append(policy.OIDCSourceRepositoryRef(publisher.vcs_ref))
        return policy.AllOf(checks)
    raise ProvenanceError(f"unknown publisher kind {type(publisher).__name__}")  # pragma: no cover


def check_statement(
    payload_type: str, payload: bytes, filename: str, sha256: str, where: str | None = None
) -> str:
    """The predicate type of a signed in-toto statement about exactly this file.

    Its single subject must be ``filename`` (the same project, version and
    tags, spelled as the filename spells them or not) with ``sha256``; its
    predicate type one PyPI accepts.
    """
    where = where or "the attestation"
    if payload_type != IN_TOTO_PAYLOAD:
        raise ProvenanceError(f"{where}: the payload is {payload_type}, not an in-toto statement")
    try:
        statement = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise ProvenanceError(f"{where}: the signed statement is not JSON") from None
    if not isinstance(statement, dict) or statement.get("_type") != IN_TOTO_STATEMENT:
        raise ProvenanceError(f"{where}: the signed payload is not an in-toto v1 statement")
    subjects = statement.get("subject")
    if not isinstance(subjects, list) or len(subjects) != 1 or not isinstance(subjects[0], dict):
        raise ProvenanceError(f"{where}: the statement must have exactly one subject")
    name, digest = subjects[0].get("name"), subjects[0].get("digest")
    if not isinstance(name, str) or not _same_distribution(name, filename):
        raise ProvenanceError(f"{where} is about {name!r}, not {filename}")
    signed_sha256 = digest.get("sha256") if isinstance(digest, dict) else None
    if signed_sha256 != sha256:
        raise ProvenanceError(
            f"{where} is about the sha256 {signed_sha256}, not this file's {sha256}"
        )
    predicate_type = statement.get("predicateType")
    if predicate_type not in _PREDICATE_TYPES:
        raise ProvenanceError(f"{where}: unknown predicate type {predicate_type!r}")
    return str(predicate_type)


def _same_distribution(subject: str, filename: str) -> bool:
    """Whether two filenames name the same distribution (packaging's reading of each)."""
    try:
        if subject.endswith(".whl") and filename.endswith(".whl"):
            return parse_wheel_filename(subject) == parse_wheel_filename(filename)
        if subject.endswith((".tar.gz", ".zip")) and filename.endswith((".tar.gz", ".zip")):
            same_suffix = subject.endswith(".zip") == filename.endswith(".zip")
            return same_suffix and parse_sdist_filename(subject) == parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, ValueError):
        return False
    return False


def _attestation_key(attestation: Attestation) -> bytes:
    return canonical_json(attestation.model_dump(mode="json"))


def _validation_summary(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "document"
    more = f" and {len(errors) - 1} more" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
