"""Running the simple repository with uvicorn (``oci-pypi serve``)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

import uvicorn

from oci_pypi_sync.redact import RedactingFilter
from oci_pypi_sync.serve.app import create_app
from oci_pypi_sync.serve.view import DEFAULT_TTL
from oci_pypi_sync.stores.protocols import Store

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


def build_server(
    store: Store,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ttl: float = DEFAULT_TTL,
    log_level: str = "info",
) -> uvicorn.Server:
    """A uvicorn server for the mirror in ``store``, not started.

    uvicorn's own access log is off: the app logs one line per request
    itself (logger ``oci_pypi_sync.serve.access``), with the bytes sent.
    """
    config = uvicorn.Config(
        create_app(store, ttl=ttl),
        host=host,
        port=port,
        access_log=False,
        log_level=log_level,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


def listen(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: a free one), for :func:`serve`.

    Made before serving so that the address a caller announces is the one
    served (the real port), that connections made once it is announced wait
    in the backlog rather than being refused, and that a taken port or an
    unknown host is an :class:`OSError` before anything is said.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve(
    store: Store,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    ttl: float = DEFAULT_TTL,
    log_level: str = "info",
    sockets: Sequence[socket.socket] | None = None,
) -> None:
    """Serve the mirror in ``store`` as a simple repository until interrupted.

    Binds ``host:port`` (loopback by default: exposing a mirror is a
    decision), or serves on already-bound ``sockets``. The store is the
    caller's to close afterwards. Log lines go to the ``oci_pypi_sync.serve``
    loggers; without logging configured, access lines go to stderr.
    """
    access = logging.getLogger("oci_pypi_sync.serve.access")
    if not access.hasHandlers():  # a handler of the CLI (or the root) already prints it
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        handler.addFilter(RedactingFilter())
        access.addHandler(handler)
        access.setLevel(logging.INFO)
    server = build_server(store, host=host, port=port, ttl=ttl, log_level=log_level)
    await server.serve(sockets=list(sockets) if sockets is not None else None)
