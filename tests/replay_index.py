"""A simple-repository index on 127.0.0.1 serving recorded or handwritten projects.

It serves PEP 691 JSON pages whose files live under ``/files/``, the
files' bytes when it has them (with or without ``Range`` support), and
their core metadata at ``<file>.metadata``, advertised in the pages
(``core-metadata`` with the sha256 of the served bytes) or, with
``advertise_metadata=False``, served but not advertised, as some indexes
do. Because pip resolves from advertised metadata alone, pip itself can
run against it offline (``pip install --dry-run --report``), downloading
no wheel.

Recorded data (``tests/resolution/<tree>.json.gz``, written by
``tests/record_resolution.py``) holds the real pages of every project of a
dependency tree (files host rewritten to ``files.index.test``) and the
core metadata of the files a resolution reads, stored once per distinct
content, plus what pip answered against the real index.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from packaging.utils import canonicalize_name

RESOLUTION_DIR = Path(__file__).parent / "resolution"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class ReplayFile:
    """One file of a project page: what the page says, and what is served for it."""

    filename: str
    sha256: str
    data: bytes | None = None  # the file itself; None: 404 (pip must not need it)
    metadata: bytes | None = None  # its core metadata; None: no .metadata
    requires_python: str | None = None
    yanked: bool | str = False
    size: int | None = None
    upload_time: str | None = None

    @classmethod
    def of(
        cls, filename: str, data: bytes, metadata: bytes | None = None, **page: Any
    ) -> ReplayFile:
        """A file served whole, with its true digest and size."""
        return cls(
            filename, hashlib.sha256(data).hexdigest(), data, metadata, size=len(data), **page
        )


@dataclass
class ReplayIndex:
    """Projects (by display name), how to serve them, and the requests seen."""

    projects: dict[str, list[ReplayFile]] = field(default_factory=dict)
    advertise_metadata: bool = True
    ranges: bool = True
    url: str = ""
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, project: str, *files: ReplayFile) -> None:
        self.projects.setdefault(project, []).extend(files)

    def record(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def paths(self) -> list[str]:
        with self._lock:
            return [path for _, path, _ in self.requests]

    def file(self, filename: str) -> ReplayFile | None:
        for files in self.projects.values():
            for f in files:
                if f.filename == filename:
                    return f
        return None

    def page(self, project: str) -> bytes:
        entries = []
        for f in self.projects[project]:
            entry: dict[str, Any] = {
                "filename": f.filename,
                "url": f"{self.url}files/{f.filename}",
                "hashes": {"sha256": f.sha256},
                "yanked": f.yanked,
            }
            if f.requires_python is not None:
                entry["requires-python"] = f.requires_python
            if f.size is not None:
                entry["size"] = f.size
            if f.upload_time is not None:
                entry["upload-time"] = f.upload_time
            if f.metadata is not None and self.advertise_metadata:
                ref = {"sha256": hashlib.sha256(f.metadata).hexdigest()}
                entry["core-metadata"] = ref
                entry["data-dist-info-metadata"] = ref
            entries.append(entry)
        body = {"meta": {"api-version": "1.1"}, "name": project, "files": entries}
        return json.dumps(body).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        index = self.server.index
        range_header = self.headers.get("Range")
        index.record("GET", self.path, range_header)
        parts = [p for p in unquote(self.path.split("?", 1)[0]).split("/") if p]
        if len(parts) == 2 and parts[0] == "simple":
            wanted = canonicalize_name(parts[1])
            project = next((p for p in index.projects if canonicalize_name(p) == wanted), None)
            if project is not None:
                self._send(200, index.page(project), "application/vnd.pypi.simple.v1+json")
                return
        elif len(parts) == 2 and parts[0] == "files":
            name = parts[1]
            if name.endswith(".metadata"):
                served = index.file(name[: -len(".metadata")])
                if served is not None and served.metadata is not None:
                    self._send(200, served.metadata, "application/octet-stream")
                    return
            else:
                served = index.file(name)
                if served is not None and served.data is not None:
                    self._send_file(served.data, range_header if index.ranges else None)
                    return
        self._send(404, b"not found", "text/plain")

    def _send_file(self, data: bytes, range_header: str | None) -> None:
        match = _RANGE.fullmatch(range_header.strip()) if range_header else None
        if match is None or not (match.group(1) or match.group(2)):
            self._send(200, data, "application/octet-stream", {"Accept-Ranges": "none"})
            return
        if match.group(1):
            start = int(match.group(1))
            end = int(match.group(2)) + 1 if match.group(2) else len(data)
        else:
            start, end = max(0, len(data) - int(match.group(2))), len(data)
        end = min(end, len(data))
        if start >= len(data):
            self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{len(data)}"})
            return
        headers = {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        self._send(206, data[start:end], "application/octet-stream", headers)

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    index: ReplayIndex

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients closing kept-alive connections at exit are not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serving(index: ReplayIndex) -> Iterator[ReplayIndex]:
    """Serve ``index`` on 127.0.0.1 (``index.url`` is its root); stop on exit."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.index = index
    index.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield index
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --- recorded trees -------------------------------------------------------------


