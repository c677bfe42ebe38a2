"""Registry credentials and tokens go to the registry's own origin only.

A hostile (or merely misconfigured) registry names addresses the tool then
requests: an upload ``Location`` on object storage, a plain-HTTP address of
itself behind a TLS proxy that does not pass on the scheme. The servers
record every request, so each test asserts what was sent where: nothing of
the registry's reaches another origin, and nothing at all goes out over
plain HTTP for an HTTPS registry. The proxy case runs nginx in front of the
real registry.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import require_registry
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from hostile_server import RecordingServer, Reply, Seen, forward
from nginx_proxy import nginx_binary, running_tls_proxy
from registry_server import (
    RegistryServer,
    TlsMaterial,
    TokenServer,
    make_tls,
    running_registry,
)

from oci_pypi_sync.errors import AuthenticationError
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY
from oci_pypi_sync.stores.auth import RegistryAuth
from oci_pypi_sync.stores.credentials import Credentials, CredentialStore
from oci_pypi_sync.stores.http import Request

PASSWORD = "s3cret-Pa55"
BASIC = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    with serve_index(fixture):
        yield fixture


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    require_registry()
    with running_registry(
        tmp_path_factory.mktemp("basic-registry"), htpasswd={"alice": PASSWORD}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls(tmp_path_factory.mktemp("proxy-tls"))


def sync(
    index: FixtureIndex, target: str, cwd: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``oci-pypi sync tool`` into ``target`` as alice, the password on stdin."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    env.update(
        HOME=str(cwd),
        DOCKER_CONFIG=str(cwd / "docker"),
        XDG_STATE_HOME=str(cwd / "state"),
        NO_PROXY="127.0.0.1",
    )
    return subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", "sync", "tool", "--to", target,
         "--index-url", index.url, "-u", "alice", "--password-stdin", "--retries", "0", *extra],
        cwd=cwd,
        env=env,
        input=PASSWORD,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


def tags(registry: RegistryServer, name: str, authorization: str) -> list[str]:
    response = httpx.get(
        f"{registry.url}/v2/{name}/tags/list", headers={"Authorization": authorization}
    )
    return sorted(response.json().get("tags") or []) if response.status_code == 200 else []


# --- an upload Location on another origin -------------------------------------------------


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RegistryServer, TokenServer]]:
    require_registry()
    everything = ("pull", "push")
    tokens = TokenServer(
        users={"alice": PASSWORD},
        grants={"alice": {"storage/tool": everything, f"storage/{CATALOG_REPOSITORY}": everything}},
    )
    with running_registry(tmp_path_factory.mktemp("token-registry"), token_auth=tokens) as server:
        yield server, tokens


@pytest.mark.parametrize("scheme", ["basic", "bearer"])
def test_an_upload_location_on_another_origin_gets_the_blob_not_the_credentials(
    scheme: str,
    index: FixtureIndex,
    basic_registry: RegistryServer,
    token_registry: tuple[RegistryServer, TokenServer],
    tmp_path: Path,
) -> None:
    """The registry sends uploads to object storage, which authorizes them its own way
    (a pre-signed URL): the blob goes there, the registry's credentials do not."""
    if scheme == "basic":
        registry, storage_auth = basic_registry, BASIC
    else:
        registry, tokens = token_registry
        access: list[dict[str, object]] = [
            {"type": "repository", "name": repo, "actions": ["pull", "push"]}
            for repo in ("storage/tool", f"storage/{CATALOG_REPOSITORY}")
        ]
        storage_auth = f"Bearer {tokens.sign('alice', access)}"
    storage: RecordingServer
    proxy: RecordingServer

    async def at_storage(seen: Seen) -> Reply:
        auth = {"Authorization": storage_auth}
        return await forward(seen, registry.url, origin=storage.origin, headers=auth)

    async def at_registry(seen: Seen) -> Reply:
        # the registry's own answers, its upload Locations naming the storage
        return await forward(seen, registry.url, origin=storage.origin)

    storage = RecordingServer(at_storage)
    proxy = RecordingServer(at_registry)
    with storage, proxy:
        result = sync(index, f"{proxy.host}/storage", tmp_path)
        to_storage, to_registry = list(storage.seen), list(proxy.seen)
    assert result.returncode == 0, result.stderr
    assert tags(registry, "storage/tool", storage_auth) == ["1.0"]
    assert {s.method for s in to_storage} >= {"PUT"}
    assert all(s.authorization is None for s in to_storage)
    assert any(s.authorization for s in to_registry)
    assert PASSWORD not in result.stderr


# --- a TLS proxy that does not pass the scheme on ------------------------------------------


@pytest.fixture
def needs_nginx() -> None:
    if nginx_binary() is None:
        pytest.fail("nginx is not installed: apt-get install -y nginx-light")


