"""nginx serving a static index, and request counting at nginx and the registry.

nginx runs in the foreground as a child of the benchmark, with a config of
its own in a temp dir, on 127.0.0.1 only. Its access log has one short line
per request, so a case's request count is the lines added during the case.
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from corpus import SERIAL_HEADER_VALUE

PEP691_JSON = "application/vnd.pypi.simple.v1+json"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_config(root: Path, work: Path, port: int, workers: int) -> str:
    """Static files only: JSON pages by ``index.json``, files with sendfile."""
    temp = work / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    temps = "\n".join(
        f"  {name}_temp_path {temp / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes {workers};
daemon off;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  log_format bench '$request_method $uri $status $body_bytes_sent';
  access_log {work / "access.log"} bench;
{temps}
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 120;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location /simple/ {{
      types {{ }}
      default_type {PEP691_JSON};
      index index.json;
    }}
    location /pypi/ {{
      types {{ }}
      default_type application/json;
      add_header X-PyPI-Last-Serial {SERIAL_HEADER_VALUE} always;
    }}
    location /list/ {{
      types {{ }}
      default_type text/html;
      index index.html;
    }}
    location / {{
      types {{ }}
      default_type application/octet-stream;
    }}
  }}
}}
"""


@dataclass
class Nginx:
    """A running nginx: ``url`` is ``http://127.0.0.1:PORT``."""

    url: str
    access_log: Path
    process: subprocess.Popen[bytes]

    def log_size(self) -> int:
        return self.access_log.stat().st_size if self.access_log.exists() else 0

    def requests_since(self, offset: int) -> collections.Counter[str]:
        """Requests logged after byte ``offset``, by method and status (``GET 304``)."""
        counts: collections.Counter[str] = collections.Counter()
        with self.access_log.open("rb") as log:
            log.seek(offset)
            for line in log:
                method, _uri, status = line.split(b" ", 3)[:3]
                counts[f"{method.decode()} {status.decode()}"] += 1
        return counts


def ensure_nginx() -> str:
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if path is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx-light")
    return path


@contextlib.contextmanager
def running_nginx(
    root: Path, work: Path, port: int, *, workers: int = 2, config_text: str | None = None
) -> Iterator[Nginx]:
    """Start nginx on ``port`` serving ``root`` (by :func:`nginx_config`, or ``config_text``,
    whose access log must be ``work/access.log`` in the form ``METHOD URI STATUS ...``);
    stop it (and wait) afterwards."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / "nginx.conf"
    config.write_text(config_text or nginx_config(root, work, port, workers))
    log = (work / "nginx.out").open("wb")
    process = subprocess.Popen(
        [ensure_nginx(), "-c", str(config), "-p", str(work), "-e", str(work / "error.log")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    server = Nginx(f"http://127.0.0.1:{port}", work / "access.log", process)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with {process.returncode}: "
                    + (work / "error.log").read_text(errors="replace")[-2000:]
                )
            try:
                httpx.get(server.url + "/", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not answer within 15 s") from None
                time.sleep(0.05)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log.close()


# Distribution's access log lines (combined format): `"METHOD /path HTTP/1.1" status`
_ACCESS = re.compile(rb'"(GET|HEAD|POST|PUT|PATCH|DELETE) (/v2/\S*) HTTP/[0-9.]+" (\d{3})')


_EMPTY_CONFIG = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
_BLOB_DIGEST = re.compile(r"(?:mount=|digest=)sha256(?:%3A|:)([0-9a-f]{64})")


def registry_request_kinds(log_text: bytes, file_digests: set[str]) -> collections.Counter[str]:
    """Requests by what they are for: a file's blob, the core metadata, the empty
    config, a file's manifest (by digest), a release's index (by tag), listings."""
    counts: collections.Counter[str] = collections.Counter()
    for raw_method, raw_path, raw_status in _ACCESS.findall(log_text):
        method, path, status = raw_method.decode(), raw_path.decode(), raw_status.decode()
        if path == "/v2/":
            continue
        found = _BLOB_DIGEST.search(path)
        blob = ""
        if found:
            digest = found.group(1)
            if digest == _EMPTY_CONFIG:
                blob = "config"
            else:
                blob = "file" if digest in file_digests else "metadata"
        if "/blobs/uploads/" in path:
            kind = f"{method} {blob} blob"
        elif "/manifests/sha256" in path:
            kind = f"{method} manifest by digest"
        elif "/manifests/" in path:
            kind = f"{method} manifest by tag"
        elif path.endswith("/tags/list") or "/tags/list?" in path:
            kind = f"{method} tag list"
        elif "/_catalog" in path:
            kind = f"{method} catalog"
        else:
            kind = f"{method} blob"
        counts[f"{kind} {status}"] += 1
    return counts


def registry_requests(log_text: bytes) -> collections.Counter[str]:
    """Requests to ``/v2/...`` in (a slice of) a registry log, by method and status."""
    counts: collections.Counter[str] = collections.Counter()
    for method, _path, status in _ACCESS.findall(log_text):
        counts[f"{method.decode()} {status.decode()}"] += 1
    return counts
