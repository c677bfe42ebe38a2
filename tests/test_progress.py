"""Progress that says what it is doing, and a size budget checked before any transfer."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from rich.console import Console

from oci_pypi_sync.cli.progress import RichObserver
from oci_pypi_sync.engine.results import FileResult
from oci_pypi_sync.stores.layout import LayoutStore

PROJECTS = [f"proj-{n:02d}" for n in range(12)]  # more than the run's project slots


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
    code, lines, _ = run(index, tmp_path, "app", "--with-deps", "--progress")
    assert code == 0, lines
    assert lines[:2] == [
        "resolving the dependencies of 1 requirements",
        "reading the index: 2 projects",
    ]
    assert lines[2].startswith("selected: 3 files (")
    assert lines[2].endswith(" in 2 projects")
    assert lines[3].startswith(f"oci:{tmp_path / 'mirror'}: 3 pushed (")
    assert len(lines) == 4
    # Without --progress (a cron job), the summary alone; with -q, nothing.
    code, lines, _ = run(index, tmp_path, "app", "--with-deps")
    assert code == 0
    assert len(lines) == 1
    assert lines[0].endswith("3 unchanged since the last sync, 0 releases tagged")
    code, lines, _ = run(index, tmp_path, "app", "--with-deps", "--progress", "-q")
    assert (code, lines) == (0, [])


def test_a_run_over_max_bytes_is_refused_before_any_transfer(
    index: FixtureIndex, tmp_path: Path
) -> None:
    code, lines, stdout = run(index, tmp_path, *PROJECTS, "--jobs", "1", "--max-bytes", "100K")
    assert code == 3
    (line,) = lines
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
