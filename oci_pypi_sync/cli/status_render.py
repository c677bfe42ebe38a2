"""Rendering the state file's summary: plain text for people, a document for ``--json``.

Pure functions of a :class:`~oci_pypi_sync.state.journal.JournalSummary`, so the
output is testable without a database and stays the same in a pipe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from oci_pypi_sync.cli.render import human_bytes
from oci_pypi_sync.state.journal import FileState, JournalSummary, ProjectState

STATUS_SCHEMA_VERSION = 1
MAX_FAILED_SHOWN = 20


def iso_utc(when: float | None) -> str | None:
    """Unix time as ISO 8601 UTC to the second (``2024-05-01T12:00:00Z``)."""
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_status(summary: JournalSummary) -> str:
    """Totals, then what needs attention: failed files with reasons, quarantined projects."""
    lines = [
        f"state of {summary.target}",
        f"  projects: {summary.projects}",
        f"  files:    {summary.files_done} done ({human_bytes(summary.bytes_done)}), "
        f"{summary.files_pending} pending, {summary.files_failed} failed",
        f"  releases: {summary.releases} tagged",
    ]
    if summary.failed:
        lines += ["", f"failed files ({len(summary.failed)}):"]
        for file in summary.failed[:MAX_FAILED_SHOWN]:
            lines.append(
                f"  {file.project} {file.version} {file.filename} "
                f"({_count(file.attempts, 'attempt')}): {_one_line(file.last_error)}"
            )
        if len(summary.failed) > MAX_FAILED_SHOWN:
            lines.append(f"  ... and {len(summary.failed) - MAX_FAILED_SHOWN} more")
    if summary.quarantined:
        lines += [
            "",
            f"quarantined projects, skipped until the time shown ({len(summary.quarantined)}):",
        ]
        for project in summary.quarantined:
            lines.append(
                f"  {project.project} until {iso_utc(project.quarantined_until)} "
                f"after {_count(project.consecutive_failures, 'failure')} in a row: "
                f"{_one_line(project.last_error)}"
            )
    quarantined = {p.project for p in summary.quarantined}
    retrying = [p for p in summary.failing_projects if p.project not in quarantined]
    if retrying:
        lines += ["", f"failing projects, retried on the next run ({len(retrying)}):"]
        for project in retrying:
            lines.append(
                f"  {project.project} "
                f"({_count(project.consecutive_failures, 'failure')} in a row): "
                f"{_one_line(project.last_error)}"
            )
    return "\n".join(lines) + "\n"


def status_document(summary: JournalSummary) -> dict[str, Any]:
    """The ``--json`` document: every failed file and failing project, times in ISO 8601 UTC."""
    return {
        "schema": STATUS_SCHEMA_VERSION,
        "target": summary.target,
        "totals": {
            "projects": summary.projects,
            "files_done": summary.files_done,
            "files_pending": summary.files_pending,
            "files_failed": summary.files_failed,
            "releases": summary.releases,
            "bytes_done": summary.bytes_done,
        },
        "failed": [_file_document(f) for f in summary.failed],
        "quarantined": [_project_document(p) for p in summary.quarantined],
        "failing_projects": [_project_document(p) for p in summary.failing_projects],
    }


def _file_document(file: FileState) -> dict[str, Any]:
    return {
        "project": file.project,
        "version": file.version,
        "filename": file.filename,
        "sha256": file.sha256,
        "size": file.size,
        "status": file.status,
        "attempts": file.attempts,
        "error": file.last_error,
        "updated_at": iso_utc(file.updated_at),
    }


def _project_document(project: ProjectState) -> dict[str, Any]:
    return {
        "project": project.project,
        "consecutive_failures": project.consecutive_failures,
        "quarantined_until": iso_utc(project.quarantined_until),
        "error": project.last_error,
        "synced_at": iso_utc(project.synced_at),
        "complete": project.complete,
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _one_line(text: str | None) -> str:
    """Errors can span lines (server bodies); a status line must not."""
    if not text:
        return "(no reason recorded)"
    return " ".join(text.split())
