"""Progress that says what it is doing, and a size budget checked before any transfer."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement
from rich.console import Console

from oci_pypi_sync.cli.progress import ANNOUNCE_BYTES, LogObserver, RichObserver
from oci_pypi_sync.engine.results import FileResult, NullObserver
from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.sizes import human_bytes
from oci_pypi_sync.stores.layout import LayoutStore

PROJECTS = [f"proj-{n:02d}" for n in range(12)]  # more than the run's project slots
PROJECT_WHEEL_SIZE = len(make_wheel("proj-00", "1.0", payload=20_000).data)


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("app", make_wheel("app", "1.0", ("lib",)), make_sdist("app", "1.0", size=50_000))
    fixture.add("lib", make_wheel("lib", "1.0"))
    for name in PROJECTS:
        fixture.add(name, make_wheel(name, "1.0", payload=20_000))
    with serve_index(fixture):
        yield fixture


def run(index: FixtureIndex, home: Path, *args: str) -> tuple[int, list[str], str]:
    result = run_cli(
        ["sync", *args, "--to", f"oci:{home / 'mirror'}", "-i", index.url], cli_env(home)
    )
    lines = [line.split(" INFO ", 1)[-1] for line in result.stderr.strip().splitlines()]
    return result.returncode, lines, result.stdout


def test_off_a_terminal_progress_is_one_line_per_phase_and_a_summary(
    index: FixtureIndex, tmp_path: Path
) -> None:
    mirror = f"oci:{tmp_path / 'mirror'}"
    code, lines, _ = run(index, tmp_path, "app", "--with-deps")
    assert code == 0, lines
    assert lines[:2] == [
        "resolving the dependencies of 1 requirements",
        "reading the index: 2 projects",
    ]
    assert re.fullmatch(rf"sync: 3 files, 49\.\d KiB planned into {re.escape(mirror)}", lines[2])
    assert lines[3].startswith(f"{mirror}: 3 pushed (")
    assert len(lines) == 4
    # A rerun with nothing to transfer says so in the summary alone.
    code, lines, _ = run(index, tmp_path, "app", "--with-deps")
    assert code == 0
    assert lines[:2] == [
        "resolving the dependencies of 1 requirements",
        "reading the index: 2 projects",
    ]
    assert lines[2].endswith("3 unchanged since the last sync, 0 releases tagged")
    assert len(lines) == 3
    # --no-progress: the summary alone (the transfer is under ANNOUNCE_BYTES); -q: nothing.
    code, lines, _ = run(index, tmp_path, "app", "--with-deps", "--no-progress")
    assert code == 0
    assert len(lines) == 1
    code, lines, _ = run(index, tmp_path, "app", "--with-deps", "-q")
    assert (code, lines) == (0, [])
    code, lines, _ = run(index, tmp_path, "app", "--with-deps", "--progress", "-q")
    assert (code, lines) == (0, [])


def test_what_is_planned_is_said_before_the_first_transfer(
    index: FixtureIndex, tmp_path: Path
) -> None:
    # At -v the planned line comes whatever the size, even without --progress, and
    # before the first file's line.
    code, lines, _ = run(index, tmp_path, *PROJECTS, "--no-progress", "-v")
    assert code == 0, lines
    planned = [i for i, line in enumerate(lines) if line.startswith("sync: ")]
    pushed = [i for i, line in enumerate(lines) if line.startswith("pushed ")]
    assert len(planned) == 1
    size = human_bytes(12 * PROJECT_WHEEL_SIZE)
    assert lines[planned[0]] == f"sync: 12 files, {size} planned into oci:{tmp_path / 'mirror'}"
    assert len(pushed) == 12
    assert planned[0] < min(pushed)


def test_the_total_is_known_and_said_before_any_file_is_read(index: FixtureIndex) -> None:
    # Named requirements: every page is read, the total said, then the transfers start,
    # with fewer project slots than projects.
    heard: list[tuple[str, int]] = []

    class Recorder(NullObserver):
        def project_planned(self, project: str) -> None:
            heard.append(("planned", len(index.requests)))

        def transfer_planned(self, count: int, total_bytes: int) -> None:
            heard.append((f"total {count} {total_bytes}", len(index.requests)))

        def transfer_started(self, filename: str, size: int | None) -> None:
            heard.append(("started", len(index.requests)))

    async def go(mirror: Path) -> None:
        async with IndexClient(index.url) as client:
            store = LayoutStore(mirror, create=True)
            requirements = [Requirement(name) for name in PROJECTS]
            options = SyncOptions(jobs=1)
            report = await sync(requirements, client, store, options, observer=Recorder())
            assert report.count("pushed") == 12

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(go(Path(tmp) / "mirror"))
    kinds = [kind for kind, _ in heard]
    total = kinds.index(f"total 12 {12 * PROJECT_WHEEL_SIZE}")
    assert kinds[:total] == ["planned"] * 12
    assert kinds[total + 1 :] == ["started"] * 12
    # When the total was said, the index had been asked for pages only.
    requests_then = heard[total][1]
    assert all(path.startswith("/simple/") for _, path in index.requests[:requests_then])
    assert len(index.requests[:requests_then]) == 12


def test_a_planned_transfer_over_the_threshold_is_said_even_without_phases(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet = LogObserver("oci:/m", phases=False)
    with caplog.at_level(logging.INFO, logger="oci_pypi_sync.progress.phases"):
        quiet.phase("reading", 3)
        quiet.transfer_planned(5, ANNOUNCE_BYTES - 1)
        quiet.transfer_planned(2541, 56_800_000_000)
    assert [r.getMessage() for r in caplog.records] == [
        "sync: 2,541 files, 52.9 GiB planned into oci:/m"
    ]
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with RichObserver(console, target="oci:/m") as display:
        display.transfer_planned(5, ANNOUNCE_BYTES - 1)
        display.transfer_planned(2541, 56_800_000_000)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert output.count("planned into") == 1
    assert "sync: 2,541 files, 52.9 GiB planned into oci:/m" in output


def test_a_run_over_max_bytes_is_refused_before_any_transfer(
    index: FixtureIndex, tmp_path: Path
) -> None:
    code, lines, stdout = run(index, tmp_path, *PROJECTS, "--jobs", "1", "--max-bytes", "100K")
    assert code == 3
    phase, line = lines
    assert phase == "reading the index: 12 projects"
    assert line.startswith("error: this run would transfer up to ")
    assert "(12 files), more than --max-bytes 100.0 KiB; raise --max-bytes" in line
    assert stdout == ""
    # Nothing was transferred: no file was read from the index, the layout holds no tag.
    assert not [path for _, path in index.requests if path.startswith("/files/")]
    mirror = tmp_path / "mirror"
    assert not mirror.exists() or not [t for t in LayoutStore(mirror).tags() if "proj" in t[0]]


def test_a_run_within_max_bytes_mirrors_everything(index: FixtureIndex, tmp_path: Path) -> None:
    # Twelve projects wait for each other's plans with one file at a time (four
    # project slots): the wait gives its slot back, so this must not hang.
    code, lines, stdout = run(
        index, tmp_path, *PROJECTS, "--jobs", "1", "--max-bytes", "10M", "--json"
    )
    assert code == 0, lines
    assert json.loads(stdout)["totals"]["pushed"] == 12
    tags = LayoutStore(tmp_path / "mirror").tags()
    assert sorted(t for t in tags if t[0].startswith("proj-")) == [(p, "1.0") for p in PROJECTS]


def test_the_display_shows_the_phases_and_an_eta_only_over_a_known_total() -> None:
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    observer = RichObserver(console)
    task = observer.overall
    observer.phase("resolving", 5)
    assert task.description == "resolving the dependencies of 5 requirements"
    observer.phase("reading", 2)
    assert task.description == "reading the index 0/2 projects"
    observer.files_planned(1, 1000)
    observer.project_planned("a")
    assert task.description == "reading the index 1/2 projects"
    assert task.total is None  # still growing: no ETA yet
    observer.transfer_started("a-1.0.tar.gz", 1000)
    observer.bytes_transferred("a-1.0.tar.gz", 400)
    observer.files_planned(2, 3000)
    observer.project_planned("b")
    assert task.total == 4000  # every project planned: the total is final
    assert task.description == "files 0/3"
    observer.bytes_transferred("a-1.0.tar.gz", 600)
    observer.file_finished(FileResult("a", "1.0", "a-1.0.tar.gz", "00", 1000, "pushed"))
    assert task.description == "files 1/3"
    assert task.completed == 1000
