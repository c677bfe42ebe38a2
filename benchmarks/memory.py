"""Peak memory of syncing one big file: it must stream, never hold the file.

Generates a file of ``--size-mb`` MiB (seeded pseudo-random bytes, sha256
computed while writing), serves it from disk on a file-backed simple index
on loopback, starts a real registry (``docker-registry``) on loopback, and
runs ``oci-pypi sync`` as a subprocess into the registry and into an OCI
layout. Each case's peak RSS comes from ``wait4`` on that very process.
Baselines measured in the same run: a process that only imports the tool
and httpx, and a plain httpx streaming download of the file to nowhere.

Prints a table and exits non-zero when a sync's peak RSS reaches the limit
(``--limit-mb``, default 100) or the stored blob's digest is not the file's::

    .venv/bin/python benchmarks/memory.py [--size-mb 1024] [--limit-mb 100]
    nox -s memory -- --size-mb 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from big_index import BigFile, generate_file, serve_big_file
from registry_server import running_registry

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MIB = 1024 * 1024

STREAM_SCRIPT = """
import sys, httpx
total = 0
with httpx.stream("GET", sys.argv[1], timeout=60) as response:
    response.raise_for_status()
    for chunk in response.iter_raw(1024 * 1024):
        total += len(chunk)
assert total == int(sys.argv[2]), total
"""


@dataclass(frozen=True)
class Measured:
    case: str
    wall_s: float
    peak_rss_mb: float
    returncode: int
    output: str


def measure(case: str, argv: list[str], *, timeout: float) -> Measured:
    """Run ``argv``; its wall time and peak RSS (``wait4`` on that process)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace")
    # Linux reports ru_maxrss in KiB
    return Measured(case, wall, usage.ru_maxrss / 1024, process.returncode, output)


def stream_sha256(chunks: httpx.Response) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks.iter_raw(MIB):
        hasher.update(chunk)
    return hasher.hexdigest()


def registry_blob_problems(host: str, prefix: str, file: BigFile) -> list[str]:
    """Read the tag, its file manifest and the blob back; what does not match."""
    problems: list[str] = []
    base = f"http://{host}/v2/{prefix}/{file.project}"
    with httpx.Client(timeout=120) as client:
        index = client.get(f"{base}/manifests/1.0", headers={"Accept": OCI_INDEX})
        if index.status_code != 200:
            return [f"registry: tag 1.0 not found ({index.status_code})"]
        if "sha256:" + hashlib.sha256(index.content).hexdigest() != index.headers.get(
            "Docker-Content-Digest"
        ):
            problems.append("registry: the tag's index does not match its digest")
        layers: list[str] = []
        for entry in json.loads(index.content)["manifests"]:
            manifest = client.get(
                f"{base}/manifests/{entry['digest']}", headers={"Accept": OCI_MANIFEST}
            )
            if "sha256:" + hashlib.sha256(manifest.content).hexdigest() != entry["digest"]:
                problems.append(f"registry: manifest {entry['digest']} does not match")
            layers += [layer["digest"] for layer in json.loads(manifest.content)["layers"]]
        if file.digest not in layers:
            problems.append(f"registry: no manifest has the file's digest {file.digest}")
        with client.stream("GET", f"{base}/blobs/{file.digest}") as response:
            if response.status_code != 200:
                return [*problems, f"registry: blob {file.digest}: {response.status_code}"]
            actual = stream_sha256(response)
        if actual != file.sha256:
            problems.append(f"registry: blob {file.digest} holds sha256:{actual}")
    return problems


def layout_blob_problems(layout: Path, file: BigFile) -> list[str]:
    blob = layout / "blobs" / "sha256" / file.sha256
    if not blob.is_file():
        return [f"layout: no blob {file.digest}"]
    hasher = hashlib.sha256()
    with blob.open("rb") as source:
        while block := source.read(MIB):
            hasher.update(block)
    if hasher.hexdigest() != file.sha256:
        return [f"layout: blob {file.digest} holds sha256:{hasher.hexdigest()}"]
    index = json.loads((layout / "index.json").read_text())
    if not index.get("manifests"):
        return ["layout: index.json lists nothing"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="file size in MiB")
    parser.add_argument("--limit-mb", type=float, default=100.0, help="peak RSS limit of a sync")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per case, seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="oci-pypi-memory-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        file = generate_file(work, args.size_mb * MIB, seed=args.seed)
        print(
            f"generated {file.filename}: {file.size / MIB:.0f} MiB, sha256:{file.sha256} "
            f"in {time.monotonic() - started:.1f}s",
            flush=True,
        )
        tool = [sys.executable, "-m", "oci_pypi_sync", "sync", "--no-progress"]
        with serve_big_file(file) as index_url, running_registry(work / "registry") as registry:
            file_url = index_url.replace("/simple/", f"/files/{file.filename}")
            cases = [
                measure(
                    "baseline: import oci_pypi_sync.cli, httpx",
                    [sys.executable, "-c", "import oci_pypi_sync.cli, httpx"],
                    timeout=60,
                ),
                measure(
                    "baseline: httpx streaming GET to nowhere",
                    [sys.executable, "-c", STREAM_SCRIPT, file_url, str(file.size)],
                    timeout=args.timeout,
                ),
                measure(
                    "sync to registry",
                    [
                        *tool,
                        file.project,
                        "--to",
                        f"{registry.host}/mem",
                        "--index-url",
                        index_url,
                        "--state",
                        str(work / "registry-state.sqlite"),
                    ],
                    timeout=args.timeout,
                ),
                measure(
                    "sync to layout",
                    [
                        *tool,
                        file.project,
                        "--to",
                        f"oci:{work / 'layout'}",
                        "--index-url",
                        index_url,
                    ],
                    timeout=args.timeout,
                ),
            ]
            problems: list[str] = []
            for case in cases:
                if case.returncode != 0:
                    problems.append(f"{case.case}: exit {case.returncode}\n{case.output[-2000:]}")
            problems += registry_blob_problems(registry.host, "mem", file)
        problems += layout_blob_problems(work / "layout", file)

    base_rss = cases[0].peak_rss_mb
    base_wall = cases[1].wall_s
    print(f"\nfile: {file.size / MIB:.0f} MiB; peak RSS limit for a sync: {args.limit_mb:g} MB")
    header = f"{'case':<44} {'wall_s':>8} {'MiB/s':>8} {'peak_rss_mb':>12} {'rss/base':>9}"
    print(header)
    print("-" * len(header))
    for case in cases:
        moved = case is not cases[0]
        rate = f"{file.size / MIB / case.wall_s:8.0f}" if moved else f"{'':>8}"
        print(
            f"{case.case:<44} {case.wall_s:8.2f} {rate} {case.peak_rss_mb:12.1f} "
            f"{case.peak_rss_mb / base_rss:9.2f}"
        )
    print(
        f"(wall ratio of the syncs to the plain download: "
        f"registry {cases[2].wall_s / base_wall:.2f}, layout {cases[3].wall_s / base_wall:.2f})"
    )
    for case in cases[2:]:
        if case.peak_rss_mb >= args.limit_mb:
            problems.append(
                f"{case.case}: peak RSS {case.peak_rss_mb:.1f} MB >= {args.limit_mb:g} MB"
            )
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    if not problems:
        print("OK: both syncs stayed under the limit and stored the file's exact bytes")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
