"""Where registry credentials come from, first match wins per registry host.

1. credentials given explicitly (``--username`` with ``--password-stdin``);
2. ``OCI_PYPI_REGISTRY_USERNAME`` / ``OCI_PYPI_REGISTRY_PASSWORD`` (meant for CI, any host);
3. the docker config, ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``:
   ``credHelpers[host]``, then an ``auths`` entry, then ``credsStore``;
4. the podman/skopeo auth file (``$REGISTRY_AUTH_FILE``, else
   ``$XDG_RUNTIME_DIR/containers/auth.json`` and ``~/.config/containers/auth.json``):
   ``credHelpers[host]``, then an ``auths`` entry.

This is the order users already rely on with docker, then podman. Keys are
compared by host (scheme and path dropped), so a key written for another
registry, whatever its form, never matches. Secrets never appear in a repr
or a message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oci_pypi_sync.errors import AuthenticationError

__all__ = [
    "ENV_PASSWORD",
    "ENV_USERNAME",
    "CredentialStore",
    "Credentials",
    "containers_auth_paths",
    "docker_config_path",
    "normalize_registry_key",
]

ENV_USERNAME = "OCI_PYPI_REGISTRY_USERNAME"
ENV_PASSWORD = "OCI_PYPI_REGISTRY_PASSWORD"

#: The user name a credential helper returns for an identity (refresh) token.
IDENTITY_TOKEN_USERNAME = "<token>"

HelperRunner = Callable[[str, str], "Credentials | None"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password, or an identity token (an OAuth2 refresh token)."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        secret = "identity_token=***" if self.identity_token else "password=***"
        if not self.identity_token and not self.password:
            secret = "no secret"
        return f"Credentials(username={self.username!r}, {secret})"

    __str__ = __repr__

    @property
    def has_basic(self) -> bool:
        """Whether a user name and password can be sent as HTTP basic auth."""
        return bool(self.username) and self.password is not None


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The docker config file: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``."""
    env = os.environ if environ is None else environ
    directory = env.get("DOCKER_CONFIG")
    if directory:
        return Path(directory) / "config.json"
    return Path.home() / ".docker" / "config.json"


