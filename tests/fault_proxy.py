"""A fault-injecting HTTP/1.1 reverse proxy on loopback, for tests.

One proxy stands in front of one upstream (the fixture index or a
registry): the client is pointed at ``proxy.url`` instead of the upstream.
Everything is passed through as sent: methods, headers (``Host`` is kept
as the client sent it, so a registry's absolute ``Location`` points back
at the proxy), request and response bodies, streamed in both directions
with their framing (``Content-Length`` or chunked). Each request opens its
own upstream connection; the client side keeps its connection alive.

Rules select faults by method, a regex searched in the request target
(path and query) and a bounded count, optionally with a seeded
probability, so a request retried often enough eventually passes::

    with FaultProxy(registry.url, [Rule(Fault.status(503), "PUT", r"/blobs/uploads/")]) as p:
        ...  # talk to p.url
    assert p.faulted("PUT") == 1

Every request is recorded (method, target, status sent, fault injected).
Parsing is h11's on both sides; a thread per client connection.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Self
from urllib.parse import urlsplit

import h11

FaultKind = Literal["reset", "status", "truncate", "stall", "reset_upload", "header"]
_BUFFER = 64 * 1024
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)


@dataclass(frozen=True)
class Fault:
    """What to do to a request instead of (or while) passing it through."""

    kind: FaultKind
    status: int = 0
    retry_after: int | None = None
    seconds: float = 0.0
    then: Literal["continue", "close"] = "close"
    after_bytes: int | None = None
    forward: bool = False
    header: tuple[str, str] | None = None
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def reset(cls, *, forward: bool = False) -> Fault:
        """Connection reset (RST) before any response byte.

        With ``forward`` the request first reaches the upstream (it takes
        effect there), only the answer is lost.
        """
        return cls("reset", forward=forward)

    @classmethod
    def error(cls, status: int) -> Fault:
        """Answer ``status`` (e.g. 500, 503) without asking the upstream."""
        return cls("status", status=status)

    @classmethod
    def answer(cls, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> Fault:
        """Answer ``status`` with this JSON body (a registry's refusal) without asking upstream."""
        return cls("status", status=status, body=body, headers=headers)

    @classmethod
    def too_many(cls, retry_after: int = 1) -> Fault:
        """``429 Too Many Requests`` with ``Retry-After: retry_after``."""
        return cls("status", status=429, retry_after=retry_after)

    @classmethod
    def unavailable(cls, retry_after: int | None = None) -> Fault:
        """``503 Service Unavailable``, with ``Retry-After`` when given."""
        return cls("status", status=503, retry_after=retry_after)

    @classmethod
    def truncate(cls) -> Fault:
        """The upstream's headers (full ``Content-Length``), half its body, then close."""
        return cls("truncate")

    @classmethod
    def stall(
        cls,
        seconds: float,
        *,
        then: Literal["continue", "close"] = "close",
        after_bytes: int | None = None,
    ) -> Fault:
        """Send nothing for ``seconds``, then go on or close.

        ``after_bytes`` ``None`` stalls before the response headers; a number
        stalls after the headers and that many body bytes.
        """
        return cls("stall", seconds=seconds, then=then, after_bytes=after_bytes)

    @classmethod
    def reset_upload(cls, after_bytes: int | None = None) -> Fault:
        """Reset in the middle of the request body (default: half of its length).

        The bytes before the cut reach the upstream, then both sides are reset.
        """
        return cls("reset_upload", after_bytes=after_bytes)

    @classmethod
    def add_header(cls, name: str, value: str) -> Fault:
        """Pass the exchange through, adding a header to the upstream's response.

        Makes a registry look as if it had a capability it lacks (the OCI
        referrers API's ``OCI-Subject`` answer to a manifest ``PUT``).
        """
        return cls("header", header=(name, value))

    def label(self) -> str:
        if self.kind == "status":
            return f"status {self.status}"
        if self.kind == "stall":
            return f"stall {self.seconds:g}s then {self.then}"
        return self.kind


@dataclass
class Rule:
    """Inject ``fault`` into requests that match, at most ``times`` times.

    ``method`` ``None`` matches any method; ``path`` is a regex searched in
    the request target (path and query, as sent). With ``probability`` below
    1 a matching request is faulted at that (seeded) chance, still at most
    ``times`` times in all.
    """

    fault: Fault
    method: str | None = None
    path: str = ""
    times: int = 1
    probability: float = 1.0
    seed: int = 0
    injected: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)
    _random: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pattern = re.compile(self.path)
        self._random = random.Random(self.seed)

    def take(self, method: str, target: str) -> bool:
        """Whether this request gets the fault (counts it when so)."""
        if self.injected >= self.times:
            return False
        if self.method is not None and self.method.upper() != method:
            return False
        if not self._pattern.search(target):
            return False
        if self.probability < 1.0 and self._random.random() >= self.probability:
            return False
        self.injected += 1
        return True