def recording_path(tree: str) -> Path:
    return RESOLUTION_DIR / f"{tree}.json.gz"


def load_recording(tree: str) -> dict[str, Any]:
    """The recorded data of one tree, as written by ``tests/record_resolution.py``."""
    data: dict[str, Any] = json.loads(gzip.decompress(recording_path(tree).read_bytes()))
    return data


def metadata_bytes(text: str) -> bytes:
    """Stored metadata text back to the bytes served (non-UTF-8 bytes survive as escapes)."""
    return text.encode("utf-8", "surrogateescape")


def recorded_index(tree: str) -> ReplayIndex:
    """A replay index holding a recorded tree: every page, and the recorded metadata."""
    data = load_recording(tree)
    blobs = {digest: metadata_bytes(text) for digest, text in data["blobs"].items()}
    metadata = {name: blobs[digest] for name, digest in data["metadata"].items()}
    index = ReplayIndex()
    for project, files in data["pages"].items():
        index.projects[project] = [
            ReplayFile(
                filename=f["filename"],
                sha256=f["sha256"],
                metadata=metadata.get(f["filename"]),
                requires_python=f.get("requires-python"),
                yanked=f.get("yanked", False),
                size=f.get("size"),
                upload_time=f.get("upload-time"),
            )
            for f in files
        ]
    return index


# --- pip against an index -------------------------------------------------------------


def pip_resolution(
    index_url: str,
    requirements: list[str],
    python: tuple[int, int],
    platforms: tuple[str, ...],
    workdir: Path,
    *,
    timeout: float = 600.0,
) -> dict[str, str]:
    """What pip installs for this target (project to version), from this index only.

    pip is told the target's Python and every platform tag it runs (pip
    itself does not widen ``manylinux_2_28`` to older glibc tags), with
    ``--only-binary :all:`` (which ``--platform`` demands) and a dry run
    that reports instead of installing. No configuration file or ``PIP_*``
    variable can add another index. pip evaluates environment markers
    against the host, whatever the target.
    """
    import os
    import subprocess
    import sys

    report = workdir / "report.json"
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--quiet",
        "--report",
        str(report),
        "--ignore-installed",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--only-binary",
        ":all:",
        "--target",
        str(workdir / "target"),
        "--python-version",
        f"{python[0]}.{python[1]}",
        "--index-url",
        index_url,
    ]
    for platform in platforms:
        command += ["--platform", platform]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    result = subprocess.run(
        [*command, *requirements],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip failed ({result.returncode}): {result.stderr[-3000:]}")
    data = json.loads(report.read_text())
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
        for item in data["install"]
    }


def pip_verdict(
    index_url: str, requirements: list[str], workdir: Path, env: Any
) -> str | dict[str, str]:
    """pip's answer for the target ``env``, or ``"ResolutionImpossible"`` when it finds a
    conflict (any other failure raises)."""
    try:
        return pip_resolution(index_url, requirements, env.python, env.platform_tags, workdir)
    except RuntimeError as exc:
        if "ResolutionImpossible" not in str(exc):
            raise
        return "ResolutionImpossible"
