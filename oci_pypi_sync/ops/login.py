"""``oci-pypi login`` and ``logout``: check credentials, then keep them where docker does.

:func:`check_login` asks the registry (``GET /v2/`` through the same auth
flow as every other request), so a typo is caught at login rather than in
the middle of a sync. :func:`login` then saves the credentials the way
``docker login`` does, so docker, podman, skopeo and oci-pypi share them:

* a helper named for the host in ``credHelpers`` gets them
  (``docker-credential-NAME store``); it must be installed, since reading
  would ask it first;
* else a ``credsStore`` helper gets them when it is installed, and the
  file gets the empty ``auths`` entry docker leaves as a marker;
* else (no helper, or a ``credsStore`` that is not installed, common with a
  config copied from a desktop) ``auths[host].auth`` in the file holds
  base64 ``user:password``, mode 0600, written atomically.

Other keys and hosts in the file are kept as they are.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from oci_pypi_sync.errors import AuthenticationError, RegistryError
from oci_pypi_sync.stores.auth import RegistryAuth
from oci_pypi_sync.stores.credentials import (
    IDENTITY_TOKEN_USERNAME,
    Credentials,
    CredentialStore,
    config_helper,
    docker_config_path,
    normalize_registry_key,
    read_config_file,
)
from oci_pypi_sync.stores.http import TransportError
from oci_pypi_sync.stores.tls import TlsOptions, describe_tls_error, registry_http_client

__all__ = ["check_login", "login", "logout"]

logger = logging.getLogger(__name__)

HELPER_TIMEOUT_SECONDS = 60


async def check_login(
    host: str,
    credentials: Credentials,
    *,
    plain_http: bool = False,
    tls: ssl.SSLContext | bool | TlsOptions | None = None,
    timeout: float = 30.0,
) -> None:
    """Raise unless the registry accepts ``credentials`` for ``GET /v2/``.

    401/403 (from the registry or its token service) is an
    :class:`AuthenticationError` naming the host and the user, never the
    secret; a failed handshake says which TLS option to pass.
    """
    from oci_pypi_sync.stores.registry import describe_transport_error

    base_url = f"{'http' if plain_http else 'https'}://{host}"
    auth = RegistryAuth(CredentialStore.static(credentials), host, base_url=base_url)
    url = f"{base_url}/v2/"
    async with registry_http_client(
        host, tls=True if plain_http else tls, timeout=timeout, max_connections=2
    ) as client:
        try:
            response = await client.request("GET", url, auth=auth)
        except ssl.SSLError as exc:  # a TLS alert met outside the handshake
            raise (describe_tls_error(host, exc) or RegistryError(str(exc))) from None
        except TransportError as exc:
            raise (describe_tls_error(host, exc) or describe_transport_error(host, exc)) from None
    if response.status_code in (401, 403):
        who = f"user {credentials.username!r}" if credentials.username else "the identity token"
        raise AuthenticationError(
            f"registry {host} refused the credentials of {who} (HTTP {response.status_code})",
            status=response.status_code,
            code="UNAUTHORIZED",
        )
    if response.status_code != 200:
        raise RegistryError(
            f"registry {host} answered GET /v2/ with HTTP {response.status_code}; "
            "is it an OCI registry?",
            status=response.status_code,
        )
    logger.info("registry %s accepted the credentials", host)


def login(host: str, credentials: Credentials, *, config_path: Path | None = None) -> Path:
    """Save ``credentials`` for ``host`` (see the module docstring); return the config file.

    Does not contact the registry: call :func:`check_login` first.
    """
    if not credentials.has_basic and not credentials.identity_token:
        raise AuthenticationError(f"no password or token to save for registry {host}")
    path = config_path or docker_config_path()
    key = normalize_registry_key(host)
    config = read_config_file(path)
    auths = _auths(config)
    for existing in [k for k in auths if normalize_registry_key(str(k)) == key]:
        # A stale ``https://host`` entry would otherwise shadow the new one.
        del auths[existing]
    helper = _writable_helper(config, key)
    if helper is not None:
        _store_with_helper(helper, key, credentials)
        auths[key] = {}
    else:
        auths[key] = _auth_entry(credentials)
    config["auths"] = auths
    _write_config(path, config)
    logger.info("saved credentials for %s (%s)", key, f"helper {helper}" if helper else path)
    return path


def logout(host: str, *, config_path: Path | None = None) -> bool:
    """Forget ``host``: its ``auths`` entries and its helper's copy. ``False`` if none existed."""
    path = config_path or docker_config_path()
    key = normalize_registry_key(host)
    config = read_config_file(path)
    auths = _auths(config)
    stale = [k for k in auths if normalize_registry_key(str(k)) == key]
    for existing in stale:
        del auths[existing]
    erased = False
    helper = config_helper(config, key, creds_store=False) or config_helper(
        config, key, creds_store=True
    )
    if helper is not None and shutil.which(f"docker-credential-{helper}"):
        erased = _run_helper(helper, "erase", key, key, check=False)
    if stale:
        config["auths"] = auths
        _write_config(path, config)
    return bool(stale) or erased


