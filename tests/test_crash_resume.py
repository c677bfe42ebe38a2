"""A sync killed with SIGKILL at any moment resumes to the same result, no blob uploaded twice.

The real CLI runs in a subprocess against a dedicated registry and a
throttled fixture index; the test watches the registry's storage directory
(blobs linked into repositories, tags) to pick the moment, kills the
process, reruns it to completion and compares with an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
from cli_helpers import (
    check_children,
    cli_env,
    cli_process,
    run_cli,
    tag_digests,
    wait_for,
)
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index
from registry_server import RegistryServer, running_registry

from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY
from oci_pypi_sync.state.journal import Journal

pytestmark = pytest.mark.registry

PROJECTS = [
    "alder",
    "birch",
    "cedar",
    "dogwood",
    "elm",
    "fir",
    "ginkgo",
    "hazel",
    "juniper",
    "larch",
    "maple",
    "oak",
]
SIZES = [512 << 10, 900 << 10, 1300 << 10, 1800 << 10, 2600 << 10]
# Per file body and response: 32 files of ~1.4 MB at 4 at once last ~3 s.
THROTTLE = 3_000_000.0
JOBS = "4"
PUT_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>/v2/\S+) HTTP/1\.1" (?P<status>\d{3})')


def build_index() -> FixtureIndex:
    """12 projects, 2-3 files each (0.5-2.6 MB, fixed bytes); 1.0 everywhere, 1.1 on some."""
    index = FixtureIndex()
    n = 0

    def size() -> int:
        nonlocal n
        n += 1
        return SIZES[(n * 3) % len(SIZES)]

    for i, project in enumerate(PROJECTS):
        files: list[FixtureFile] = [
            make_wheel(project, "1.0", payload=size()),
            make_sdist(project, "1.0", size=size()),
        ]
        if i % 2 == 0:
            files.append(make_wheel(project, "1.1", payload=size()))
        index.add(project, *files)
    return index


def expected_tags() -> set[tuple[str, str]]:
    return {(p, "1.0") for p in PROJECTS} | {(p, "1.1") for p in PROJECTS[::2]}


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    with serve_index(build_index()) as served:
        yield served


@dataclass(frozen=True)
class Clean:
    """The uninterrupted run: its tags and digests."""

    tags: dict[tuple[str, str], str]


@pytest.fixture(scope="module")
def clean(index: FixtureIndex, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clean]:
    tmp = tmp_path_factory.mktemp("clean")
    with running_registry(tmp / "registry") as registry:
        result = run_cli(
            [
                "sync",
                *PROJECTS,
                "--to",
                f"{registry.host}/clean",
                "--index-url",
                index.url,
                "--state",
                str(tmp / "state.sqlite"),
                "--jobs",
                JOBS,
                "--json",
            ],
            cli_env(tmp / "home"),
        )
        assert result.returncode == 0, result.describe()
        report = result.json()
        assert report["totals"]["pushed"] == len(index.files_by_name())
        tags = tag_digests(registry.url, "clean")
        assert set(tags) == expected_tags()
        assert {(r["project"], r["tag"]): r["digest"] for r in report["releases"]} == tags
        yield Clean(tags)


# --- watching the registry's storage ----------------------------------------------


def repo_dir(registry: RegistryServer, prefix: str, repo: str) -> Path:
    return registry.root / "storage/docker/registry/v2/repositories" / prefix / repo


def linked_blobs(registry: RegistryServer, prefix: str) -> dict[str, set[str]]:
    """Per repository, the digests of the blobs whose upload completed there."""
    result: dict[str, set[str]] = {}
    for project in PROJECTS:
        layers = repo_dir(registry, prefix, project) / "_layers/sha256"
        found = set()
        if layers.is_dir():
            for entry in layers.iterdir():
                if (entry / "link").is_file():
                    found.add("sha256:" + entry.name)
        result[project] = found
    return result


def stored_tags(registry: RegistryServer, prefix: str) -> set[tuple[str, str]]:
    result = set()
    for project in PROJECTS:
        tags = repo_dir(registry, prefix, project) / "_manifests/tags"
        if tags.is_dir():
            result |= {(project, t.name) for t in tags.iterdir() if (t / "current/link").is_file()}
    return result


def file_digests(index: FixtureIndex) -> dict[str, tuple[str, str]]:
    """Each distribution file's digest -> (project, filename)."""
    return {
        "sha256:" + f.sha256: (project, f.filename)
        for project, files in index.projects.items()
        for f in files
    }


