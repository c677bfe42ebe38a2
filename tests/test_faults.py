"""Whole syncs through fault-injecting proxies in front of the index and the real registry.

Each run must end as a clean run does: the same tags with the same index
digests, every manifest and blob readable and matching its digest, nothing
corrupt in the registry's storage; and the proxies' logs must show that the
faults really happened and that the failed requests were made again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import re
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fault_proxy import Fault, FaultProxy, Record, Rule
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index
from registry_server import RegistryServer
from test_writer import announce_writer

from oci_pypi_sync.engine.release import SMALL_WHEEL_BYTES
from oci_pypi_sync.stores.credentials import CredentialStore
from oci_pypi_sync.stores.registry import RegistryStore

pytestmark = pytest.mark.registry

PROJECT = "faulty"
SDIST = "faulty-1.0.tar.gz"
OCI_ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"
RUN_SECONDS = 600  # only ends a hang


@dataclass(frozen=True)
class Run:
    returncode: int
    report: dict[str, Any]
    stderr: str
    wall: float

    @property
    def tags(self) -> dict[str, str]:
        return {r["tag"]: r["digest"] for r in self.report["releases"]}

    def files(self, action: str) -> set[str]:
        return {f["filename"] for f in self.report["files"] if f["action"] == action}


def wheel(version: str, tag: str = "py3-none-any") -> FixtureFile:
    """A wheel whose bytes differ from its siblings' (made in the same second, they would not).

    Over 1 MiB, so its ``.metadata`` is fetched (a smaller wheel's own METADATA
    would stand in for it) and the faults on that request happen.
    """
    made = make_wheel(PROJECT, version, tag=tag, payload=SMALL_WHEEL_BYTES + 4096)
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(made.data)) as source,
        zipfile.ZipFile(buffer, "w") as archive,
    ):
        for name in source.namelist():
            archive.writestr(name, source.read(name))
        archive.writestr(f"{PROJECT}/TAG", tag)
    return dataclasses.replace(made, data=buffer.getvalue())


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add(
        PROJECT,
        wheel("1.0"),
        wheel("1.0", tag="cp312-cp312-manylinux_2_17_aarch64"),
        make_sdist(PROJECT, "1.0", size=3 << 20),
        wheel("2.0"),
        make_sdist(PROJECT, "2.0", size=300_000),
    )
    assert len({f.sha256 for f in fixture.files_by_name().values()}) == 5
    with serve_index(fixture):
        yield fixture


def sync(index_url: str, host: str, prefix: str, *options: str) -> Run:
    """``oci-pypi sync`` in a subprocess, with its JSON report."""
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "oci_pypi_sync",
            "sync",
            PROJECT,
            "--to",
            f"{host}/{prefix}",
            "--index-url",
            index_url,
            "--json",
            "--no-progress",
            "--no-state",
            "--jobs",
            "4",
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=RUN_SECONDS,
        check=False,
    )
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    return Run(result.returncode, report, result.stderr, time.monotonic() - started)


@pytest.fixture(scope="module")
def clean(index: FixtureIndex, registry: RegistryServer) -> Run:
    """A run without faults and without proxies: the digests every faulty run must match."""
    run = sync(index.url, registry.host, "clean")
    assert run.returncode == 0, run.stderr
    assert set(run.tags) == {"1.0", "2.0"}
    assert run.files("pushed") == set(index.files_by_name())
    return run


@pytest.fixture
def proxies(
    index: FixtureIndex, registry: RegistryServer
) -> Iterator[tuple[FaultProxy, FaultProxy]]:
    """(index proxy, registry proxy)."""
    with FaultProxy(index.url) as index_proxy, FaultProxy(registry.url) as registry_proxy:
        yield index_proxy, registry_proxy


def index_url(proxy: FaultProxy) -> str:
    return f"{proxy.url}/simple/"


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_pattern(index: FixtureIndex, filename: str) -> str:
    """A regex for a blob upload's PUT of that file (the digest is in the query)."""
    return r"/blobs/uploads/.*digest=sha256(%3A|:)" + index.files_by_name()[filename].sha256


