"""TLS and login against a real registry serving HTTPS with a CA made by the test.

Two registries, both with htpasswd auth: one over plain server-side TLS,
one that demands client certificates signed by the test's client CA
(``http.tls.clientcas``). Trust comes from ``--ca-bundle``, ``SSL_CERT_FILE``
or a ``certs.d`` directory; credentials from ``login``, the docker config
or the podman/skopeo auth files.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require_registry
from registry_server import RegistryServer, TlsMaterial, make_tls, running_registry
from test_registry_auth import EMPTY_DIGEST, push_payload, sha256

from oci_pypi_sync.errors import (
    AuthenticationError,
    RegistryError,
    RegistryUnreachableError,
    UsageError,
)
from oci_pypi_sync.ops.login import check_login, login, logout
from oci_pypi_sync.stores.auth import RegistryAuth
from oci_pypi_sync.stores.credentials import Credentials, CredentialStore
from oci_pypi_sync.stores.http import ConnectError
from oci_pypi_sync.stores.registry import RegistryStore
from oci_pypi_sync.stores.tls import (
    HostCerts,
    TlsOptions,
    describe_tls_error,
    host_certs,
    registry_http_client,
    resolve_tls,
    tls_for,
)

pytestmark = pytest.mark.registry

PASSWORD = "tls-s3cret-Pa55"
WRONG = "tls-wrong-Pa55"
ALICE = Credentials(username="alice", password=PASSWORD)
NO_DIRS: tuple[Path, ...] = ()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_registry(
    tmp_path_factory: pytest.TempPathFactory, pki: TlsMaterial
) -> Iterator[RegistryServer]:
    require_registry()
    with running_registry(
        tmp_path_factory.mktemp("tls"), htpasswd={"alice": PASSWORD}, tls=pki
    ) as server:
        yield server


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls(tmp_path_factory.mktemp("mtls-pki"), require_client_cert=True)


@pytest.fixture(scope="module")
def mtls_registry(
    tmp_path_factory: pytest.TempPathFactory, mtls: TlsMaterial
) -> Iterator[RegistryServer]:
    require_registry()
    with running_registry(
        tmp_path_factory.mktemp("mtls"), htpasswd={"alice": PASSWORD}, tls=mtls
    ) as server:
        yield server


def certs_d(root: Path, host: str, material: TlsMaterial, *, client: bool) -> Path:
    """A docker-style ``certs.d`` tree for ``host``: ca.crt (and client.cert/client.key)."""
    directory = root / "certs.d" / host
    directory.mkdir(parents=True)
    shutil.copy(material.ca, directory / "ca.crt")
    if client:
        shutil.copy(material.client_cert, directory / "client.cert")
        shutil.copy(material.client_key, directory / "client.key")
    return root / "certs.d"


# --- trust: CA bundle, SSL_CERT_FILE, certs.d --------------------------------------------


async def test_basic_auth_over_tls_with_ca_bundle(
    tls_registry: RegistryServer, pki: TlsMaterial
) -> None:
    host = tls_registry.host
    verify = tls_for(host, ca_bundle=pki.ca, certs_dirs=NO_DIRS, environ={})
    assert not isinstance(verify, bool)
    async with (
        registry_http_client(host, tls=verify, timeout=10) as client,
        RegistryStore(host, "tls", credentials=CredentialStore.static(ALICE), http=client) as store,
    ):
        assert store.base_url == f"https://{host}"
        manifest = await push_payload(store, "six", b"over tls")
        fetched = await store.get_manifest("six", "1.0")
    assert fetched is not None
    assert fetched.body == manifest


async def test_untrusted_certificate_names_the_host_and_the_option(
    tls_registry: RegistryServer,
) -> None:
    host = tls_registry.host
    assert tls_for(host, certs_dirs=NO_DIRS, environ={}) is True
    with pytest.raises(RegistryUnreachableError) as caught:
        await check_login(host, ALICE, tls=tls_for(host, certs_dirs=NO_DIRS, environ={}))
    assert str(caught.value) == (
        f"TLS certificate of registry {host} is not trusted (unable to get local issuer "
        "certificate); pass the CA that signed it with --ca-bundle PATH (or OCI_PYPI_CA_BUNDLE), "
        f"or put it in /etc/docker/certs.d/{host}/ca.crt"
    )
    # The same description applies to the error a store's client raises.
    async with registry_http_client(host, tls=True, timeout=10) as client:
        with pytest.raises(ConnectError) as raw:
            await client.request("GET", f"https://{host}/v2/")
    described = describe_tls_error(host, raw.value)
    assert described is not None
    assert str(described) == str(caught.value)
    assert describe_tls_error(host, ConnectError("connection refused")) is None


async def test_plain_http_port_gets_its_own_advice(registry: RegistryServer) -> None:
    with pytest.raises(RegistryUnreachableError) as caught:
        await check_login(registry.host, ALICE, tls=True)
    assert str(caught.value) == (
        f"registry {registry.host} does not speak TLS on this port; use "
        f"http://{registry.host}/... or --plain-http if it serves plain HTTP"
    )


async def test_ca_from_environment_variables(
    tls_registry: RegistryServer, pki: TlsMaterial, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tls_registry.host
    # OCI_PYPI_CA_BUNDLE stands for --ca-bundle.
    settings = resolve_tls(host, certs_dirs=NO_DIRS, environ={"OCI_PYPI_CA_BUNDLE": str(pki.ca)})
    assert settings.ca_bundle == pki.ca
    await check_login(
        host,
        ALICE,
        tls=tls_for(host, certs_dirs=NO_DIRS, environ={"OCI_PYPI_CA_BUNDLE": str(pki.ca)}),
    )
    # SSL_CERT_FILE: the default trust when nothing else is configured...
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    monkeypatch.delenv("OCI_PYPI_CA_BUNDLE", raising=False)
    assert tls_for(host, certs_dirs=NO_DIRS) is True
    await check_login(host, ALICE, tls=True)
    # ...and the base our own context starts from when a client cert is added.
    with_cert = tls_for(
        host, client_cert=pki.client_cert, client_key=pki.client_key, certs_dirs=NO_DIRS
    )
    assert not isinstance(with_cert, bool)
    await check_login(host, ALICE, tls=with_cert)


async def test_certs_d_ca_is_added_to_the_default_roots(
    tls_registry: RegistryServer, pki: TlsMaterial, tmp_path: Path
) -> None:
    host = tls_registry.host
    root = certs_d(tmp_path, host, pki, client=False)
    found = host_certs(host, [tmp_path / "missing", root])
    assert found == HostCerts(root / host, (root / host / "ca.crt",))
    assert host_certs("elsewhere.test:5000", [root]) is None
    await check_login(host, ALICE, tls=TlsOptions(certs_dirs=(root,)))


# --- client certificates ---------------------------------------------------------------


async def test_client_certificate_required(
    mtls_registry: RegistryServer, mtls: TlsMaterial
) -> None:
    host = mtls_registry.host
    options = TlsOptions(
        ca_bundle=mtls.ca, client_cert=mtls.client_cert, client_key=mtls.client_key, certs_dirs=()
    )
    await check_login(host, ALICE, tls=options)
    async with (
        registry_http_client(host, tls=options, timeout=10) as client,
        RegistryStore(
            host, "mtls", credentials=CredentialStore.static(ALICE), http=client
        ) as store,
    ):
        manifest = await push_payload(store, "six", b"with a client certificate")
        assert await store.has_manifest("six", sha256(manifest)) is True

    without = TlsOptions(ca_bundle=mtls.ca, certs_dirs=())
    with pytest.raises(RegistryUnreachableError) as caught:
        await check_login(host, ALICE, tls=without)
    message = str(caught.value)
    assert message.startswith(f"registry {host} refused the TLS handshake (")
    assert message.endswith(
        "it wants a client certificate it trusts; pass --client-cert PATH and --client-key PATH, "
        f"or put client.cert and client.key in /etc/docker/certs.d/{host}/"
    )


async def test_client_certificate_from_certs_d(
    mtls_registry: RegistryServer, mtls: TlsMaterial, tmp_path: Path
) -> None:
    host = mtls_registry.host
    root = certs_d(tmp_path, host, mtls, client=True)
    settings = resolve_tls(host, certs_dirs=[root], environ={})
    assert settings.certs_dir == root / host
    assert settings.extra_cas == (root / host / "ca.crt",)
    assert settings.client_cert == root / host / "client.cert"
    assert settings.client_key == root / host / "client.key"
    await check_login(host, ALICE, tls=TlsOptions(certs_dirs=(root,)))
    # An explicit --client-cert wins over the directory's.
    other = make_tls(tmp_path / "other", require_client_cert=True)
    explicit = resolve_tls(
        host,
        client_cert=other.client_cert,
        client_key=other.client_key,
        certs_dirs=[root],
        environ={},
    )
    assert explicit.client_cert == other.client_cert
    # TLS 1.3 settles the client certificate after the handshake: the refusal is an
    # alert or a reset, depending on which the client reads first.
    with pytest.raises(RegistryError, match=f"registry {host}"):
        await check_login(
            host,
            ALICE,
            tls=TlsOptions(
                client_cert=other.client_cert, client_key=other.client_key, certs_dirs=(root,)
            ),
        )


def test_tls_option_mistakes(tmp_path: Path, pki: TlsMaterial) -> None:
    with pytest.raises(UsageError) as missing:
        tls_for("r.test", ca_bundle=tmp_path / "nope.pem", certs_dirs=NO_DIRS, environ={})
    assert (
        str(missing.value) == f"CA bundle {tmp_path / 'nope.pem'} does not exist or is not a file"
    )
    with pytest.raises(UsageError) as key_only:
        tls_for("r.test", client_key=pki.client_key, certs_dirs=NO_DIRS, environ={})
    assert "without a client certificate" in str(key_only.value)
    with pytest.raises(UsageError) as mismatched:
        tls_for(
            "r.test",
            client_cert=pki.client_cert,
            client_key=pki.key,
            certs_dirs=NO_DIRS,
            environ={},
        )
    assert str(mismatched.value).startswith(
        f"client certificate {pki.client_cert} and key {pki.key} could not be loaded: "
    )
    half = tmp_path / "certs.d" / "r.test"
    half.mkdir(parents=True)
    shutil.copy(pki.client_cert, half / "client.cert")
    with pytest.raises(UsageError) as unpaired:
        host_certs("r.test", [tmp_path / "certs.d"])
    assert str(unpaired.value) == (
        f"client certificate {half / 'client.cert'} has no key client.key beside it"
    )


# --- login and logout ----------------------------------------------------------------------


def read_json(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict)
    return data


async def test_login_then_store_then_logout(
    tls_registry: RegistryServer, pki: TlsMaterial, tmp_path: Path
) -> None:
    host = tls_registry.host
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(
        json.dumps(
            {
                "auths": {
                    "other.test:5000": {"auth": b64("bob:other")},
                    f"https://{host}": {"auth": b64("stale:stale")},
                },
                "HttpHeaders": {"User-Agent": "kept"},
            }
        )
    )
    options = TlsOptions(ca_bundle=pki.ca, certs_dirs=())
    await check_login(host, ALICE, tls=options)
    assert login(host, ALICE, config_path=config) == config

    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert read_json(config) == {
        "auths": {
            "other.test:5000": {"auth": b64("bob:other")},
            host: {"auth": b64(f"alice:{PASSWORD}")},
        },
        "HttpHeaders": {"User-Agent": "kept"},
    }
    store_creds = CredentialStore(environ={"DOCKER_CONFIG": str(config.parent)}, auth_files=())
    assert store_creds.get(host) == ALICE
    async with (
        registry_http_client(host, tls=options, timeout=10) as client,
        RegistryStore(host, "login", credentials=store_creds, http=client) as store,
    ):
        manifest = await push_payload(store, "six", b"after login")
        assert await store.has_manifest("six", sha256(manifest)) is True

    assert logout(host, config_path=config) is True
    assert read_json(config) == {
        "auths": {"other.test:5000": {"auth": b64("bob:other")}},
        "HttpHeaders": {"User-Agent": "kept"},
    }
    assert logout(host, config_path=config) is False


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
async def test_login_file_is_what_skopeo_reads(
    tls_registry: RegistryServer, pki: TlsMaterial, tmp_path: Path
) -> None:
    host = tls_registry.host
    config = tmp_path / "config.json"
    login(host, ALICE, config_path=config)
    options = TlsOptions(ca_bundle=pki.ca, certs_dirs=())
    async with (
        registry_http_client(host, tls=options, timeout=10) as client,
        RegistryStore(host, "skopeo", credentials=CredentialStore.static(ALICE), http=client) as s,
    ):
        manifest = await push_payload(s, "six", b"read by skopeo")
    cert_dir = certs_d(tmp_path, host, pki, client=False) / host
    got = subprocess.run(
        ["skopeo", "login", "--get-login", "--authfile", str(config), host],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert (got.returncode, got.stdout.strip()) == (0, "alice")
    inspected = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--authfile",
            str(config),
            "--cert-dir",
            str(cert_dir),
            f"docker://{host}/skopeo/six:1.0",
        ],
        capture_output=True,
        timeout=600,
        check=False,
    )
    assert inspected.returncode == 0, inspected.stderr.decode()
    assert inspected.stdout == manifest
    assert logout(host, config_path=config) is True
    after = subprocess.run(
        ["skopeo", "login", "--get-login", "--authfile", str(config), host],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert after.returncode != 0


def fake_store_helper(directory: Path, name: str) -> Path:
    """A ``docker-credential-NAME`` keeping one JSON record per host, as files."""
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "db"
    db.mkdir()
    script = directory / f"docker-credential-{name}"
    script.write_text(
        "#!/bin/sh\n"
        f'db="{db}"\n'
        'case "$1" in\n'
        '  store) cat > "$db/incoming"; host=$(sed \'s/.*"ServerURL": *"\\([^"]*\\)".*/\\1/\' '
        '"$db/incoming"); mv "$db/incoming" "$db/$host" ;;\n'
        '  get) read host; [ -f "$db/$host" ] || { echo "credentials not found"; exit 1; }; '
        'cat "$db/$host" ;;\n'
        '  erase) read host; [ -f "$db/$host" ] || exit 1; rm "$db/$host" ;;\n'
        "  *) exit 2 ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return db


async def test_login_into_creds_store_helper(
    tls_registry: RegistryServer, pki: TlsMaterial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = tls_registry.host
    db = fake_store_helper(tmp_path / "bin", "vault")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    config = tmp_path / "docker" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"credsStore": "vault"}))
    login(host, ALICE, config_path=config)
    # The secret went to the helper; the file holds only docker's marker.
    assert read_json(config) == {"credsStore": "vault", "auths": {host: {}}}
    assert PASSWORD not in config.read_text()
    assert json.loads((db / host).read_text()) == {
        "ServerURL": host,
        "Username": "alice",
        "Secret": PASSWORD,
    }
    creds = CredentialStore(environ={}, config_path=config, auth_files=())
    assert creds.get(host) == ALICE
    async with (
        registry_http_client(
            host, tls=TlsOptions(ca_bundle=pki.ca, certs_dirs=()), timeout=10
        ) as c,
        RegistryStore(host, "helper", credentials=creds, http=c) as store,
    ):
        manifest = await push_payload(store, "six", b"from the helper")
        assert await store.has_manifest("six", sha256(manifest)) is True
    assert logout(host, config_path=config) is True
    assert not (db / host).exists()
    assert read_json(config) == {"credsStore": "vault", "auths": {}}


def test_login_without_installed_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    config = tmp_path / "config.json"
    # A credsStore that is not installed: the file gets the credentials.
    config.write_text(json.dumps({"credsStore": "desktop"}))
    login("r.test:5000", ALICE, config_path=config)
    assert read_json(config) == {
        "credsStore": "desktop",
        "auths": {"r.test:5000": {"auth": b64(f"alice:{PASSWORD}")}},
    }
    # A helper named for the host must exist: reading would ask it first.
    config.write_text(json.dumps({"credHelpers": {"r.test:5000": "absent"}}))
    with pytest.raises(AuthenticationError) as caught:
        login("r.test:5000", ALICE, config_path=config)
    assert str(caught.value) == (
        "credential helper 'docker-credential-absent' configured for r.test:5000 "
        "is not installed (not found on PATH)"
    )
    assert read_json(config) == {"credHelpers": {"r.test:5000": "absent"}}


def test_login_creates_the_file_and_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real" / "config.json"
    real.parent.mkdir()
    real.write_text("{}")
    link = tmp_path / "home" / ".docker" / "config.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    login("r.test:5000", ALICE, config_path=link)
    assert link.is_symlink()
    assert read_json(real) == {"auths": {"r.test:5000": {"auth": b64(f"alice:{PASSWORD}")}}}
    fresh = tmp_path / "new" / "dir" / "config.json"
    login("https://R.test:5000/", Credentials(identity_token="refresh-me"), config_path=fresh)
    assert read_json(fresh) == {"auths": {"r.test:5000": {"identitytoken": "refresh-me"}}}
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    assert sorted(p.name for p in fresh.parent.iterdir()) == ["config.json"]


# --- podman/skopeo auth files ------------------------------------------------------------------


async def test_auth_json_from_registry_auth_file_and_xdg_runtime_dir(
    tls_registry: RegistryServer, pki: TlsMaterial, tmp_path: Path
) -> None:
    host = tls_registry.host

    def auth_file(path: Path, password: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"auths": {f"{host}/some/namespace": {"auth": b64(f"alice:{password}")}}})
        )
        return path

    explicit = auth_file(tmp_path / "explicit" / "auth.json", PASSWORD)
    runtime = auth_file(tmp_path / "run" / "containers" / "auth.json", WRONG)
    home_file = auth_file(tmp_path / "home" / ".config" / "containers" / "auth.json", WRONG)
    base = {"HOME": str(tmp_path / "home"), "DOCKER_CONFIG": str(tmp_path / "no-docker")}

    only_explicit = CredentialStore(
        environ={
            **base,
            "REGISTRY_AUTH_FILE": str(explicit),
            "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        }
    )
    assert only_explicit.get(host) == ALICE

    runtime.write_text(json.dumps({"auths": {host: {"auth": b64(f"alice:{PASSWORD}")}}}))
    from_runtime = CredentialStore(environ={**base, "XDG_RUNTIME_DIR": str(tmp_path / "run")})
    assert from_runtime.get(host) == ALICE
    home_file.write_text(json.dumps({"auths": {host: {"auth": b64(f"alice:{PASSWORD}")}}}))
    assert CredentialStore(environ=base).get(host) == ALICE

    for creds in (only_explicit, from_runtime):
        async with (
            registry_http_client(
                host, tls=TlsOptions(ca_bundle=pki.ca, certs_dirs=()), timeout=10
            ) as c,
            RegistryStore(host, "podman", credentials=creds, http=c) as store,
        ):
            manifest = await push_payload(store, "six", b"from auth.json")
            assert await store.has_manifest("six", sha256(manifest)) is True


# --- secrets stay secret ----------------------------------------------------------------------


async def test_wrong_password_leaks_nothing(
    tls_registry: RegistryServer, pki: TlsMaterial, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="oci_pypi_sync")
    host = tls_registry.host
    wrong = Credentials(username="alice", password=WRONG)
    options = TlsOptions(ca_bundle=pki.ca, certs_dirs=())
    with pytest.raises(AuthenticationError) as at_login:
        await check_login(host, wrong, tls=options)
    assert (
        str(at_login.value) == f"registry {host} refused the credentials of user 'alice' (HTTP 401)"
    )
    assert at_login.value.status == 401

    store_creds = CredentialStore.static(wrong)
    auth = RegistryAuth(store_creds, host, base_url=f"https://{host}")
    async with (
        registry_http_client(host, tls=options, timeout=10) as client,
        RegistryStore(host, "leak", credentials=store_creds, http=client) as store,
    ):
        with pytest.raises(AuthenticationError) as at_push:
            await store.put_blob_bytes("six", EMPTY_DIGEST, b"{}")
        objects = [wrong, store_creds, auth, store, options, at_login.value, at_push.value]
        texts = [repr(o) for o in objects] + [str(o) for o in objects]
    assert "credentials configured for it were not accepted" in str(at_push.value)
    exchanges = [r.getMessage() for r in caplog.records if r.name == "oci_pypi_sync.stores.http"]
    assert any("/v2/" in text and "-> 401" in text for text in exchanges)
    secrets = (WRONG, PASSWORD, b64(f"alice:{WRONG}"), b64(f"alice:{PASSWORD}"))
    for text in [*texts, caplog.text]:
        for secret in secrets:
            assert secret not in text
