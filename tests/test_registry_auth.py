"""Registry auth: the pure parts, then basic and bearer auth against a real registry.

Bearer tokens come from a real token service (see ``registry_server.TokenServer``)
that the registry verifies. A few protocol corners Distribution cannot
produce (object-storage redirects, a challenge naming its own scope) use
scripted loopback servers (``scripted_server.answering``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import random
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import httpx
import pytest
from conftest import require_registry
from registry_server import RegistryServer, TokenServer, running_registry
from scripted_server import answering
from yarl import URL

from oci_pypi_sync.errors import AuthenticationError
from oci_pypi_sync.ops.login import check_login
from oci_pypi_sync.stores.auth import (
    Challenge,
    RegistryAuth,
    merge_scopes,
    normalize_scope,
    parse_challenges,
    parse_token_response,
    request_scopes,
)
from oci_pypi_sync.stores.credentials import Credentials, CredentialStore
from oci_pypi_sync.stores.http import HttpClient, Request, Response
from oci_pypi_sync.stores.registry import RegistryStore

pytestmark = pytest.mark.registry

PASSWORD = "s3cret-Pa55-word"
WRONG = "wrong-Pa55-word"
IDENTITY = "identity-token-for-alice"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def chunked(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def creds(username: str | None = None, password: str | None = None) -> CredentialStore:
    if username is None or password is None:
        return CredentialStore.empty()
    return CredentialStore.static(Credentials(username=username, password=password))


class Recorder:
    """(method, path, status) of every exchange, auth round trips included, from the
    HTTP client's debug log."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="oci_pypi_sync.stores.http")
        self._caplog = caplog

    @property
    def seen(self) -> list[tuple[str, str, int]]:
        out = []
        for record in self._caplog.records:
            if record.name == "oci_pypi_sync.stores.http":
                method, url, _, status = record.getMessage().split(" ")
                out.append((method, URL(url).path, int(status)))
        return out

    def statuses(self, method: str) -> list[int]:
        return [status for m, _, status in self.seen if m == method]


# --- pure parts -------------------------------------------------------------------------


def test_parse_bearer_challenge() -> None:
    header = (
        'Bearer realm="https://auth.test/token",service="registry.test",'
        'scope="repository:pypi/six:pull,push repository:pypi/a:pull",error="insufficient_scope"'
    )
    [challenge] = parse_challenges(header)
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.test/token"
    assert challenge.service == "registry.test"
    assert challenge.scopes == ("repository:pypi/six:pull,push", "repository:pypi/a:pull")
    assert challenge.error == "insufficient_scope"


