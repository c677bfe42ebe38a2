"""A file-backed simple index on loopback, for syncing files too big to hold in memory.

The file is written to disk once, from a seeded pseudo-random stream, and
its sha256 is computed while writing. The server sends it from disk in
1 MiB chunks; nothing holds it whole. One project, one version, one sdist,
listed on a PEP 691 JSON page with its sha256 and size.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fixture_index import running

CHUNK = 1024 * 1024
PEP691 = "application/vnd.pypi.simple.v1+json"


@dataclass(frozen=True)
class BigFile:
    """A generated file: where it is, what it is called, its sha256 and size."""

    path: Path
    project: str
    filename: str
    sha256: str
    size: int

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256


def generate_file(
    directory: Path, size: int, *, project: str = "bigmem", version: str = "1.0", seed: int = 0
) -> BigFile:
    """Write ``size`` seeded pseudo-random bytes as an sdist; hash them on the way."""
    filename = f"{project}-{version}.tar.gz"
    path = directory / filename
    rng = random.Random(seed)
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            block = rng.randbytes(min(CHUNK, left))
            hasher.update(block)
            out.write(block)
            left -= len(block)
    return BigFile(path, project, filename, hasher.hexdigest(), size)


def project_page(file: BigFile) -> bytes:
    """The project's PEP 691 page: the one file, with its sha256 and size."""
    return json.dumps(
        {
            "meta": {"api-version": "1.1"},
            "name": file.project,
            "files": [
                {
                    "filename": file.filename,
                    "url": f"../../files/{file.filename}",
                    "hashes": {"sha256": file.sha256},
                    "size": file.size,
                    "upload-time": "2024-01-02T03:04:05.000000Z",
                    "yanked": False,
                }
            ],
            "versions": [],
        }
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, *, head: bool) -> None:
        file = self.server.file
        path = self.path.split("?", 1)[0]
        if path.rstrip("/") == f"/simple/{file.project}":
            page = project_page(file)
            self._headers(PEP691, len(page))
            if not head:
                self.wfile.write(page)
        elif path == f"/files/{file.filename}":
            self._headers("application/octet-stream", file.size)
            if not head:
                with file.path.open("rb") as source:
                    while block := source.read(CHUNK):
                        self.wfile.write(block)
        else:
            self.send_error(404)

    def _headers(self, content_type: str, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    file: BigFile


@contextmanager
def serve_big_file(file: BigFile) -> Iterator[str]:
    """Serve ``file`` on 127.0.0.1 and a free port; yields the index URL (``.../simple/``)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.file = file
    with running(server) as url:
        yield url