def blob_puts(log_text: str, prefix: str) -> list[tuple[str, str]]:
    """(repository, digest) of every completed blob upload in a registry access log."""
    puts = []
    for match in PUT_LINE.finditer(log_text):
        uri = unquote(match["uri"])
        if match["method"] != "PUT" or match["status"] != "201" or "/blobs/uploads/" not in uri:
            continue
        name = uri[len("/v2/") : uri.index("/blobs/uploads/")]
        digest = re.search(r"[?&]digest=(sha256:[0-9a-f]{64})", uri)
        assert digest is not None, uri
        assert name.startswith(prefix + "/"), uri
        puts.append((name[len(prefix) + 1 :], digest[1]))
    return puts


def file_gets(index: FixtureIndex, start: int) -> list[str]:
    """Filenames of distribution files (not .metadata) downloaded since request ``start``."""
    return [
        path.rsplit("/", 1)[1]
        for method, path in index.requests[start:]
        if method == "GET" and "/files/" in path and not path.endswith(".metadata")
    ]


# --- the moments -----------------------------------------------------------------------


def moment_condition(
    moment: str, registry: RegistryServer, index: FixtureIndex, sent_before: int
) -> tuple[Callable[[], bool], str]:
    digests = file_digests(index)

    def total_sent() -> int:
        return sum(index.sent_snapshot().values()) - sent_before

    if moment == "early":
        # Data is flowing into the first uploads: about one file's worth sent.
        return lambda: total_sent() >= 1 << 20, "the first megabyte of file bodies"
    if moment == "middle":
        return lambda: len(stored_tags(registry, "crash")) >= 5, "five tags"

    def late() -> bool:
        linked: set[str] = set().union(*linked_blobs(registry, "crash").values())
        return len(linked & set(digests)) >= int(0.8 * len(digests))

    return late, "80% of the file blobs"


