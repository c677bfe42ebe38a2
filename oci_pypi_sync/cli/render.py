"""Rendering a sync report: the JSON document (a stable interface) and the human summary."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from oci_pypi_sync import __version__
from oci_pypi_sync.engine.results import (
    Excluded,
    FileResult,
    ProjectError,
    ProjectWarning,
    ReleaseResult,
    ReportRecord,
    SyncReport,
)
from oci_pypi_sync.redact import redact_text
from oci_pypi_sync.sizes import human_bytes

__all__ = [
    "human_bytes",
    "json_line",
    "plan_table",
    "report_document",
    "report_json",
    "report_json_lines",
    "summary_json_line",
    "summary_line",
]

REPORT_SCHEMA_VERSION = 2


def report_document(report: SyncReport) -> dict[str, Any]:
    """The ``--json`` document: per file, per release, per failed project, and totals."""
    head = _head(report)
    totals = head.pop("totals")  # last, after the records
    return {
        **head,
        "files": [file_record(f) for f in report.files],
        "releases": [release_record(r) for r in report.releases],
        "errors": [error_record(e) for e in report.project_errors],
        "excluded": [excluded_record(e) for e in report.excluded],
        "warnings": [warning_record(w) for w in report.warnings],
        "totals": totals,
    }


def _head(report: SyncReport) -> dict[str, Any]:
    totals = report.totals
    return {
        "schema": REPORT_SCHEMA_VERSION,
        "tool": {"name": "oci-pypi", "version": __version__},
        "started": report.started,
        "seconds": report.seconds,
        "target": report.target,
        "dry_run": report.dry_run,
        "ok": not report.failed,
        "aborted": report.aborted,
        "totals": {
            "files": totals.files,
            "pushed": totals.pushed,
            "present": totals.present,
            "unchanged": totals.unchanged,
            "failed": totals.failed,
            "replaced_upstream": totals.replaced_upstream,
            "planned": totals.planned,
            "bytes_pushed": totals.bytes_pushed,
            "bytes_planned": totals.bytes_planned,
            "releases_tagged": totals.releases_tagged,
            "projects": report.projects,
            "projects_unchanged": report.projects_unchanged,
            "projects_failed": len(report.project_errors),
            "excluded": totals.excluded,
        },
    }


def file_record(f: FileResult) -> dict[str, Any]:
    return {
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


def release_record(r: ReleaseResult) -> dict[str, Any]:
    return {
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


def error_record(e: ProjectError) -> dict[str, Any]:
    return {
        "project": e.project,
        "error": redact_text(e.error),
        "quarantined": e.quarantined,
        **({"not_found": True} if e.not_found else {}),
    }


def excluded_record(e: Excluded) -> dict[str, Any]:
    return {"project": e.project, "filename": e.filename, "reason": e.reason, "kind": e.kind}


def warning_record(w: ProjectWarning) -> dict[str, Any]:
    return {"project": w.project, "warning": w.message}


def report_json(report: SyncReport) -> str:
    return json.dumps(report_document(report), indent=2, sort_keys=False)


# --- JSON Lines -----------------------------------------------------------------------


def json_line(item: ReportRecord) -> str:
    """One record of ``--json-lines``: the ``--json`` entry with its ``type`` first."""
    if isinstance(item, FileResult):
        kind, record = "file", file_record(item)
    elif isinstance(item, ReleaseResult):
        kind, record = "release", release_record(item)
    elif isinstance(item, ProjectError):
        kind, record = "error", error_record(item)
    elif isinstance(item, Excluded):
        kind, record = "excluded", excluded_record(item)
    else:
        kind, record = "warning", warning_record(item)
    return json.dumps({"type": kind, **record}, separators=(",", ":"))


class JsonLinesSink:
    """A streamed run's records written as JSON Lines as projects finish."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def record(self, item: ReportRecord) -> None:
        self._write(json_line(item))


def summary_json_line(report: SyncReport) -> str:
    """The last record of ``--json-lines``: what ``--json`` says besides its lists."""
    return json.dumps({"type": "summary", **_head(report)}, separators=(",", ":"))


def report_json_lines(report: SyncReport) -> Iterator[str]:
    """A report held whole, as ``--json-lines`` (a run that streamed wrote its records already)."""
    for group in (
        report.files,
        report.releases,
        report.project_errors,
        report.excluded,
        report.warnings,
    ):
        for item in group:
            yield json_line(item)
    yield summary_json_line(report)


def summary_line(report: SyncReport) -> str:
    """One line a person reads at the end of a run."""
    totals = _head(report)["totals"]
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


_PLAN_HEADER = ("project", "version", "files", "size")


def plan_table(report: SyncReport) -> str:
    """The dry run's plan as a plain-text table, with the totals last."""
    rows = plan_rows(report)
    body = [(p, v, str(n), human_bytes(size)) for p, v, n, size in rows]
    footer = _plan_footer(
        len({p for p, _, _, _ in rows}),
        len(rows),
        sum(n for _, _, n, _ in rows),
        sum(size for _, _, _, size in rows),
    )
    widths = [max(len(r[i]) for r in [_PLAN_HEADER, *body, footer]) for i in range(4)]
    rule = _rule(widths)
    lines = [_plan_line(_PLAN_HEADER, widths), rule, *(_plan_line(r, widths) for r in body)]
    return "\n".join([*lines, rule, _plan_line(footer, widths)])


def _plan_footer(projects: int, versions: int, files: int, size: int) -> tuple[str, ...]:
    return (f"{projects} projects", f"{versions} versions", str(files), human_bytes(size))


def _plan_line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(
        cell.rjust(width) if i >= 2 else cell.ljust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


def _rule(widths: Sequence[int]) -> str:
    return "  ".join("-" * width for width in widths)


class PlanTableSink:
    """The dry run's plan of a streamed run, printed a project at a time as projects finish.

    Columns have fixed widths (a longer name pushes its line out): the
    widths of a table held whole would need every row first.
    """

    WIDTHS = (32, 20, 6, 10)

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write
        self._project: str | None = None
        self._versions: dict[str, list[int]] = {}
        self._totals = [0, 0, 0, 0]  # projects, versions, files, bytes
        write(_plan_line(_PLAN_HEADER, self.WIDTHS))
        write(_rule(self.WIDTHS))

    def record(self, item: ReportRecord) -> None:
        if not isinstance(item, FileResult) or item.action != "planned":
            return
        if item.project != self._project:
            self._flush()
            self._project = item.project
        row = self._versions.setdefault(item.version, [0, 0])
        row[0] += 1
        row[1] += item.size or 0

    def _flush(self) -> None:
        if self._project is None:
            return
        self._totals[0] += 1
        for version, (files, size) in self._versions.items():
            self._totals[1] += 1
            self._totals[2] += files
            self._totals[3] += size
            cells = (self._project, version, str(files), human_bytes(size))
            self._write(_plan_line(cells, self.WIDTHS))
        self._project, self._versions = None, {}

    def footer(self) -> str:
        """The last rows, the rule and the totals line."""
        self._flush()
        return "\n".join([_rule(self.WIDTHS), _plan_line(_plan_footer(*self._totals), self.WIDTHS)])
