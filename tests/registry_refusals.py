"""The answers hosted registries give to a push they refuse, as documented, for a fake on loopback.

A real registry here cannot be made to answer these: each is replayed by a
:class:`~fault_proxy.FaultProxy` in front of the real Distribution registry,
on the requests the hosted registry would refuse. Bodies follow the
registries' own error envelopes; ``docs/registries.md`` cites the sources.
"""

from __future__ import annotations

import json

from fault_proxy import Fault, Rule

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
ECR_ACCOUNT = "123456789012"
# Quay's built-in allow-list of OCI config types (config.py, ALLOWED_OCI_ARTIFACT_TYPES), < 3.12
QUAY_CONFIG_TYPES = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.cncf.helm.config.v1+json",
    "application/vnd.oci.source.image.config.v1+json",
    "application/vnd.unknown.config.v1+json",
]
ALWAYS = 1_000_000


def _errors(code: str, message: str, detail: object = None) -> bytes:
    error: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return json.dumps({"errors": [error]}).encode()


def ecr_missing_repository(repository: str) -> Rule:
    """ECR without create-on-push: every upload into a repository not created beforehand."""
    body = _errors(
        "NAME_UNKNOWN",
        f"The repository with name '{repository}' does not exist in the registry "
        f"with id '{ECR_ACCOUNT}'",
    )
    return Rule(Fault.answer(404, body), "POST", f"/v2/{repository}/blobs/uploads/", times=ALWAYS)


def harbor_missing_project(repository: str, realm: str) -> Rule:
    """Harbor 2: a push into a project that does not exist; the token it grants lacks push."""
    message = f"unauthorized to access repository: {repository}, action: push"
    body = _errors("UNAUTHORIZED", f"{message}: {message}")
    challenge = (
        f'Bearer realm="{realm}",service="harbor-registry",'
        f'scope="repository:{repository}:pull,push",error="insufficient_scope"'
    )
    return Rule(
        Fault.answer(401, body, (("WWW-Authenticate", challenge),)),
        "POST",
        f"/v2/{repository}/blobs/uploads/",
        times=ALWAYS,
    )


def denied(repository: str) -> Rule:
    """Docker Hub's answer to a push it will not take (e.g. three path components)."""
    body = _errors("DENIED", "requested access to the resource is denied")
    return Rule(Fault.answer(403, body), "POST", f"/v2/{repository}/blobs/uploads/", times=ALWAYS)


def quay_artifact_type_refused(repository: str) -> Rule:
    """Quay before 3.12: a manifest whose config type is not in ALLOWED_OCI_ARTIFACT_TYPES."""
    reason = (
        "failed to parse manifest: manifest data does not match schema: "
        f"'{EMPTY_CONFIG}' is not one of {QUAY_CONFIG_TYPES!r}\n\n"
        "Failed validating 'enum' in schema['properties']['config']['properties']['mediaType']"
    )
    body = _errors("MANIFEST_INVALID", "manifest invalid", {"message": reason})
    return Rule(Fault.answer(400, body), "PUT", f"/v2/{repository}/manifests/", times=ALWAYS)
