"""A scriptable HTTP server on 127.0.0.1 that records every request it receives.

It stands in for a hostile index, a hostile registry or the object storage
a registry redirects to: the test gives a handler that answers each request
(any status, headers and body, streamed or not), and afterwards asserts on
:attr:`RecordingServer.seen`, what was sent where, credentials included.
It runs uvicorn in a thread with a bare ASGI app, so nothing between the
socket and the handler rewrites headers or bodies.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import uvicorn


@dataclass(frozen=True)
class Seen:
    """One request as it arrived: method, path with query, headers (names in lower case)."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    port: int

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


@dataclass(frozen=True)
class Reply:
    """An answer: ``body`` is bytes, or chunks sent one by one (chunked encoding)."""

    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: bytes | Iterable[bytes] | Callable[[], AsyncIterator[bytes]] = b""


Handler = Callable[[Seen], Reply | Awaitable[Reply]]


@dataclass
class RecordingServer:
    """Serve ``handler`` on a free loopback port; use as a context manager."""

    handler: Handler
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: uvicorn.Server | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _socket: socket.socket | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests_to(self, path_prefix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith(path_prefix)]

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        seen = Seen(
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            headers,
            body,
            self.port,
        )
        self.seen.append(seen)
        reply = self.handler(seen)
        if inspect.isawaitable(reply):
            reply = await reply
        assert isinstance(reply, Reply)
        raw_headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in reply.headers]
        await send({"type": "http.response.start", "status": reply.status, "headers": raw_headers})
        if isinstance(reply.body, bytes):
            await send({"type": "http.response.body", "body": reply.body})
            return
        chunks: AsyncIterator[bytes] | Iterable[bytes]
        chunks = reply.body() if callable(reply.body) else reply.body
        if isinstance(chunks, AsyncIterator):
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        else:
            for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    def __enter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._socket = sock
        config = uvicorn.Config(
            self._app,
            log_level="error",
            access_log=False,
            log_config=None,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            lifespan="off",
            interface="asgi3",
            h11_max_incomplete_event_size=1024 * 1024,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the recording server did not start")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        if self._socket is not None:
            self._socket.close()


def fixed(routes: Mapping[str, Reply], default: Reply | None = None) -> Handler:
    """A handler answering by exact path (query ignored); 404 for anything else."""
    missing = default or Reply(404, body=b"not found")

    def handle(seen: Seen) -> Reply:
        return routes.get(seen.path, missing)

    return handle


def json_reply(document: object, content_type: str = "application/json") -> Reply:
    import json

    return Reply(200, [("Content-Type", content_type)], json.dumps(document).encode())


def project_page(name: str, files: Sequence[Mapping[str, object]]) -> Reply:
    """A PEP 691 project page listing ``files`` (each a file entry as the PEP spells it)."""
    return json_reply(
        {"meta": {"api-version": "1.1"}, "name": name, "files": list(files), "versions": []},
        "application/vnd.pypi.simple.v1+json",
    )


def file_entry(filename: str, url: str, data: bytes, **extra: object) -> dict[str, object]:
    import hashlib

    return {
        "filename": filename,
        "url": url,
        "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
        "size": len(data),
        **extra,
    }


def ranged(seen: Seen, data: bytes, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    """``data`` as a file server sends it: a 206 for ``Range: bytes=a-b`` or ``bytes=-n``."""
    wanted = seen.headers.get("range", "")
    if not wanted.startswith("bytes="):
        return Reply(200, [*headers, ("Content-Length", str(len(data)))], data)
    first, _, last = wanted[len("bytes=") :].partition("-")
    if first == "":
        start, end = max(len(data) - int(last), 0), len(data) - 1
    else:
        start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
    part = data[start : end + 1]
    content_range = f"bytes {start}-{end}/{len(data)}"
    return Reply(206, [*headers, ("Content-Range", content_range)], part)


async def forward(
    seen: Seen, upstream: str, *, origin: str, headers: Mapping[str, str] | None = None
) -> Reply:
    """The answer of the real server at ``upstream`` to ``seen``, its Locations rewritten.

    A Location naming ``upstream`` is made to name ``origin`` (this server,
    as a reverse proxy does, or another one), and ``headers`` are added to
    the forwarded request (credentials a pre-signed URL would carry, say).
    """
    import httpx

    sent = {k: v for k, v in seen.headers.items() if k not in ("host", "content-length")}
    headers = {**sent, **(headers or {})}
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.request(
            seen.method,
            f"{upstream}{seen.target}",
            headers=headers,
            content=seen.body,
        )
    kept = []
    for name, value in answer.headers.multi_items():
        if name in ("content-length", "transfer-encoding", "connection", "content-encoding"):
            continue
        if name == "location":
            value = value.replace(upstream, origin)
        kept.append((name, value))
    return Reply(answer.status_code, kept, answer.content)
