"""A lean HTTP/1.1 transport for httpx: h11 over an asyncio protocol.

A sync of small files is a stream of short requests (a blob's POST and PUT,
a manifest PUT, a page or a file GET). With httpx's default transport the
client spends more CPU per request than a local registry spends answering
it: httpcore checks every idle connection's socket through anyio's typed
attributes before each request, and each read and write goes through
anyio's stream layer. This transport keeps httpx's client (auth, redirects,
timeouts, the API the rest of the code uses) and replaces only the part
below it: one h11 state machine per connection over a plain asyncio
protocol, and a last-in-first-out pool of idle connections per origin. It
speaks HTTP/1.1 only, which every registry and index serves.

:func:`lean_client` makes the client the tool uses: the lean transport
alone, or (with a proxy in the environment) mounted beside httpx's own for
the traffic the proxy does not carry (:func:`lean_mounts`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any, Self, cast

import h11
import httpx

_READ_SIZE = 64 * 1024
# how much of a request body is gathered before a write: the head and a
# small body go out in one send
_WRITE_BATCH = 64 * 1024
# the largest response head accepted (the same as httpcore's)
_MAX_HEAD = 100 * 1024
_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One keep-alive connection: a protocol buffering what arrives, and its h11 state.

    Bytes received stay readable after the peer resets the connection, so
    an answer sent just before a reset (a 413 to an upload) is not lost.
    """

    def __init__(self) -> None:
        self.state = h11.Connection(h11.CLIENT, max_incomplete_event_size=_MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self._received: list[bytes] = []
        self._received_size = 0
        self._reading_paused = False
        self._ended = False
        self._error: Exception | None = None
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio.Transport's interface, though uvloop's classes do not inherit it
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._received.append(data)
        self._received_size += len(data)
        if self._received_size > _READ_SIZE * 4 and self.transport is not None:
            self.transport.pause_reading()
            self._reading_paused = True
        self._wake_reader()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake_reader()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended = True
        self._error = exc
        self._wake_reader()
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_reader(self) -> None:
        waiter, self._readable = self._readable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- used by the transport ---

    def is_reusable(self) -> bool:
        """False once the server has closed it or sent something unasked."""
        return not (
            self._ended or self._received or self.transport is None or self.transport.is_closing()
        )

    async def read(self) -> bytes:
        """What has arrived, waiting for something; ``b""`` at the end of the stream."""
        while not self._received:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return b""
            self._readable = asyncio.get_running_loop().create_future()
            await self._readable
        data = self._received[0] if len(self._received) == 1 else b"".join(self._received)
        self._received.clear()
        self._received_size = 0
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return data

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@contextlib.contextmanager
def _mapped(
    request: httpx.Request,
    timeout_error: type[httpx.TimeoutException],
    error: type[httpx.TransportError],
) -> Iterator[None]:
    """Raise httpx's exception for a socket, TLS, timeout or protocol failure."""
    try:
        yield
    except TimeoutError as exc:
        raise timeout_error(str(exc) or "timed out", request=request) from exc
    except h11.LocalProtocolError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except (OSError, EOFError) as exc:  # ssl.SSLError is an OSError
        raise error(str(exc) or type(exc).__name__, request=request) from exc


def _timeout(seconds: float | None) -> contextlib.AbstractAsyncContextManager[object]:
    return asyncio.timeout(seconds) if seconds is not None else contextlib.nullcontext()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with a pool of at most ``max_connections`` connections (all origins).

    ``verify`` is what httpx takes: an :class:`ssl.SSLContext`, or a bool
    for the default context with or without verification.
    """

    def __init__(self, *, verify: ssl.SSLContext | bool = True, max_connections: int = 100) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None
        self._idle: dict[Origin, list[_Connection]] = {}
        self._permits = asyncio.Semaphore(max_connections)
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            if isinstance(self._verify, ssl.SSLContext):
                self._ssl = self._verify
            else:
                self._ssl = httpx.create_ssl_context(verify=self._verify)
        return self._ssl

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(
                f"the URL scheme {url.scheme!r} is not supported", request=request
            )
        origin: Origin = (url.scheme, url.host, url.port or _DEFAULT_PORTS[url.scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        async with _timeout(timeouts.get("pool")):
            with _mapped(request, httpx.PoolTimeout, httpx.ConnectError):
                await self._permits.acquire()
        connection: _Connection | None = None
        try:
            connection = self._checkout(origin) or await self._connect(origin, request, timeouts)
            head = await self._exchange(connection, request, timeouts)
        except BaseException:
            if connection is not None:
                connection.close()
            self._permits.release()
            raise
        return httpx.Response(
            head.status_code,
            headers=head.headers,
            stream=_ResponseBody(self, origin, connection, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.is_reusable():
                return connection
            connection.close()
        return None

    def _checkin(self, origin: Origin, connection: _Connection) -> None:
        if self._closed:
            connection.close()
        else:
            self._idle.setdefault(origin, []).append(connection)
        self._permits.release()

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._permits.release()

    async def _connect(
        self, origin: Origin, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> _Connection:
        scheme, host, port = origin
        context = self._ssl_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        async with _timeout(timeouts.get("connect")):
            with _mapped(request, httpx.ConnectTimeout, httpx.ConnectError):
                _, connection = await loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        return connection

    async def _exchange(
        self, connection: _Connection, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> h11.Response:
        """Send the request; read and return the response head.

        When a write fails (the server answered early, say with a 413, and
        closed), the response it sent is returned if there is one.
        """
        try:
            await self._send(connection, request, timeouts.get("write"))
        except httpx.WriteError:
            try:
                return await self._receive_head(connection, request, timeouts.get("read"))
            except httpx.HTTPError:
                pass
            raise
        return await self._receive_head(connection, request, timeouts.get("read"))

    async def _send(
        self, connection: _Connection, request: httpx.Request, timeout: float | None
    ) -> None:
        """Write the head and the body, gathering small pieces into one write.

        Only the writes are mapped to httpx's errors: an error of the body's
        own source (a failed download, a digest check) passes through as it is.
        """
        state = connection.state
        head = h11.Request(
            method=request.method, target=request.url.raw_path, headers=request.headers.raw
        )
        with _mapped(request, httpx.WriteTimeout, httpx.WriteError):
            pending = [state.send(head) or b""]
        size = len(pending[0])
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for chunk in request.stream:
            with _mapped(request, httpx.WriteTimeout, httpx.WriteError):
                data = state.send(h11.Data(data=chunk)) or b""
            pending.append(data)
            size += len(data)
            if size >= _WRITE_BATCH:
                await _write(connection, request, b"".join(pending), timeout)
                pending, size = [], 0
        with _mapped(request, httpx.WriteTimeout, httpx.WriteError):
            pending.append(state.send(h11.EndOfMessage()) or b"")
        await _write(connection, request, b"".join(pending), timeout)

    async def _receive_head(
        self, connection: _Connection, request: httpx.Request, timeout: float | None
    ) -> h11.Response:
        while True:
            event = await _next_event(connection, request, timeout)
            if isinstance(event, h11.Response):
                return event
            if isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without sending a response",
                    request=request,
                )
            # an InformationalResponse (1xx) is skipped


async def _write(
    connection: _Connection, request: httpx.Request, data: bytes, timeout: float | None
) -> None:
    with _mapped(request, httpx.WriteTimeout, httpx.WriteError):
        connection.write(data)
        async with _timeout(timeout):
            await connection.drain()


async def _next_event(
    connection: _Connection, request: httpx.Request, timeout: float | None
) -> h11.Event | type[h11.PAUSED]:
    state = connection.state
    with _mapped(request, httpx.ReadTimeout, httpx.ReadError):
        while True:
            event = state.next_event()
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]
            async with _timeout(timeout):
                data = await connection.read()
            if not data and state.their_state is h11.SEND_RESPONSE:
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without sending a response",
                    request=request,
                )
            state.receive_data(data)  # b"" is the end of the stream


class _ResponseBody(httpx.AsyncByteStream):
    """A response's body; closing it returns the connection to the pool if it is clean."""

    def __init__(
        self,
        transport: LeanTransport,
        origin: Origin,
        connection: _Connection,
        request: httpx.Request,
        timeout: float | None,
    ) -> None:
        self._transport = transport
        self._origin = origin
        self._connection: _Connection | None = connection
        self._request = request
        self._timeout = timeout
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        while True:
            event = await _next_event(connection, self._request, self._timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._complete = True
                return
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                raise httpx.RemoteProtocolError(
                    "the server closed the connection before the body ended",
                    request=self._request,
                )

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        state = connection.state
        if not self._complete:
            # an unread body that has already arrived whole (empty, say)
            # still leaves the connection clean
            self._complete = _drain_received(state)
        if self._complete and state.our_state is h11.DONE and state.their_state is h11.DONE:
            state.start_next_cycle()
            self._transport._checkin(self._origin, connection)
        else:
            self._transport._discard(connection)


class _SetCookiesOnly(httpx.Cookies):
    """A cookie jar that reads only responses that set a cookie.

    httpx hands every response to the jar, which first rebuilds the request
    as a urllib one (a URL parse); most responses set no cookie at all.
    """

    def extract_cookies(self, response: httpx.Response) -> None:
        headers = response.headers
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response)


class LeanClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookie jar skips responses that set no cookie."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cookies = self.cookies  # through the setter below

    @property
    def cookies(self) -> httpx.Cookies:
        return self._cookies

    @cookies.setter
    def cookies(self, cookies: httpx._types.CookieTypes) -> None:
        self._cookies = _SetCookiesOnly(cookies)


def _drain_received(state: h11.Connection) -> bool:
    """Read the events already received; True if the response ended among them."""
    try:
        while True:
            event = state.next_event()
            if isinstance(event, h11.EndOfMessage):
                return True
            if not isinstance(event, h11.Data):
                return False
    except h11.ProtocolError:
        return False


def _proxied(pattern: str) -> bool:
    """Whether the environment (``HTTP_PROXY``, ``NO_PROXY``...) may proxy ``pattern``.

    A whole scheme (``"http://"``) counts as proxied when any proxy is set
    for it; one origin when its host is not in ``NO_PROXY``.
    """
    scheme, _, netloc = pattern.partition("://")
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not netloc or not urllib.request.proxy_bypass(netloc)


def lean_mounts(
    *patterns: str, verify: ssl.SSLContext | bool = True, max_connections: int = 100
) -> dict[str, httpx.AsyncBaseTransport]:
    """Mounts for ``httpx.AsyncClient`` sending ``patterns`` through one :class:`LeanTransport`.

    A pattern is a scheme (``"http://"``) or an origin
    (``"https://registry.example:5000"``), as httpx's mounts take them.
    Patterns the environment routes through a proxy are left out: httpx's
    own transport, which the client uses for them, speaks to proxies.
    """
    wanted = [
        pattern
        for pattern in patterns
        if pattern.partition("://")[0] in _DEFAULT_PORTS and not _proxied(pattern)
    ]
    if not wanted:
        return {}
    transport = LeanTransport(verify=verify, max_connections=max_connections)
    return dict.fromkeys(wanted, transport)


def lean_client(
    *patterns: str,
    verify: ssl.SSLContext | bool = True,
    max_connections: int = 100,
    **options: Any,
) -> LeanClient:
    """A :class:`LeanClient` sending ``patterns`` (see :func:`lean_mounts`) the lean way.

    Without a proxy in the environment the lean transport is the client's
    only one, so httpx builds no transport of its own (nor the TLS context
    it loads at once); a TLS context is made when a first HTTPS connection
    opens. ``options`` go to ``httpx.AsyncClient`` (timeouts, headers...).
    """
    if not any(_proxied(pattern.partition("://")[0] + "://") for pattern in patterns):
        transport = LeanTransport(verify=verify, max_connections=max_connections)
        return LeanClient(transport=transport, **options)
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    mounts = lean_mounts(*patterns, verify=verify, max_connections=max_connections)
    return LeanClient(verify=verify, limits=limits, mounts=mounts, **options)
