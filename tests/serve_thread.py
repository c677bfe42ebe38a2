"""``oci-pypi serve`` over a store, on 127.0.0.1 in a thread of its own, for tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from oci_pypi_sync.serve.server import build_server
from oci_pypi_sync.stores.protocols import Store

#: Only ends a hang: a server that has not started by then never will.
START_SECONDS = 120


@contextmanager
def serving(store: Store, *, log_level: str = "info") -> Iterator[str]:
    """Serve ``store`` on a free port; yields the base URL (``http://127.0.0.1:PORT``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(store, host="127.0.0.1", port=port, log_level=log_level)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + START_SECONDS
    try:
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("oci-pypi serve did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
