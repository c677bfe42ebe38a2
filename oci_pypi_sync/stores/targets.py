"""Where a mirror lives: parsing ``--to``/``--from`` values into target records.

``oci:PATH`` is an OCI image layout directory; ``[http[s]://]HOST[:PORT]/PREFIX``
is a registry with a repository prefix. Pure parsing here; opening a store
for a target is :func:`open_store`, the one place that knows both kinds.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.redact import MASK
from oci_pypi_sync.stores.refusals import docker_hub_prefix_problem

if TYPE_CHECKING:
    from oci_pypi_sync.stores.credentials import CredentialStore
    from oci_pypi_sync.stores.protocols import Store
    from oci_pypi_sync.stores.tls import TlsOptions

DEFAULT_LAYOUT = Path("oci-pypi-mirror")

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"(?:\[[0-9a-fA-F:.]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?)(?::\d{1,5})?")

Resolver = Callable[[str], Iterable[str]]


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


def host_name(host: str) -> str:
    """The name or address of ``HOST[:PORT]`` (an IPv6 literal without its brackets)."""
    name = host.strip()
    if name.startswith("["):
        return name[1 : name.find("]")] if "]" in name else name[1:]
    if name.count(":") == 1:
        return name.split(":", 1)[0]
    return name


def resolve_addresses(name: str) -> list[str]:
    """Every address ``name`` resolves to (none when it does not resolve)."""
    try:
        found = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [str(entry[4][0]) for entry in found]


def is_loopback_host(host: str, *, resolve: Resolver = resolve_addresses) -> bool:
    """Whether ``host`` (with or without a port) is this machine, decided on its addresses.

    An IP literal is loopback when it is in ``127.0.0.0/8`` or ``::1``; a name
    when it resolves and every address it resolves to is. What a name looks
    like decides nothing: ``127.mirror.example`` is a name like any other.
    Loopback is where plain HTTP is the default, so a wrong "yes" would
    send credentials in clear text across a network.
    """
    name = host_name(host)
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    addresses = [address.split("%", 1)[0] for address in resolve(name)]
    try:
        return bool(addresses) and all(
            ipaddress.ip_address(address).is_loopback for address in addresses
        )
    except ValueError:
        return False


def refuse_credentials(value: str, what: str = "target") -> None:
    """A registry given with a user and password in it is refused, without showing them.

    No ``@`` belongs in a registry target (a repository name has none), so
    everything between the scheme and the last one is taken for credentials
    and hidden.
    """
    scheme, sep, rest = value.partition("://")
    if not sep:
        scheme, rest = "", value
    if "@" not in rest:
        return
    shown = (f"{scheme}://" if sep else "") + f"{MASK}@{rest.rsplit('@', 1)[1]}"
    raise UsageError(
        f"{what} {shown!r} has credentials in it, which are not read from a target "
        "(they would show in process lists, logs and the state file); give them with "
        "'oci-pypi login HOST', --username with --password-stdin, or the docker config"
    )


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
    refuse_credentials(value)
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
