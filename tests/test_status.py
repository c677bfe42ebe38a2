"""Rendering the state file's summary as text and as the ``--json`` document."""

from __future__ import annotations

import json
from pathlib import Path

from oci_pypi_sync.cli.status_render import iso_utc, render_status, status_document
from oci_pypi_sync.state.journal import FileState, Journal, JournalSummary, ProjectState

TARGET = "127.0.0.1:5000/pypi"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def _failed(i: int) -> FileState:
    return FileState(
        project=f"proj{i:02d}",
        version="1.0",
        filename=f"proj{i:02d}-1.0.tar.gz",
        sha256=f"{i:064x}",
        size=100 + i,
        status="failed",
        manifest_digest=None,
        attempts=2,
        last_error=f"HTTP 404 for file {i}",
        updated_at=NOW,
    )


def _project(name: str, failures: int, until: float | None, error: str) -> ProjectState:
    return ProjectState(
        project=name,
        page_digest=None,
        etag=None,
        last_serial=None,
        consecutive_failures=failures,
        quarantined_until=until,
        last_error=error,
        synced_at=None,
        complete=False,
    )


def _summary(failed: int = 0) -> JournalSummary:
    broken = _project("broken", 3, NOW + 3600, "page unreadable:\n  <html>502</html>")
    return JournalSummary(
        target=TARGET,
        projects=12,
        files_done=340,
        files_pending=2,
        files_failed=failed,
        releases=80,
        bytes_done=3 * 1024 * 1024 * 1024 // 2,
        failed=tuple(_failed(i) for i in range(failed)),
        quarantined=(broken,),
        failing_projects=(broken, _project("flaky", 1, None, "HTTP 503")),
    )


def test_iso_utc() -> None:
    assert iso_utc(NOW) == "2023-11-14T22:13:20Z"
    assert iso_utc(None) is None


def test_render_totals_failures_and_quarantine() -> None:
    text = render_status(_summary(failed=2))
    assert text.splitlines()[:5] == [
        f"state of {TARGET}",
        "  projects: 12",
        "  files:    340 done (1.5 GiB), 2 pending, 2 failed",
        "  releases: 80 tagged",
        "",
    ]
    assert "failed files (2):" in text
    assert "  proj00 1.0 proj00-1.0.tar.gz (2 attempts): HTTP 404 for file 0\n" in text
    assert "  proj01 1.0 proj01-1.0.tar.gz (2 attempts): HTTP 404 for file 1\n" in text
    assert "more" not in text
    # a multi-line error stays on its project's line; the time is ISO 8601 UTC
    assert (
        "  broken until 2023-11-14T23:13:20Z after 3 failures in a row: "
        "page unreadable: <html>502</html>\n"
    ) in text
    # a failing project out of quarantine is listed once, as retried next time
    assert (
        "failing projects, retried on the next run (1):\n  flaky (1 failure in a row): HTTP 503"
        in (text)
    )
    assert text.count("broken") == 1
    assert "\x1b" not in text


def test_render_lists_at_most_twenty_failed_files() -> None:
    text = render_status(_summary(failed=27))
    assert "failed files (27):" in text
    assert "proj19-1.0.tar.gz" in text
    assert "proj20-1.0.tar.gz" not in text
    assert "  ... and 7 more\n" in text


def test_render_of_an_empty_state() -> None:
    empty = JournalSummary(TARGET, 0, 0, 0, 0, 0, 0, (), (), ())
    assert render_status(empty) == (
        f"state of {TARGET}\n"
        "  projects: 0\n"
        "  files:    0 done (0 B), 0 pending, 0 failed\n"
        "  releases: 0 tagged\n"
    )


def test_status_document_is_complete_json() -> None:
    document = status_document(_summary(failed=27))
    assert json.loads(json.dumps(document)) == document
    assert document["schema"] == 1
    assert document["target"] == TARGET
    assert document["totals"] == {
        "projects": 12,
        "files_done": 340,
        "files_pending": 2,
        "files_failed": 27,
        "releases": 80,
        "bytes_done": 1610612736,
    }
    assert len(document["failed"]) == 27  # no truncation in the machine form
    assert document["failed"][3] == {
        "project": "proj03",
        "version": "1.0",
        "filename": "proj03-1.0.tar.gz",
        "sha256": f"{3:064x}",
        "size": 103,
        "status": "failed",
        "attempts": 2,
        "error": "HTTP 404 for file 3",
        "updated_at": "2023-11-14T22:13:20Z",
    }
    assert document["quarantined"] == [
        {
            "project": "broken",
            "consecutive_failures": 3,
            "quarantined_until": "2023-11-14T23:13:20Z",
            "error": "page unreadable:\n  <html>502</html>",
            "synced_at": None,
            "complete": False,
        }
    ]
    assert [p["project"] for p in document["failing_projects"]] == ["broken", "flaky"]


def test_render_from_a_real_journal(tmp_path: Path) -> None:
    with Journal.open(tmp_path / "state.sqlite", target=TARGET) as journal:
        journal.record_file_done("six", "1.16.0", "six-1.16.0.tar.gz", "a" * 64, 34041, "sha256:m")
        journal.record_file_failed(
            "six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", "b" * 64, 11053, "digest mismatch"
        )
        for _ in range(3):
            journal.record_project_failure("numpy", "index answered HTTP 500", now=NOW)
        text = render_status(journal.summary(now=NOW))
        document = status_document(journal.summary(now=NOW))
    assert "  files:    1 done (33.2 KiB), 0 pending, 1 failed\n" in text
    assert "six 1.16.0 six-1.16.0-py2.py3-none-any.whl (1 attempt): digest mismatch" in text
    assert (
        "numpy until 2023-11-14T23:13:20Z after 3 failures in a row: index answered HTTP 500"
        in text
    )
    assert document["totals"]["projects"] == 2
    assert document["failed"][0]["error"] == "digest mismatch"
