"""HTTP for registry and index traffic: aiohttp underneath, a small surface of our own on top.

A sync of small files is a stream of short requests, and the client's CPU
per request decides its speed on a machine it shares with the registry.
aiohttp (a C parser, its own connection pool) costs the least per request
of the Python clients measured (``docs/performance.md``); this module keeps
its API out of the rest of the tool:

* :class:`Request` and :class:`Response`, with the few things the tool reads;
* :class:`Auth`, an auth flow as a generator of requests (the challenge
  logic stays pure: :mod:`.auth` for registries, the index's origin auth);
* :class:`HttpClient`: proxies from the environment (the same code path with
  and without one), TLS made when a first HTTPS connection opens, a bounded
  pool whose idle connections are closed after a while, redirects followed
  here and only here (``Authorization`` is dropped when the origin changes),
  every failure raised as a :class:`TransportError` of this module, and
  every exchange logged at debug level (without the URL's query);
* an error raised by a request body's own source (a failed download, a
  digest check) passes through unchanged, not as a connection error.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Generator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from oci_pypi_sync.errors import LimitExceededError
from oci_pypi_sync.limits import MAX_BUFFERED_BYTES, exceeded

if TYPE_CHECKING:  # imported on the first request: a run refused early never needs it
    import aiohttp

__all__ = [
    "Auth",
    "ConnectError",
    "ConnectTimeoutError",
    "HTTPError",
    "HTTPTimeoutError",
    "HttpClient",
    "ReadError",
    "ReadTimeoutError",
    "RemoteProtocolError",
    "Request",
    "Response",
    "Timeouts",
    "TooManyRedirectsError",
    "TransportError",
    "WriteError",
]

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 20
#: Idle connections are closed after this long (the pool's size bounds the rest).
IDLE_SECONDS = 15.0
_READ_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


# --- errors --------------------------------------------------------------------


class HTTPError(Exception):
    """A request that did not get a usable answer; ``url`` is the one it was sent to
    (after redirects: the last one), when known."""

    def __init__(self, message: str, *, url: URL | None = None) -> None:
        super().__init__(message)
        self.url = url


class TransportError(HTTPError):
    """No HTTP answer: connection, TLS, timeout or protocol failure."""


class ConnectError(TransportError):
    """The connection (or its TLS handshake) could not be made."""


class HTTPTimeoutError(TransportError):
    """Something took longer than its timeout."""


class ConnectTimeoutError(HTTPTimeoutError):
    """Connecting took longer than the connect timeout."""


class ReadTimeoutError(HTTPTimeoutError):
    """The server sent nothing for longer than the read timeout."""


class ReadError(TransportError):
    """Reading from the connection failed."""


class WriteError(TransportError):
    """Writing to the connection failed."""


class RemoteProtocolError(TransportError):
    """The server broke HTTP/1.1: no answer, a body cut short, a malformed head."""


class TooManyRedirectsError(HTTPError):
    """More than :data:`MAX_REDIRECTS` redirects in a row."""


def _mapped(exc: BaseException, url: URL) -> HTTPError:
    """aiohttp's or the socket's exception as this module's (raise it ``from exc``).

    The message is the reason alone: a URL's query may hold a signature, so
    the URL is only kept as the ``url`` attribute.
    """
    import aiohttp

    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectTimeoutError("connecting timed out", url=url)
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return ReadTimeoutError("timed out", url=url)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectError(str(exc), url=url)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return RemoteProtocolError(
            "the server closed the connection without sending a response",
            url=url,
        )
    if isinstance(exc, aiohttp.ClientResponseError):  # its str() carries the URL
        return RemoteProtocolError(exc.message or f"HTTP {exc.status}", url=url)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return RemoteProtocolError(str(exc), url=url)
    if isinstance(exc, ssl.SSLError):
        return ConnectError(str(exc), url=url)
    if isinstance(exc, OSError):  # aiohttp.ClientOSError too
        return ReadError(str(exc.strerror or exc), url=url)
    return TransportError(str(exc) or type(exc).__name__, url=url)


def _is_failure(exc: BaseException) -> bool:
    """Whether :func:`_mapped` turns ``exc`` into a :class:`TransportError`."""
    import aiohttp

    return isinstance(exc, aiohttp.ClientError | OSError)


# --- requests and responses -----------------------------------------------------

Body = bytes | AsyncIterable[bytes] | None


@dataclass(slots=True)
class Request:
    """One request as an auth flow sees it; ``headers`` may be changed by the flow."""

    method: str
    url: URL
    headers: CIMultiDict[str]
    body: Body = None
    #: whether the answer's body is content-decoded; ``False`` gives the bytes as sent
    #: (a file, or a body the caller decodes itself with a bound)
    decode: bool = True

    @classmethod
    def build(
        cls,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        body: Body = None,
        decode: bool = True,
    ) -> Request:
        """``params`` are added to the URL's own query (a sequence may repeat a name)."""
        parsed = url if isinstance(url, URL) else URL(url)
        if params:
            parsed = parsed.extend_query(params)
        return cls(method, parsed, CIMultiDict(headers or {}), body, decode)

    @property
    def replayable(self) -> bool:
        """Whether the body can be sent again (no body, or bytes; not a stream)."""
        return self.body is None or isinstance(self.body, bytes)

    @property
    def origin(self) -> tuple[str, str, int | None]:
        return _origin(self.url)