# --- plumbing ---------------------------------------------------------------


def _auths(config: dict[str, Any]) -> dict[str, Any]:
    auths = config.get("auths")
    return dict(auths) if isinstance(auths, dict) else {}


def _auth_entry(credentials: Credentials) -> dict[str, str]:
    if credentials.identity_token:
        entry = {"identitytoken": credentials.identity_token}
        if credentials.username:
            entry["auth"] = base64.b64encode(f"{credentials.username}:".encode()).decode()
        return entry
    raw = f"{credentials.username}:{credentials.password}".encode()
    return {"auth": base64.b64encode(raw).decode("ascii")}


def _writable_helper(config: dict[str, Any], host: str) -> str | None:
    """The helper to store into: the host's own (must exist), or an installed credsStore."""
    own = config_helper(config, host, creds_store=False)
    if own is not None:
        if shutil.which(f"docker-credential-{own}") is None:
            raise AuthenticationError(
                f"credential helper 'docker-credential-{own}' configured for {host} "
                "is not installed (not found on PATH)"
            )
        return own
    store = config_helper(config, host, creds_store=True)
    if store is not None and shutil.which(f"docker-credential-{store}") is not None:
        return store
    if store is not None:
        logger.warning(
            "credsStore %r is not installed; saving the credentials for %s in the file",
            store,
            host,
        )
    return None


def _store_with_helper(helper: str, host: str, credentials: Credentials) -> None:
    if credentials.identity_token:
        username, secret = IDENTITY_TOKEN_USERNAME, credentials.identity_token
    else:
        username, secret = str(credentials.username), str(credentials.password)
    payload = json.dumps({"ServerURL": host, "Username": username, "Secret": secret})
    _run_helper(helper, "store", payload, host, check=True)


def _run_helper(helper: str, action: str, stdin: str, host: str, *, check: bool) -> bool:
    """Run ``docker-credential-<helper> <action>``; its output is never shown (it may echo)."""
    program = f"docker-credential-{helper}"
    path = shutil.which(program)
    if path is None:
        raise AuthenticationError(f"credential helper {program!r} is not installed")
    try:
        done = subprocess.run(
            [path, action],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthenticationError(
            f"credential helper {program!r} failed to {action} for {host}: {type(exc).__name__}"
        ) from None
    if done.returncode != 0 and check:
        raise AuthenticationError(
            f"credential helper {program!r} failed to {action} for {host} "
            f"(exit status {done.returncode})"
        )
    return done.returncode == 0


def _write_config(path: Path, config: dict[str, Any]) -> None:
    """Replace the file atomically with a 0600 one (through a symlink, as docker does)."""
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent="\t")
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