def read_back(registry: RegistryServer, prefix: str, clean: Run) -> int:
    """Every tag's index, manifest and blob, read back and checked; the count of blobs."""
    checked = 0
    base = f"{registry.url}/v2/{prefix}/{PROJECT}"
    with httpx.Client(timeout=30, headers={"Accept": OCI_ACCEPT}) as client:
        for tag, digest in clean.tags.items():
            response = client.get(f"{base}/manifests/{tag}")
            assert response.status_code == 200, (tag, response.text)
            assert sha256_of(response.content) == digest
            for entry in json.loads(response.content)["manifests"]:
                manifest = client.get(f"{base}/manifests/{entry['digest']}")
                assert sha256_of(manifest.content) == entry["digest"]
                body = json.loads(manifest.content)
                for descriptor in [body["config"], *body["layers"]]:
                    blob = client.get(f"{base}/blobs/{descriptor['digest']}")
                    assert blob.status_code == 200
                    assert sha256_of(blob.content) == descriptor["digest"]
                    assert len(blob.content) == descriptor["size"]
                    checked += 1
    return checked


def storage_is_sound(registry: RegistryServer) -> int:
    """Every blob in the registry's storage holds the bytes its digest names; how many."""
    root = registry.root / "storage" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    count = 0
    for data in root.glob("*/*/data"):
        assert hashlib.sha256(data.read_bytes()).hexdigest() == data.parent.name, data
        count += 1
    return count


def assert_like_clean(run: Run, registry: RegistryServer, prefix: str, clean: Run) -> None:
    assert run.returncode == 0, run.stderr
    assert run.report["ok"] is True
    assert run.tags == clean.tags
    assert run.files("pushed") == clean.files("pushed")
    files = {f["filename"]: f for f in run.report["files"]}
    for reference in clean.report["files"]:
        assert files[reference["filename"]]["sha256"] == reference["sha256"]
        assert files[reference["filename"]]["size"] == reference["size"]
    # 5 files: each its file, the empty config and (wheels) its metadata
    assert read_back(registry, prefix, clean) == 5 * 2 + 3
    assert storage_is_sound(registry) > 0


def another_writer(registry: RegistryServer, prefix: str) -> None:
    """Another writer's live lease in the target: a sync then reads each tag before writing it."""

    async def announce() -> None:
        async with RegistryStore(
            registry.host, prefix, plain_http=True, credentials=CredentialStore.empty()
        ) as store:
            await announce_writer(store, "writer-7")

    asyncio.run(announce())


def ok(record: Record) -> bool:
    return record.fault is None and record.status is not None and record.status < 500


def assert_retried(proxy: FaultProxy, method: str, path: str, faults: int) -> None:
    """``faults`` requests matching were faulted, and each was followed by one that passed."""
    seen = proxy.seen(method, path)
    faulted = [i for i, r in enumerate(seen) if r.fault is not None]
    assert len(faulted) == faults, [(r.method, r.target, r.status, r.fault) for r in seen]
    for i in faulted:
        assert any(ok(r) for r in seen[i + 1 :]), (seen[i], seen[i + 1 :])


# --- transient faults: the run ends as a clean run does -------------------------------