def _origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host or "", url.port


class Response:
    """A response: status and head at once, the body read or streamed.

    A response from :meth:`HttpClient.send` without ``stream`` has its body
    read (:attr:`content`); a streamed one is read with :meth:`aiter_bytes`
    and must be closed (:meth:`aclose`).
    """

    __slots__ = ("_content", "_raw", "headers", "reason_phrase", "request", "status_code", "url")

    def __init__(self, raw: aiohttp.ClientResponse, request: Request) -> None:
        self._raw = raw
        self.request = request
        self.status_code: int = raw.status
        self.reason_phrase: str = raw.reason or ""
        self.headers: CIMultiDictProxy[str] = raw.headers
        self.url: URL = raw.url
        self._content: bytes | None = None

    def __repr__(self) -> str:
        shown = self.url.with_query(None).with_user(None)  # a query may hold a signature
        return f"<Response [{self.status_code}] {self.request.method} {shown}>"

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def content(self) -> bytes:
        """The body; only after it was read (:meth:`read`, or a non-streamed send)."""
        if self._content is None:
            raise RuntimeError("the response body has not been read")
        return self._content

    def json(self) -> Any:
        return json.loads(self.content)

    async def read(self) -> bytes:
        """The whole body (once read, kept); the connection goes back to the pool.

        No more than :data:`~oci_pypi_sync.limits.MAX_BUFFERED_BYTES` is read
        (decoded): a bigger answer is refused with a
        :class:`~oci_pypi_sync.errors.LimitExceededError` and its connection
        closed. Callers that expect big bodies stream them.
        """
        if self._content is None:
            parts: list[bytes] = []
            size = 0
            try:
                while chunk := await self._raw.content.read(_READ_CHUNK):
                    size += len(chunk)
                    if size > MAX_BUFFERED_BYTES:
                        self._raw.close()
                        raise LimitExceededError(
                            exceeded(
                                f"the answer of {self.url.host} to {self.request.method}",
                                MAX_BUFFERED_BYTES,
                                "MAX_BUFFERED_BYTES",
                            )
                        )
                    parts.append(chunk)
            except Exception as exc:
                if not _is_failure(exc):
                    raise
                raise _mapped(exc, self.url) from exc
            self._content = b"".join(parts)
            self._raw.release()
        return self._content

    async def aiter_bytes(self, chunk_size: int = _READ_CHUNK) -> AsyncIterator[bytes]:
        """The body as it arrives, in pieces of at most ``chunk_size`` bytes."""
        if self._content is not None:
            if self._content:
                yield self._content
            return
        content = self._raw.content
        while True:
            try:
                chunk = await content.read(chunk_size)
            except Exception as exc:
                if not _is_failure(exc):
                    raise
                raise _mapped(exc, self.url) from exc
            if not chunk:
                return
            yield chunk

    async def aclose(self) -> None:
        """Give the connection back (reused only when the body was read whole)."""
        self._raw.release()


