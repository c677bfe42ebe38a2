"""Rendering a sync report: the JSON document (a stable interface) and the human summary."""

from __future__ import annotations

import json
from typing import Any

from oci_pypi_sync import __version__
from oci_pypi_sync.engine.results import SyncReport
from oci_pypi_sync.redact import redact_text
from oci_pypi_sync.sizes import human_bytes

__all__ = ["human_bytes", "plan_table", "report_document", "report_json", "summary_line"]

REPORT_SCHEMA_VERSION = 2


def report_document(report: SyncReport) -> dict[str, Any]:
    """The ``--json`` document: per file, per release, per failed project, and totals."""
    return {
        "schema": REPORT_SCHEMA_VERSION,
        "tool": {"name": "oci-pypi", "version": __version__},
        "started": report.started,
        "seconds": report.seconds,
        "target": report.target,
        "dry_run": report.dry_run,
        "ok": not report.failed,
        "aborted": report.aborted,
        "files": [
            {
                "project": f.project,
                "version": f.version,
                "filename": f.filename,
                "sha256": f.sha256,
                "size": f.size,
                "action": f.action,
                **({"error": redact_text(f.error)} if f.error else {}),
                **(
                    {
                        "provenance": {
                            "status": f.provenance.status,
                            "publishers": list(f.provenance.publishers),
                            "attestations": f.provenance.attestations,
                        }
                    }
                    if f.provenance is not None
                    else {}
                ),
                **({"note": f.note} if f.note else {}),
                **({"mirrored_sha256": f.mirrored_sha256} if f.mirrored_sha256 else {}),
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
                **({"error": redact_text(r.error)} if r.error else {}),
                **(
                    {"removed_upstream": list(r.removed_upstream), "pruned": r.pruned}
                    if r.removed_upstream
                    else {}
                ),
            }
            for r in report.releases
        ],
        "errors": [
            {
                "project": e.project,
                "error": redact_text(e.error),
                "quarantined": e.quarantined,
                **({"not_found": True} if e.not_found else {}),
            }
            for e in report.project_errors
        ],
        "excluded": [
            {"project": e.project, "filename": e.filename, "reason": e.reason, "kind": e.kind}
            for e in report.excluded
        ],
        "warnings": [{"project": w.project, "warning": w.message} for w in report.warnings],
        "totals": {
            "files": len(report.files),
            "pushed": report.count("pushed"),
            "present": report.count("present"),
            "unchanged": report.count("unchanged"),
            "failed": report.count("failed"),
            "replaced_upstream": report.count("replaced-upstream"),
            "planned": report.count("planned"),
            "bytes_pushed": report.bytes_pushed,
            "bytes_planned": sum(f.size or 0 for f in report.files if f.action == "planned"),
            "releases_tagged": sum(1 for r in report.releases if r.action == "pushed"),
            "projects": report.projects,
            "projects_unchanged": report.projects_unchanged,
            "projects_failed": len(report.project_errors),
            "excluded": len(report.excluded),
        },
    }


def report_json(report: SyncReport) -> str:
    return json.dumps(report_document(report), indent=2, sort_keys=False)


def summary_line(report: SyncReport) -> str:
    """One line a person reads at the end of a run."""
    totals = report_document(report)["totals"]
    if report.dry_run:
        return (
            f"dry run: {totals['planned']} files ({human_bytes(totals['bytes_planned'])}) "
            f"would be mirrored to {report.target}"
            + (f", {totals['excluded']} left out (see --json)" if totals["excluded"] else "")
        )
    parts = [f"{totals['pushed']} pushed ({human_bytes(totals['bytes_pushed'])})"]
    if totals["present"] or not totals["unchanged"]:
        parts.append(f"{totals['present']} present on the target")
    if totals["unchanged"]:
        parts.append(f"{totals['unchanged']} unchanged since the last sync")
    parts.append(f"{totals['releases_tagged']} releases tagged")
    if totals["failed"]:
        parts.append(f"{totals['failed']} failed")
    if totals["replaced_upstream"]:
        parts.append(f"{totals['replaced_upstream']} replaced upstream (refused)")
    if totals["projects_failed"]:
        parts.append(f"{totals['projects_failed']} projects failed")
    if totals["excluded"]:
        parts.append(f"{totals['excluded']} left out (see --json)")
    if report.aborted:
        parts.append("stopped before the end")
    return f"{report.target}: " + ", ".join(parts)


def plan_rows(report: SyncReport) -> list[tuple[str, str, int, int]]:
    """Per project and version: how many files and bytes a dry run would mirror."""
    rows: dict[tuple[str, str], list[int]] = {}
    for f in report.files:
        if f.action != "planned":
            continue
        row = rows.setdefault((f.project, f.version), [0, 0])
        row[0] += 1
        row[1] += f.size or 0
    return [(project, version, n, size) for (project, version), (n, size) in rows.items()]


def plan_table(report: SyncReport) -> str:
    """The dry run's plan as a plain-text table, with the totals last."""
    rows = plan_rows(report)
    header = ("project", "version", "files", "size")
    body = [(p, v, str(n), human_bytes(size)) for p, v, n, size in rows]
    total_files = sum(n for _, _, n, _ in rows)
    total_bytes = sum(size for _, _, _, size in rows)
    projects = len({p for p, _, _, _ in rows})
    footer = (
        f"{projects} projects",
        f"{len(rows)} versions",
        str(total_files),
        human_bytes(total_bytes),
    )
    widths = [max(len(r[i]) for r in [header, *body, footer]) for i in range(4)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            cell.rjust(width) if i >= 2 else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(r) for r in body), rule, line(footer)])
