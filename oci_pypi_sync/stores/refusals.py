"""What a registry's refusal of a push means, and what to do about it (pure).

Registries answer the same few error codes for conditions that only their
operator can change, and the bare codes do not say what to do: ECR and
Artifact Registry answer ``NAME_UNKNOWN`` when the repository was not
created beforehand; Harbor answers ``UNAUTHORIZED`` when the project (the
first path component) does not exist; Docker Hub answers ``DENIED`` for a
repository of more than two path components; Quay before 3.12 answers
``MANIFEST_INVALID`` for an artifact type outside its allow-list.
:func:`push_refusal` turns such an answer into one sentence naming the
thing to create or change, and the error class that stops the run.
``docs/registries.md`` cites each registry's documentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from oci_pypi_sync.errors import RegistryError, RepositoryMissingError, TargetRefusedError

DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_ECR_HOST = re.compile(r"[0-9]{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?")
_GAR_HOST = re.compile(r"[a-z0-9-]+-docker\.pkg\.dev")
_HARBOR_PUSH = re.compile(r"unauthorized to access repository: .*action: push")
_MEDIA_TYPE_REFUSED = re.compile(
    r"does not match schema|is not one of|media ?type|unknown blob type|not supported", re.I
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a registry answered to a push: status, first error code, message and detail."""

    status: int
    code: str | None
    message: str | None = None
    detail: str | None = None

    @property
    def text(self) -> str:
        return " ".join(part for part in (self.message, self.detail) if part)


@dataclass(frozen=True, slots=True)
class Advice:
    """The sentence to add to the error, and the error to raise (``None``: keep the class)."""

    hint: str
    error: type[RegistryError] | None = None


def push_refusal(host: str, repository: str, kind: str, refusal: Refusal) -> Advice | None:
    """Advice for a refused push of ``kind`` (``manifest``, ``upload of blob``) to ``repository``.

    ``None`` when the answer is not one of the registry conditions known here.
    """
    code = refusal.code or ""
    if code == "NAME_UNKNOWN":
        return Advice(_missing_repository(host, repository), RepositoryMissingError)
    if code == "NOT_FOUND" and "project" in refusal.text.lower():
        return Advice(_harbor_project(repository), RepositoryMissingError)
    if refusal.status in (401, 403) and _HARBOR_PUSH.search(refusal.text):
        return Advice(_harbor_project(repository) + ", and give the account push rights in it")
    if code == "DENIED":
        if host in DOCKER_HUB_HOSTS and repository.count("/") > 1:
            return Advice(_docker_hub_shape(repository))
        return Advice(
            f"the account may not push to {repository}, or the registry does not allow "
            "this repository name: check the account's rights and the target's prefix"
        )
    if (
        code == "MANIFEST_INVALID"
        and kind == "manifest"
        and _MEDIA_TYPE_REFUSED.search(refusal.text)
    ):
        return Advice(
            "the registry does not accept this artifact's media types; on Quay before 3.12 "
            "set FEATURE_GENERAL_OCI_SUPPORT: true and allow the config type "
            "application/vnd.oci.empty.v1+json with the layer types of docs/format.md in "
            "ALLOWED_OCI_ARTIFACT_TYPES (docs/registries.md), or upgrade",
            TargetRefusedError,
        )
    return None


def _missing_repository(host: str, repository: str) -> str:
    if _ECR_HOST.fullmatch(host):
        return (
            f"ECR has no repository {repository} and creates none on push without a "
            f"repository creation template: create it (aws ecr create-repository "
            f"--repository-name {repository}) or add a template with create-on-push for the "
            "target's prefix, then run again"
        )
    if _GAR_HOST.fullmatch(host):
        parts = repository.split("/")
        name = parts[1] if len(parts) > 2 else repository
        return (
            f"Artifact Registry pushes only into an existing repository: create {name!r} "
            "(gcloud artifacts repositories create --repository-format=docker), "
            "the target being HOST/PROJECT/REPOSITORY, then run again"
        )
    return (
        f"the repository {repository} does not exist and {host} does not create "
        "repositories on push: create it (or enable create-on-push), then run again"
    )


def _harbor_project(repository: str) -> str:
    project = repository.split("/", 1)[0]
    return (
        f"Harbor pushes only into an existing project: create the project {project!r} "
        "(the target's first path component) or correct the target"
    )


def _docker_hub_shape(repository: str) -> str:
    return (
        f"Docker Hub repositories are NAMESPACE/NAME, and {repository} has more path "
        "components: give the target as HOST/NAMESPACE so each project becomes NAMESPACE/PROJECT"
    )


def docker_hub_prefix_problem(host: str, prefix: str) -> str | None:
    """Why a Docker Hub target's prefix cannot work (it must be one namespace), or ``None``."""
    if host not in DOCKER_HUB_HOSTS:
        return None
    components = prefix.split("/") if prefix else []
    if len(components) == 1:
        return None
    return (
        "Docker Hub repositories have two path components, NAMESPACE/NAME: give the target "
        f"as {host}/NAMESPACE (your user or organisation), so each project becomes "
        "NAMESPACE/PROJECT"
    )
