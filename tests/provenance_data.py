"""The real PEP 740 test data (``tests/data/provenance``) and variants derived from it.

Every file is checked against the sha256 its README records before use.
Tampered variants are made here from the real objects, never by hand: a
flipped signature byte, a statement re-pointed at another digest, an
edited publisher. The GitLab provenance object is assembled from the real
GitLab attestation and the publisher it was signed for.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data" / "provenance"

SHA256 = {
    "pypi_attestations-0.0.19.tar.gz": (
        "9bb1add04b1b4e182be6b0b80931593f7a291eb49d69b4fd728a5d4cbcdc4bd3"
    ),
    "pypi_attestations-0.0.19.tar.gz.provenance": (
        "2cfa62b3d64e20d0ea4921a19f4d658d80bda0ee1eb040dd97d82711ea69dde4"
    ),
    "pypi_attestations-0.0.19.tar.gz.slsa.attestation": (
        "70258bb8e63a1f81cc5e5e58ddc3f26f5c314634c0a3c760c16d8872dc36f538"
    ),
    "gcb_attestation_test-0.0.0.tar.gz": (
        "461317362419124b6012e855423a9078d6de8aed3e74fa78cc74d669b23dc6cf"
    ),
    "gcb_attestation_test-0.0.0.tar.gz.provenance": (
        "3f32689422c2aa9f3b36b4159cfd1e7fe868d24b97eed5266eff7e278bc9951f"
    ),
    "gitlab_oidc_project-0.0.3.tar.gz": (
        "c1ca9b0d85df1606451098233018534497bf584362e10e4a8c21dfaea92c02a8"
    ),
    "gitlab_oidc_project-0.0.3.tar.gz.publish.attestation": (
        "b790801779c2654a7138e0212b701582ade5785bc8299bbb29d2580e4586ffd2"
    ),
    "circleci_sign_publish_example-0.0.1.dev137-py3-none-any.whl": (
        "8cb34da1e27336f11a2c43f3f9c7433bd76f24f470c904724f06ad7f131d9e9f"
    ),
    "circleci_sign_publish_example-0.0.1.dev137-py3-none-any.whl.provenance": (
        "50605e24166a2c503a09846f42793f56d51d89afc166252d6f4295a4164c04e0"
    ),
}

GITLAB_PUBLISHER = {
    "kind": "GitLab",
    "repository": "facutuesca/gitlab-oidc-project",
    "workflow_filepath": ".gitlab-ci.yml",
    "environment": None,
}


@cache
def read(name: str) -> bytes:
    """A data file, after checking its sha256 against the README's."""
    data = (DATA / name).read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    assert actual == SHA256[name], f"{name} has sha256 {actual}, not the recorded one"
    return data


@dataclass(frozen=True)
class Attested:
    """A distribution file, its project and version, and its provenance object's bytes."""

    project: str
    version: str
    filename: str
    data: bytes
    provenance: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def github_sdist() -> Attested:
    name = "pypi_attestations-0.0.19.tar.gz"
    return Attested("pypi-attestations", "0.0.19", name, read(name), read(name + ".provenance"))


def google_sdist() -> Attested:
    name = "gcb_attestation_test-0.0.0.tar.gz"
    return Attested("gcb-attestation-test", "0.0.0", name, read(name), read(name + ".provenance"))


def circleci_wheel() -> Attested:
    name = "circleci_sign_publish_example-0.0.1.dev137-py3-none-any.whl"
    return Attested(
        "circleci-sign-publish-example",
        "0.0.1.dev137",
        name,
        read(name),
        read(name + ".provenance"),
    )


def gitlab_sdist() -> Attested:
    """The GitLab sdist with a provenance object assembled from its real attestation."""
    name = "gitlab_oidc_project-0.0.3.tar.gz"
    attestation = json.loads(read(name + ".publish.attestation"))
    provenance = provenance_bytes([(GITLAB_PUBLISHER, [attestation])])
    return Attested("gitlab-oidc-project", "0.0.3", name, read(name), provenance)


def provenance_bytes(bundles: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> bytes:
    """A provenance object from publishers and their (real) attestations, as the index writes it."""
    document = {
        "version": 1,
        "attestation_bundles": [
            {"publisher": publisher, "attestations": attestations}
            for publisher, attestations in bundles
        ],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def grown_github_provenance() -> bytes:
    """The GitHub sdist's provenance with its real SLSA attestation added (provenance grows)."""
    document = json.loads(github_sdist().provenance)
    slsa = json.loads(read("pypi_attestations-0.0.19.tar.gz.slsa.attestation"))
    bundle = document["attestation_bundles"][0]
    return provenance_bytes([(bundle["publisher"], [*bundle["attestations"], slsa])])


# --- tampered variants -------------------------------------------------------------


def _edit(provenance: bytes, change: Any) -> bytes:
    document = json.loads(provenance)
    change(document)
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _first_attestation(document: dict[str, Any]) -> dict[str, Any]:
    attestation: dict[str, Any] = document["attestation_bundles"][0]["attestations"][0]
    return attestation


def flipped_signature(provenance: bytes) -> bytes:
    """The first attestation's signature with one bit changed."""

    def change(document: dict[str, Any]) -> None:
        envelope = _first_attestation(document)["envelope"]
        signature = bytearray(base64.b64decode(envelope["signature"]))
        signature[len(signature) // 2] ^= 0x01
        envelope["signature"] = base64.b64encode(bytes(signature)).decode()

    return _edit(provenance, change)


def repointed_statement(provenance: bytes, sha256: str) -> bytes:
    """The first attestation's statement re-pointed at another digest (its signature kept)."""

    def change(document: dict[str, Any]) -> None:
        envelope = _first_attestation(document)["envelope"]
        statement = json.loads(base64.b64decode(envelope["statement"]))
        statement["subject"][0]["digest"]["sha256"] = sha256
        envelope["statement"] = base64.b64encode(json.dumps(statement).encode()).decode()

    return _edit(provenance, change)


def other_publisher(provenance: bytes, repository: str) -> bytes:
    """The provenance with its GitHub publisher claiming another repository."""

    def change(document: dict[str, Any]) -> None:
        document["attestation_bundles"][0]["publisher"]["repository"] = repository

    return _edit(provenance, change)


def sigstore_root(instance: str) -> Path:
    """The ``trusted_root.json`` the installed ``sigstore`` package ships for an instance."""
    import sigstore

    hosts = {"production": "tuf-repo-cdn.sigstore.dev", "staging": "tuf-repo-cdn.sigstage.dev"}
    folder = "https%3A%2F%2F" + hosts[instance]
    return Path(sigstore.__file__).parent / "_store" / folder / "trusted_root.json"
