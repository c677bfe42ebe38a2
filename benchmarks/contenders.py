"""The baselines, each run as its own process so its wall time and RSS are its own.

``limit``: the least a client must do to move each file from the index into
the registry, with the digest and size known from the index: HEAD the
blob, POST an upload, stream the GET body into one PUT. No manifests, no
metadata, no state: what oci-pypi cannot beat. Raw aiohttp (its C parser
and connection pool), the cheapest Python client per request measured here.

``limit-httpx``: the same requests with httpx's default transport, the
limit of earlier runs (kept for comparison with them).

``naive``: what people write today: download each file to a temporary file,
then push it with oras-py (blob, config and manifest, monolithic PUT that
reads the file). oras-py's client shares one ``requests`` session and its
headers, so it is not thread-safe: each worker thread gets its own client.

``oras``: what a user would pick today: each file downloaded to a
temporary file, then pushed with the ORAS CLI (``oras push``), ``--jobs``
of them at once.

``oras-layout``: the ORAS CLI copying ready OCI layouts (one per file, made
by ``oras push --oci-layout`` beforehand, untimed) into the registry,
``oras cp --from-oci-layout`` per file, ``--jobs`` at once: a Go client's
cost per request with no download in the way.

``download-only``: the GETs alone at the same concurrency, bodies
discarded: the index side's limit.

    python benchmarks/contenders.py MODE --plan PLAN.json [--registry HOST --prefix P] --jobs N

``PLAN.json`` lists ``{url, sha256, size, project, version, filename}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

CHUNK = 1024 * 1024
TIMEOUT = httpx.Timeout(60.0)


def _limits(jobs: int) -> httpx.Limits:
    return httpx.Limits(max_connections=jobs * 2, max_keepalive_connections=jobs * 2)


def oras_tag(entry: dict[str, Any]) -> str:
    """A tag naming one file (its version and the start of its digest)."""
    return f"{entry['version'].replace('+', '_')}-{entry['sha256'][:12]}"


async def _push_one_aiohttp(index: Any, registry: Any, base: str, entry: dict[str, Any]) -> None:
    """HEAD, POST, streamed PUT of one file over aiohttp: three registry requests, one GET."""
    digest = "sha256:" + entry["sha256"]
    repo = f"{base}/{entry['project']}"
    async with registry.head(f"{repo}/blobs/{digest}") as head:
        if head.status == 200:
            return
    async with registry.post(f"{repo}/blobs/uploads/") as started:
        if started.status != 202:
            raise RuntimeError(f"POST upload: {started.status} {(await started.text())[:200]}")
        location = started.headers["Location"]
    separator = "&" if "?" in location else "?"
    async with index.get(entry["url"]) as response:
        response.raise_for_status()
        async with registry.put(
            f"{location}{separator}digest={digest}",
            data=response.content,
            headers={
                "Content-Length": str(entry["size"]),
                "Content-Type": "application/octet-stream",
            },
        ) as put:
            if put.status != 201:
                text = (await put.text())[:200]
                raise RuntimeError(f"PUT {entry['filename']}: {put.status} {text}")


async def run_limit_aiohttp(
    plan: list[dict[str, Any]], registry_host: str, prefix: str, jobs: int
) -> None:
    import aiohttp

    gate = asyncio.Semaphore(jobs)
    base = f"http://{registry_host}/v2/{prefix}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=60)
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=jobs * 2), timeout=timeout
        ) as index,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=jobs * 2), timeout=timeout
        ) as registry,
    ):

        async def one(entry: dict[str, Any]) -> None:
            async with gate:
                await _push_one_aiohttp(index, registry, base, entry)

        await asyncio.gather(*(one(entry) for entry in plan))


async def _push_one(
    index: httpx.AsyncClient, registry: httpx.AsyncClient, base: str, entry: dict[str, Any]
) -> None:
    """HEAD, POST, streamed PUT of one file: three registry requests, one GET."""
    digest = "sha256:" + entry["sha256"]
    repo = f"{base}/{entry['project']}"
    head = await registry.head(f"{repo}/blobs/{digest}")
    if head.status_code == 200:
        return
    started = await registry.post(f"{repo}/blobs/uploads/")
    if started.status_code != 202:
        raise RuntimeError(f"POST upload: {started.status_code} {started.text[:200]}")
    location = started.headers["Location"]
    separator = "&" if "?" in location else "?"
    async with index.stream("GET", entry["url"]) as response:
        response.raise_for_status()
        put = await registry.put(
            f"{location}{separator}digest={digest}",
            content=response.aiter_raw(CHUNK),
            headers={
                "Content-Length": str(entry["size"]),
                "Content-Type": "application/octet-stream",
            },
        )
    if put.status_code != 201:
        raise RuntimeError(f"PUT {entry['filename']}: {put.status_code} {put.text[:200]}")


def _client(jobs: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=TIMEOUT, limits=_limits(jobs))


async def run_limit_httpx(
    plan: list[dict[str, Any]], registry_host: str, prefix: str, jobs: int
) -> None:
    gate = asyncio.Semaphore(jobs)
    base = f"http://{registry_host}/v2/{prefix}"
    async with _client(jobs) as index, _client(jobs) as registry:

        async def one(entry: dict[str, Any]) -> None:
            async with gate:
                await _push_one(index, registry, base, entry)

        await asyncio.gather(*(one(entry) for entry in plan))


async def run_download_only(plan: list[dict[str, Any]], jobs: int) -> None:
    gate = asyncio.Semaphore(jobs)
    async with httpx.AsyncClient(timeout=TIMEOUT, limits=_limits(jobs)) as index:

        async def one(entry: dict[str, Any]) -> None:
            async with gate, index.stream("GET", entry["url"]) as response:
                response.raise_for_status()
                total = 0
                async for chunk in response.aiter_raw(CHUNK):
                    total += len(chunk)
                if total != entry["size"]:
                    raise RuntimeError(f"{entry['filename']}: {total} bytes, not {entry['size']}")

        await asyncio.gather(*(one(entry) for entry in plan))


def run_naive(
    plan: list[dict[str, Any]], registry_host: str, prefix: str, jobs: int, tmp: Path
) -> None:
    """Download to a temp file, then ``OrasClient.push``; one oras client per thread."""
    import oras.client

    local = threading.local()

    def client() -> Any:
        if not hasattr(local, "client"):
            local.client = oras.client.OrasClient(hostname=registry_host, insecure=True)
            local.http = httpx.Client(timeout=TIMEOUT)
        return local.client

    def one(entry: dict[str, Any]) -> None:
        oras_client = client()
        directory = Path(tempfile.mkdtemp(dir=tmp))
        path = directory / entry["filename"]
        try:
            with local.http.stream("GET", entry["url"]) as response, path.open("wb") as out:
                response.raise_for_status()
                for chunk in response.iter_raw(CHUNK):
                    out.write(chunk)
            tag = entry["version"].replace("+", "_")
            target = f"{registry_host}/{prefix}/{entry['project']}:{tag}-{entry['sha256'][:12]}"
            # Concurrent pushes of the same config blob into one repository race in
            # the registry (500 / DIGEST_INVALID); a script would try again.
            for attempt in range(3):
                try:
                    oras_client.push(
                        target=target, files=[str(path)], disable_path_validation=True, quiet=True
                    )
                    break
                except Exception:
                    if attempt == 2:
                        raise
        finally:
            path.unlink(missing_ok=True)
            directory.rmdir()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, entry) for entry in plan]:
            future.result()


def _oras(*args: str, cwd: Path | None = None, attempts: int = 3) -> None:
    """Run the ORAS CLI; its failure is the contender's.

    Concurrent pushes of the same config blob into one repository race in
    the registry (DIGEST_INVALID, then "manifest blob unknown"), as they do
    for oras-py: a script would try again, so this does, up to ``attempts``.
    """
    oras = os.environ.get("ORAS", "oras")
    for attempt in range(attempts):
        done = subprocess.run(
            [oras, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if done.returncode == 0:
            return
        if attempt == attempts - 1:
            raise RuntimeError(f"oras {args[0]} failed: {done.stderr.strip()[-500:]}")


def run_oras(
    plan: list[dict[str, Any]], registry_host: str, prefix: str, jobs: int, tmp: Path
) -> None:
    """Download each file to a temp file, then ``oras push`` it; ``jobs`` at once."""
    local = threading.local()

    def one(entry: dict[str, Any]) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(timeout=TIMEOUT)
        directory = Path(tempfile.mkdtemp(dir=tmp))
        path = directory / entry["filename"]
        try:
            with local.http.stream("GET", entry["url"]) as response, path.open("wb") as out:
                response.raise_for_status()
                for chunk in response.iter_raw(CHUNK):
                    out.write(chunk)
            target = f"{registry_host}/{prefix}/{entry['project']}:{oras_tag(entry)}"
            _oras("push", "--plain-http", "--no-tty", target, path.name, cwd=directory)
        finally:
            path.unlink(missing_ok=True)
            directory.rmdir()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, entry) for entry in plan]:
            future.result()


def make_oras_layout(plan: list[dict[str, Any]], root: Path, layout: Path, jobs: int) -> None:
    """An OCI layout per file (``oras push --oci-layout``; concurrent pushes into one
    layout race on its ``index.json``), each with the file under the tag ``file``."""

    def one(number: int, entry: dict[str, Any]) -> None:
        path = root / entry["url"].split("/", 3)[3]
        target = f"{_layout_dir(layout, number)}:file"
        _oras("push", "--no-tty", "--oci-layout", target, path.name, cwd=path.parent)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, i, entry) for i, entry in enumerate(plan)]:
            future.result()


def _layout_dir(layout: Path, number: int) -> Path:
    return layout / str(number)


def run_oras_layout(
    plan: list[dict[str, Any]], registry_host: str, prefix: str, jobs: int, layout: Path
) -> None:
    """``oras cp --from-oci-layout`` of each file's tag into the registry; ``jobs`` at once."""

    def one(number: int, entry: dict[str, Any]) -> None:
        target = f"{registry_host}/{prefix}/{entry['project']}:{oras_tag(entry)}"
        source = f"{_layout_dir(layout, number)}:file"
        _oras("cp", "--to-plain-http", "--no-tty", "--from-oci-layout", source, target)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for future in [pool.submit(one, i, entry) for i, entry in enumerate(plan)]:
            future.result()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mode",
        choices=[
            "limit",
            "limit-httpx",
            "naive",
            "oras",
            "oras-layout",
            "oras-layout-make",
            "download-only",
        ],
    )
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--registry", default="")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--layout", type=Path, help="the OCI layout of the oras-layout modes")
    parser.add_argument("--root", type=Path, help="the corpus root (oras-layout-make)")
    args = parser.parse_args()
    plan: list[dict[str, Any]] = json.loads(args.plan.read_text())
    if args.mode == "limit":
        asyncio.run(run_limit_aiohttp(plan, args.registry, args.prefix, args.jobs))
    elif args.mode == "limit-httpx":
        asyncio.run(run_limit_httpx(plan, args.registry, args.prefix, args.jobs))
    elif args.mode == "oras":
        run_oras(plan, args.registry, args.prefix, args.jobs, args.tmp)
    elif args.mode == "oras-layout-make":
        make_oras_layout(plan, args.root, args.layout, args.jobs)
    elif args.mode == "oras-layout":
        run_oras_layout(plan, args.registry, args.prefix, args.jobs, args.layout)
    elif args.mode == "download-only":
        asyncio.run(run_download_only(plan, args.jobs))
    else:
        run_naive(plan, args.registry, args.prefix, args.jobs, args.tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
