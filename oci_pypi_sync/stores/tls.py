"""TLS for registry connections: which CAs to trust, which client certificate to present.

Trust, first match wins: ``--ca-bundle`` / ``OCI_PYPI_CA_BUNDLE`` (replaces the
default roots, like pip's ``--cert``), else the default trust
(``SSL_CERT_FILE``, ``SSL_CERT_DIR``, then certifi: :func:`default_context`). The CAs of the host's
certificate directory (``<dir>/<host>/*.crt``, the docker and podman
``certs.d`` convention) are added on top, as docker adds them to the system
roots. The client certificate is ``--client-cert``/``--client-key`` (or
``OCI_PYPI_CLIENT_CERT``/``OCI_PYPI_CLIENT_KEY``), else the directory's
``*.cert`` with the ``*.key`` of the same name.

:func:`tls_for` gives the HTTP client's ``verify`` argument; :func:`describe_tls_error`
turns a failed handshake into a message that says what to pass.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import certifi

from oci_pypi_sync import __version__
from oci_pypi_sync.errors import RegistryUnreachableError, UsageError
from oci_pypi_sync.stores.http import HttpClient, Timeouts

__all__ = [
    "ENV_CA_BUNDLE",
    "ENV_CLIENT_CERT",
    "ENV_CLIENT_KEY",
    "HostCerts",
    "TlsOptions",
    "TlsSettings",
    "default_certs_dirs",
    "default_context",
    "describe_tls_error",
    "host_certs",
    "registry_http_client",
    "resolve_tls",
    "tls_for",
]

ENV_CA_BUNDLE = "OCI_PYPI_CA_BUNDLE"
ENV_CLIENT_CERT = "OCI_PYPI_CLIENT_CERT"
ENV_CLIENT_KEY = "OCI_PYPI_CLIENT_KEY"
USER_AGENT = f"oci-pypi-sync/{__version__}"

#: OpenSSL reasons a server sends when it does not accept our client certificate (or none).
_CLIENT_CERT_REASONS = frozenset(
    {
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
    }
)
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH


def default_certs_dirs(environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Per-host certificate directories, in podman's order (the user's first, docker's last)."""
    env = os.environ if environ is None else environ
    home = env.get("HOME")
    base = Path(home) if home else Path.home()
    return (
        base / ".config" / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    )


@dataclass(frozen=True, slots=True)
class HostCerts:
    """What a ``certs.d/<host>/`` directory holds: CA files and an optional client pair."""

    directory: Path
    ca_files: tuple[Path, ...] = ()
    client_cert: Path | None = None
    client_key: Path | None = None


def host_certs(host: str, certs_dirs: Sequence[Path]) -> HostCerts | None:
    """The first ``<dir>/<host>`` directory that exists (docker names it ``host:port``).

    Every ``*.crt`` is a CA; a ``*.cert`` needs the ``*.key`` of the same
    name and the other way round, as docker requires, so a half-copied pair
    is an error rather than a silent handshake without a certificate.
    """
    for base in certs_dirs:
        directory = base / host
        if not directory.is_dir():
            continue
        files = sorted(directory.iterdir())
        cas = tuple(f for f in files if f.suffix == ".crt" and f.is_file())
        certs = [f for f in files if f.suffix == ".cert" and f.is_file()]
        keys = [f for f in files if f.suffix == ".key" and f.is_file()]
        for cert in certs:
            if cert.with_suffix(".key") not in keys:
                raise UsageError(f"client certificate {cert} has no key {cert.stem}.key beside it")
        for key in keys:
            if key.with_suffix(".cert") not in certs:
                raise UsageError(f"client key {key} has no certificate {key.stem}.cert beside it")
        if certs:
            return HostCerts(directory, cas, certs[0], certs[0].with_suffix(".key"))
        return HostCerts(directory, cas)
    return None


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The files the TLS context for a host is made of, and where they came from.

    ``ca_bundle`` ``None`` means the default roots; ``extra_cas`` are
    added to whichever roots apply.
    """

    host: str
    ca_bundle: Path | None = None
    extra_cas: tuple[Path, ...] = ()
    client_cert: Path | None = None
    client_key: Path | None = None
    certs_dir: Path | None = None

    @property
    def is_default(self) -> bool:
        return self.ca_bundle is None and not self.extra_cas and self.client_cert is None


def _option(value: str | Path | None, environ: Mapping[str, str], name: str) -> Path | None:
    if value is not None and str(value):
        return Path(value)
    from_env = environ.get(name)
    return Path(from_env) if from_env else None


def resolve_tls(
    host: str,
    *,
    ca_bundle: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
    certs_dirs: Sequence[Path] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TlsSettings:
    """Decide the files for ``host`` (``HOST[:PORT]``); see the module docstring for the order."""
    env = os.environ if environ is None else environ
    bundle = _option(ca_bundle, env, ENV_CA_BUNDLE)
    cert = _option(client_cert, env, ENV_CLIENT_CERT)
    key = _option(client_key, env, ENV_CLIENT_KEY)
    if key is not None and cert is None:
        raise UsageError("a client key was given without a client certificate (--client-cert)")
    for path, what in ((bundle, "CA bundle"), (cert, "client certificate"), (key, "client key")):
        if path is not None and not path.is_file():
            raise UsageError(f"{what} {path} does not exist or is not a file")
    found = host_certs(host, default_certs_dirs(env) if certs_dirs is None else certs_dirs)
    if found is None:
        return TlsSettings(host, bundle, (), cert, key)
    if cert is None and found.client_cert is not None:
        cert, key = found.client_cert, found.client_key
    return TlsSettings(host, bundle, found.ca_files, cert, key, found.directory)


def _refuse_password() -> str:
    raise UsageError("the client key is encrypted; give an unencrypted key")


def default_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The default trust: ``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else certifi's roots."""
    env = os.environ if environ is None else environ
    try:
        if env.get("SSL_CERT_FILE"):
            return ssl.create_default_context(cafile=env["SSL_CERT_FILE"])
        if env.get("SSL_CERT_DIR"):
            return ssl.create_default_context(capath=env["SSL_CERT_DIR"])
        return ssl.create_default_context(cafile=certifi.where())
    except (OSError, ssl.SSLError) as exc:
        where = env.get("SSL_CERT_FILE") or env.get("SSL_CERT_DIR")
        raise UsageError(f"CA bundle {where} could not be loaded: {_reason(exc)}") from None


