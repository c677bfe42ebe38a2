"""PEP 740 provenance: publisher pins (pure) and offline verification of real attestations.

The attestations are real production ones (``tests/data/provenance``);
every refusal is of a variant derived from them. Each accepted case is
also checked with ``pypi-attestations``' own ``Attestation.verify``, so
the identity rules here cannot drift from the library's.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from provenance_data import (
    Attested,
    circleci_wheel,
    flipped_signature,
    github_sdist,
    gitlab_sdist,
    google_sdist,
    grown_github_provenance,
    other_publisher,
    repointed_statement,
    sigstore_root,
)

from oci_pypi_sync.errors import ProvenanceError, UsageError
from oci_pypi_sync.provenance.publishers import (
    Publisher,
    parse_pins,
    parse_publisher,
    publisher_changes,
    untrusted,
)
from oci_pypi_sync.provenance.verify import ProvenanceVerifier, check_statement

PUBLISH = "https://docs.pypi.org/attestations/publish/v1"
SLSA = "https://slsa.dev/provenance/v1"

# --- pins (pure) --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("github:pypa/sampleproject", Publisher("github", "pypa/sampleproject")),
        (
            "GitHub:pypa/sampleproject@release.yml",
            Publisher("github", "pypa/sampleproject", "release.yml"),
        ),
        (
            "gitlab:group/sub/project@ci/release.yml",
            Publisher("gitlab", "group/sub/project", "ci/release.yml"),
        ),
        (
            "google:ci@proj.iam.gserviceaccount.com",
            Publisher("google", "ci@proj.iam.gserviceaccount.com"),
        ),
        ("circleci:1234@5678", Publisher("circleci", "1234", "5678")),
    ],
)
def test_publishers_parse_and_print_back(text: str, expected: Publisher) -> None:
    parsed = parse_publisher(text)
    assert parsed == expected
    assert parse_publisher(str(parsed)) == parsed


@pytest.mark.parametrize(
    "text",
    [
        "pypa/sampleproject",
        "bitbucket:a/b",
        "github:sampleproject",
        "github:a/b/c",
        "gitlab:project",
        "google:not-an-email",
        "github:/",
        "circleci:",
    ],
)
def test_bad_publishers_are_usage_errors_naming_them(text: str) -> None:
    with pytest.raises(UsageError, match="publisher"):
        parse_publisher(text)


def test_pins_group_by_normalized_project_and_check_their_shape() -> None:
    pins = parse_pins(
        [
            "Sample_Project=github:pypa/sampleproject",
            "sample-project=github:pypa/sampleproject@release.yml",
            "sample-project=github:pypa/sampleproject",
        ]
    )
    assert pins == {
        canonicalize_name("sample-project"): (
            Publisher("github", "pypa/sampleproject"),
            Publisher("github", "pypa/sampleproject", "release.yml"),
        )
    }
    with pytest.raises(UsageError, match="PROJECT=PUBLISHER"):
        parse_pins(["github:pypa/sampleproject"])


def test_a_pin_without_workflow_admits_every_workflow_and_names_ignore_case() -> None:
    actual = Publisher("github", "trailofbits/pypi-attestations", "release.yml")
    assert untrusted([actual], [Publisher("github", "TrailOfBits/pypi-attestations")]) == ()
    assert (
        untrusted([actual], [parse_publisher("github:trailofbits/pypi-attestations@release.yml")])
        == ()
    )
    assert untrusted(
        [actual], [parse_publisher("github:trailofbits/pypi-attestations@ci.yml")]
    ) == (actual,)
    assert untrusted([actual], [parse_publisher("gitlab:trailofbits/pypi-attestations")]) == (
        actual,
    )
    assert untrusted([actual], []) == ()


def test_publisher_changes_between_consecutive_versions_with_provenance() -> None:
    changes = publisher_changes(
        "demo",
        [
            ("1.0", ["github:a/b@release.yml"]),
            ("1.1", []),
            ("1.2", ["github:a/b@release.yml"]),
            ("2.0", ["github:c/d@publish.yml"]),
        ],
    )
    assert len(changes) == 1
    assert str(changes[0]) == (
        "demo: the publisher changed from github:a/b@release.yml (1.2) "
        "to github:c/d@publish.yml (2.0)"
    )


# --- verification of real attestations -------------------------------------------------


@pytest.fixture(scope="module")
def verifier() -> ProvenanceVerifier:
    return ProvenanceVerifier()


def library_verifies(attested: Attested) -> list[str]:
    """What ``pypi-attestations`` itself says about the provenance: predicate types."""
    from pypi_attestations import Distribution, Provenance

    provenance = Provenance.model_validate_json(attested.provenance)
    dist = Distribution(name=attested.filename, digest=attested.sha256)
    return [
        attestation.verify(bundle.publisher, dist, offline=True)[0]
        for bundle in provenance.attestation_bundles
        for attestation in bundle.attestations
    ]


@pytest.mark.parametrize(
    ("attested", "publisher"),
    [
        (github_sdist(), "github:trailofbits/pypi-attestations@release.yml"),
        (google_sdist(), "google:919436158236-compute@developer.gserviceaccount.com"),
        (gitlab_sdist(), "gitlab:facutuesca/gitlab-oidc-project@.gitlab-ci.yml"),
        (
            circleci_wheel(),
            "circleci:fdd9283f-e619-46af-8f9c-851f7d3e8b2b@8e4f8ab2-8d7c-4827-9f15-de076d6d647f",
        ),
    ],
    ids=["github", "google", "gitlab", "circleci"],
)
def test_real_provenance_verifies_offline_for_every_publisher_kind(
    verifier: ProvenanceVerifier, attested: Attested, publisher: str
) -> None:
    verified = verifier.verify(attested.provenance, attested.filename, attested.sha256)
    assert [str(p) for p in verified.publishers] == [publisher]
    assert [a.predicate_type for a in verified.attestations] == library_verifies(attested)
    assert all(a.predicate_type == PUBLISH for a in verified.attestations)


def test_each_attestation_becomes_a_lossless_sigstore_bundle(verifier: ProvenanceVerifier) -> None:
    attested = github_sdist()
    verified = verifier.verify(attested.provenance, attested.filename, attested.sha256)
    (attestation,) = verified.attestations
    assert attestation.bundle is not None
    bundle = json.loads(attestation.bundle)
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    signed = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert signed["subject"] == [{"name": attested.filename, "digest": {"sha256": attested.sha256}}]
    assert verified.holds_bundle(attestation.bundle)
    assert not verified.holds_bundle(b"{}")
    other = verifier.verify(
        google_sdist().provenance, google_sdist().filename, google_sdist().sha256
    )
    assert other.attestations[0].bundle is not None
    assert not verified.holds_bundle(other.attestations[0].bundle)


def test_grown_provenance_verifies_both_attestations(verifier: ProvenanceVerifier) -> None:
    attested = github_sdist()
    verified = verifier.verify(grown_github_provenance(), attested.filename, attested.sha256)
    assert [a.predicate_type for a in verified.attestations] == [PUBLISH, SLSA]


def test_a_flipped_signature_bit_is_refused(verifier: ProvenanceVerifier) -> None:
    attested = github_sdist()
    with pytest.raises(ProvenanceError, match=r"attestation 1 does not verify: .*signature"):
        verifier.verify(flipped_signature(attested.provenance), attested.filename, attested.sha256)


def test_a_statement_repointed_at_another_digest_is_refused(verifier: ProvenanceVerifier) -> None:
    attested = github_sdist()
    tampered = repointed_statement(attested.provenance, "0" * 64)
    with pytest.raises(ProvenanceError, match="does not verify"):
        verifier.verify(tampered, attested.filename, "0" * 64)


def test_provenance_for_another_file_or_digest_is_refused(verifier: ProvenanceVerifier) -> None:
    attested, other = github_sdist(), google_sdist()
    with pytest.raises(ProvenanceError, match="not this file's"):
        verifier.verify(attested.provenance, attested.filename, other.sha256)
    with pytest.raises(
        ProvenanceError, match=r"is about .pypi_attestations-0.0.19.tar.gz., not gcb"
    ):
        verifier.verify(attested.provenance, other.filename, attested.sha256)
    with pytest.raises(ProvenanceError, match=r"not 'pypi_attestations-0.0.20.tar.gz'|is about"):
        verifier.verify(attested.provenance, "pypi_attestations-0.0.20.tar.gz", attested.sha256)


def test_a_publisher_the_certificate_does_not_name_is_refused(verifier: ProvenanceVerifier) -> None:
    attested = github_sdist()
    edited = other_publisher(attested.provenance, "evil/repo")
    with pytest.raises(ProvenanceError, match=r"does not verify: .*evil/repo"):
        verifier.verify(edited, attested.filename, attested.sha256)


def test_a_wrong_pinned_publisher_is_refused_and_the_right_one_admitted(
    verifier: ProvenanceVerifier,
) -> None:
    attested = github_sdist()
    with pytest.raises(ProvenanceError, match=r"not the trusted publisher .*pypa/sampleproject"):
        verifier.verify(
            attested.provenance,
            attested.filename,
            attested.sha256,
            trusted=[parse_publisher("github:pypa/sampleproject")],
        )
    with pytest.raises(ProvenanceError, match="trusted publisher"):
        verifier.verify(
            attested.provenance,
            attested.filename,
            attested.sha256,
            trusted=[parse_publisher("github:trailofbits/pypi-attestations@other.yml")],
        )
    verified = verifier.verify(
        attested.provenance,
        attested.filename,
        attested.sha256,
        trusted=[parse_publisher("github:trailofbits/pypi-attestations")],
    )
    assert len(verified.attestations) == 1


def test_what_is_not_a_provenance_object_is_refused(verifier: ProvenanceVerifier) -> None:
    attested = github_sdist()
    for body in (b"not json", b"{}", b'{"version":1,"attestation_bundles":[]}'):
        with pytest.raises(ProvenanceError, match="provenance"):
            verifier.verify(body, attested.filename, attested.sha256)


def test_a_trusted_root_file_is_used_and_a_wrong_one_refuses(tmp_path: Path) -> None:
    attested = github_sdist()
    production = shutil.copy(sigstore_root("production"), tmp_path / "trusted_root.json")
    pinned = ProvenanceVerifier(Path(production))
    assert pinned.verify(attested.provenance, attested.filename, attested.sha256).publishers
    staging = ProvenanceVerifier(sigstore_root("staging"))
    with pytest.raises(ProvenanceError, match="does not verify"):
        staging.verify(attested.provenance, attested.filename, attested.sha256)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UsageError, match=r"not a Sigstore trusted_root.json"):
        ProvenanceVerifier(tmp_path / "bad.json").verify(
            attested.provenance, attested.filename, attested.sha256
        )
    with pytest.raises(UsageError, match="cannot read the trusted root"):
        ProvenanceVerifier(tmp_path / "missing.json").verify(
            attested.provenance, attested.filename, attested.sha256
        )


def test_statements_are_checked_for_type_subject_and_predicate() -> None:
    sha = "a" * 64

    def statement(**changes: object) -> bytes:
        document: dict[str, object] = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "demo-1.0.tar.gz", "digest": {"sha256": sha}}],
            "predicateType": PUBLISH,
        }
        document.update(changes)
        return json.dumps(document).encode()

    payload = "application/vnd.in-toto+json"
    assert check_statement(payload, statement(), "demo-1.0.tar.gz", sha) == PUBLISH
    # the same distribution, spelled differently
    assert check_statement(payload, statement(), "Demo-1.0.tar.gz", sha) == PUBLISH
    with pytest.raises(ProvenanceError, match="not an in-toto statement"):
        check_statement("text/plain", statement(), "demo-1.0.tar.gz", sha)
    two = [{"name": "demo-1.0.tar.gz", "digest": {"sha256": sha}}] * 2
    with pytest.raises(ProvenanceError, match="exactly one subject"):
        check_statement(payload, statement(subject=two), "demo-1.0.tar.gz", sha)
    with pytest.raises(ProvenanceError, match="unknown predicate type"):
        check_statement(payload, statement(predicateType="x"), "demo-1.0.tar.gz", sha)
    with pytest.raises(ProvenanceError, match=r"not demo-1.0.zip"):
        check_statement(payload, statement(), "demo-1.0.zip", sha)
