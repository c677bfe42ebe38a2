"""Run a real Distribution registry (``docker-registry``) on loopback for the tests.

Each registry gets its own config, storage and log file in a temp dir and
listens on 127.0.0.1 only. Basic auth uses an htpasswd file with bcrypt
entries (the ``bcrypt`` package); bearer auth uses :class:`TokenServer`, a
small token service in a thread that signs RS256 JWTs with a key and a
self-signed certificate made on the spot, which the registry trusts through
``auth.token.rootcertbundle``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

REGISTRY_BINARY = "docker-registry"
INSTALL_HINT = "apt-get update && apt-get install -y docker-registry skopeo"
SERVICE = "oci-pypi-test-registry"
ISSUER = "oci-pypi-test-issuer"


def registry_binary() -> str | None:
    return shutil.which(REGISTRY_BINARY)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# --- token service --------------------------------------------------------------


@dataclass
class TokenServer:
    """A token service: users, refresh tokens and per-repository grants.

    ``grants[user][repository]`` lists the actions that user may have
    (``""`` is the anonymous user). A request is granted the intersection of
    what it asks and what the user may have. ``requests`` records what was
    asked (method, user, scopes) for the tests to assert on.
    """

    users: Mapping[str, str] = field(default_factory=dict)
    grants: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    refresh_tokens: Mapping[str, str] = field(default_factory=dict)
    token_seconds: int = 300
    requests: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = dt.datetime.now(dt.UTC)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "oci-pypi test token signer")])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def realm(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def write_bundle(self, path: Path) -> Path:
        path.write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
        return path

    def sign(self, subject: str, access: list[dict[str, object]]) -> str:
        """A JWT the way Distribution verifies it: RS256, ``x5c`` chain, string ``aud``."""
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [
                base64.b64encode(self.certificate.public_bytes(serialization.Encoding.DER)).decode()
            ],
        }
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + self.token_seconds,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)

    def grant(self, user: str, scopes: list[str]) -> list[dict[str, object]]:
        allowed = self.grants.get(user, {})
        access: list[dict[str, object]] = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            if kind != "repository":
                continue
            permitted = [a for a in actions.split(",") if a in allowed.get(repo, ())]
            access.append({"type": "repository", "name": repo, "actions": permitted})
        return access

    def answer(
        self, method: str, headers: Mapping[str, str], query: str, form: str
    ) -> tuple[int, dict[str, object]]:
        """Authenticate and issue a token: (status, JSON body)."""
        if method == "POST":
            fields = dict(parse_qsl(form))
            user = self.refresh_tokens.get(fields.get("refresh_token", ""))
            scopes = fields.get("scope", "").split()
            self.requests.append(("POST", user or "?", tuple(scopes)))
            if fields.get("grant_type") != "refresh_token" or user is None:
                return 401, {"error": "invalid_grant"}
            return 200, {
                "access_token": self.sign(user, self.grant(user, scopes)),
                "expires_in": self.token_seconds,
            }
        params = parse_qsl(query)
        scopes = [value for key, value in params if key == "scope"]
        user = ""
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(name) != password:
                self.requests.append(("GET", f"{name} (refused)", tuple(scopes)))
                return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}
            user = name
        self.requests.append(("GET", user, tuple(scopes)))
        return 200, {
            "token": self.sign(user, self.grant(user, scopes)),
            "expires_in": self.token_seconds,
        }

    def start(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _respond(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = self.rfile.read(length).decode() if length else ""
                status, body = service.answer(method, dict(self.headers), url.query, form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._respond("GET")

            def do_POST(self) -> None:
                self._respond("POST")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --- the registry -----------------------------------------------------------------


@dataclass(frozen=True)
class RegistryServer:
    """A running registry: ``host`` is ``127.0.0.1:PORT``."""

    host: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def htpasswd_lines(users: Mapping[str, str]) -> str:
    """bcrypt htpasswd entries (cost 5: the minimum Go accepts is 4; tests want speed)."""
    return "".join(
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
        for user, password in users.items()
    )


def registry_config(
    root: Path, port: int, *, htpasswd: Path | None = None, token: tuple[str, Path] | None = None
) -> str:
    """The registry's YAML config (JSON is YAML): loopback, temp storage, deletes on."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "oci-pypi-test", "path": str(htpasswd)}}
    elif token is not None:
        realm, bundle = token
        config["auth"] = {
            "token": {
                "realm": realm,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(bundle),
            }
        }
    return json.dumps(config, indent=2)


def _wait_until_up(server: RegistryServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{REGISTRY_BINARY} exited with {server.process.returncode}:\n"
                + server.log_text()[-3000:]
            )
        try:
            response = httpx.get(f"{server.url}/v2/", timeout=1.0)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if response.status_code in (200, 401):
            return
    raise RuntimeError(
        f"{REGISTRY_BINARY} did not answer within {timeout}s:\n{server.log_text()[-3000:]}"
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def running_registry(
    tmp_path: Path,
    *,
    htpasswd: Mapping[str, str] | None = None,
    token_auth: TokenServer | None = None,
) -> Iterator[RegistryServer]:
    """Start ``docker-registry serve`` on a free loopback port; stop it afterwards.

    With ``token_auth`` the token server is started (and stopped) here too.
    """
    binary = registry_binary()
    if binary is None:
        raise RuntimeError(f"{REGISTRY_BINARY} is not installed: {INSTALL_HINT}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    htpasswd_file = None
    if htpasswd is not None:
        htpasswd_file = tmp_path / "htpasswd"
        htpasswd_file.write_text(htpasswd_lines(htpasswd))
    token = None
    if token_auth is not None:
        token_auth.start()
        token = (token_auth.realm, token_auth.write_bundle(tmp_path / "token-signer.pem"))
    try:
        for attempt in range(3):
            port = free_port()
            config = tmp_path / "config.yml"
            config.write_text(registry_config(tmp_path, port, htpasswd=htpasswd_file, token=token))
            log = tmp_path / f"registry-{attempt}.log"
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [binary, "serve", str(config)],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            server = RegistryServer(f"127.0.0.1:{port}", tmp_path, log, process)
            try:
                _wait_until_up(server, timeout=20.0)
            except RuntimeError:
                _stop(process)
                if attempt == 2 or "address already in use" not in server.log_text():
                    raise
                continue
            try:
                yield server
            finally:
                _stop(process)
            return
    finally:
        if token_auth is not None:
            token_auth.stop()
