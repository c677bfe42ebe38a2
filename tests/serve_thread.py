"""``oci-pypi serve`` over a store, on 127.0.0.1 in a thread of its own, for tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cli_helpers import wait_for

from oci_pypi_sync.serve.server import build_server, listen
from oci_pypi_sync.stores.protocols import Store

#: Only ends a hang: a server that has not started by then never will.
START_SECONDS = 120


@contextmanager
def serving(store: Store, *, log_level: str = "info") -> Iterator[str]:
    """Serve ``store`` on a free port; yields the base URL (``http://127.0.0.1:PORT``)."""
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = build_server(store, host="127.0.0.1", port=port, log_level=log_level)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        wait_for(
            lambda: server.started or not thread.is_alive(),
            timeout=START_SECONDS,
            what="oci-pypi serve to start",
        )
        if not server.started:
            raise RuntimeError("oci-pypi serve did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