@pytest.mark.usefixtures("needs_nginx")
def test_a_plain_http_location_behind_a_tls_proxy_is_refused_naming_the_setting(
    index: FixtureIndex, basic_registry: RegistryServer, tls: TlsMaterial, tmp_path: Path
) -> None:
    """nginx terminates TLS without X-Forwarded-Proto: Distribution names ``http://`` upload
    addresses (here on a plain-HTTP listener that records what reaches it). Nothing is sent
    there, and the error says what to set."""
    with RecordingServer(lambda seen: Reply(400)) as plain:
        headers = {"Host": f"127.0.0.1:{plain.port}"}  # as a proxy on the registry's name does
        with running_tls_proxy(
            tmp_path / "nginx", basic_registry.url, tls, headers=headers
        ) as proxy:
            result = sync(
                index, f"https://{proxy.host}/proxied", tmp_path, "--ca-bundle", str(tls.ca)
            )
            seen_by_proxy = proxy.log_lines()
        reached_plain = list(plain.seen)
    assert result.returncode == 3, result.stderr
    (line,) = [text for text in result.stderr.splitlines() if text.startswith("error: ")]
    assert "named a plain-HTTP address" in line
    assert "X-Forwarded-Proto" in line
    assert f"http://127.0.0.1:{plain.port}/v2/proxied/" in line
    assert reached_plain == []
    assert seen_by_proxy
    assert all(text.startswith("https ") for text in seen_by_proxy)
    assert PASSWORD not in result.stderr
    assert tags(basic_registry, "proxied/tool", BASIC) == []


@pytest.mark.usefixtures("needs_nginx")
def test_the_same_proxy_passing_the_scheme_on_works(
    index: FixtureIndex, basic_registry: RegistryServer, tls: TlsMaterial, tmp_path: Path
) -> None:
    headers = {"Host": "$http_host", "X-Forwarded-Proto": "$scheme"}
    with running_tls_proxy(tmp_path / "nginx", basic_registry.url, tls, headers=headers) as proxy:
        result = sync(index, f"https://{proxy.host}/fixed", tmp_path, "--ca-bundle", str(tls.ca))
        seen_by_proxy = proxy.log_lines()
    assert result.returncode == 0, result.stderr
    assert tags(basic_registry, "fixed/tool", BASIC) == ["1.0"]
    assert any(" PUT " in text and "auth=Basic" in text for text in seen_by_proxy)
    assert all(text.startswith("https ") for text in seen_by_proxy)


# --- the flow on its own ----------------------------------------------------------------------


def _answer(request: Request, status: int, challenge: str) -> object:
    from multidict import CIMultiDict, CIMultiDictProxy

    class Answer:
        def __init__(self) -> None:
            self.status_code = status
            self.headers = CIMultiDictProxy(CIMultiDict({"WWW-Authenticate": challenge}))
            self.request = request
            self.content = b'{"token": "t-1"}'

    return Answer()


def test_another_origin_gets_nothing_held_for_the_registry() -> None:
    credentials = CredentialStore.static(Credentials(username="alice", password=PASSWORD))
    auth = RegistryAuth(credentials, "registry.test", base_url="https://registry.test")
    request = Request.build("GET", "https://registry.test/v2/six/tags/list")
    flow = auth.flow(request)
    sent = next(flow)
    challenge = 'Bearer realm="https://auth.test/token",service="svc"'
    token_request = flow.send(_answer(sent, 401, challenge))  # type: ignore[arg-type]
    assert token_request.headers["Authorization"] == BASIC
    retried = flow.send(_answer(token_request, 200, ""))  # type: ignore[arg-type]
    assert retried.headers["Authorization"] == "Bearer t-1"
    for elsewhere in (
        "https://storage.test/v2/six/tags/list",  # another host
        "https://registry.test:8443/v2/six/tags/list",  # another port
        "http://registry.test/v2/six/tags/list",  # another scheme
    ):
        other = Request.build("GET", elsewhere)
        other_flow = auth.flow(other)
        assert "Authorization" not in next(other_flow).headers
        with pytest.raises(StopIteration):  # its 401 is not answered
            other_flow.send(_answer(other, 401, challenge))  # type: ignore[arg-type]


def test_credentials_are_not_sent_to_a_plain_http_token_service() -> None:
    credentials = CredentialStore.static(Credentials(username="alice", password=PASSWORD))
    auth = RegistryAuth(credentials, "registry.test", base_url="https://registry.test")
    request = Request.build("GET", "https://registry.test/v2/six/tags/list")
    flow = auth.flow(request)
    sent = next(flow)
    with pytest.raises(AuthenticationError, match="plain-HTTP token service") as caught:
        flow.send(_answer(sent, 401, 'Bearer realm="http://auth.test/token"'))  # type: ignore[arg-type]
    assert PASSWORD not in str(caught.value)
