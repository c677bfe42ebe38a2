"""Loopback HTTP servers for the HTTP client's tests.

:func:`serving` runs a scripted handler over raw streams (for what a real
server does at the edges: resets, truncated bodies, early answers);
:func:`answering` runs a handler that maps one request to one response, given
and returned as httpx's value types (used here only as plain request and
response records, built and read by the tests).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
from aiohttp import web

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


def header(head: bytes, name: bytes) -> bytes | None:
    """A header's value in a raw request head (case-insensitive name)."""
    prefix = name.lower() + b":"
    for line in head.split(b"\r\n")[1:]:
        if line.lower().startswith(prefix):
            return line[len(prefix) :].strip()
    return None


def reply(status: int, body: bytes = b"", *, close: bool = False, extra: bytes = b"") -> bytes:
    closing = b"Connection: close\r\n" if close else b""
    return (
        f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n".encode()
        + closing
        + extra
        + b"\r\n"
        + body
    )


async def echo_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers every request with ``METHOD TARGET BODY`` (HEAD: the head alone)."""
    while True:
        head, body = await read_request(reader)
        method, target = head.split(b" ")[:2]
        answer = reply(200, method + b" " + target + b" " + body)
        if method == b"HEAD":
            answer = answer[: answer.index(b"\r\n\r\n") + 4]
        writer.write(answer)
        await writer.drain()


RequestHandler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Answering:
    """A server answering each request with ``handler``'s response; keeps what it saw."""

    def __init__(self, handler: RequestHandler) -> None:
        self.handler = handler
        self.seen: list[httpx.Request] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = httpx.Request(
            request.method,
            f"{self.url}{request.raw_path}",
            headers=list(request.raw_headers),
            content=body,
        )
        self.seen.append(seen)
        answer = self.handler(seen)
        if not isinstance(answer, httpx.Response):
            answer = await answer
        headers = [
            (name, value)
            for name, value in answer.headers.multi_items()
            if name.lower() not in ("content-length", "transfer-encoding")
        ]
        response = web.Response(status=answer.status_code, body=answer.read())
        for name, value in headers:
            response.headers.add(name, value)
        return response


@asynccontextmanager
async def answering(handler: RequestHandler) -> AsyncIterator[Answering]:
    """Serve ``handler`` on 127.0.0.1 (``server.url`` is its origin, no trailing slash)."""
    server = Answering(handler)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server._handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    server.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        yield server
    finally:
        await runner.cleanup()
