"""A small simple-repository index served over real HTTP on loopback, for tests.

It serves PEP 691 JSON or PEP 503 HTML by content negotiation, the files,
and their PEP 658 ``.metadata``. A file can be made to lie about its
sha256, to test that such bytes are never stored under the advertised digest.
File bodies can be throttled (``FixtureIndex.throttle``, bytes per second
per response) so that a transfer lasts long enough to be interrupted, and
the bytes actually written for each path are counted (``FixtureIndex.sent``).
A file can be listed at a URL of its own (another host, another scheme), and
a project's page can be replaced by raw bytes (``FixtureIndex.raw_pages``).
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from packaging.utils import canonicalize_name


@dataclass
class FixtureFile:
    """One file of the fixture index."""

    filename: str
    data: bytes
    metadata: bytes | None = None
    yanked: bool | str = False
    requires_python: str | None = None
    advertised_sha256: str | None = None  # a lie, when set
    upload_time: str = "2024-01-02T03:04:05.000000Z"
    # PEP 740: the provenance object served at the Integrity API path; with
    # ``provenance_advertised`` only, the page names a URL the server answers 404 to
    provenance: bytes | None = None
    provenance_advertised: bool = False
    url: str | None = None  # where the page says it is; None: this server's /files/
    advertise_metadata: bool = True  # False: .metadata served, but the page does not say so

    @property
    def href(self) -> str:
        return self.url if self.url is not None else f"../../files/{self.filename}"

    @property
    def sha256(self) -> str:
        return self.advertised_sha256 or hashlib.sha256(self.data).hexdigest()


@dataclass
class FixtureIndex:
    """Projects by display name, and the requests the server saw."""

    projects: dict[str, list[FixtureFile]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    url: str = ""
    etags: bool = False  # send ETags on project pages and answer If-None-Match with 304
    # When set: project pages say Last-Modified with this date, and an If-Modified-Since
    # of the same date (and no If-None-Match) is answered 304
    last_modified: str | None = None
    statuses: list[int] = field(default_factory=list)  # the status of each request, in order
    throttle: float | None = None  # bytes per second per file body; None: full speed
    # When set: file bodies stop after their first piece until the event is set, so a
    # test holds a sync in the middle of its transfer for as long as it needs.
    gate: threading.Event | None = None
    # PEP 792 status and reason by project, on its pages (api-version 1.4 then)
    project_status: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # PyPI's serials: the JSON root list gives each project's _last-serial, and a
    # project page says X-PyPI-Last-Serial (page_serials: what a stale cache says)
    serials: dict[str, int] | None = None
    page_serials: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)  # body bytes written, by path
    provenance_requests: list[str] = field(default_factory=list)  # their Accept headers
    raw_pages: dict[str, bytes] = field(default_factory=dict)  # JSON bodies served as they are
    _sent_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_sent(self, path: str, size: int) -> None:
        with self._sent_lock:
            self.sent[path] = self.sent.get(path, 0) + size

    def sent_snapshot(self) -> dict[str, int]:
        with self._sent_lock:
            return dict(self.sent)

    def add(self, project: str, *files: FixtureFile) -> None:
        self.projects.setdefault(project, []).extend(files)

    def files_by_name(self) -> dict[str, FixtureFile]:
        return {f.filename: f for files in self.projects.values() for f in files}

    def provenance_path(self, project: str, f: FixtureFile) -> str:
        """The Integrity API path of a file's provenance (PEP 740, as the index routes it)."""
        version = f.filename.split("-")[1].removesuffix(".tar.gz")
        return f"/integrity/{canonicalize_name(project)}/{version}/{f.filename}/provenance"

    def provenance_url(self, project: str, f: FixtureFile) -> str | None:
        if f.provenance is None and not f.provenance_advertised:
            return None
        return self.url.removesuffix("/simple/") + self.provenance_path(project, f)

    def api_version(self, project: str) -> str:
        if project in self.project_status:
            return "1.4"
        advertised = any(self.provenance_url(project, f) for f in self.projects[project])
        return "1.3" if advertised else "1.1"

    def page_json(self, project: str) -> bytes:
        files = []
        for f in self.projects[project]:
            entry: dict[str, object] = {
                "filename": f.filename,
                "url": f.href,
                "hashes": {"sha256": f.sha256},
                "size": len(f.data),
                "upload-time": f.upload_time,
                "yanked": f.yanked,
            }
            if f.requires_python:
                entry["requires-python"] = f.requires_python
            if f.metadata is not None and f.advertise_metadata:
                entry["core-metadata"] = {"sha256": hashlib.sha256(f.metadata).hexdigest()}
            if self.api_version(project) >= "1.3":
                entry["provenance"] = self.provenance_url(project, f)
            files.append(entry)
        page: dict[str, object] = {
            "meta": {"api-version": self.api_version(project)},
            "name": project,
            "files": files,
            "versions": [],
        }
        if project in self.project_status:
            status, reason = self.project_status[project]
            page["project-status"] = {"status": status, **({"reason": reason} if reason else {})}
        return json.dumps(page).encode()

    def page_html(self, project: str) -> bytes:
        anchors = []
        for f in self.projects[project]:
            attrs = f'href="{html.escape(f.href)}#sha256={f.sha256}"'
            if f.requires_python:
                attrs += f' data-requires-python="{html.escape(f.requires_python)}"'
            if f.yanked:
                reason = f.yanked if isinstance(f.yanked, str) else ""
                attrs += f' data-yanked="{html.escape(reason)}"'
            if f.metadata is not None and f.advertise_metadata:
                digest = hashlib.sha256(f.metadata).hexdigest()
                attrs += f' data-core-metadata="sha256={digest}"'
            provenance = self.provenance_url(project, f)
            if provenance is not None:
                attrs += f' data-provenance="{html.escape(provenance)}"'
            anchors.append(f"<a {attrs}>{html.escape(f.filename)}</a><br/>")
        meta = f'<meta name="pypi:repository-version" content="{self.api_version(project)}">'
        if project in self.project_status:
            status, status_reason = self.project_status[project]
            meta += f'<meta name="pypi:project-status" content="{html.escape(status)}">'
            if status_reason:
                escaped = html.escape(status_reason)
                meta += f'<meta name="pypi:project-status-reason" content="{escaped}">'
        return (
            f"<!DOCTYPE html><html><head>{meta}</head><body>" + "".join(anchors) + "</body></html>"
        ).encode()


