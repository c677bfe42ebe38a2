"""Client CPU per registry request, HTTP stacks side by side (loopback only).

Each contender pushes the same blobs (seeded random bytes) into a fresh
Distribution registry at the same concurrency, in a process of its own,
and reports the CPU it spent on the requests (``getrusage`` around the
work, start-up and blob generation excluded); the registry's CPU comes from
``/proc`` and the request count from its access log. Contenders run in
rounds, one after another within a round, so a busy spell of a shared
machine falls on all of them alike; the table gives medians.

* ``store``: oci-pypi's :class:`~oci_pypi_sync.stores.registry.RegistryStore`
  (``put_blob``: one POST that also asks "already there?" by a mount from
  the same repository, one streamed PUT; auth flow, digest check and error
  mapping included);
* ``aiohttp``: the same two requests per blob with raw aiohttp, the body
  hashed as it goes out (the store checks every body's digest too);
* ``httpx``: the same with httpx's default transport.

Imports happen before the measured part, so each contender's figure is its
requests alone.

::

    python benchmarks/http_stack.py [--blobs 2000] [--size 20000] [--jobs 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

CONTENDERS = ("aiohttp", "store", "httpx")
REPOSITORIES = 50


def _blobs(count: int, size: int) -> list[tuple[str, str, bytes]]:
    """(repository, digest, bytes) per blob; sizes vary ±50% around ``size``."""
    rng = random.Random(7)
    out = []
    for i in range(count):
        data = rng.randbytes(rng.randint(size // 2, size * 3 // 2))
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        out.append((f"bench/p{i % REPOSITORIES}", digest, data))
    return out


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _hashed(data: bytes, digest: str) -> AsyncIterator[bytes]:
    """The body, checked against its digest as it goes out (as the store does)."""
    hasher = hashlib.sha256()
    async for chunk in _one_chunk(data):
        hasher.update(chunk)
        yield chunk
    if f"sha256:{hasher.hexdigest()}" != digest:
        raise ValueError("digest mismatch")


def _mount(digest: str, repo: str) -> str:
    """The query asking to mount the blob from its own repository: "already there?"."""
    return f"?mount={quote(digest, safe='')}&from={quote(repo, safe='')}"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _aiohttp(host: str, blobs: list[tuple[str, str, bytes]], jobs: int) -> None:
    import aiohttp

    gate = asyncio.Semaphore(jobs)
    connector = aiohttp.TCPConnector(limit=jobs * 2)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(repo: str, digest: str, data: bytes) -> None:
            async with gate:
                base = f"http://{host}/v2/{repo}/blobs"
                async with http.post(f"{base}/uploads/{_mount(digest, repo)}") as started:
                    if started.status == 201:
                        return
                    location = started.headers["Location"]
                    assert started.status == 202, started.status
                separator = "&" if "?" in location else "?"
                async with http.put(
                    f"{location}{separator}digest={digest}",
                    data=_hashed(data, digest),
                    headers={
                        "Content-Length": str(len(data)),
                        "Content-Type": "application/octet-stream",
                    },
                ) as put:
                    assert put.status == 201, put.status

        await asyncio.gather(*(one(*blob) for blob in blobs))


async def _httpx(host: str, blobs: list[tuple[str, str, bytes]], jobs: int) -> None:
    import httpx

    gate = asyncio.Semaphore(jobs)
    limits = httpx.Limits(max_connections=jobs * 2, max_keepalive_connections=jobs * 2)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:

        async def one(repo: str, digest: str, data: bytes) -> None:
            async with gate:
                base = f"http://{host}/v2/{repo}/blobs"
                started = await http.post(f"{base}/uploads/{_mount(digest, repo)}")
                if started.status_code == 201:
                    return
                assert started.status_code == 202, started.status_code
                location = started.headers["Location"]
                separator = "&" if "?" in location else "?"
                put = await http.put(
                    f"{location}{separator}digest={digest}",
                    content=_hashed(data, digest),
                    headers={
                        "Content-Length": str(len(data)),
                        "Content-Type": "application/octet-stream",
                    },
                )
                assert put.status_code == 201, put.status_code

        await asyncio.gather(*(one(*blob) for blob in blobs))


async def _store(host: str, blobs: list[tuple[str, str, bytes]], jobs: int) -> None:
    from oci_pypi_sync.stores.credentials import CredentialStore
    from oci_pypi_sync.stores.registry import RegistryStore

    gate = asyncio.Semaphore(jobs)
    credentials = CredentialStore.empty()
    async with RegistryStore(
        host, "", plain_http=True, credentials=credentials, max_connections=jobs * 2
    ) as store:

        async def one(repo: str, digest: str, data: bytes) -> None:
            async with gate:
                await store.put_blob(repo, digest, len(data), _one_chunk(data))

        await asyncio.gather(*(one(*blob) for blob in blobs))


def child(args: argparse.Namespace) -> int:
    blobs = _blobs(args.blobs, args.size)
    run = {"aiohttp": _aiohttp, "httpx": _httpx, "store": _store}[args.child]
    # the libraries each contender uses, imported before the measured part
    import aiohttp  # noqa: F401
    import httpx  # noqa: F401

    import oci_pypi_sync.stores.registry  # noqa: F401

    before = _cpu()
    asyncio.run(run(args.registry, blobs, args.jobs))
    print(json.dumps({"cpu_s": _cpu() - before}))
    return 0


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def compare(
    contenders: list[str], *, blobs: int, size: int, jobs: int, rounds: int
) -> dict[str, Any]:
    """Run the contenders in rounds; the medians per contender and the load seen."""
    from registry_server import running_registry
    from servers import registry_requests

    cpu: dict[str, list[float]] = collections.defaultdict(list)
    reg_cpu: dict[str, list[float]] = collections.defaultdict(list)
    requests: dict[str, int] = {}
    loads = [_loadavg()]
    print(f"  http stacks: {blobs} blobs of ~{size} B, {jobs} at once; loadavg {loads[0]}")
    with tempfile.TemporaryDirectory(prefix="http-stack-") as tmp:
        for round_ in range(rounds):
            for name in contenders:
                root = Path(tmp) / f"{name}-{round_}"
                with running_registry(root) as server:
                    before = _proc_cpu(server.process.pid)
                    offset = server.log.stat().st_size
                    argv = [sys.executable, __file__, "--child", name, "--registry", server.host]
                    argv += ["--blobs", str(blobs), "--size", str(size), "--jobs", str(jobs)]
                    out = subprocess.run(argv, check=True, capture_output=True, text=True)
                    reg_cpu[name].append(_proc_cpu(server.process.pid) - before)
                    cpu[name].append(json.loads(out.stdout.splitlines()[-1])["cpu_s"])
                    with server.log.open("rb") as log:
                        log.seek(offset)
                        requests[name] = sum(registry_requests(log.read()).values())
                print(
                    f"  round {round_ + 1} {name:<8} client cpu {cpu[name][-1]:6.2f} s  "
                    f"registry cpu {reg_cpu[name][-1]:6.2f} s  requests {requests[name]}",
                    flush=True,
                )
            loads.append(_loadavg())
    rows: dict[str, dict[str, Any]] = {}
    for name in contenders:
        per_request = statistics.median(cpu[name]) / max(1, requests[name])
        rows[name] = {
            "client_cpu_s": round(statistics.median(cpu[name]), 3),
            "registry_cpu_s": round(statistics.median(reg_cpu[name]), 3),
            "requests": requests[name],
            "us_per_request": round(per_request * 1e6, 1),
            "runs": [round(c, 3) for c in cpu[name]],
        }
    if "aiohttp" in rows:
        base = rows["aiohttp"]["us_per_request"]
        for name, row in rows.items():
            row["x_aiohttp"] = round(row["us_per_request"] / base, 3)
            # within a round both ran under the same load: the paired ratios
            paired = [
                (mine / requests[name]) / (theirs / requests["aiohttp"])
                for mine, theirs in zip(cpu[name], cpu["aiohttp"], strict=True)
            ]
            row["x_aiohttp_per_round"] = [round(r, 3) for r in paired]
    return {"blobs": blobs, "size": size, "jobs": jobs, "loadavg": loads, "rows": rows}


def print_rows(result: dict[str, Any]) -> None:
    print(f"loadavg before and after each round: {' | '.join(result['loadavg'])}")
    print(
        f"{'stack':<8} {'client cpu s':>12} {'registry cpu s':>14} {'requests':>9} "
        f"{'us/request':>10} {'x aiohttp':>9}"
    )
    for name, row in result["rows"].items():
        rounds = ", ".join(f"{r:.2f}" for r in row.get("x_aiohttp_per_round", []))
        print(
            f"{name:<8} {row['client_cpu_s']:12.2f} {row['registry_cpu_s']:14.2f} "
            f"{row['requests']:9d} {row['us_per_request']:10.1f} {row.get('x_aiohttp', 0):9.2f}"
            f"  per round: {rounds}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blobs", type=int, default=2000)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", action="append", choices=CONTENDERS)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--registry", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    result = compare(
        args.only or list(CONTENDERS),
        blobs=args.blobs,
        size=args.size,
        jobs=args.jobs,
        rounds=args.rounds,
    )
    print()
    print_rows(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
