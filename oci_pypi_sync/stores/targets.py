"""Where a mirror lives: parsing ``--to``/``--from`` values into target records.

``oci:PATH`` is an OCI image layout directory; ``[http[s]://]HOST[:PORT]/PREFIX``
is a registry with a repository prefix. Pure parsing here; opening a store
for a target is :func:`open_store`, the one place that knows both kinds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.stores.refusals import docker_hub_prefix_problem

if TYPE_CHECKING:
    from oci_pypi_sync.stores.credentials import CredentialStore
    from oci_pypi_sync.stores.protocols import Store
    from oci_pypi_sync.stores.tls import TlsOptions

DEFAULT_LAYOUT = Path("oci-pypi-mirror")

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?)(?::\d{1,5})?")
_LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


@dataclass(frozen=True, slots=True)
class LayoutTarget:
    """An OCI image layout directory, or a layout packed as a ``.tar`` file."""

    path: Path

    def __str__(self) -> str:
        return f"oci:{self.path}"


@dataclass(frozen=True, slots=True)
class RegistryTarget:
    """A registry and the repository prefix under which each project gets a repository."""

    host: str
    prefix: str
    plain_http: bool

    def repository(self, project_repo: str) -> str:
        return f"{self.prefix}/{project_repo}" if self.prefix else project_repo

    def __str__(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host


Target = LayoutTarget | RegistryTarget


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (with or without a port) names this machine."""
    name = host
    if name.startswith("["):
        name = name[: name.index("]") + 1]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name in _LOOPBACK_HOSTS or name.startswith("127.")


def parse_target(value: str | None, *, plain_http: bool = False) -> Target:
    """Parse a ``--to``/``--from`` value; ``None`` means the default layout directory.

    Registries on loopback are spoken to over plain HTTP; any other host over
    HTTPS unless ``plain_http`` or an ``http://`` scheme says otherwise.
    """
    if value is None or value == "":
        return LayoutTarget(DEFAULT_LAYOUT)
    if value.startswith("oci:"):
        path = value[len("oci:") :]
        if not path:
            raise UsageError("target 'oci:' needs a path, as in oci:./mirror")
        return LayoutTarget(Path(path))
    scheme_plain: bool | None = None
    rest = value
    if rest.startswith("http://"):
        scheme_plain, rest = True, rest[len("http://") :]
    elif rest.startswith("https://"):
        scheme_plain, rest = False, rest[len("https://") :]
    host, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _HOST.fullmatch(host) or not (
        "." in host or ":" in host or host == "localhost" or scheme_plain is not None
    ):
        raise UsageError(
            f"target {value!r} is neither oci:PATH nor HOST[:PORT]/PREFIX "
            "(a registry host has a dot or a port, or is localhost)"
        )
    for component in prefix.split("/") if prefix else ():
        if not _COMPONENT.fullmatch(component):
            raise UsageError(
                f"target {value!r}: repository prefix component {component!r} is not a valid "
                "OCI repository name (lowercase letters, digits and . _ - separators)"
            )
    hub = docker_hub_prefix_problem(host, prefix)
    if hub is not None:
        raise UsageError(f"target {value!r}: {hub}")
    if scheme_plain is None:
        plain = plain_http or is_loopback_host(host)
    else:
        plain = scheme_plain or plain_http
    return RegistryTarget(host=host, prefix=prefix, plain_http=plain)


def open_store(
    target: Target,
    *,
    create: bool = True,
    timeout: float | None = None,
    max_connections: int = 100,
    tls: TlsOptions | None = None,
    credentials: CredentialStore | None = None,
) -> Store:
    """A store for the target: a layout on disk (or packed in a tar) or a registry client.

    ``tls`` carries ``--ca-bundle`` and the client certificate; ``credentials``
    defaults to the environment, the docker config and ``auth.json``.
    """
    if isinstance(target, LayoutTarget):
        from oci_pypi_sync.stores.tarball import is_tar_path, open_tar_store

        if is_tar_path(target.path):
            # A packed layout: read in place, or staged and packed on close.
            return open_tar_store(target.path, writable=create)
        from oci_pypi_sync.stores.layout import LayoutStore

        return LayoutStore(target.path, create=create)
    from oci_pypi_sync.stores.credentials import CredentialStore
    from oci_pypi_sync.stores.registry import RegistryStore
    from oci_pypi_sync.stores.tls import TlsOptions

    verify = True if target.plain_http else (tls or TlsOptions()).context_for(target.host)
    return RegistryStore(
        target.host,
        target.prefix,
        plain_http=target.plain_http,
        credentials=credentials or CredentialStore(),
        timeout=timeout,
        max_connections=max_connections,
        verify=verify,
    )


class PlanningStore:
    """The store of a dry run: it names the target and refuses every access.

    A dry run plans from the index alone; touching the target (or creating
    a layout, or staging a tar) would break its promise to write nothing.
    """

    def __init__(self, target: Target) -> None:
        self.display_name = str(target)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"a dry run does not access its target (tried {name})")

    async def aclose(self) -> None:
        return None


def planning_store(target: Target) -> Store:
    """A store for ``--dry-run``: see :class:`PlanningStore`."""
    return cast("Store", PlanningStore(target))