def containers_auth_paths(environ: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """The podman/skopeo auth files, in the order they are consulted.

    ``$REGISTRY_AUTH_FILE`` alone when set (as podman does); otherwise
    ``$XDG_RUNTIME_DIR/containers/auth.json`` (where ``podman login`` writes)
    and then ``~/.config/containers/auth.json``.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("REGISTRY_AUTH_FILE")
    if explicit:
        return (Path(explicit),)
    paths: list[Path] = []
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(Path(runtime) / "containers" / "auth.json")
    home = env.get("HOME")
    base = Path(home) if home else Path.home()
    paths.append(base / ".config" / "containers" / "auth.json")
    return tuple(paths)


def normalize_registry_key(key: str) -> str:
    """Reduce a docker config key (``https://host/v1/``, ``host``) to ``host[:port]``."""
    key = key.strip()
    for scheme in ("https://", "http://"):
        if key.lower().startswith(scheme):
            key = key[len(scheme) :]
            break
    return key.split("/", 1)[0].lower()


def credentials_from_auth_entry(entry: Mapping[str, Any]) -> Credentials | None:
    """Read one ``auths`` entry: ``auth`` (base64 user:pass), ``username``/``password``,
    ``identitytoken``. An empty entry (a marker left next to ``credsStore``) gives ``None``."""
    username = entry.get("username") or None
    password = entry.get("password")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=False).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        user, sep, secret = decoded.partition(":")
        if sep:
            username, password = user, secret
    identity = entry.get("identitytoken") or None
    if identity:
        return Credentials(username=username, identity_token=str(identity))
    if username and password is not None:
        return Credentials(username=str(username), password=str(password))
    return None


def parse_helper_output(output: str) -> Credentials | None:
    """Parse a ``docker-credential-* get`` answer ``{"Username": ..., "Secret": ...}``."""
    try:
        data = json.loads(output)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    username = data.get("Username") or None
    secret = data.get("Secret")
    if not secret:
        return None
    if username == IDENTITY_TOKEN_USERNAME:
        return Credentials(identity_token=str(secret))
    return Credentials(username=None if username is None else str(username), password=str(secret))


def run_credential_helper(helper: str, host: str) -> Credentials | None:
    """Run ``docker-credential-<helper> get`` with the host on stdin.

    "Not found" answers (non-zero exit) give ``None``; a helper that is not
    installed is an error naming it, since the user configured it explicitly.
    """
    program = f"docker-credential-{helper}"
    path = shutil.which(program)
    if path is None:
        raise AuthenticationError(
            f"credential helper {program!r} configured for {host} "
            "is not installed (not found on PATH)"
        )
    try:
        done = subprocess.run(
            [path, "get"],
            input=host,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthenticationError(
            f"credential helper {program!r} failed for {host}: {type(exc).__name__}"
        ) from None
    if done.returncode != 0:
        return None
    return parse_helper_output(done.stdout)


class CredentialStore:
    """Resolves credentials for a registry host; each host is looked up once.

    ``environ``, ``config_path`` and ``auth_files`` default to the process
    environment and the files it names; tests pass their own. ``explicit``
    maps hosts to credentials given on the command line, which win over
    everything. ``run_helper`` runs a credential helper (``helper name,
    host`` -> credentials).
    """

    def __init__(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        config_path: Path | None = None,
        auth_files: Sequence[Path] | None = None,
        explicit: Mapping[str, Credentials] | None = None,
        run_helper: HelperRunner = run_credential_helper,
    ) -> None:
        self._environ: Mapping[str, str] = dict(os.environ if environ is None else environ)
        self._config_path = config_path or docker_config_path(self._environ)
        self._auth_files = tuple(
            containers_auth_paths(self._environ) if auth_files is None else auth_files
        )
        self._explicit = {normalize_registry_key(h): c for h, c in (explicit or {}).items()}
        self._run_helper = run_helper
        self._cache: dict[str, Credentials | None] = {}
        self._static: Credentials | None = None

    @classmethod
    def empty(cls) -> CredentialStore:
        """A store that never has credentials (anonymous access)."""
        return cls(environ={}, config_path=Path(os.devnull), auth_files=())

    @classmethod
    def static(cls, credentials: Credentials) -> CredentialStore:
        """A store that gives the same credentials for every host (explicit options)."""
        store = cls.empty()
        store._static = credentials
        return store

    def __repr__(self) -> str:
        files = ", ".join(repr(str(path)) for path in self._auth_files)
        return f"CredentialStore(config_path={str(self._config_path)!r}, auth_files=[{files}])"

    def get(self, host: str) -> Credentials | None:
        """Credentials for ``host`` (``HOST[:PORT]``), or ``None`` for anonymous access."""
        if self._static is not None:
            return self._static
        key = normalize_registry_key(host)
        if key not in self._cache:
            self._cache[key] = self._resolve(key)
        return self._cache[key]

    def _resolve(self, host: str) -> Credentials | None:
        if host in self._explicit:
            return self._explicit[host]
        username = self._environ.get(ENV_USERNAME)
        password = self._environ.get(ENV_PASSWORD)
        if username and password is not None:
            return Credentials(username=username, password=password)
        found = self._from_file(host, self._config_path, "docker config", creds_store=True)
        if found is not None:
            return found
        for path in self._auth_files:
            found = self._from_file(host, path, "containers auth file", creds_store=False)
            if found is not None:
                return found
        return None

    def _from_file(
        self, host: str, path: Path, what: str, *, creds_store: bool
    ) -> Credentials | None:
        """``credHelpers[host]``, then ``auths[host]``, then (docker only) ``credsStore``.

        An empty ``auths`` entry is the marker ``docker login`` leaves when
        the secret went to ``credsStore``, so it does not stop the search.
        """
        config = read_config_file(path, what)
        helper = config_helper(config, host, creds_store=False)
        if helper is not None:
            return self._run_helper(helper, host)
        auths = config.get("auths")
        if isinstance(auths, dict):
            for key, entry in auths.items():
                if normalize_registry_key(str(key)) == host and isinstance(entry, dict):
                    found = credentials_from_auth_entry(entry)
                    if found is not None:
                        return found
        store = config_helper(config, host, creds_store=True) if creds_store else None
        if store is not None:
            return self._run_helper(store, host)
        return None


def config_helper(config: Mapping[str, Any], host: str, *, creds_store: bool) -> str | None:
    """The helper named for ``host`` in ``credHelpers`` or, with ``creds_store``, ``credsStore``."""
    if creds_store:
        store = config.get("credsStore")
        return store if isinstance(store, str) and store else None
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if normalize_registry_key(str(key)) == host and isinstance(helper, str) and helper:
                return helper
    return None


def read_config_file(path: Path, what: str = "docker config") -> dict[str, Any]:
    """A JSON config file as a dict; missing or empty is ``{}``, invalid JSON an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return {}
    except OSError as exc:
        raise AuthenticationError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthenticationError(f"{what} {path} is not valid JSON (line {exc.lineno})") from None
    return data if isinstance(data, dict) else {}
