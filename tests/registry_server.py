"""Run a real Distribution registry (``docker-registry``) on loopback for the tests.

Two implementations: Debian's Distribution 2.8.2 (``docker-registry``, always
there) and Distribution v3 (``registry-v3`` on ``PATH``, or the file named by
``OCI_PYPI_REGISTRY_V3``), which the interop tests run as well when present.

Each registry gets its own config, storage and log file in a temp dir and
listens on 127.0.0.1 only. Basic auth uses an htpasswd file with bcrypt
entries (the ``bcrypt`` package); bearer auth uses :class:`TokenServer`, a
small token service in a thread that signs RS256 JWTs with a key and a
self-signed certificate made on the spot, which the registry trusts through
``auth.token.rootcertbundle``. With :func:`make_tls` the registry serves
HTTPS with a certificate signed by a CA made by the test, and may demand
client certificates signed by a second one (``http.tls.clientcas``).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import shutil
import socket
import ssl
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
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REGISTRY_BINARY = "docker-registry"
REGISTRY_V3_BINARY = "registry-v3"
INSTALL_HINT = "apt-get update && apt-get install -y docker-registry skopeo"
V3_HINT = (
    "Distribution v3 (the 'registry' binary) is not on PATH as registry-v3 and "
    "OCI_PYPI_REGISTRY_V3 is not set"
)
SERVICE = "oci-pypi-test-registry"
ISSUER = "oci-pypi-test-issuer"


def registry_binary() -> str | None:
    return shutil.which(REGISTRY_BINARY)


def registry_v3_binary() -> str | None:
    """Distribution v3: ``OCI_PYPI_REGISTRY_V3``, else ``registry-v3`` on ``PATH``."""
    configured = os.environ.get("OCI_PYPI_REGISTRY_V3")
    if configured:
        return configured if Path(configured).is_file() else None
    return shutil.which(REGISTRY_V3_BINARY)


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


# --- certificates -----------------------------------------------------------------


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files for a TLS registry: a server CA and cert, a client CA and a client cert.

    ``require_client_cert`` makes the registry refuse any client without a
    certificate signed by ``client_ca`` (Distribution's ``http.tls.clientcas``).
    """

    directory: Path
    ca: Path
    cert: Path
    key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    require_client_cert: bool = False

    def client_context(self, *, with_client_cert: bool | None = None) -> ssl.SSLContext:
        """A client context trusting ``ca`` (and presenting the client cert when needed)."""
        context = ssl.create_default_context(cafile=str(self.ca))
        send_cert = self.require_client_cert if with_client_cert is None else with_client_cert
        if send_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_tls(directory: Path, *, require_client_cert: bool = False) -> TlsMaterial:
    """A server CA and a cert for 127.0.0.1/localhost, a client CA and a client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca("oci-pypi test registry CA")
    key, cert = _make_leaf(ca_key, ca_cert, "127.0.0.1", server=True)
    client_ca_key, client_ca_cert = _make_ca("oci-pypi test client CA")
    client_key, client_cert = _make_leaf(client_ca_key, client_ca_cert, "alice", server=False)
    return TlsMaterial(
        directory=directory,
        ca=_write_cert(directory / "ca.pem", ca_cert),
        cert=_write_cert(directory / "server.pem", cert),
        key=_write_key(directory / "server-key.pem", key),
        client_ca=_write_cert(directory / "client-ca.pem", client_ca_cert),
        client_cert=_write_cert(directory / "client.pem", client_cert),
        client_key=_write_key(directory / "client-key.pem", client_key),
        require_client_cert=require_client_cert,
    )


# --- the registry -----------------------------------------------------------------


@dataclass(frozen=True)
class RegistryServer:
    """A running registry: ``host`` is ``127.0.0.1:PORT``."""

    host: str
    root: Path
    log: Path
    process: subprocess.Popen[bytes]
    tls: TlsMaterial | None = None
    implementation: str = "distribution-2.8"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def htpasswd_lines(users: Mapping[str, str]) -> str:
    """bcrypt htpasswd entries (cost 5: the minimum Go accepts is 4; tests want speed)."""
    return "".join(
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
        for user, password in users.items()
    )


def registry_config(
    root: Path,
    port: int,
    *,
    htpasswd: Path | None = None,
    token: tuple[str, Path] | None = None,
    tls: TlsMaterial | None = None,
) -> str:
    """The registry's YAML config (JSON is YAML): loopback, temp storage, deletes on."""
    http: dict[str, object] = {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)}
    if tls is not None:
        settings: dict[str, object] = {"certificate": str(tls.cert), "key": str(tls.key)}
        if tls.require_client_cert:
            settings["clientcas"] = [str(tls.client_ca)]
        http["tls"] = settings
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "storage")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
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
                f"{server.implementation} exited with {server.process.returncode}:\n"
                + server.log_text()[-3000:]
            )
        verify: ssl.SSLContext | bool = True
        if server.tls is not None:
            verify = server.tls.client_context()
        try:
            response = httpx.get(f"{server.url}/v2/", timeout=1.0, verify=verify)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if response.status_code in (200, 401):
            return
    raise RuntimeError(
        f"{server.implementation} did not answer within {timeout}s:\n{server.log_text()[-3000:]}"
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
    tls: TlsMaterial | None = None,
    v3: bool = False,
) -> Iterator[RegistryServer]:
    """Start ``docker-registry serve`` on a free loopback port; stop it afterwards.

    With ``token_auth`` the token server is started (and stopped) here too;
    with ``tls`` (see :func:`make_tls`) the registry speaks HTTPS only; with
    ``v3`` Distribution v3 runs instead (same configuration file).
    """
    binary = registry_v3_binary() if v3 else registry_binary()
    implementation = "distribution-3" if v3 else "distribution-2.8"
    if binary is None:
        raise RuntimeError(V3_HINT if v3 else f"{REGISTRY_BINARY} is not installed: {INSTALL_HINT}")
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
            config.write_text(
                registry_config(tmp_path, port, htpasswd=htpasswd_file, token=token, tls=tls)
            )
            log = tmp_path / f"registry-{attempt}.log"
            with log.open("wb") as log_file:
                process = subprocess.Popen(
                    [binary, "serve", str(config)],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            server = RegistryServer(
                f"127.0.0.1:{port}", tmp_path, log, process, tls, implementation
            )
            try:
                _wait_until_up(server, timeout=120.0)
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
