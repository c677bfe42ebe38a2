"""Trusted Publishers: who a PEP 740 attestation says built a file, and who is trusted to (pure).

A publisher is written the way ``--trusted-publisher`` takes it, so what a
report prints can be pasted back as a pin::

    github:OWNER/REPO[@WORKFLOW]        github:pypa/sampleproject@release.yml
    gitlab:NAMESPACE/PROJECT[@CI_FILE]  gitlab:group/sub/project@.gitlab-ci.yml
    google:SERVICE_ACCOUNT_EMAIL        google:builder@my-project.iam.gserviceaccount.com
    circleci:PROJECT_ID[@PIPELINE_ID]   circleci:<project uuid>@<pipeline definition uuid>

A pin without the part after ``@`` admits every workflow of that
repository (or every pipeline of that project). Repository names compare
without regard to case, as GitHub and GitLab treat them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from packaging.utils import NormalizedName, canonicalize_name

from oci_pypi_sync.errors import UsageError

PublisherKind = Literal["github", "gitlab", "google", "circleci"]
KINDS: tuple[PublisherKind, ...] = ("github", "gitlab", "google", "circleci")
PIN_EXAMPLE = "sampleproject=github:pypa/sampleproject@release.yml"


@dataclass(frozen=True, slots=True)
class Publisher:
    """A Trusted Publisher identity.

    ``name`` is the repository (``owner/repo``) for GitHub and GitLab, the
    service account's email for Google, the project id for CircleCI.
    ``workflow`` is the workflow file (GitHub), the CI file path (GitLab)
    or the pipeline definition id (CircleCI); ``None`` in a pin means any.
    """

    kind: PublisherKind
    name: str
    workflow: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" + (f"@{self.workflow}" if self.workflow else "")

    def admits(self, publisher: Publisher) -> bool:
        """Whether ``publisher`` (from a verified attestation) is one this pin trusts."""
        if self.kind != publisher.kind:
            return False
        if self.kind in ("github", "gitlab"):
            same_name = self.name.casefold() == publisher.name.casefold()
        else:
            same_name = self.name == publisher.name
        return same_name and (self.workflow is None or self.workflow == publisher.workflow)


def parse_publisher(text: str) -> Publisher:
    """Read ``KIND:IDENTITY[@WORKFLOW]``; raises :class:`UsageError` naming what is wrong."""
    kind_text, sep, rest = text.strip().partition(":")
    kind = kind_text.strip().lower()
    if not sep or kind not in KINDS:
        raise UsageError(
            f"publisher {text!r}: expected KIND:IDENTITY with KIND one of "
            f"{', '.join(KINDS)} (e.g. github:pypa/sampleproject)"
        )
    if kind == "google":
        name, workflow = rest.strip(), None
        if "@" not in name or name.startswith("@") or name.endswith("@"):
            raise UsageError(f"publisher {text!r}: google takes a service account's email")
        return Publisher("google", name)
    name, _, after = rest.partition("@")
    name = name.strip().strip("/")
    workflow = after.strip() or None
    if kind == "github" and name.count("/") != 1:
        raise UsageError(f"publisher {text!r}: github takes OWNER/REPO[@WORKFLOW]")
    if kind == "gitlab" and "/" not in name:
        raise UsageError(f"publisher {text!r}: gitlab takes NAMESPACE/PROJECT[@CI_FILE]")
    if not name or any(part == "" for part in name.split("/")):
        raise UsageError(f"publisher {text!r}: the identity after {kind}: is empty")
    return Publisher(cast(PublisherKind, kind), name, workflow)


def parse_pins(values: Iterable[str]) -> dict[NormalizedName, tuple[Publisher, ...]]:
    """``PROJECT=PUBLISHER`` values by normalized project; a project may trust several."""
    pins: dict[NormalizedName, tuple[Publisher, ...]] = {}
    for value in values:
        project, sep, spec = value.partition("=")
        if not sep or not project.strip() or not spec.strip():
            raise UsageError(
                f"trusted publisher {value!r}: expected PROJECT=PUBLISHER, e.g. {PIN_EXAMPLE}"
            )
        name = canonicalize_name(project.strip())
        publisher = parse_publisher(spec)
        if publisher not in pins.get(name, ()):
            pins[name] = (*pins.get(name, ()), publisher)
    return pins


def untrusted(publishers: Iterable[Publisher], pins: Sequence[Publisher]) -> tuple[Publisher, ...]:
    """The publishers no pin admits (all of them are fine when there is no pin)."""
    if not pins:
        return ()
    return tuple(p for p in publishers if not any(pin.admits(p) for pin in pins))


@dataclass(frozen=True, slots=True)
class PublisherChange:
    """Consecutive versions of a project whose files name different publishers."""

    project: str
    before_version: str
    before: tuple[str, ...]
    after_version: str
    after: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"{self.project}: the publisher changed from {', '.join(self.before)} "
            f"({self.before_version}) to {', '.join(self.after)} ({self.after_version})"
        )


def publisher_changes(
    project: str, versions: Sequence[tuple[str, Iterable[str]]]
) -> tuple[PublisherChange, ...]:
    """Where the publishers change from one version to the next (``versions`` in order).

    Versions without provenance are passed over: a version published
    without attestations is not a change of publisher.
    """
    changes = []
    previous: tuple[str, tuple[str, ...]] | None = None
    for version, publishers in versions:
        current = tuple(sorted(set(publishers)))
        if not current:
            continue
        if previous is not None and previous[1] != current:
            changes.append(PublisherChange(project, previous[0], previous[1], version, current))
        previous = (version, current)
    return tuple(changes)