def test_parse_several_challenges_and_escapes() -> None:
    challenges = parse_challenges(
        ['Basic realm="say \\"hi\\"", Bearer realm=https://a.test/t,service=s', "Digest nonce=1"]
    )
    assert [c.scheme for c in challenges] == ["basic", "bearer", "digest"]
    assert challenges[0].realm == 'say "hi"'
    assert challenges[1].realm == "https://a.test/t"
    assert challenges[1].service == "s"
    assert challenges[1].scopes == ()
    assert parse_challenges("") == []


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/v2/pypi/six/manifests/1.0", {}, ("repository:pypi/six:pull",)),
        ("HEAD", "/v2/six/blobs/sha256:ab", {}, ("repository:six:pull",)),
        ("POST", "/v2/a/b/c/blobs/uploads/", {}, ("repository:a/b/c:pull,push",)),
        (
            "PUT",
            "/v2/pypi/six/blobs/uploads/u-1",
            {"digest": "x"},
            ("repository:pypi/six:pull,push",),
        ),
        ("PATCH", "/v2/pypi/six/blobs/uploads/u-1", {}, ("repository:pypi/six:pull,push",)),
        ("DELETE", "/v2/pypi/six/manifests/sha256:ab", {}, ("repository:pypi/six:pull,push",)),
        (
            "POST",
            "/v2/pypi/copy/blobs/uploads/",
            {"mount": "sha256:ab", "from": "pypi/six"},
            ("repository:pypi/copy:pull,push", "repository:pypi/six:pull"),
        ),
        ("GET", "/v2/x/blobs/blobs/sha256:ab", {}, ("repository:x/blobs:pull",)),
        ("GET", "/v2/pypi/six/tags/list", {}, ("repository:pypi/six:pull",)),
        ("GET", "/v2/", {}, ()),
        ("GET", "/v2/_catalog", {}, ()),
    ],
)
def test_request_scopes(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert request_scopes(method, path, query) == expected


def test_challenge_scope_wins() -> None:
    derived = ("repository:pypi/six:pull",)
    named = Challenge("bearer", {"realm": "r", "scope": "repository:pypi/six:pull,push"})
    assert merge_scopes(named, derived) == ("repository:pypi/six:pull,push",)
    assert merge_scopes(Challenge("bearer", {"realm": "r"}), derived) == derived


def test_normalize_scope() -> None:
    assert normalize_scope("repository:pypi/six:push,pull") == "repository:pypi/six:pull,push"
    assert normalize_scope("repository:six:pull") == "repository:six:pull"
    assert normalize_scope("registry:catalog:*") == "registry:catalog:*"
    assert normalize_scope("odd") == "odd"


def test_parse_token_response() -> None:
    token = parse_token_response(b'{"token":"abc","expires_in":300}', now=1000.0)
    assert token is not None
    assert (token.value, token.expires_at) == ("abc", 1290.0)
    oauth = parse_token_response(b'{"access_token":"xyz"}', now=0.0)
    assert oauth is not None
    assert (oauth.value, oauth.expires_at) == ("xyz", 50.0)
    assert parse_token_response(b'{"nothing":1}', now=0.0) is None
    assert parse_token_response(b"not json", now=0.0) is None


# --- protocol corners with a mock transport ------------------------------------------------


async def test_streamed_body_is_never_resent_for_auth() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(202, headers={"Location": "/v2/pypi/six/blobs/uploads/u1"})
        if request.method == "PUT":
            return httpx.Response(
                401,
                headers={"WWW-Authenticate": 'Bearer realm="http://auth.test/token",service=s'},
                json={"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
            )
        return httpx.Response(204)

    data = b"x" * 100_000
    async with (
        answering(handler) as registry,
        RegistryStore(
            URL(registry.url).raw_authority,
            "pypi",
            plain_http=True,
            credentials=creds("alice", PASSWORD),
        ) as store,
    ):
        with pytest.raises(AuthenticationError) as caught:
            await store.put_blob("six", sha256(data), len(data), chunked(data))
    assert caught.value.status == 401
    assert [r.method for r in registry.seen] == ["POST", "PUT", "DELETE"]
    assert not any(r.url.path == "/token" for r in registry.seen)
    assert PASSWORD not in str(caught.value)


async def test_insufficient_scope_refetches_with_the_challenge_scope() -> None:
    asked: list[list[str]] = []
    tokens = {"repository:pypi/six:pull": "t-pull", "repository:pypi/six:pull,push": "t-push"}

    def token_service(request: httpx.Request) -> httpx.Response:
        scopes = request.url.params.get_list("scope")
        asked.append(scopes)
        return httpx.Response(200, json={"token": tokens[scopes[0]]})

    async with answering(token_service) as auth_server:

        def handler(request: httpx.Request) -> httpx.Response:
            challenge = f'Bearer realm="{auth_server.url}/token",service="svc"'
            if request.headers.get("Authorization") == "Bearer t-push":
                return httpx.Response(200)
            if request.headers.get("Authorization") == "Bearer t-pull":
                challenge += ',scope="repository:pypi/six:pull,push",error="insufficient_scope"'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})

        async with answering(handler) as registry:
            auth = RegistryAuth(creds(), "registry.test", base_url=registry.url)
            async with HttpClient(auth=auth) as client:
                url = f"{registry.url}/v2/pypi/six/manifests/1.0"
                # A pull token is fetched and cached for the GET, then refused as too narrow.
                first = await client.request("GET", url)
                assert first.status_code == 401  # the pull token was refused again: as is
                assert asked == [["repository:pypi/six:pull"]]
                second = await client.request("GET", url)
    assert second.status_code == 200
    assert asked[1] == ["repository:pypi/six:pull,push"]
    assert auth.cached_token(("repository:pypi/six:pull",)) == "t-push"


