"""The baselines, each run as its own process so its wall time and RSS are its own.

``limit``: the least a client must do to move each file from the index into
the registry, with the digest and size known from the index: HEAD the
blob, POST an upload, stream the GET body into one PUT. No manifests, no
metadata, no state: what oci-pypi cannot beat.

``limit-lean``: the same requests over oci-pypi's own HTTP/1.1 transport
(``oci_pypi_sync.stores.transport``), which costs less client CPU per request than
httpx's default one: the limit with the client's share made smaller.

``naive``: what people write today: download each file to a temporary file,
then push it with oras-py (blob, config and manifest, monolithic PUT that
reads the file). oras-py's client shares one ``requests`` session and its
headers, so it is not thread-safe: each worker thread gets its own client.

``download-only``: the GETs alone at the same concurrency, bodies
discarded: the index side's limit.

    python benchmarks/contenders.py MODE --plan PLAN.json [--registry HOST --prefix P] --jobs N

``PLAN.json`` lists ``{url, sha256, size, project, version, filename}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def _client(jobs: int, lean: bool) -> httpx.AsyncClient:
    if not lean:
        return httpx.AsyncClient(timeout=TIMEOUT, limits=_limits(jobs))
    from oci_pypi_sync.stores.transport import LeanTransport

    return httpx.AsyncClient(timeout=TIMEOUT, transport=LeanTransport(max_connections=jobs * 2))


async def run_limit(
    plan: list[dict[str, Any]], registry_host: str, prefix: str, jobs: int, *, lean: bool = False
) -> None:
    gate = asyncio.Semaphore(jobs)
    base = f"http://{registry_host}/v2/{prefix}"
    async with _client(jobs, lean) as index, _client(jobs, lean) as registry:

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["limit", "limit-lean", "naive", "download-only"])
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--registry", default="")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    plan: list[dict[str, Any]] = json.loads(args.plan.read_text())
    if args.mode in ("limit", "limit-lean"):
        lean = args.mode == "limit-lean"
        asyncio.run(run_limit(plan, args.registry, args.prefix, args.jobs, lean=lean))
    elif args.mode == "download-only":
        asyncio.run(run_download_only(plan, args.jobs))
    else:
        run_naive(plan, args.registry, args.prefix, args.jobs, args.tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
