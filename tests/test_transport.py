"""The lean HTTP/1.1 transport against scripted loopback servers."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar
from typing import Any

import httpx
import pytest
from registry_server import free_port

from oci_pypi_sync.stores.transport import LeanClient, LeanTransport, lean_client, lean_mounts

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A loopback server running ``handler`` per connection; counts connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and its body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:")), None
    )
    if length is not None:
        return head, await reader.readexactly(length)
    if b"transfer-encoding: chunked" not in lines:
        return head, b""
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        body += await reader.readexactly(size + 2)
        if size == 0:
            return head, body[:-2] if body.endswith(b"\r\n") else body
        body = body[:-2]


def reply(status: int, body: bytes = b"", *, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body
    )


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        head, body = await read_request(reader)
        method, target = head.split(b" ")[:2]
        answer = reply(200, method + b" " + target + b" " + body)
        if method == b"HEAD":  # the head alone, with the body's length
            answer = answer[: answer.index(b"\r\n\r\n") + 4]
        writer.write(answer)
        await writer.drain()


def client(**kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(**kwargs))  # type: ignore[arg-type]


async def test_requests_share_one_keep_alive_connection() -> None:
    async with serving(echo_forever) as server, client() as http:
        for i in range(5):
            response = await http.post(f"{server.url}/v2/x?n={i}", content=b"abc")
            assert response.status_code == 200
            assert response.content == f"POST /v2/x?n={i} abc".encode()
        head = await http.head(f"{server.url}/blob")
        assert head.status_code == 200
        assert head.content == b""
        assert server.connections == 1


async def test_a_streamed_body_without_length_goes_chunked() -> None:
    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two ", b"x" * 100_000):
            yield part

    async with serving(echo_forever) as server, client() as http:
        response = await http.put(f"{server.url}/upload", content=parts())
        assert response.content == b"PUT /upload one two " + b"x" * 100_000


async def test_a_connection_the_server_closed_is_not_reused() -> None:
    async def one_request_then_close(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(reply(200, b"ok"))  # keep-alive as far as the client knows
        await w.drain()

    async with serving(one_request_then_close) as server, client() as http:
        for _ in range(3):
            assert (await http.get(server.url)).content == b"ok"
            await asyncio.sleep(0.05)  # the loop sees the server's FIN
        assert server.connections == 3


async def test_connection_close_is_honoured() -> None:
    async def close_after_reply(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            w.write(reply(204, close=True))
            await w.drain()

    async with serving(close_after_reply) as server, client() as http:
        for _ in range(3):
            assert (await http.delete(server.url)).status_code == 204
        assert server.connections == 3


async def test_an_early_answer_to_an_upload_is_returned() -> None:
    async def refuse_upload(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        w.write(reply(413, b"too large", close=True))
        await w.drain()
        w.transport.abort()  # reset: the client's remaining writes fail

    async def big() -> AsyncIterator[bytes]:
        for _ in range(400):
            yield b"y" * 65536
            await asyncio.sleep(0)

    async with serving(refuse_upload) as server, client() as http:
        response = await http.put(f"{server.url}/upload", content=big())
        assert response.status_code == 413
        assert response.content == b"too large"


async def test_a_body_cut_short_raises_and_the_connection_is_dropped() -> None:
    async def truncate(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await w.drain()

    async with serving(truncate) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(server.url)
        assert server.connections == 2


async def test_no_answer_at_all_is_a_protocol_error() -> None:
    async def hang_up(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)

    async with serving(hang_up) as server, client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get(server.url)


async def test_a_stalled_server_times_out() -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    async with (
        serving(stall) as server,
        httpx.AsyncClient(transport=LeanTransport(), timeout=0.2) as http,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with serving(echo_forever) as server:
        url = server.url
    async with client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url)


async def test_connections_stay_within_the_limit() -> None:
    async def slow_echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await read_request(r)
            await asyncio.sleep(0.02)
            w.write(reply(200, b"ok"))
            await w.drain()

    async with serving(slow_echo) as server, client(max_connections=2) as http:
        responses = await asyncio.gather(*(http.get(server.url) for _ in range(10)))
        assert [r.content for r in responses] == [b"ok"] * 10
        assert server.most_open == 2


async def test_an_unread_streamed_response_frees_its_connection_slot() -> None:
    async with serving(echo_forever) as server, client(max_connections=1) as http:
        async with http.stream("GET", server.url) as response:
            assert response.status_code == 200  # body never read
        # the slot came back: a second request does not wait forever
        second = await asyncio.wait_for(http.get(server.url), timeout=5)
        assert second.status_code == 200


def test_lean_mounts_leave_proxied_traffic_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert set(lean_mounts("http://", "https://reg.test:5000")) == {
        "http://",
        "https://reg.test:5000",
    }
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    assert set(lean_mounts("http://", "https://reg.test:5000")) == {"http://"}
    monkeypatch.setenv("NO_PROXY", "reg.test")
    assert set(lean_mounts("http://", "https://reg.test:5000")) == {
        "http://",
        "https://reg.test:5000",
    }
    monkeypatch.setenv("ALL_PROXY", "http://proxy.test:3128")
    assert set(lean_mounts("http://", "https://reg.test:5000")) == {"https://reg.test:5000"}


async def test_the_lean_client_keeps_cookies_that_are_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def set_then_echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head, _ = await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=abc; Path=/\r\nContent-Length: 0\r\n\r\n")
        while True:
            await w.drain()
            head, _ = await read_request(r)
            cookie = [line for line in head.split(b"\r\n") if line.lower().startswith(b"cookie:")]
            w.write(reply(200, b"|".join(cookie)))

    jar_reads = 0
    extract = CookieJar.extract_cookies

    def counted(jar: CookieJar, response: Any, request: Any) -> None:
        nonlocal jar_reads
        jar_reads += 1
        extract(jar, response, request)

    monkeypatch.setattr(CookieJar, "extract_cookies", counted)
    async with serving(set_then_echo) as server, LeanClient(transport=LeanTransport()) as http:
        await http.get(f"{server.url}/login")
        assert jar_reads == 1
        assert http.cookies.get("session") == "abc"
        assert (await http.get(f"{server.url}/next")).content == b"Cookie: session=abc"
        # a response without Set-Cookie leaves the jar as it was
        assert dict(http.cookies) == {"session": "abc"}
        assert jar_reads == 1  # the jar never saw the responses without Set-Cookie


async def test_a_client_under_a_proxy_setting_goes_through_the_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bytes] = []

    async def proxy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        head, _ = await read_request(r)
        seen.append(head.split(b"\r\n")[0])
        w.write(reply(200, b"via proxy", close=True))
        await w.drain()

    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    async with serving(proxy) as server:
        monkeypatch.setenv("HTTP_PROXY", server.url)
        async with lean_client("http://", "https://") as http:
            response = await http.get("http://index.test/simple/")
    assert response.content == b"via proxy"
    assert seen == [b"GET http://index.test/simple/ HTTP/1.1"]


async def test_a_client_without_proxies_uses_the_lean_transport_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    contexts = 0
    create = ssl.create_default_context

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        nonlocal contexts
        contexts += 1
        return create(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    async with serving(echo_forever) as server, lean_client("http://", "https://") as http:
        assert (await http.get(f"{server.url}/a")).content == b"GET /a "
        assert (await http.get(f"{server.url}/b")).content == b"GET /b "
        assert server.connections == 1
    # plain HTTP: no TLS context was built (loading CA certificates takes ~15 ms)
    assert contexts == 0
    async with lean_client("https://") as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"https://127.0.0.1:{free_port()}/")
    assert contexts == 1


async def test_an_error_of_the_body_s_source_passes_through_at_once() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 100
        raise FileNotFoundError("the local copy vanished")

    async with serving(echo_forever) as server, client() as http:
        with pytest.raises(FileNotFoundError, match="vanished"):
            await asyncio.wait_for(
                http.put(
                    f"{server.url}/upload", content=failing(), headers={"Content-Length": "200"}
                ),
                timeout=5,
            )
        # the half-sent request's connection is not reused
        assert (await http.get(f"{server.url}/after")).content == b"GET /after "
        assert server.connections == 2


async def test_an_unread_empty_body_leaves_the_connection_reusable() -> None:
    async with serving(echo_forever) as server, client() as http:
        async with http.stream("HEAD", f"{server.url}/blob") as response:
            assert response.status_code == 200
        await http.get(f"{server.url}/next")
        assert server.connections == 1


async def test_response_bodies_in_every_framing_arrive_whole() -> None:
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

    async with serving(framings) as server, client() as http:
        async with http.stream("GET", f"{server.url}/big") as response:
            received = b""
            async for chunk in response.aiter_raw():
                received += chunk
                await asyncio.sleep(0)
        assert received == big
        chunked = await http.get(f"{server.url}/chunked")
        assert chunked.content == b"abcdefgh" + b"i" * 70_000
        closed = await http.get(f"{server.url}/close")
        assert closed.content == b"until the end"


async def test_a_redirect_to_another_origin_is_followed() -> None:
    async with serving(echo_forever) as storage:

        async def redirect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await read_request(r)
            location = f"{storage.url}/bucket/blob".encode()
            w.write(b"HTTP/1.1 307 X\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
            await read_request(r)

        async with serving(redirect) as registry, client() as http:
            response = await http.get(f"{registry.url}/v2/x/blobs/sha256:ab", follow_redirects=True)
            assert response.content == b"GET /bucket/blob "
            assert storage.connections == 1
