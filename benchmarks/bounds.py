"""Peak memory and time of the tool against hostile inputs: every bound must hold.

Each case serves one hostile input from a recording server on 127.0.0.1
(tests/hostile_server.py) and runs ``oci-pypi`` against it as a subprocess,
whose peak RSS is measured the way the benchmark measures it (the highest
VmHWM or sampled VmRSS of its process tree). The cases are the inputs that
once took the memory or the time of the process:

* a 300 MB project page, and a gzip page of a few hundred KB that inflates
  to 320 MB;
* a page of JSON nested a million deep;
* a 300 MB manifest from a registry, sent without ``Content-Length``;
* a tag list whose every page links a next one (``MAX_LISTING_PAGES`` pages);
* a wheel under 1 MiB whose ``METADATA`` inflates to 400 MB, synced (held
  in memory) and read with range requests by ``--with-deps``.

Prints a table, and exits non-zero when a case's peak RSS reaches the limit
(``--limit-mb``, default 300) or the run does not end with the error naming
its bound::

    .venv/bin/python benchmarks/bounds.py [--limit-mb 300]
    nox -s bounds
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from bench import run_measured  # noqa: E402
from hostile_server import (  # noqa: E402
    RecordingServer,
    Reply,
    Seen,
    file_entry,
    project_page,
    ranged,
)

MIB = 1024 * 1024
JSON_PAGE = "application/vnd.pypi.simple.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Case:
    """A hostile server, the command run against it, and the text its error must hold."""

    name: str
    server: Callable[[], AbstractContextManager[RecordingServer]]
    command: Callable[[RecordingServer], list[str]]
    expected: str
    exit_code: int


def zeros(size: int) -> Iterator[bytes]:
    block = bytes(MIB)
    for _ in range(size // MIB):
        yield block
    yield bytes(size % MIB)


def gzip_of(chunks: Iterator[bytes]) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as packed:
        for chunk in chunks:
            packed.write(chunk)
    return out.getvalue()


def bomb_wheel(name: str, inflated: int) -> tuple[bytes, str, bytes]:
    """A wheel whose METADATA (a real header, then zeros) inflates to ``inflated`` bytes.

    Returns the wheel, the METADATA's sha256 and its header.
    """
    header = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n".encode()
    buffer = io.BytesIO()
    digest = hashlib.sha256(header)
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(f"{name}-1.0.dist-info/METADATA")
        info.compress_type = zipfile.ZIP_DEFLATED
        with archive.open(info, "w", force_zip64=True) as member:
            member.write(header)
            for chunk in zeros(inflated - len(header)):
                member.write(chunk)
                digest.update(chunk)
        archive.writestr(f"{name}-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\n")
        archive.writestr(f"{name}-1.0.dist-info/RECORD", "")
    return buffer.getvalue(), digest.hexdigest(), header


# --- the hostile servers ---------------------------------------------------------------


def page_server(
    body: Callable[[], bytes | Iterator[bytes]], encoding: str | None
) -> RecordingServer:
    headers = [("Content-Type", JSON_PAGE)] + ([("Content-Encoding", encoding)] if encoding else [])
    return RecordingServer(lambda seen: Reply(200, headers, body()))


def big_page() -> RecordingServer:
    return page_server(lambda: zeros(300 * MIB), None)


def gzip_page() -> RecordingServer:
    bomb = gzip_of(zeros(320 * MIB))
    return page_server(lambda: bomb, "gzip")


def nested_page() -> RecordingServer:
    depth = 1_000_000
    return page_server(lambda: b"[" * depth + b"]" * depth, None)


def manifest_registry() -> RecordingServer:
    def handle(seen: Seen) -> Reply:
        if seen.path == "/v2/":
            return Reply(200)
        if seen.path == "/v2/pfx/tool/tags/list":
            return Reply(200, [("Content-Type", "application/json")], b'{"tags": ["1.0"]}')
        if seen.path == "/v2/pfx/tool/manifests/1.0":
            return Reply(200, [("Content-Type", OCI_INDEX)], zeros(300 * MIB))
        return Reply(404)

    return RecordingServer(handle)


def endless_registry() -> RecordingServer:
    def handle(seen: Seen) -> Reply:
        if seen.path == "/v2/":
            return Reply(200)
        if seen.path == "/v2/pfx/tool/tags/list":
            page = int(parse_qs(seen.query).get("last", ["0"])[0])
            link = f'</v2/pfx/tool/tags/list?n=1000&last={page + 1}>; rel="next"'
            body = json.dumps({"tags": [f"{page}.0"]}).encode()
            return Reply(200, [("Content-Type", "application/json"), ("Link", link)], body)
        return Reply(404)

    return RecordingServer(handle)


def bomb_index(advertise_metadata: bool) -> Callable[[], RecordingServer]:
    def make() -> RecordingServer:
        inflated = 400 * MIB
        wheel, metadata_sha256, header = bomb_wheel("bomb", inflated)
        filename = "bomb-1.0-py3-none-any.whl"
        extra = {"core-metadata": {"sha256": metadata_sha256}} if advertise_metadata else {}
        # the same METADATA as a .metadata file, served gzip-encoded: a bomb too
        metadata_gzip = gzip_of(iter([header, *zeros(inflated - len(header))]))

        def handle(seen: Seen) -> Reply:
            if seen.path == "/simple/bomb/":
                entry = file_entry(filename, f"/files/{filename}", wheel, **extra)
                return project_page("bomb", [entry])
            if seen.path == f"/files/{filename}":
                return ranged(seen, wheel)
            if seen.path == f"/files/{filename}.metadata":
                return Reply(200, [("Content-Encoding", "gzip")], metadata_gzip)
            return Reply(404)

        return RecordingServer(handle)

    return make


# --- the cases ---------------------------------------------------------------------------------


def sync_from(server: RecordingServer, *args: str) -> list[str]:
    return ["sync", "--index-url", f"{server.origin}/simple/", "--retries", "0", *args]


CASES = (
    Case(
        "300 MB project page",
        big_page,
        lambda s: sync_from(s, "tool", "--dry-run"),
        "(MAX_PAGE_BYTES)",
        1,
    ),
    Case(
        "gzip page inflating to 320 MB",
        gzip_page,
        lambda s: sync_from(s, "tool", "--dry-run"),
        "(MAX_PAGE_BYTES)",
        1,
    ),
    Case(
        "JSON page nested 1,000,000 deep",
        nested_page,
        lambda s: sync_from(s, "tool", "--dry-run"),
        "nests deeper than 64 levels",
        1,
    ),
    Case(
        "300 MB manifest, no Content-Length",
        manifest_registry,
        lambda s: ["ls", "tool", "--from", f"{s.host}/pfx"],
        "(MAX_MANIFEST_BYTES)",
        3,
    ),
    Case(
        "tag list that never ends",
        endless_registry,
        lambda s: ["ls", "tool", "--from", f"{s.host}/pfx"],
        "(MAX_LISTING_PAGES)",
        3,
    ),
    Case(
        "small wheel, METADATA inflating to 400 MB, synced",
        bomb_index(advertise_metadata=True),
        lambda s: sync_from(s, "bomb", "--to", "oci:mirror"),
        "(MAX_CORE_METADATA_BYTES)",
        1,
    ),
    Case(
        "same wheel read by ranges (--with-deps)",
        bomb_index(advertise_metadata=False),
        lambda s: sync_from(s, "bomb", "--with-deps", "--to", "oci:mirror"),
        "(MAX_CORE_METADATA_BYTES)",
        1,
    ),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit-mb", type=float, default=300.0)
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    env["NO_PROXY"] = "127.0.0.1"
    failures = 0
    print(f"{'case':<52} {'exit':>4} {'peak RSS':>10} {'wall':>8}  bound named")
    with tempfile.TemporaryDirectory() as work:
        for number, case in enumerate(CASES):
            home = Path(work) / str(number)
            home.mkdir()
            env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"))
            with case.server() as server:
                argv = [sys.executable, "-m", "oci_pypi_sync", *case.command(server)]
                os.chdir(home)
                run = run_measured(argv, timeout=600, env=env)
            output = run.stdout + run.stderr
            named = case.expected in output
            ok = named and run.returncode == case.exit_code and run.peak_rss_mb < args.limit_mb
            failures += not ok
            print(
                f"{case.name:<52} {run.returncode:>4} {run.peak_rss_mb:>7.0f} MB "
                f"{run.wall_s:>6.1f} s  {'yes' if named else 'NO'}{'' if ok else '  <- FAILED'}"
            )
            if not ok:
                print("    " + "\n    ".join(output.strip().splitlines()[-5:]))
    print(f"limit: {args.limit_mb:.0f} MB peak RSS per case")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