@dataclass
class Record:
    """One request the proxy saw, in the order they arrived.

    ``status`` is what the client got (None: no answer), ``fault`` the fault
    injected (None: passed through), ``at`` when the request arrived
    (``time.monotonic()``). A request the client abandoned before its fault
    could act gets no fault, and the rule keeps that injection for later.
    """

    method: str
    target: str
    status: int | None = None
    fault: str | None = None
    at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class _ClosedError(Exception):
    """The client or the upstream went away."""


class FaultProxy:
    """A reverse proxy to ``upstream`` (``http://127.0.0.1:PORT``) on 127.0.0.1:<free port>."""

    def __init__(self, upstream: str, rules: list[Rule] | None = None) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError(f"upstream must be plain http on loopback, not {upstream!r}")
        self.upstream = ("127.0.0.1", parts.port or 80)
        self.rules: list[Rule] = list(rules or [])
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []

    # --- public ---

    @property
    def port(self) -> int:
        assert self._listener is not None, "proxy not started"
        return int(self._listener.getsockname()[1])

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as a registry target host."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget the rules and the records."""
        with self._lock:
            self.rules.clear()
            self.records.clear()

    def seen(self, method: str | None = None, path: str = "") -> list[Record]:
        """Records whose method (if given) matches and whose target contains regex ``path``."""
        pattern = re.compile(path)
        with self._lock:
            return [
                r
                for r in self.records
                if (method is None or r.method == method) and pattern.search(r.target)
            ]

    def faulted(self, method: str | None = None, path: str = "") -> list[Record]:
        return [r for r in self.seen(method, path) if r.fault is not None]

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept_loop, name="fault-proxy", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
            workers = list(self._workers)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ---

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            worker = threading.Thread(target=self._serve_client, args=(client,), daemon=True)
            with self._lock:
                self._connections.add(client)
                self._workers = [w for w in self._workers if w.is_alive()]
                self._workers.append(worker)
            worker.start()

    def _finish(self, record: Record, status: int | None, fault: Fault | None) -> None:
        with self._lock:
            record.status = status
            record.fault = fault.label() if fault else None

    def _pick(self, method: str, target: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.take(method, target):
                    return rule
        return None

    def _serve_client(self, client: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while not self._stopping.is_set():
                event = _next_event(conn, client)
                if isinstance(event, h11.ConnectionClosed):
                    return
                if not isinstance(event, h11.Request):
                    return
                keep = self._handle(conn, client, event)
                if not keep or conn.our_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (_ClosedError, OSError, h11.ProtocolError):
            return
        finally:
            with self._lock:
                self._connections.discard(client)
            with contextlib.suppress(OSError):
                client.close()

    def _handle(self, conn: h11.Connection, client: socket.socket, request: h11.Request) -> bool:
        """Serve one request; False when the client connection must end."""
        record = Record(request.method.decode(), request.target.decode())
        with self._lock:
            self.records.append(record)
        rule = self._pick(record.method, record.target)
        try:
            return self._exchange(conn, client, request, record, rule.fault if rule else None)
        except BaseException:
            with self._lock:
                if rule is not None and record.fault is None:
                    rule.injected -= 1  # it never acted: keep it for a later request
            raise

    def _exchange(
        self,
        conn: h11.Connection,
        client: socket.socket,
        request: h11.Request,
        record: Record,
        fault: Fault | None,
    ) -> bool:
        method = record.method
        if fault is not None and fault.kind == "reset" and not fault.forward:
            _drain(conn, client)
            self._finish(record, None, fault)
            _reset(client)
            return False
        if fault is not None and fault.kind == "status":
            _drain(conn, client)
            self._finish(record, fault.status, fault)
            self._answer(conn, client, fault, head=method == "HEAD")
            return True
        if fault is not None and fault.kind == "stall" and fault.after_bytes is None:
            self._finish(record, None, fault)
            if self._stopping.wait(fault.seconds) or fault.then == "close":
                return False
        upstream = socket.create_connection(self.upstream, timeout=120)
        try:
            up = h11.Connection(h11.CLIENT)
            headers = [
                (k, v) for k, v in request.headers.raw_items() if k.lower() not in _HOP_BY_HOP
            ]
            headers.append((b"Connection", b"close"))
            upstream.sendall(
                up.send(h11.Request(method=request.method, target=request.target, headers=headers))
                or b""
            )
            cut = fault.after_bytes if fault is not None and fault.kind == "reset_upload" else None
            if fault is not None and fault.kind == "reset_upload" and cut is None:
                length = _content_length(request.headers)
                cut = length // 2 if length else _BUFFER
            if not self._forward_body(conn, client, up, upstream, cut):
                self._finish(record, None, fault)
                _reset(client)
                _reset(upstream)
                return False
            response = _next_event(up, upstream)
            if not isinstance(response, h11.Response):
                raise _ClosedError
            if fault is not None and fault.kind == "reset":
                _drain(up, upstream)
                self._finish(record, None, fault)
                _reset(client)
                return False
            return self._relay_response(conn, client, up, upstream, response, record, fault)
        finally:
            with contextlib.suppress(OSError):
                upstream.close()

    def _forward_body(
        self,
        conn: h11.Connection,
        client: socket.socket,
        up: h11.Connection,
        upstream: socket.socket,
        cut: int | None,
    ) -> bool:
        """Stream the request body upstream; False when cut at ``cut`` bytes."""
        sent = 0
        while True:
            event = _next_event(conn, client)
            if isinstance(event, h11.Data):
                data = bytes(event.data)
                if cut is not None and sent + len(data) >= cut:
                    upstream.sendall(up.send(h11.Data(data=data[: cut - sent])) or b"")
                    return False
                sent += len(data)
                upstream.sendall(up.send(h11.Data(data=data)) or b"")
            elif isinstance(event, h11.EndOfMessage):
                if cut is not None:
                    return False
                upstream.sendall(up.send(h11.EndOfMessage()) or b"")
                return True
            else:
                raise _ClosedError

    def _relay_response(
        self,
        conn: h11.Connection,
        client: socket.socket,
        up: h11.Connection,
        upstream: socket.socket,
        response: h11.Response,
        record: Record,
        fault: Fault | None,
    ) -> bool:
        headers = [(k, v) for k, v in response.headers.raw_items() if k.lower() not in _HOP_BY_HOP]
        if fault is not None and fault.header is not None:
            headers.append((fault.header[0].encode(), fault.header[1].encode()))
        stall_at = fault.after_bytes if fault is not None and fault.kind == "stall" else None
        limit: int | None = None
        if fault is not None and fault.kind == "truncate":
            length = _content_length(response.headers)
            limit = length // 2 if length is not None else 0
        # recorded before the first byte: the client may be done as soon as the last arrives
        self._finish(record, response.status_code, fault)
        client.sendall(
            conn.send(
                h11.Response(
                    status_code=response.status_code, headers=headers, reason=response.reason
                )
            )
            or b""
        )
        sent = 0
        while True:
            event = _next_event(up, upstream)
            if isinstance(event, h11.Data):
                data = bytes(event.data)
                if stall_at is not None and sent + len(data) >= stall_at:
                    head = data[: stall_at - sent]
                    if head:
                        client.sendall(conn.send(h11.Data(data=head)) or b"")
                    sent += len(head)
                    data = data[len(head) :]
                    assert fault is not None
                    if self._stopping.wait(fault.seconds) or fault.then == "close":
                        return False
                    stall_at = None
                if limit is not None and (sent + len(data) >= limit or limit == 0):
                    head = data[: max(limit - sent, 0)] if limit else data[: len(data) // 2]
                    if head:
                        client.sendall(conn.send(h11.Data(data=head)) or b"")
                    return False  # truncated: the connection closes
                if data:
                    client.sendall(conn.send(h11.Data(data=data)) or b"")
                sent += len(data)
            elif isinstance(event, h11.EndOfMessage):
                if limit is not None:
                    return False
                client.sendall(conn.send(h11.EndOfMessage()) or b"")
                return True
            else:
                raise _ClosedError

    def _answer(
        self, conn: h11.Connection, client: socket.socket, fault: Fault, *, head: bool
    ) -> None:
        body = f'{{"errors":[{{"code":"UNAVAILABLE","message":"injected {fault.status}"}}]}}'
        data = fault.body if fault.body is not None else body.encode()
        headers = [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", str(len(data)).encode()),
            *((name.encode(), value.encode()) for name, value in fault.headers),
        ]
        if fault.retry_after is not None:
            headers.append((b"Retry-After", str(fault.retry_after).encode()))
        client.sendall(conn.send(h11.Response(status_code=fault.status, headers=headers)) or b"")
        if not head:
            client.sendall(conn.send(h11.Data(data=data)) or b"")
        client.sendall(conn.send(h11.EndOfMessage()) or b"")


def _next_event(conn: h11.Connection, sock: socket.socket) -> h11.Event:
    """The next h11 event, reading from ``sock`` as needed."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = sock.recv(_BUFFER)
            except OSError as exc:
                raise _ClosedError from exc
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Event):
            return event
        raise _ClosedError


def _drain(conn: h11.Connection, sock: socket.socket) -> None:
    """Read and discard the rest of the current message."""
    while True:
        event = _next_event(conn, sock)
        if isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return
        if not isinstance(event, h11.Data):
            raise _ClosedError


def _reset(sock: socket.socket) -> None:
    """Close with RST rather than FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _content_length(headers: Sequence[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


@contextlib.contextmanager
def fault_proxy(upstream: str, rules: list[Rule] | None = None) -> Iterator[FaultProxy]:
    """``with fault_proxy(url, rules) as proxy:`` — the proxy is running inside."""
    with FaultProxy(upstream, rules) as proxy:
        yield proxy
