"""The contract of the HTTP client under registry and index traffic, against loopback servers.

Every test takes ``make_client``: an implementation of the tool's HTTP
client (today :class:`~oci_pypi_sync.stores.http.HttpClient`, on aiohttp)
must pass all of them. What the rest of the tool relies on: keep-alive
reuse, bodies in every framing, early answers to uploads (a 413 before
the body is sent), resets and truncations raised as transport errors, an
error of the request body's own source passed through unchanged, a bounded
pool whose idle connections go away, proxies from the environment (the same
code path with and without one), redirects followed with credentials kept
to their origin, and the auth flow driven as a generator.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

import pytest
from registry_server import free_port
from scripted_server import (
    answering,
    echo_forever,
    header,
    read_request,
    reply,
    serving,
)

from oci_pypi_sync.errors import DigestMismatchError
from oci_pypi_sync.stores import http as http_module
from oci_pypi_sync.stores.http import (
    ConnectError,
    HttpClient,
    ReadTimeoutError,
    RemoteProtocolError,
    Request,
    Response,
    Timeouts,
    TooManyRedirectsError,
    TransportError,
)
from oci_pypi_sync.stores.registry import verified_stream

MakeClient = Callable[..., HttpClient]

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(params=["aiohttp"])
def make_client(request: pytest.FixtureRequest) -> MakeClient:
    """A factory of clients of one implementation (keyword arguments as HttpClient's)."""
    assert request.param == "aiohttp"
    return HttpClient


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def test_requests_share_one_keep_alive_connection(make_client: MakeClient) -> None:
    async with serving(echo_forever) as server, make_client() as http:
        for i in range(5):
            response = await http.request("POST", f"{server.url}/v2/x?n={i}", content=b"abc")
            assert response.status_code == 200
            assert response.content == f"POST /v2/x?n={i} abc".encode()
        head = await http.request("HEAD", f"{server.url}/blob")
        assert head.status_code == 200
        assert head.content == b""
        assert server.connections == 1


async def test_a_streamed_body_without_length_goes_chunked(make_client: MakeClient) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"x" * 100_000):
            yield part

    async with serving(echo_forever) as server, make_client() as http:
        response = await http.request("PUT", f"{server.url}/upload", content=parts())
        assert response.content == b"PUT /upload one two " + b"x" * 100_000