class Auth(Protocol):
    """An auth flow: yields the requests to send, is sent each one's response.

    The first request it yields is the caller's (headers added as it
    likes); any other (a token service's, say) is read whole before it is
    sent back. When the flow ends, the last response is the caller's.
    """

    def flow(self, request: Request) -> Generator[Request, Response, None]: ...


# --- the client --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds to connect, and to wait for the next bytes of an answer (``None``: forever)."""

    connect: float | None = 60.0
    read: float | None = 300.0


class HttpClient:
    """Requests over one connection pool of at most ``max_connections`` connections.

    ``verify`` is an :class:`ssl.SSLContext`, ``True`` for the default trust
    (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, then certifi's roots), or
    ``False``. ``headers`` go with every request. Proxies come from the
    environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``),
    read once. The aiohttp session is made on the first request, inside the
    running event loop.
    """

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_connections: int = 100,
        timeouts: Timeouts = Timeouts(),
        headers: Mapping[str, str] | None = None,
        auth: Auth | None = None,
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | bool | None = None
        self._max_connections = max_connections
        self._timeouts = timeouts
        self._headers = dict(headers or {})
        self.auth = auth
        self._session: aiohttp.ClientSession | None = None
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_cache: dict[tuple[str, str, int | None], tuple[URL, aiohttp.BasicAuth | None]]
        self._proxy_cache = {}
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
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- public -------------------------------------------------------------------

    async def send(
        self,
        request: Request,
        *,
        auth: Auth | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> Response:
        """Send ``request`` through ``auth``'s flow (else the client's), following redirects.

        Raises a :class:`TransportError` when no answer came, or whatever
        the body's source raised.
        """
        flow_auth = auth if auth is not None else self.auth
        if flow_auth is None:
            return await self._send_following(request, stream, follow_redirects)
        flow = flow_auth.flow(request)
        next_request = next(flow)
        while True:
            response = await self._send_following(next_request, stream, follow_redirects)
            try:
                if next_request is not request:
                    await response.read()
                next_request = flow.send(response)
            except StopIteration:
                return response
            except BaseException:
                await response.aclose()
                raise
            await response.aclose()

    async def request(
        self,
        method: str,
        url: str | URL,
        *,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        content: Body = None,
        auth: Auth | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
        decode: bool = True,
    ) -> Response:
        """:meth:`send` of a request built from the arguments (``decode``: see :class:`Request`)."""
        built = Request.build(
            method, url, headers=headers, params=params, body=content, decode=decode
        )
        return await self.send(built, auth=auth, stream=stream, follow_redirects=follow_redirects)

    # --- plumbing -------------------------------------------------------------------

    async def _send_following(
        self, request: Request, stream: bool, follow_redirects: bool
    ) -> Response:
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send_once(request)
            if logger.isEnabledFor(logging.DEBUG):
                # no query: a presigned storage URL carries its signature there
                shown = request.url.with_query(None).with_user(None)
                logger.debug("%s %s -> %d", request.method, shown, response.status_code)
            location = response.headers.get("Location")
            if not (follow_redirects and response.status_code in _REDIRECTS and location):
                if not stream:
                    try:
                        await response.read()
                    except BaseException:
                        await response.aclose()
                        raise
                return response
            await response.aclose()
            request = _redirected(request, response.status_code, location)
        shown = request.url.with_query(None).with_user(None)
        raise TooManyRedirectsError(f"more than {MAX_REDIRECTS} redirects, the last to {shown}")

    async def _send_once(self, request: Request) -> Response:
        session = self._session or self._open()
        url = request.url
        failures: list[BaseException] = []
        body = request.body
        data = body if body is None or isinstance(body, bytes) else _watched(body, failures)
        proxy, proxy_auth = self._proxy_for(url)
        try:
            raw = await session.request(
                request.method,
                url,
                headers=request.headers,
                data=data,
                allow_redirects=False,
                proxy=proxy,
                proxy_auth=proxy_auth,
                ssl=self._ssl_for(url),
                auto_decompress=request.decode,
            )
        except Exception as exc:
            if failures:  # the body's source failed, not the connection
                raise failures[0] from None
            if not _is_failure(exc):
                raise
            raise _mapped(exc, url) from exc
        return Response(raw, request)

    def _open(self) -> aiohttp.ClientSession:
        import aiohttp

        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        timeouts = self._timeouts
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=IDLE_SECONDS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=timeouts.connect, sock_read=timeouts.read
            ),
            headers=self._headers,
            # registries behind load balancers may pin an upload to one node by cookie
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            trust_env=False,  # proxies are read here; no ~/.netrc credentials
            auto_decompress=True,
        )
        return self._session

    def _ssl_for(self, url: URL) -> ssl.SSLContext | bool:
        if url.scheme != "https":
            return True  # unused for plain HTTP
        if self._ssl is None:
            if isinstance(self._verify, ssl.SSLContext) or self._verify is False:
                self._ssl = self._verify
            else:
                from oci_pypi_sync.stores.tls import default_context

                self._ssl = default_context()
        return self._ssl

    def _proxy_for(self, url: URL) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy the environment names for ``url``'s origin, if any (and its credentials)."""
        if not self._proxies:
            return None, None
        origin = _origin(url)
        cached = self._proxy_cache.get(origin)
        if cached is None:
            cached = self._proxy_cache[origin] = _proxy(self._proxies, url)
        proxy, proxy_auth = cached
        return (proxy, proxy_auth) if str(proxy) else (None, None)