def test_connection_resets(
    index: FixtureIndex,
    registry: RegistryServer,
    clean: Run,
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    index_proxy, registry_proxy = proxies
    index_proxy.add(Rule(Fault.reset(), "GET", r"^/simple/faulty/$"))
    index_proxy.add(Rule(Fault.reset(), "GET", SDIST + "$"))
    registry_proxy.add(Rule(Fault.reset(), "POST", r"/blobs/uploads/(\?[^/]*)?$"))
    registry_proxy.add(Rule(Fault.reset_upload(), "PUT", blob_pattern(index, SDIST)))
    # the registry stores this manifest, only the answer is lost
    registry_proxy.add(Rule(Fault.reset(forward=True), "PUT", r"/manifests/sha256:"))

    run = sync(index_url(index_proxy), registry_proxy.host, "resets")

    assert_like_clean(run, registry, "resets", clean)
    assert_retried(index_proxy, "GET", r"^/simple/faulty/$", 1)
    assert_retried(index_proxy, "GET", SDIST + "$", 1)
    assert_retried(registry_proxy, "POST", r"/blobs/uploads/(\?[^/]*)?$", 1)
    assert_retried(registry_proxy, "PUT", blob_pattern(index, SDIST), 1)
    assert len(registry_proxy.faulted("PUT", r"/manifests/sha256:")) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors(
    index: FixtureIndex,
    registry: RegistryServer,
    clean: Run,
    proxies: tuple[FaultProxy, FaultProxy],
    status: int,
) -> None:
    index_proxy, registry_proxy = proxies
    index_proxy.add(Rule(Fault.error(status), "GET", r"^/simple/faulty/$"))
    index_proxy.add(Rule(Fault.error(status), "GET", r"\.whl$", times=2))
    index_proxy.add(Rule(Fault.error(status), "GET", r"\.whl\.metadata$"))
    # the read of a version tag right before it is written (its merge), which a
    # writer makes when another is there (see another_writer)
    registry_proxy.add(Rule(Fault.error(status), "GET", r"/faulty/manifests/\d"))
    # the listing of the writers' leases
    registry_proxy.add(Rule(Fault.error(status), "GET", r"/oci-pypi\.catalog/tags/list"))
    registry_proxy.add(Rule(Fault.error(status), "POST", r"/blobs/uploads/(\?[^/]*)?$"))
    registry_proxy.add(Rule(Fault.error(status), "PUT", r"/blobs/uploads/"))
    registry_proxy.add(Rule(Fault.error(status), "PUT", r"/manifests/sha256:"))
    registry_proxy.add(Rule(Fault.error(status), "PUT", r"/manifests/\d"))
    registry_proxy.add(Rule(Fault.error(status), "GET", r"/faulty/tags/list"))
    prefix = f"errors{status}"
    another_writer(registry, prefix)

    run = sync(index_url(index_proxy), registry_proxy.host, prefix)

    assert_like_clean(run, registry, prefix, clean)
    assert_retried(index_proxy, "GET", r"^/simple/faulty/$", 1)
    assert_retried(index_proxy, "GET", r"\.whl$", 2)
    assert_retried(index_proxy, "GET", r"\.whl\.metadata$", 1)
    assert_retried(registry_proxy, "GET", r"/faulty/manifests/\d", 1)
    assert_retried(registry_proxy, "GET", r"/oci-pypi\.catalog/tags/list", 1)
    assert_retried(registry_proxy, "POST", r"/blobs/uploads/(\?[^/]*)?$", 1)
    assert_retried(registry_proxy, "PUT", r"/blobs/uploads/", 1)
    assert_retried(registry_proxy, "PUT", r"/manifests/sha256:", 1)
    assert_retried(registry_proxy, "PUT", r"/manifests/\d", 1)
    assert_retried(registry_proxy, "GET", r"/faulty/tags/list", 1)
    assert len(registry_proxy.faulted()) == 7
    assert {r.status for r in registry_proxy.faulted()} == {status}


def test_too_many_requests_waits_as_asked(
    index: FixtureIndex,
    registry: RegistryServer,
    clean: Run,
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    index_proxy, registry_proxy = proxies
    index_proxy.add(Rule(Fault.too_many(retry_after=2), "GET", r"^/simple/faulty/$"))
    registry_proxy.add(Rule(Fault.too_many(retry_after=2), "PUT", blob_pattern(index, SDIST)))
    registry_proxy.add(Rule(Fault.unavailable(retry_after=2), "PUT", r"/manifests/2\.0$"))

    run = sync(index_url(index_proxy), registry_proxy.host, "throttled")

    assert_like_clean(run, registry, "throttled", clean)
    for proxy, method, path in [
        (index_proxy, "GET", r"^/simple/faulty/$"),
        (registry_proxy, "PUT", blob_pattern(index, SDIST)),
        (registry_proxy, "PUT", r"/manifests/2\.0$"),
    ]:
        assert_retried(proxy, method, path, 1)
        first, *rest = proxy.seen(method, path)
        assert first.status in (429, 503)
        # the backoff alone would have waited at most 1 s: Retry-After was honoured
        assert rest[0].at - first.at >= 1.9, (first, rest[0])
    # the blob upload starts a new session after the 429
    sessions = registry_proxy.seen("POST", r"/blobs/uploads/(\?[^/]*)?$")
    assert len(sessions) >= len(clean.report["files"]) + 1


def test_truncated_bodies(
    index: FixtureIndex,
    registry: RegistryServer,
    clean: Run,
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    index_proxy, registry_proxy = proxies
    index_proxy.add(Rule(Fault.truncate(), "GET", r"^/simple/faulty/$"))
    index_proxy.add(Rule(Fault.truncate(), "GET", SDIST + "$", times=2))
    # the release's wheels share their metadata: the first to fetch it is cut
    index_proxy.add(Rule(Fault.truncate(), "GET", r"-1\.0-[^/]*\.whl\.metadata$"))

    run = sync(index_url(index_proxy), registry_proxy.host, "truncated")

    assert_like_clean(run, registry, "truncated", clean)
    assert_retried(index_proxy, "GET", r"^/simple/faulty/$", 1)
    assert_retried(index_proxy, "GET", SDIST + "$", 2)
    assert_retried(index_proxy, "GET", r"-1\.0-[^/]*\.whl\.metadata$", 1)
    # a cut download never completed an upload: one committed PUT of the sdist
    puts = registry_proxy.seen("PUT", blob_pattern(index, SDIST))
    assert [r.status for r in puts if r.status is not None and r.status < 300] == [201]


def test_stalls_end_with_the_timeout(
    index: FixtureIndex,
    registry: RegistryServer,
    clean: Run,
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    index_proxy, registry_proxy = proxies
    # Stalls far longer than the run may take: a client that waited for one instead of
    # giving up after its 1 s timeout would hang the run (and fail it on its timeout).
    index_proxy.add(Rule(Fault.stall(3600, then="continue"), "GET", r"^/simple/faulty/$"))
    index_proxy.add(Rule(Fault.stall(3600, after_bytes=64 * 1024), "GET", SDIST + "$"))
    registry_proxy.add(Rule(Fault.stall(3600), "PUT", r"/manifests/1\.0$"))

    run = sync(index_url(index_proxy), registry_proxy.host, "stalled", "--timeout", "1")

    assert_like_clean(run, registry, "stalled", clean)
    assert_retried(index_proxy, "GET", r"^/simple/faulty/$", 1)
    assert_retried(index_proxy, "GET", SDIST + "$", 1)
    assert_retried(registry_proxy, "PUT", r"/manifests/1\.0$", 1)
    # the stalled requests were given up and tried again, every stall still running
    assert [r.fault for r in index_proxy.seen("GET", r"^/simple/faulty/$")][:1] == [
        "stall 3600s then continue"
    ]


def test_seeded_random_faults_everywhere(
    index: FixtureIndex,
    registry: RegistryServer,
    clean: Run,
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    index_proxy, registry_proxy = proxies
    index_proxy.add(Rule(Fault.reset(), probability=0.15, seed=11, times=3))
    index_proxy.add(Rule(Fault.error(502), probability=0.15, seed=12, times=2))
    registry_proxy.add(Rule(Fault.error(503), probability=0.15, seed=13, times=3))
    registry_proxy.add(Rule(Fault.reset(), probability=0.15, seed=14, times=2))

    run = sync(index_url(index_proxy), registry_proxy.host, "random", "--retries", "10")

    assert_like_clean(run, registry, "random", clean)
    assert 1 <= len(index_proxy.faulted()) <= 5
    assert 1 <= len(registry_proxy.faulted()) <= 5


# --- a fault that never stops ----------------------------------------------------------


def test_a_fault_that_never_stops_fails_that_file_only(
    index: FixtureIndex,
    registry: RegistryServer,
    clean: Run,
    proxies: tuple[FaultProxy, FaultProxy],
) -> None:
    index_proxy, registry_proxy = proxies
    sdist_puts = blob_pattern(index, SDIST)
    registry_proxy.add(Rule(Fault.error(500), "PUT", sdist_puts, times=10**6))

    run = sync(index_url(index_proxy), registry_proxy.host, "broken", "--retries", "2")

    assert run.returncode == 1, run.stderr
    assert run.report["ok"] is False
    assert run.files("failed") == {SDIST}
    assert run.files("pushed") == clean.files("pushed") - {SDIST}
    failure = next(f for f in run.report["files"] if f["filename"] == SDIST)
    assert re.search(r"refused blob broken/faulty@sha256:\w+: UNAVAILABLE", failure["error"])
    assert f"error: {SDIST}:" in run.stderr
    # 1 attempt + 2 retries, each a fresh session that is then cancelled
    assert [r.status for r in registry_proxy.seen("PUT", sdist_puts)] == [500, 500, 500]
    # the other files landed; 2.0 is whole, 1.0 is tagged with its two wheels
    assert run.tags["2.0"] == clean.tags["2.0"]
    tagged = httpx.get(
        f"{registry.url}/v2/broken/{PROJECT}/manifests/1.0",
        headers={"Accept": OCI_ACCEPT},
        timeout=10,
    )
    titles = sorted(
        m["annotations"]["dev.oci-pypi.filename"] for m in json.loads(tagged.content)["manifests"]
    )
    assert titles == sorted(clean.files("pushed") & {n for n in titles if n.endswith(".whl")})
    assert len(titles) == 2
    assert storage_is_sound(registry) > 0