def make_wheel(
    name: str,
    version: str,
    requires: tuple[str, ...] = (),
    tag: str = "py3-none-any",
    payload: int = 0,
) -> FixtureFile:
    """A real (tiny) wheel with METADATA inside, and the same metadata served beside it.

    ``payload`` adds a stored (uncompressed) member of that many deterministic
    bytes, for a wheel of about that size.
    """
    dist = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    metadata = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        + "".join(f"Requires-Dist: {r}\n" for r in requires)
    ).encode()
    buffer = io.BytesIO()

    def member(name: str, data: bytes, compress_type: int = zipfile.ZIP_STORED) -> None:
        # A fixed timestamp: the same arguments always give the same bytes (and sha256).
        info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
        info.compress_type = compress_type
        archive.writestr(info, data)

    with zipfile.ZipFile(buffer, "w") as archive:
        member(f"{dist}.dist-info/METADATA", metadata)
        wheel_info = f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n"
        member(f"{dist}.dist-info/WHEEL", wheel_info.encode())
        if payload:
            seed = hashlib.sha256(f"{dist}-{tag}".encode()).digest()
            member(
                f"{canonicalize_name(name).replace('-', '_')}/payload.bin",
                (seed * (payload // len(seed) + 1))[:payload],
            )
        member(f"{dist}.dist-info/RECORD", b"")
    return FixtureFile(f"{dist}-{tag}.whl", buffer.getvalue(), metadata=metadata)


def make_sdist(name: str, version: str, size: int = 2048) -> FixtureFile:
    stem = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    data = hashlib.sha256(stem.encode()).digest() * (size // 32 + 1)
    return FixtureFile(f"{stem}.tar.gz", data[:size])


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        index = self.server.index
        index.requests.append((self.command, self.path))
        path = unquote(self.path.split("?", 1)[0])
        parts = [p for p in path.split("/") if p]
        body: bytes | None = None
        content_type = "application/octet-stream"
        throttled = False
        serial_header: int | None = None
        if parts == ["simple"] and index.serials is not None and "json" in self.headers["Accept"]:
            listed = [{"name": n, "_last-serial": index.serials[n]} for n in index.projects]
            meta = {"api-version": "1.1", "_last-serial": max(index.serials.values(), default=0)}
            body = json.dumps({"meta": meta, "projects": listed}).encode()
            content_type = "application/vnd.pypi.simple.v1+json"
        elif parts == ["simple"]:
            names = "".join(f'<a href="{canonicalize_name(n)}/">{n}</a>' for n in index.projects)
            body = f"<html><body>{names}</body></html>".encode()
            content_type = "text/html"
        elif len(parts) == 2 and parts[0] == "simple":
            wanted = canonicalize_name(parts[1])
            project = next((p for p in index.projects if canonicalize_name(p) == wanted), None)
            if project is not None and index.serials is not None:
                serial_header = index.page_serials.get(project, index.serials[project])
            raw = next(
                (b for p, b in index.raw_pages.items() if canonicalize_name(p) == wanted), None
            )
            if raw is not None:
                body = raw
                content_type = "application/vnd.pypi.simple.v1+json"
            elif project is not None:
                if "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                    body = index.page_json(project)
                    content_type = "application/vnd.pypi.simple.v1+json"
                else:
                    body = index.page_html(project)
                    content_type = "text/html; charset=utf-8"
        elif len(parts) == 2 and parts[0] == "files":
            files = index.files_by_name()
            name = parts[1]
            if name in files:
                body = files[name].data
                throttled = True
            elif name.endswith(".metadata") and name[: -len(".metadata")] in files:
                body = files[name[: -len(".metadata")]].metadata
        elif len(parts) == 5 and parts[0] == "integrity" and parts[4] == "provenance":
            index.provenance_requests.append(self.headers.get("Accept", ""))
            for project, project_files in index.projects.items():
                for f in project_files:
                    if index.provenance_path(project, f) == path:
                        body = f.provenance
                        content_type = "application/vnd.pypi.integrity.v1+json"
        if body is None:
            index.statuses.append(404)
            self.send_error(404)
            return
        if index.etags and len(parts) == 2 and parts[0] == "simple":
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                index.statuses.append(304)
                self.send_response(304)
                self.send_header("ETag", etag)
                if serial_header is not None:
                    self.send_header("X-PyPI-Last-Serial", str(serial_header))
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("ETag", etag)
        elif index.last_modified and len(parts) == 2 and parts[0] == "simple":
            since = self.headers.get("If-Modified-Since")
            if since == index.last_modified and self.headers.get("If-None-Match") is None:
                index.statuses.append(304)
                self.send_response(304)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Last-Modified", index.last_modified)
        else:
            self.send_response(200)
        if serial_header is not None:
            self.send_header("X-PyPI-Last-Serial", str(serial_header))
        index.statuses.append(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        try:
            if throttled:
                self._write_file_body(index, body)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-body

    def _write_file_body(self, index: FixtureIndex, body: bytes) -> None:
        """A file's bytes in pieces, counted, at ``index.throttle`` bytes per second."""
        piece = 64 << 10
        start = time.monotonic()
        written = 0
        for offset in range(0, len(body), piece):
            chunk = body[offset : offset + piece]
            rate = index.throttle
            if rate:
                delay = start + (written + len(chunk)) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            self.wfile.write(chunk)
            written += len(chunk)
            index.count_sent(self.path, len(chunk))
            gate = index.gate
            if gate is not None:
                self.wfile.flush()
                gate.wait(timeout=600)  # a bound that only ends a forgotten gate


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    index: FixtureIndex


@contextmanager
def running(server: ThreadingHTTPServer) -> Iterator[str]:
    """Serve in a thread until the block ends; yields the server's simple URL."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def serve_index(index: FixtureIndex) -> Iterator[FixtureIndex]:
    """Serve ``index`` on 127.0.0.1 and a free port; ``index.url`` is its simple URL."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.index = index
    with running(server) as url:
        index.url = url
        yield index
