"""nginx as a TLS proxy in front of the real registry, on 127.0.0.1, for the tests.

It terminates TLS with a certificate from :func:`registry_server.make_tls`
and passes requests to the registry over plain HTTP, as a company's proxy
does. Whether it tells the registry the original scheme
(``X-Forwarded-Proto``) and which ``Host`` it passes are the test's to
choose: without the former, Distribution names plain-HTTP addresses in its
``Location`` headers. Every request is logged with its scheme, status and
whether it carried ``Authorization``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from registry_server import TlsMaterial, free_port


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


@dataclass(frozen=True)
class TlsProxy:
    """A running proxy: ``host`` is ``127.0.0.1:PORT`` (HTTPS)."""

    host: str
    access_log: Path

    def log_lines(self) -> list[str]:
        return self.access_log.read_text().splitlines() if self.access_log.exists() else []


def _config(work: Path, port: int, upstream: str, tls: TlsMaterial, extra: str) -> str:
    temps = "\n".join(
        f"  {name}_temp_path {work / 'temp' / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
daemon off;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 256; }}
http {{
  log_format seen '$scheme $request_method $uri $status auth=$http_authorization';
  access_log {work / "access.log"} seen;
{temps}
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {tls.cert};
    ssl_certificate_key {tls.key};
    client_max_body_size 0;
    proxy_request_buffering off;
    location / {{
      proxy_pass {upstream};
      proxy_http_version 1.1;
{extra}
    }}
  }}
}}
"""


@contextlib.contextmanager
def running_tls_proxy(
    work: Path, upstream: str, tls: TlsMaterial, *, headers: dict[str, str]
) -> Iterator[TlsProxy]:
    """nginx on a free port proxying HTTPS to ``upstream``, setting ``headers`` on the way."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed: apt-get install -y nginx-light")
    work.mkdir(parents=True, exist_ok=True)
    (work / "temp").mkdir(exist_ok=True)
    port = free_port()
    extra = "\n".join(f"      proxy_set_header {name} {value};" for name, value in headers.items())
    config = work / "nginx.conf"
    config.write_text(_config(work, port, upstream, tls, extra))
    with (work / "nginx.out").open("wb") as out:
        process = subprocess.Popen(
            [binary, "-c", str(config), "-p", str(work), "-e", str(work / "error.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 120  # only ends a hang
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with {process.returncode}: "
                    + (work / "error.log").read_text(errors="replace")[-2000:]
                )
            try:
                context = tls.client_context(with_client_cert=False)
                httpx.get(f"https://127.0.0.1:{port}/v2/", verify=context, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("nginx did not answer within 20 s") from None
                time.sleep(0.05)
        yield TlsProxy(f"127.0.0.1:{port}", work / "access.log")
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