async def test_expired_token_is_not_attached() -> None:
    now = [0.0]
    issued: list[str] = []

    def token_service(request: httpx.Request) -> httpx.Response:
        issued.append(f"t{len(issued)}")
        return httpx.Response(200, json={"token": issued[-1], "expires_in": 60})

    async with answering(token_service) as auth_server:

        def handler(request: httpx.Request) -> httpx.Response:
            if request.headers.get("Authorization") == f"Bearer {issued[-1] if issued else ''}":
                return httpx.Response(200)
            challenge = f'Bearer realm="{auth_server.url}/t",service=s'
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})

        scope = ("repository:six:pull",)
        async with answering(handler) as registry:
            auth = RegistryAuth(
                creds(), "registry.test", base_url=registry.url, clock=lambda: now[0]
            )
            async with HttpClient(auth=auth) as client:
                url = f"{registry.url}/v2/six/blobs/sha256:a"
                assert (await client.request("HEAD", url)).status_code == 200
                assert auth.cached_token(scope) == "t0"
                assert (await client.request("HEAD", url)).status_code == 200
                assert issued == ["t0"]
                now[0] = 55.0  # past expires_in minus the safety margin
                assert auth.cached_token(scope) is None
                assert (await client.request("HEAD", url)).status_code == 200
    assert issued == ["t0", "t1"]


def test_the_flow_retries_with_basic_and_then_sends_it_up_front() -> None:
    """The flow alone, driven by hand: it is a generator and does no I/O."""
    auth = RegistryAuth(creds("alice", PASSWORD), "registry.test", base_url="https://registry.test")
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()

    def drive(statuses: list[int]) -> list[str | None]:
        request = Request.build("GET", "https://registry.test/v2/six/tags/list")
        flow = auth.flow(request)
        sent = next(flow)
        authorizations = [sent.headers.get("Authorization")]
        for status in statuses:
            try:
                sent = flow.send(_answer(sent, status))
            except StopIteration:
                break
            authorizations.append(sent.headers.get("Authorization"))
        return authorizations

    assert drive([401, 200]) == [None, basic]
    assert drive([200]) == [basic]
    # refused credentials are not sent a second time
    assert drive([401, 401]) == [basic]


def _answer(request: Request, status: int) -> Response:
    """A response to ``request`` as the flow reads one (status and challenge header)."""
    from multidict import CIMultiDict, CIMultiDictProxy

    class Answer:
        def __init__(self) -> None:
            self.status_code = status
            self.headers = CIMultiDictProxy(CIMultiDict({"WWW-Authenticate": 'Basic realm="r"'}))
            self.request = request

    return cast(Response, Answer())


async def test_cross_host_redirect_drops_authorization() -> None:
    payload = b"blob bytes"

    async with answering(lambda request: httpx.Response(200, content=payload)) as storage:

        def handler(request: httpx.Request) -> httpx.Response:
            if request.headers.get("Authorization") is None:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return httpx.Response(307, headers={"Location": f"{storage.url}/obj?sig=1"})

        async with (
            answering(handler) as registry,
            RegistryStore(
                URL(registry.url).raw_authority,
                "pypi",
                plain_http=True,
                credentials=creds("alice", PASSWORD),
            ) as store,
        ):
            got = b"".join([c async for c in store.open_blob("six", sha256(payload))])
    assert got == payload
    authorizations = [r.headers.get("Authorization") for r in registry.seen]
    assert authorizations[0] is None
    assert authorizations[1] is not None
    assert authorizations[1].startswith("Basic ")
    assert [r.headers.get("Authorization") for r in storage.seen] == [None]


# --- basic auth against the real registry ----------------------------------------------------


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    require_registry()
    with running_registry(tmp_path_factory.mktemp("basic"), htpasswd={"alice": PASSWORD}) as server:
        yield server


async def push_artifact(store: RegistryStore, repo: str, seed: int) -> bytes:
    """Stream a 2 MiB layer, the empty config and a manifest; return the manifest."""
    return await push_payload(store, repo, random.Random(seed).randbytes(2 * 1024 * 1024))


async def push_payload(store: RegistryStore, repo: str, layer: bytes) -> bytes:
    """Stream ``layer``, the empty config and a manifest tagged 1.0; return the manifest."""
    await store.put_blob(repo, sha256(layer), len(layer), chunked(layer))
    await store.put_blob_bytes(repo, EMPTY_DIGEST, b"{}")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "artifactType": "application/vnd.pypi.distribution.v1",
            "config": {
                "mediaType": "application/vnd.oci.empty.v1+json",
                "digest": EMPTY_DIGEST,
                "size": 2,
            },
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    await store.put_manifest(repo, "1.0", MANIFEST, manifest)
    return manifest


