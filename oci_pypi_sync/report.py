"""Rendering a sync report: the JSON document (a stable interface) and the human summary."""

from __future__ import annotations

import json
from typing import Any

from oci_pypi_sync.results import SyncReport

REPORT_SCHEMA_VERSION = 1


def report_document(report: SyncReport) -> dict[str, Any]:
    """The ``--json`` document: per file, per release, per failed project, and totals."""
    return {
        "schema": REPORT_SCHEMA_VERSION,
        "target": report.target,
        "dry_run": report.dry_run,
        "ok": not report.failed,
        "files": [
            {
                "project": f.project,
                "version": f.version,
                "filename": f.filename,
                "sha256": f.sha256,
                "size": f.size,
                "action": f.action,
                **({"error": f.error} if f.error else {}),
            }
            for f in report.files
        ],
        "releases": [
            {
                "project": r.project,
                "version": r.version,
                "tag": r.tag,
                "digest": r.digest,
                "action": r.action,
                **({"error": r.error} if r.error else {}),
                **(
                    {"removed_upstream": list(r.removed_upstream), "pruned": r.pruned}
                    if r.removed_upstream
                    else {}
                ),
            }
            for r in report.releases
        ],
        "errors": [
            {"project": e.project, "error": e.error, "quarantined": e.quarantined}
            for e in report.project_errors
        ],
        "totals": {
            "files": len(report.files),
            "pushed": report.count("pushed"),
            "skipped": report.count("skipped"),
            "failed": report.count("failed"),
            "planned": report.count("planned"),
            "bytes_pushed": report.bytes_pushed,
            "bytes_planned": sum(f.size or 0 for f in report.files if f.action == "planned"),
            "releases_tagged": sum(1 for r in report.releases if r.action == "pushed"),
            "projects": report.projects,
            "projects_unchanged": report.projects_unchanged,
            "projects_failed": len(report.project_errors),
        },
    }


def report_json(report: SyncReport) -> str:
    return json.dumps(report_document(report), indent=2, sort_keys=False)


def summary_line(report: SyncReport) -> str:
    """One line a person reads at the end of a run."""
    totals = report_document(report)["totals"]
    if report.dry_run:
        return (
            f"dry run: {totals['planned']} files ({_human_bytes(totals['bytes_planned'])}) "
            f"would be mirrored to {report.target}"
        )
    parts = [
        f"{totals['pushed']} pushed ({_human_bytes(totals['bytes_pushed'])})",
        f"{totals['skipped']} already present",
        f"{totals['releases_tagged']} releases tagged",
    ]
    if totals["failed"]:
        parts.append(f"{totals['failed']} failed")
    if totals["projects_failed"]:
        parts.append(f"{totals['projects_failed']} projects failed")
    return f"{report.target}: " + ", ".join(parts)


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