@pytest.mark.parametrize("moment", ["early", "middle", "late"])
def test_sync_killed_then_rerun_matches_an_uninterrupted_run(
    moment: str, index: FixtureIndex, clean: Clean, tmp_path: Path
) -> None:
    digests = file_digests(index)
    sizes = {f.filename: len(f.data) for f in index.files_by_name().values()}
    env = cli_env(tmp_path / "home")
    state = tmp_path / "state.sqlite"
    with running_registry(tmp_path / "registry") as registry:
        target = f"{registry.host}/crash"
        args = [
            "sync",
            *PROJECTS,
            "--to",
            target,
            "--index-url",
            index.url,
            "--state",
            str(state),
            "--jobs",
            JOBS,
            "--json",
        ]

        # 1. The run that gets killed.
        killed_start = len(index.requests)
        sent_before = index.sent_snapshot()
        condition, what = moment_condition(moment, registry, index, sum(sent_before.values()))
        index.throttle = THROTTLE
        try:
            with cli_process(
                args, env, stdout=tmp_path / "killed.out", stderr=tmp_path / "killed.err"
            ) as process:
                wait_for(lambda: condition() or process.poll() is not None, timeout=300, what=what)
                assert process.poll() is None, (
                    f"the sync ended (exit {process.returncode}) before {what}: "
                    + (tmp_path / "killed.err").read_text()
                )
                process.send_signal(signal.SIGKILL)
                assert process.wait(timeout=10) == -signal.SIGKILL
        finally:
            index.throttle = None
        time.sleep(0.3)  # let the registry finish any request whose body it already had
        tags_at_kill = stored_tags(registry, "crash")
        linked_at_kill = linked_blobs(registry, "crash")
        files_at_kill = {
            digest for blobs in linked_at_kill.values() for digest in blobs if digest in digests
        }
        sent_killed = {
            path: count - sent_before.get(path, 0)
            for path, count in index.sent_snapshot().items()
            if count > sent_before.get(path, 0)
        }
        downloaded_killed = set(file_gets(index, killed_start))
        if moment == "early":
            assert not tags_at_kill
            assert len(files_at_kill) < len(digests) // 4
        elif moment == "middle":
            assert 5 <= len(tags_at_kill) < len(expected_tags())
        else:
            assert len(files_at_kill) >= int(0.8 * len(digests))
            assert len(tags_at_kill) < len(expected_tags())

        # (d) The kernel dropped the lock with the process: the state file opens for writing.
        with Journal.open(state, target=target) as journal:
            summary = journal.summary()
        assert summary.files_failed == 0
        assert summary.files_done <= len(files_at_kill)

        # 2. The rerun, to completion.
        log_offset = len(registry.log_text())
        rerun_start = len(index.requests)
        result = run_cli(args, env)
        assert result.returncode == 0, result.describe()
        report = result.json()
        assert report["ok"] is True

        # (a) Same tags, same digests as the uninterrupted run.
        assert tag_digests(registry.url, "crash") == clean.tags

        # (b) Nothing complete before the rerun was downloaded or uploaded again;
        # everything incomplete was, exactly once.
        missing = {
            (project, digest)
            for digest, (project, _) in digests.items()
            if digest not in linked_at_kill[project]
        }
        puts = [
            (repo, digest)
            for repo, digest in blob_puts(registry.log_text()[log_offset:], "crash")
            if repo != CATALOG_REPOSITORY  # the catalog is rewritten by every run
        ]
        again = [(repo, d) for repo, d in puts if d in linked_at_kill[repo]]
        assert again == [], f"blobs uploaded again after the kill: {again}"
        file_puts = [(repo, d) for repo, d in puts if d in digests]
        assert sorted(file_puts) == sorted(missing)
        downloaded = file_gets(index, rerun_start)
        assert sorted(downloaded) == sorted(digests[d][1] for _, d in missing)
        pushed = {f["filename"] for f in report["files"] if f["action"] == "pushed"}
        # Present: found on the target this run; unchanged: its project completed before
        # the kill, and the state file says so.
        present = {
            f["filename"] for f in report["files"] if f["action"] in ("present", "unchanged")
        }
        assert pushed == {digests[d][1] for _, d in missing}
        assert present == set(sizes) - pushed

        # (c) Every tag's index reaches only content that is there and hashes right.
        blobs_checked = sum(
            check_children(registry.url, f"crash/{project}", tag) for project, tag in clean.tags
        )
        wheels = sum(1 for name in sizes if name.endswith(".whl"))
        assert blobs_checked == 2 * len(sizes) + wheels  # config and file; a wheel's metadata

        with Journal.open(state, target=target, readonly=True) as journal:
            final = journal.summary()
        assert (final.files_done, final.files_pending, final.files_failed) == (len(sizes), 0, 0)
        assert final.releases == len(expected_tags())
        assert final.bytes_done == sum(sizes.values())

    sent_by_name = {path.rsplit("/", 1)[1]: n for path, n in sent_killed.items()}
    wasted = sum(n for name, n in sent_by_name.items() if name in set(downloaded))
    print(
        f"\n{moment}: killed with {len(tags_at_kill)}/{len(expected_tags())} tags, "
        f"{len(files_at_kill)}/{len(digests)} file blobs stored, "
        f"{len(downloaded_killed)} files started; rerun: {len(again)} complete blobs "
        f"uploaded again, {len(file_puts)} files uploaded, {len(downloaded)} files downloaded "
        f"({sum(sizes[n] for n in downloaded)} bytes), of which partial before the kill: "
        f"{len(set(downloaded) & set(sent_by_name))} ({wasted} bytes thrown away)"
    )


def test_fixture_files_have_the_advertised_sizes_and_digests(index: FixtureIndex) -> None:
    files = index.files_by_name()
    assert len(files) == 30
    assert all(512 << 10 <= len(f.data) <= 3 << 20 for f in files.values())
    assert all(hashlib.sha256(f.data).hexdigest() == f.sha256 for f in files.values())
