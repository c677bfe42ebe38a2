"""The ``--json`` report as a user reads it: who wrote it and when, what a dry run
would do, what is left out and why, and projects the index does not have."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index

import oci_pypi_sync
from oci_pypi_sync.stores.layout import LayoutStore


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("requests", make_wheel("requests", "1.0"), make_sdist("requests", "1.0"))
    fixture.add("requests", make_wheel("requests", "2.0"))
    fixture.add(
        "requests",
        FixtureFile("requests-1.0-py2.7.egg", b"an egg"),
        FixtureFile("requests-1.0.win32.exe", b"an installer"),
    )
    with serve_index(fixture):
        yield fixture


def sync(index: FixtureIndex, home: Path, *args: str) -> dict[str, Any]:
    result = run_cli(
        ["sync", *args, "--to", f"oci:{home / 'mirror'}", "-i", index.url, "--json"],
        cli_env(home),
    )
    assert result.returncode in (0, 1), result.describe()
    report: dict[str, Any] = json.loads(result.stdout)
    report["_stderr"] = result.stderr
    report["_exit"] = result.returncode
    return report


def test_the_report_names_the_tool_its_start_and_its_duration(
    index: FixtureIndex, tmp_path: Path
) -> None:
    report = sync(index, tmp_path, "requests==1.0")
    assert report["tool"] == {"name": "oci-pypi", "version": oci_pypi_sync.__version__}
    assert isinstance(report["started"], str)
    offset = datetime.fromisoformat(report["started"]).utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0
    assert isinstance(report["seconds"], float | int)
    assert report["seconds"] >= 0
    assert report["ok"] is True


def test_files_left_out_are_listed_with_their_reasons(index: FixtureIndex, tmp_path: Path) -> None:
    report = sync(index, tmp_path, "requests==1.0")
    excluded = {e["filename"]: e for e in report["excluded"]}
    assert set(excluded) == {"requests-1.0-py2.7.egg", "requests-1.0.win32.exe"}
    assert all(e["project"] == "requests" for e in excluded.values())
    assert "egg" in excluded["requests-1.0-py2.7.egg"]["reason"]
    assert excluded["requests-1.0.win32.exe"]["reason"]
    assert report["totals"]["excluded"] == 2
    assert "2 left out (see --json)" in str(report["_stderr"])
    # The target holds the two other files of 1.0, and neither of those left out.
    store = LayoutStore(tmp_path / "mirror")
    assert sorted(store.tags()) == [
        ("oci-pypi.catalog", "identity"),
        ("oci-pypi.catalog", "latest"),
        ("requests", "1.0"),
    ]
    titles = {f["filename"] for f in report["files"]}
    assert titles == {"requests-1.0-py3-none-any.whl", "requests-1.0.tar.gz"}


def test_a_dry_run_lists_the_releases_it_would_tag(index: FixtureIndex, tmp_path: Path) -> None:
    report = sync(index, tmp_path, "requests", "--dry-run")
    assert report["dry_run"] is True
    assert [
        (r["project"], r["version"], r["tag"], r["action"], r["digest"]) for r in report["releases"]
    ] == [
        ("requests", "1.0", "1.0", "planned", None),
        ("requests", "2.0", "2.0", "planned", None),
    ]
    assert {f["action"] for f in report["files"]} == {"planned"}
    assert not (tmp_path / "mirror").exists()


def test_a_project_the_index_lacks_is_reported_with_close_names_and_never_quarantined(
    index: FixtureIndex, tmp_path: Path
) -> None:
    assert sync(index, tmp_path, "requests==2.0")["ok"] is True
    for _ in range(4):  # more runs than it takes to quarantine a failing project
        report = sync(index, tmp_path, "reqeusts", "requests==2.0")
        assert report["_exit"] == 1
        (error,) = report["errors"]
        assert error["project"] == "reqeusts"
        assert error["not_found"] is True
        assert error["quarantined"] is False
        assert "not found on the index" in str(error["error"])
        assert str(error["error"]).endswith("close names: requests")
    status = run_cli(["status", "--to", f"oci:{tmp_path / 'mirror'}", "--json"], cli_env(tmp_path))
    assert status.returncode == 0, status.describe()
    assert json.loads(status.stdout)["totals"].get("quarantined", 0) == 0