def _proxy(proxies: Mapping[str, str], url: URL) -> tuple[URL, aiohttp.BasicAuth | None]:
    """``(proxy URL, credentials)``; an empty URL for a direct connection."""
    chosen = proxies.get(url.scheme) or proxies.get("all")
    host = url.host or ""
    netloc = f"{host}:{url.port}" if url.explicit_port else host
    if not chosen or urllib.request.proxy_bypass(netloc):
        return URL(), None
    proxy = URL(chosen if "://" in chosen else f"http://{chosen}")
    if proxy.user is None:
        return proxy, None
    import aiohttp

    return proxy.with_user(None), aiohttp.BasicAuth(proxy.user, proxy.password or "")


def _redirected(request: Request, status: int, location: str) -> Request:
    """The request a redirect asks for; credentials stay with their origin.

    303 (and 301/302 after a POST) turns into a body-less GET, as browsers
    do; 307/308 repeat the method and body, which a stream cannot do.
    """
    url = request.url.join(URL(location))
    headers = CIMultiDict(request.headers)
    if _origin(url) != request.origin:
        headers.popall("Authorization", None)
        headers.popall("Cookie", None)
    method, body = request.method, request.body
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        for name in ("Content-Length", "Content-Type", "Transfer-Encoding"):
            headers.popall(name, None)
    elif not request.replayable:
        raise RemoteProtocolError(
            f"{request.method} {request.url}: redirected after a stream", url=url
        )
    return Request(method, url, headers, body, request.decode)


async def _watched(
    chunks: AsyncIterable[bytes], failures: list[BaseException]
) -> AsyncIterator[bytes]:
    """``chunks``, noting what their source raised (aiohttp reports it as a connection error)."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:
        failures.append(exc)
        raise