def build_context(
    settings: TlsSettings, environ: Mapping[str, str] | None = None
) -> ssl.SSLContext | bool:
    """The ``verify`` argument of :class:`HttpClient`: ``True`` (the default trust, made when
    a first HTTPS connection opens) when nothing is configured."""
    if settings.is_default:
        return True
    if settings.ca_bundle is not None:
        try:
            context = ssl.create_default_context(cafile=str(settings.ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"CA bundle {settings.ca_bundle} could not be loaded: {_reason(exc)}"
            ) from None
    else:
        context = default_context(environ)
    for ca in settings.extra_cas:
        try:
            context.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(f"CA certificate {ca} could not be loaded: {_reason(exc)}") from None
    if settings.client_cert is not None:
        key = None if settings.client_key is None else str(settings.client_key)
        try:
            context.load_cert_chain(str(settings.client_cert), key, password=_refuse_password)
        except (OSError, ssl.SSLError) as exc:
            raise UsageError(
                f"client certificate {settings.client_cert}"
                + (f" and key {settings.client_key}" if key else "")
                + f" could not be loaded: {_reason(exc)}"
            ) from None
    return context


def tls_for(
    host: str,
    *,
    ca_bundle: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
    certs_dirs: Sequence[Path] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ssl.SSLContext | bool:
    """The ``verify`` for a registry host: an SSL context, or ``True`` for the default trust.

    ``certs_dirs`` ``None`` means :func:`default_certs_dirs`; ``environ``
    defaults to the process environment. Bad paths are a :class:`UsageError`.
    """
    settings = resolve_tls(
        host,
        ca_bundle=ca_bundle,
        client_cert=client_cert,
        client_key=client_key,
        certs_dirs=certs_dirs,
        environ=environ,
    )
    return build_context(settings, environ)


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """The TLS flags of a command, carried to wherever a registry client is made."""

    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    certs_dirs: tuple[Path, ...] | None = None

    def context_for(self, host: str) -> ssl.SSLContext | bool:
        return tls_for(
            host,
            ca_bundle=self.ca_bundle,
            client_cert=self.client_cert,
            client_key=self.client_key,
            certs_dirs=self.certs_dirs,
        )


def registry_http_client(
    host: str,
    *,
    tls: ssl.SSLContext | bool | TlsOptions | None = None,
    timeout: float | None = None,
    max_connections: int = 100,
) -> HttpClient:
    """The HTTP client for one registry (``RegistryStore``'s default, ``login``'s).

    ``tls`` ``None`` resolves the defaults for ``host`` (environment and
    certificate directories). The caller owns the client and closes it.
    """
    if tls is None:
        verify = tls_for(host)
    elif isinstance(tls, TlsOptions):
        verify = tls.context_for(host)
    else:
        verify = tls
    return HttpClient(
        verify=verify,
        max_connections=max_connections,
        timeouts=Timeouts(timeout, timeout) if timeout is not None else Timeouts(60.0, 300.0),
        headers={"User-Agent": USER_AGENT},
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The innermost :class:`ssl.SSLError` in the chain: the one OpenSSL raised (wrappers
    of the HTTP client may be SSL errors themselves, without its reason)."""
    seen: set[int] = set()
    found: ssl.SSLError | None = None
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            found = current
        current = current.__cause__ or current.__context__
    return found


def describe_tls_error(host: str, exc: BaseException) -> RegistryUnreachableError | None:
    """A one-line error for a failed TLS handshake with ``host``, saying what to pass; else None.

    The registry's certificate not trusted, a name mismatch, a client
    certificate refused or missing, and plain HTTP on the port each get
    their own advice. Nothing secret is in a handshake error.
    """
    cause = _ssl_cause(exc)
    if cause is None:
        return None
    certs_dir = f"/etc/docker/certs.d/{host}/"
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = cause.verify_message or _reason(cause)
        if cause.verify_code == _HOSTNAME_MISMATCH:
            return RegistryUnreachableError(
                f"TLS certificate of registry {host} is not valid for that name ({detail})"
            )
        return RegistryUnreachableError(
            f"TLS certificate of registry {host} is not trusted ({detail}); pass the CA that "
            f"signed it with --ca-bundle PATH (or {ENV_CA_BUNDLE}), or put it in {certs_dir}ca.crt"
        )
    reason = str(cause.reason or "")
    if reason in _CLIENT_CERT_REASONS:
        return RegistryUnreachableError(
            f"registry {host} refused the TLS handshake ({_reason(cause)}): it wants a client "
            "certificate it trusts; pass --client-cert PATH and --client-key PATH, or put "
            f"client.cert and client.key in {certs_dir}"
        )
    if reason == "WRONG_VERSION_NUMBER":
        return RegistryUnreachableError(
            f"registry {host} does not speak TLS on this port; use http://{host}/... "
            "or --plain-http if it serves plain HTTP"
        )
    return RegistryUnreachableError(f"TLS handshake with registry {host} failed: {_reason(cause)}")