async def test_a_streamed_body_with_a_length_goes_as_it_is(make_client: MakeClient) -> None:
    seen: list[bytes] = []

    async def record(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head, body = await read_request(r)
        seen.append(head)
        w.write(reply(201, body))
        await w.drain()

    async def parts() -> AsyncIterator[bytes]:
        yield b"a" * 10
        yield b"b" * 10

    async with serving(record) as server, make_client() as http:
        response = await http.request(
            "PUT", f"{server.url}/upload", content=parts(), headers={"Content-Length": "20"}
        )
    assert response.content == b"a" * 10 + b"b" * 10
    assert header(seen[0], b"content-length") == b"20"
    assert header(seen[0], b"transfer-encoding") is None


async def test_a_connection_the_server_closed_is_not_reused(make_client: MakeClient) -> None:
    async def one_request_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(reply(200, b"ok"))  # keep-alive as far as the client knows
        await w.drain()

    async with serving(one_request_then_close) as server, make_client() as http:
        for _ in range(3):
            assert (await http.request("GET", server.url)).content == b"ok"
            await asyncio.sleep(0.05)  # the loop sees the server's FIN
        assert server.connections == 3


async def test_connection_close_is_honoured(make_client: MakeClient) -> None:
    async def close_after_reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(reply(204, close=True))
            await w.drain()

    async with serving(close_after_reply) as server, make_client() as http:
        for _ in range(3):
            assert (await http.request("DELETE", server.url)).status_code == 204
        assert server.connections == 3


async def test_an_early_answer_to_an_upload_is_returned(make_client: MakeClient) -> None:
    """A registry that caps request size answers 413 before the body is read, then resets."""

    async def refuse_upload(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(reply(413, b"too large", close=True))
        await w.drain()
        w.transport.abort()  # reset: the client's remaining writes fail

    async def big() -> AsyncIterator[bytes]:
        for _ in range(400):
            yield b"y" * 65536
            await asyncio.sleep(0)

    async with serving(refuse_upload) as server, make_client() as http:
        response = await http.request("PUT", f"{server.url}/upload", content=big())
        assert response.status_code == 413
        assert response.content == b"too large"


async def test_a_body_cut_short_raises_and_the_connection_is_dropped(
    make_client: MakeClient,
) -> None:
    async def truncate(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await w.drain()

    async with serving(truncate) as server, make_client() as http:
        with pytest.raises(RemoteProtocolError):
            await http.request("GET", server.url)
        with pytest.raises(RemoteProtocolError) as caught:
            await http.request("GET", f"{server.url}/blob?sig=s3cret")
        assert server.connections == 2
    # the URL is kept aside, not in the message: a query may hold a signature
    assert "s3cret" not in str(caught.value)
    assert caught.value.url is not None
    assert caught.value.url.query["sig"] == "s3cret"


async def test_a_reset_in_the_middle_of_a_body_is_a_transport_error(
    make_client: MakeClient,
) -> None:
    async def reset(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"z" * 1000)
        await w.drain()
        await asyncio.sleep(0.05)
        w.transport.abort()

    async with serving(reset) as server, make_client() as http:
        response = await http.request("GET", server.url, stream=True)
        received = bytearray()

        async def read_all() -> None:
            async for chunk in response.aiter_bytes():
                received.extend(chunk)

        with pytest.raises(TransportError):
            await read_all()
        await response.aclose()
        assert received == b"z" * 1000


async def test_no_answer_at_all_is_a_protocol_error(make_client: MakeClient) -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    async with serving(hang_up) as server, make_client() as http:
        with pytest.raises(RemoteProtocolError, match="without sending a response"):
            await http.request("GET", server.url)


async def test_a_stalled_server_times_out(make_client: MakeClient) -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    async with serving(stall) as server, make_client(timeouts=Timeouts(5, 0.2)) as http:
        with pytest.raises(ReadTimeoutError):
            await http.request("GET", server.url)


async def test_a_refused_connection_is_a_connect_error(make_client: MakeClient) -> None:
    async with serving(echo_forever) as server:
        url = server.url
    async with make_client() as http:
        with pytest.raises(ConnectError) as caught:
            await http.request("GET", url)
    # the operating system's reason stays reachable for the message
    cause: BaseException | None = caught.value
    errnos = []
    while cause is not None:
        errnos.append(getattr(cause, "errno", None))
        cause = cause.__cause__
    assert any(errnos)


async def test_connections_stay_within_the_limit(make_client: MakeClient) -> None:
    async def slow_echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            await asyncio.sleep(0.02)
            w.write(reply(200, b"ok"))
            await w.drain()

    async with serving(slow_echo) as server, make_client(max_connections=2) as http:
        responses = await asyncio.gather(*(http.request("GET", server.url) for _ in range(10)))
        assert [r.content for r in responses] == [b"ok"] * 10
        assert server.most_open == 2


async def test_idle_connections_are_closed_after_a_while(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_module, "IDLE_SECONDS", 0.2)
    async with serving(echo_forever) as server, make_client() as http:
        await asyncio.gather(*(http.request("GET", server.url) for _ in range(4)))
        assert server.open >= 1
        for _ in range(50):
            if server.open == 0:
                break
            await asyncio.sleep(0.1)
        assert server.open == 0
        # and a later request opens a new one
        assert (await http.request("GET", f"{server.url}/x")).content == b"GET /x "


async def test_an_unread_streamed_response_frees_its_connection_slot(
    make_client: MakeClient,
) -> None:
    async with serving(echo_forever) as server, make_client(max_connections=1) as http:
        response = await http.request("GET", server.url, stream=True)
        assert response.status_code == 200  # body never read
        await response.aclose()
        # the slot came back: a second request does not wait forever
        second = await asyncio.wait_for(http.request("GET", server.url), timeout=120)
        assert second.status_code == 200


async def test_an_unread_empty_body_leaves_the_connection_reusable(
    make_client: MakeClient,
) -> None:
    async with serving(echo_forever) as server, make_client() as http:
        response = await http.request("HEAD", f"{server.url}/blob", stream=True)
        assert response.status_code == 200
        await response.aclose()
        await http.request("GET", f"{server.url}/next")
        assert server.connections == 1


async def test_response_bodies_in_every_framing_arrive_whole(make_client: MakeClient) -> None:
    big = bytes(range(256)) * (5 * 4096)  # 5 MiB: reading pauses and resumes

    async def framings(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(r)
            path = head.split(b" ")[1]
            if path == b"/big":
                w.write(reply(200, big))
            elif path == b"/chunked":
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for part in (b"abc", b"defgh", b"i" * 70_000):
                    w.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                w.write(b"0\r\n\r\n")
            else:  # neither length nor chunks: the body ends with the connection
                w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
                await w.drain()
                return
            await w.drain()

    async with serving(framings) as server, make_client() as http:
        response = await http.request("GET", f"{server.url}/big", stream=True)
        received = b""
        async for chunk in response.aiter_bytes():
            received += chunk
            await asyncio.sleep(0)
        await response.aclose()
        assert received == big
        chunked = await http.request("GET", f"{server.url}/chunked")
        assert chunked.content == b"abcdefgh" + b"i" * 70_000
        closed = await http.request("GET", f"{server.url}/close")
        assert closed.content == b"until the end"


async def test_an_error_of_the_body_s_source_passes_through_unchanged(
    make_client: MakeClient,
) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 100
        raise FileNotFoundError("the local copy vanished")

    async with serving(echo_forever) as server, make_client() as http:
        with pytest.raises(FileNotFoundError, match="vanished"):
            await asyncio.wait_for(
                http.request(
                    "PUT",
                    f"{server.url}/upload",
                    content=failing(),
                    headers={"Content-Length": "200"},
                ),
                timeout=120,  # only ends a hang
            )
        # the half-sent request's connection is not reused
        assert (await http.request("GET", f"{server.url}/after")).content == b"GET /after "
        assert server.connections == 2


async def test_a_digest_error_raised_from_the_body_passes_through(
    make_client: MakeClient,
) -> None:
    """The registry store's check holds the last chunk back and raises instead."""
    received: list[bytes] = []

    async def record(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head = await r.readuntil(b"\r\n\r\n")
        received.append(head)
        received.append(await r.read(1 << 20))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"q" * 1000

    wrong = "sha256:" + hashlib.sha256(b"something else").hexdigest()
    body = verified_stream(chunks(), wrong, 4000, "blob x")
    async with serving(record) as server, make_client() as http:
        with pytest.raises(DigestMismatchError):
            await asyncio.wait_for(
                http.request(
                    "PUT", f"{server.url}/upload", content=body, headers={"Content-Length": "4000"}
                ),
                timeout=120,  # only ends a hang
            )
    await asyncio.sleep(0.05)
    assert sum(len(part) for part in received[1:]) < 4000  # never sent whole


async def test_cookies_that_are_set_are_sent_back(make_client: MakeClient) -> None:
    async def set_then_echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(reply(200, extra=b"Set-Cookie: session=abc; Path=/\r\n"))
        while True:
            await w.drain()
            head, _ = await read_request(r)
            w.write(reply(200, header(head, b"cookie") or b"none"))

    async with serving(set_then_echo) as server, make_client() as http:
        await http.request("GET", f"{server.url}/login")
        assert (await http.request("GET", f"{server.url}/next")).content == b"session=abc"


async def test_a_client_under_a_proxy_setting_goes_through_the_proxy(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bytes] = []

    async def proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head, _ = await read_request(r)
        seen.append(head.split(b"\r\n")[0])
        w.write(reply(200, b"via proxy", close=True))
        await w.drain()

    async with serving(proxy) as server, serving(echo_forever) as direct:
        monkeypatch.setenv("HTTP_PROXY", server.url)
        monkeypatch.setenv("NO_PROXY", "localhost")
        async with make_client() as http:
            response = await http.request("GET", "http://index.test/simple/")
            # NO_PROXY names hosts that are reached directly
            bypassed = await http.request("GET", direct.url.replace("127.0.0.1", "localhost"))
    assert response.content == b"via proxy"
    assert seen == [b"GET http://index.test/simple/ HTTP/1.1"]
    assert bypassed.content == b"GET / "
    assert direct.connections == 1


async def test_plain_http_builds_no_tls_context(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts = 0
    create = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        nonlocal contexts
        contexts += 1
        return create(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    async with serving(echo_forever) as server, make_client() as http:
        assert (await http.request("GET", f"{server.url}/a")).content == b"GET /a "
    # plain HTTP: no TLS context was built (loading CA certificates takes ~15 ms)
    assert contexts == 0
    async with make_client() as http:
        with pytest.raises(ConnectError):
            await http.request("GET", f"https://127.0.0.1:{free_port()}/")
    assert contexts == 1


async def test_a_redirect_to_another_origin_is_followed_without_credentials(
    make_client: MakeClient,
) -> None:
    async with serving(echo_forever) as storage:
        storage_heads: list[bytes] = []

        async def keep_heads(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while True:
                head, _ = await read_request(r)
                storage_heads.append(head)
                w.write(reply(200, b"blob bytes"))
                await w.drain()

        storage.handler = keep_heads
        registry_heads: list[bytes] = []

        async def redirect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while True:
                head, _ = await read_request(r)
                registry_heads.append(head)
                path = head.split(b" ")[1]
                target = f"{storage.url}/bucket/blob" if path == b"/away" else "/here"
                if path == b"/here":
                    w.write(reply(200, b"same origin"))
                else:
                    w.write(reply(307, extra=f"Location: {target}\r\n".encode()))
                await w.drain()

        async with serving(redirect) as registry, make_client() as http:
            away = await http.request(
                "GET",
                f"{registry.url}/away",
                headers={"Authorization": "Bearer secret"},
                follow_redirects=True,
            )
            here = await http.request(
                "GET",
                f"{registry.url}/stay",
                headers={"Authorization": "Bearer secret"},
                follow_redirects=True,
            )
            not_followed = await http.request("GET", f"{registry.url}/away")
    assert away.content == b"blob bytes"
    assert str(away.url) == f"{storage.url}/bucket/blob"
    assert header(storage_heads[0], b"authorization") is None
    assert here.content == b"same origin"
    assert [header(h, b"authorization") for h in registry_heads[:3]] == [b"Bearer secret"] * 3
    assert not_followed.status_code == 307


async def test_see_other_turns_into_a_get_and_loops_are_bounded(
    make_client: MakeClient,
) -> None:
    async with answering(lambda request: _redirects(request)) as server, make_client() as http:
        moved = await http.request(
            "POST", f"{server.url}/form", content=b"a=1", follow_redirects=True
        )
        assert moved.content == b"GET /done"
        with pytest.raises(TooManyRedirectsError):
            await http.request("GET", f"{server.url}/loop", follow_redirects=True)
    assert server.seen[1].method == "GET"
    assert server.seen[1].content == b""


def _redirects(request: Any) -> Any:
    import httpx

    path = request.url.path
    if path == "/form":
        return httpx.Response(303, headers={"Location": "/done"})
    if path == "/loop":
        return httpx.Response(302, headers={"Location": "/loop"})
    return httpx.Response(200, content=f"{request.method} {path}".encode())


class _TokenOnce:
    """An auth flow: on a 401, fetch a token from ``realm`` and send the request again."""

    def __init__(self, realm: str) -> None:
        self.realm = realm

    def flow(self, request: Request) -> Generator[Request, Response, None]:
        response = yield request
        if response.status_code != 401 or not request.replayable:
            return
        token = yield Request.build("GET", self.realm)
        request.headers["Authorization"] = f"Bearer {token.content.decode()}"
        yield request


async def test_the_auth_flow_is_driven_and_its_token_answers_are_read(
    make_client: MakeClient,
) -> None:
    import httpx

    async with answering(lambda request: httpx.Response(200, content=b"t0k")) as tokens:

        def registry(request: httpx.Request) -> httpx.Response:
            if request.headers.get("Authorization") == "Bearer t0k":
                return httpx.Response(200, content=b"welcome")
            return httpx.Response(401)

        async with answering(registry) as server, make_client() as http:
            auth = _TokenOnce(f"{tokens.url}/token")
            response = await http.request("GET", f"{server.url}/v2/", auth=auth)

            async def stream() -> AsyncIterator[bytes]:
                yield b"body"

            streamed = await http.request("PUT", f"{server.url}/v2/x", content=stream(), auth=auth)
    assert response.content == b"welcome"
    assert [r.url.path for r in tokens.seen] == ["/token"]
    # a streamed body is sent once: its 401 is the caller's answer
    assert streamed.status_code == 401
    assert [r.method for r in server.seen] == ["GET", "GET", "PUT"]


async def test_a_closed_client_refuses_requests(make_client: MakeClient) -> None:
    http = make_client()
    await http.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await http.request("GET", "http://127.0.0.1:9/")