async def test_basic_auth_right_password(
    basic_registry: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(caplog)
    async with RegistryStore(
        basic_registry.host, "pypi", plain_http=True, credentials=creds("alice", PASSWORD)
    ) as store:
        manifest = await push_artifact(store, "six", seed=1)
        fetched = await store.get_manifest("six", "1.0")
    assert fetched is not None
    assert fetched.body == manifest
    # Only the first request needed a round trip; the streamed PUT went straight through.
    assert [s for _, _, s in recorder.seen].count(401) == 1
    assert 401 not in recorder.statuses("PUT")


async def test_basic_auth_wrong_password(
    basic_registry: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with RegistryStore(
        basic_registry.host, "pypi", plain_http=True, credentials=creds("alice", WRONG)
    ) as store:
        with pytest.raises(AuthenticationError) as caught:
            await store.has_blob("six", EMPTY_DIGEST)
    message = str(caught.value)
    assert caught.value.status == 401
    assert message.startswith(f"registry {basic_registry.host} refused blob pypi/six@")
    assert "credentials configured for it were not accepted" in message
    for text in (message, repr(caught.value), caplog.text):
        assert WRONG not in text
        assert PASSWORD not in text


async def test_basic_auth_without_credentials(basic_registry: RegistryServer) -> None:
    async with RegistryStore(
        basic_registry.host, "pypi", plain_http=True, credentials=creds()
    ) as store:
        with pytest.raises(AuthenticationError) as caught:
            await store.get_manifest("six", "1.0")
    assert caught.value.code == "UNAUTHORIZED"
    assert "no credentials are configured" in str(caught.value)


async def test_credential_helper_against_the_registry(
    basic_registry: RegistryServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\n"
        "read host\n"
        f'if [ "$1" = get ] && [ "$host" = "{basic_registry.host}" ]; then\n'
        f'  printf \'{{"ServerURL":"%s","Username":"alice","Secret":"{PASSWORD}"}}\' "$host"\n'
        "else\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(
        json.dumps({"credHelpers": {basic_registry.host: "test"}})
    )
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    monkeypatch.delenv("OCI_PYPI_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("OCI_PYPI_REGISTRY_PASSWORD", raising=False)
    async with RegistryStore(basic_registry.host, "helper", plain_http=True) as store:
        manifest = await push_artifact(store, "six", seed=2)
        assert await store.has_manifest("six", sha256(manifest)) is True


# --- bearer tokens against the real registry -------------------------------------------------


@pytest.fixture(scope="module")
def token_service() -> TokenServer:
    return TokenServer(
        users={"alice": PASSWORD},
        grants={
            "alice": {
                "pypi/six": ("pull", "push"),
                "pypi/copy": ("pull", "push"),
                "pypi/readonly": ("pull",),
            },
            "": {"pypi/six": ("pull",)},
        },
        refresh_tokens={IDENTITY: "alice"},
    )


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, token_service: TokenServer
) -> Iterator[RegistryServer]:
    require_registry()
    with running_registry(tmp_path_factory.mktemp("token"), token_auth=token_service) as server:
        yield server


async def test_bearer_push_uses_one_token_per_scope(
    token_registry: RegistryServer, token_service: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    token_service.requests.clear()
    recorder = Recorder(caplog)
    async with RegistryStore(
        token_registry.host, "pypi", plain_http=True, credentials=creds("alice", PASSWORD)
    ) as store:
        manifest = await push_artifact(store, "six", seed=3)
        await push_artifact(store, "six", seed=4)
        fetched = await store.get_manifest("six", "1.0")
    assert fetched is not None
    assert fetched.body != manifest  # the second push retagged 1.0
    asked = sorted(
        {
            (m, user, tuple(map(normalize_scope, scopes)))
            for m, user, scopes in token_service.requests
        }
    )
    assert asked == [
        ("GET", "alice", ("repository:pypi/six:pull",)),
        ("GET", "alice", ("repository:pypi/six:pull,push",)),
    ]
    assert len(token_service.requests) == 2
    assert 401 not in recorder.statuses("PUT")


async def test_bearer_mount_asks_for_both_repositories(
    token_registry: RegistryServer, token_service: TokenServer
) -> None:
    async with RegistryStore(
        token_registry.host, "pypi", plain_http=True, credentials=creds("alice", PASSWORD)
    ) as store:
        data = b"mount me" * 1000
        await store.put_blob_bytes("six", sha256(data), data)
        token_service.requests.clear()
        assert await store.mount_blob("copy", sha256(data), "six") is True
        assert await store.has_blob("copy", sha256(data)) is True
    scopes = {normalize_scope(s) for _, _, asked in token_service.requests for s in asked}
    assert {"repository:pypi/copy:pull,push", "repository:pypi/six:pull"} <= scopes


async def test_bearer_pull_only_repository_refuses_push(
    token_registry: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with RegistryStore(
        token_registry.host, "pypi", plain_http=True, credentials=creds("alice", PASSWORD)
    ) as store:
        assert await store.has_blob("readonly", EMPTY_DIGEST) is False
        with pytest.raises(AuthenticationError) as caught:
            await store.put_blob_bytes("readonly", EMPTY_DIGEST, b"{}")
    message = str(caught.value)
    assert message.startswith(
        f"registry {token_registry.host} refused upload of blob pypi/readonly@{EMPTY_DIGEST}"
    )
    assert "access was not granted (repository:pypi/readonly:pull,push)" in message
    assert PASSWORD not in message
    assert PASSWORD not in caplog.text


async def test_bearer_anonymous_pull_and_refused_push(token_registry: RegistryServer) -> None:
    async with RegistryStore(
        token_registry.host, "pypi", plain_http=True, credentials=creds()
    ) as store:
        assert await store.has_blob("six", EMPTY_DIGEST) is True
        with pytest.raises(AuthenticationError) as caught:
            await store.put_blob_bytes("six", EMPTY_DIGEST, b"{}")
    assert caught.value.status == 401


async def test_bearer_wrong_password(
    token_registry: RegistryServer, token_service: TokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with RegistryStore(
        token_registry.host, "pypi", plain_http=True, credentials=creds("alice", WRONG)
    ) as store:
        with pytest.raises(AuthenticationError) as caught:
            await store.has_blob("six", EMPTY_DIGEST)
    message = str(caught.value)
    realm_host = token_service.realm.split("/")[2]
    assert message == (
        f"token service {realm_host} for registry {token_registry.host} "
        "refused our credentials (HTTP 401)"
    )
    assert WRONG not in caplog.text
    assert WRONG not in repr(caught.value)


async def test_bearer_identity_token(
    token_registry: RegistryServer, token_service: TokenServer
) -> None:
    token_service.requests.clear()
    store_creds = CredentialStore.static(Credentials(identity_token=IDENTITY))
    async with RegistryStore(
        token_registry.host, "pypi", plain_http=True, credentials=store_creds
    ) as store:
        await push_artifact(store, "copy", seed=5)
    assert {method for method, _, _ in token_service.requests} == {"POST"}
    assert {user for _, user, _ in token_service.requests} == {"alice"}


# --- login checks -----------------------------------------------------------------------------


async def test_check_login_with_basic_auth(
    basic_registry: RegistryServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    host = basic_registry.host
    await check_login(host, Credentials(username="alice", password=PASSWORD), plain_http=True)
    with pytest.raises(AuthenticationError) as caught:
        await check_login(host, Credentials(username="alice", password=WRONG), plain_http=True)
    assert (
        str(caught.value) == f"registry {host} refused the credentials of user 'alice' (HTTP 401)"
    )
    assert (caught.value.status, caught.value.code) == (401, "UNAUTHORIZED")
    encoded = base64.b64encode(f"alice:{WRONG}".encode()).decode()
    for text in (str(caught.value), repr(caught.value), caplog.text):
        assert WRONG not in text
        assert encoded not in text


async def test_check_login_with_bearer_tokens(
    token_registry: RegistryServer, token_service: TokenServer
) -> None:
    host = token_registry.host
    token_service.requests.clear()
    await check_login(host, Credentials(username="alice", password=PASSWORD), plain_http=True)
    await check_login(host, Credentials(identity_token=IDENTITY), plain_http=True)
    # /v2/ needs no repository: the tokens were asked for without a scope.
    assert token_service.requests == [("GET", "alice", ()), ("POST", "alice", ())]
    with pytest.raises(AuthenticationError) as caught:
        await check_login(host, Credentials(username="alice", password=WRONG), plain_http=True)
    realm_host = token_service.realm.split("/")[2]
    assert str(caught.value) == (
        f"token service {realm_host} for registry {host} refused our credentials (HTTP 401)"
    )
