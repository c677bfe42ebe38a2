"""The resumable state file: a local SQLite cache of what the target holds.

The target (registry or layout) stays the truth. The journal only remembers
what earlier runs did, so that a rerun after a crash does not upload a file
twice, an unchanged project costs one page fetch, failures keep their
reasons, and a project that keeps failing is set aside for a while instead
of blocking the others. Losing the file costs time, never correctness. It
is bound to the target it describes: the target's identity and the catalog
digest it last saw are kept here (see :mod:`oci_pypi_sync.engine.binding`),
and what it says of a target that is not that one is forgotten.
It also keeps what the index served for the dependency closure (pages to
revalidate, core metadata by digest) and the closures resolved from them
(see :mod:`oci_pypi_sync.index.cache`), so a rerun resolves without
reading them again.

Every record call is one short transaction committed at once (WAL,
``synchronous=NORMAL``): a commit survives a killed process, each call
stays well under a millisecond, and nothing is ever rewritten wholesale.
One process at a time writes, guarded by ``flock`` on ``<path>.lock``,
which the kernel drops when the holder dies, however it dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import sqlite3
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from oci_pypi_sync.errors import JournalError, JournalLockedError
from oci_pypi_sync.index.records import StoredPage
from oci_pypi_sync.limits import MAX_CORE_METADATA_BYTES, MAX_PAGE_BYTES
from oci_pypi_sync.redact import redact_text
from oci_pypi_sync.stores.targets import LayoutTarget, Target

SCHEMA_VERSION = 1
APPLICATION_ID = 0x4F505950  # "OPYP": tells our files apart from other SQLite databases
QUARANTINE_AFTER = 3
QUARANTINE_FIRST = 3600.0
QUARANTINE_MAX = 24 * 3600.0
LAYOUT_STATE_FILE = ".oci-pypi-state.sqlite"
_BUSY_TIMEOUT = 5.0
#: Names per query when many projects are looked up at once (SQLite allows 32766 parameters).
_BATCH = 500
_DELETE_HINT = "it can be deleted: the target holds the truth, a new state file only costs time"
# Errors of the environment rather than of the file: deleting it would not help.
_ENVIRONMENT_ERRORS = (
    "SQLITE_FULL",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_READONLY",
    "SQLITE_PERM",
)

FileStatus = Literal["pending", "done", "failed"]


@dataclass(frozen=True, slots=True)
class ProjectState:
    """What the last syncs saw of one project, and how it has been failing."""

    project: str
    page_digest: str | None
    etag: str | None
    last_serial: int | None
    consecutive_failures: int
    quarantined_until: float | None
    last_error: str | None
    synced_at: float | None
    complete: bool  # the last sync finished with no failed file

    def is_quarantined(self, *, now: float | None = None) -> bool:
        return self.quarantined_until is not None and self.quarantined_until > _now(now)


@dataclass(frozen=True, slots=True)
class FileState:
    """One distribution file as the target last held it (or failed to)."""

    project: str
    version: str
    filename: str
    sha256: str
    size: int | None
    status: FileStatus
    manifest_digest: str | None
    attempts: int
    last_error: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class JournalSummary:
    """Totals and the things that need a person's attention."""

    target: str
    projects: int
    files_done: int
    files_pending: int
    files_failed: int
    releases: int
    bytes_done: int
    failed: tuple[FileState, ...]
    quarantined: tuple[ProjectState, ...]
    failing_projects: tuple[ProjectState, ...]


_SCHEMA = (
    """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE projects (
        project TEXT PRIMARY KEY,
        page_digest TEXT,
        etag TEXT,
        last_serial INTEGER,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        quarantined_until REAL,
        last_error TEXT,
        synced_at REAL,
        complete INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID""",
    """CREATE TABLE files (
        project TEXT NOT NULL,
        filename TEXT NOT NULL,
        version TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER,
        status TEXT NOT NULL CHECK (status IN ('pending', 'done', 'failed')),
        manifest_digest TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (project, filename)
    ) WITHOUT ROWID""",
    """CREATE INDEX files_not_done ON files (status) WHERE status != 'done'""",
    """CREATE TABLE releases (
        project TEXT NOT NULL,
        tag TEXT NOT NULL,
        version TEXT NOT NULL,
        index_digest TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (project, tag)
    ) WITHOUT ROWID""",
    """CREATE TABLE blobs (
        digest TEXT NOT NULL,
        repo TEXT NOT NULL,
        seen_at REAL NOT NULL,
        PRIMARY KEY (digest, repo)
    ) WITHOUT ROWID""",
)

# What the index served, kept for the next run (see oci_pypi_sync.index.cache):
# added to a file of schema 1 when it is opened for writing, which versions that
# do not know these tables never notice. Bodies are kept zlib-compressed.
_CACHE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS pages (
        url TEXT PRIMARY KEY,
        served_from TEXT NOT NULL,
        content_type TEXT,
        etag TEXT,
        last_modified TEXT,
        body BLOB NOT NULL,
        stored_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS core_metadata (
        key TEXT PRIMARY KEY,
        raw BLOB NOT NULL,
        stored_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS closures (
        key TEXT PRIMARY KEY,
        document BLOB NOT NULL,
        stored_at REAL NOT NULL
    )""",
)
#: Closures kept (one per set of requirements and targets); the oldest go first.
CLOSURES_KEPT = 16

_PROJECT_COLUMNS = (
    "project, page_digest, etag, last_serial, consecutive_failures, "
    "quarantined_until, last_error, synced_at, complete"
)
_FILE_COLUMNS = (
    "project, version, filename, sha256, size, status, manifest_digest, "
    "attempts, last_error, updated_at"
)

# A new sha256 for a known filename means the index replaced the file: the
# row starts over. SQLite evaluates every SET expression against the old row.
_UPSERT_FILE = """
INSERT INTO files (project, filename, version, sha256, size, status,
                   manifest_digest, attempts, last_error, updated_at)
VALUES (:project, :filename, :version, :sha256, :size, :status,
        :manifest_digest, 1, :error, :now)
ON CONFLICT (project, filename) DO UPDATE SET
    attempts = CASE WHEN files.sha256 = excluded.sha256
                    THEN {attempts} ELSE 1 END,
    last_error = {last_error},
    size = CASE WHEN files.sha256 = excluded.sha256
                THEN coalesce(excluded.size, files.size) ELSE excluded.size END,
    version = excluded.version,
    sha256 = excluded.sha256,
    status = excluded.status,
    manifest_digest = excluded.manifest_digest,
    updated_at = excluded.updated_at
"""
# pending: one more attempt; keep the previous error so a retry still shows why.
_UPSERT_PENDING = _UPSERT_FILE.format(
    attempts="files.attempts + 1",
    last_error="CASE WHEN files.sha256 = excluded.sha256 THEN files.last_error END",
)
# done / failed: the attempt that just ended (at least one, even if unannounced).
_UPSERT_DONE = _UPSERT_FILE.format(attempts="max(files.attempts, 1)", last_error="NULL")
_UPSERT_FAILED = _UPSERT_FILE.format(
    attempts="max(files.attempts, 1)", last_error="excluded.last_error"
)


def quarantine_backoff(consecutive_failures: int) -> float | None:
    """Seconds a project is set aside after this many failures in a row, or None.

    1 h at QUARANTINE_AFTER failures, doubling with each further one, at most
    24 h: a broken project is retried daily without costing every run a timeout.
    """
    if consecutive_failures < QUARANTINE_AFTER:
        return None
    doublings = min(consecutive_failures - QUARANTINE_AFTER, 16)
    return min(QUARANTINE_FIRST * (1 << doublings), QUARANTINE_MAX)


class Journal:
    """The state file of one target; open with :meth:`Journal.open`."""

    path: Path
    target: str
    readonly: bool

    def __init__(
        self, path: Path, target: str, conn: sqlite3.Connection, lock_fd: int | None
    ) -> None:
        self.path = path
        self.target = target
        self.readonly = lock_fd is None
        self._conn = conn
        self._lock_fd = lock_fd

    # --- opening and closing ------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        target: str | Target | None,
        readonly: bool = False,
    ) -> Journal:
        """Open (creating when needed) the state file for ``target``.

        A writer takes the lock first, so two syncs never interleave; a
        reader (``readonly``) takes none and can look while a sync runs. A
        reader may pass ``target=None`` to read whichever target the file
        records.
        """
        db_path = Path(path)
        if target is None and not readonly:
            raise JournalError("a state file opened for writing needs its target")
        key = ANY_TARGET if target is None else target_key(target)
        lock_fd: int | None = None
        if readonly:
            if not db_path.is_file():
                raise JournalError(f"no state file at {db_path}: no sync has recorded state there")
        else:
            try:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise JournalError(f"cannot create the directory of {db_path}: {exc}") from exc
            lock_fd = _acquire_lock(db_path)
        conn: sqlite3.Connection | None = None
        try:
            conn = _connect(db_path, readonly=readonly)
            key = _check_schema(conn, db_path, key, readonly=readonly)
            if not readonly:
                for statement in _CACHE_SCHEMA:
                    conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            _release_lock(lock_fd)
            raise JournalError(
                f"{db_path} is not a readable oci-pypi state file ({exc}); {_DELETE_HINT}"
            ) from exc
        except BaseException:
            if conn is not None:
                conn.close()
            _release_lock(lock_fd)
            raise
        return cls(db_path, key, conn, lock_fd)

    def close(self) -> None:
        """Close the database, then drop the lock; safe to call twice."""
        self._conn.close()
        _release_lock(self._lock_fd)
        self._lock_fd = None

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "readonly" if self.readonly else "locked"
        return f"Journal({str(self.path)!r}, target={self.target!r}, {mode})"

    # --- projects -------------------------------------------------------------

    def project_names(self) -> set[str]:
        """Every project the state file has a record of."""
        with self._errors():
            rows = self._conn.execute("SELECT project FROM projects").fetchall()
        return {row[0] for row in rows}

    def project_count(self) -> int:
        """How many projects the state file has a record of."""
        with self._errors():
            return int(self._conn.execute("SELECT count(*) FROM projects").fetchone()[0])

    def project_state(self, project: str) -> ProjectState | None:
        with self._errors():
            row = self._conn.execute(
                f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE project = ?", (project,)
            ).fetchone()
        return _project(row) if row is not None else None

    def record_project_ok(
        self,
        project: str,
        *,
        page_digest: str,
        etag: str | None,
        last_serial: int | None,
        complete: bool,
        now: float | None = None,
    ) -> None:
        """The project's page was read and its files handled; failures and quarantine end.

        ``etag`` is the selection key, a space, and the page's validator if it
        had one: a 304 or an unmoved serial is trusted only for that selection.
        """
        self._writable()
        with self._errors():
            self._conn.execute(
                """
                INSERT INTO projects (project, page_digest, etag, last_serial,
                                      consecutive_failures, quarantined_until, last_error,
                                      synced_at, complete)
                VALUES (?, ?, ?, ?, 0, NULL, NULL, ?, ?)
                ON CONFLICT (project) DO UPDATE SET
                    page_digest = excluded.page_digest,
                    etag = excluded.etag,
                    last_serial = excluded.last_serial,
                    consecutive_failures = 0,
                    quarantined_until = NULL,
                    last_error = NULL,
                    synced_at = excluded.synced_at,
                    complete = excluded.complete
                """,
                (project, page_digest, etag, last_serial, _now(now), int(complete)),
            )

    def record_serial(self, project: str, serial: int) -> None:
        """The index confirmed the project unchanged at ``serial`` (a 304 after it moved)."""
        self._writable()
        with self._errors():
            self._conn.execute(
                "UPDATE projects SET last_serial = max(coalesce(last_serial, 0), ?) "
                "WHERE project = ?",
                (serial, project),
            )

    def synced_serials(self, projects: Sequence[str]) -> dict[str, tuple[int, str]]:
        """``project -> (last serial, selection key)`` for those of ``projects`` whose last
        sync completed with a serial.

        The selection key is the one the sync recorded with the page (see
        ``record_project_ok``'s ``etag``). One query per call: a run over a
        million projects asks in batches, holding none of the rest.
        """
        found: dict[str, tuple[int, str]] = {}
        with self._errors():
            for start in range(0, len(projects), _BATCH):
                batch = projects[start : start + _BATCH]
                cursor = self._conn.execute(
                    "SELECT project, last_serial, etag FROM projects "
                    f"WHERE project IN ({','.join('?' * len(batch))}) AND complete = 1 "
                    "AND last_serial IS NOT NULL AND etag IS NOT NULL",
                    batch,
                )
                for project, serial, etag in cursor:
                    found[project] = (serial, etag.partition(" ")[0])
        return found

    def mark_incomplete(self, projects: Sequence[str]) -> None:
        """Have the next run read these projects again, from the index and the target."""
        self._writable()
        with self._errors(), self._transaction():
            for start in range(0, len(projects), _BATCH):
                batch = projects[start : start + _BATCH]
                marks = ",".join("?" * len(batch))
                self._conn.execute(
                    f"UPDATE projects SET complete = 0 WHERE project IN ({marks})", batch
                )

    def record_project_failure(
        self, project: str, error: str, *, now: float | None = None
    ) -> ProjectState:
        """Count one more failure in a row; from QUARANTINE_AFTER on, set the project aside.

        The cached page digest is kept but ``complete`` is cleared, so the
        next attempt walks the project's files again.
        """
        self._writable()
        when = _now(now)
        with self._errors(), self._transaction():
            row = self._conn.execute(
                "SELECT consecutive_failures FROM projects WHERE project = ?", (project,)
            ).fetchone()
            failures = (row[0] if row is not None else 0) + 1
            backoff = quarantine_backoff(failures)
            until = when + backoff if backoff is not None else None
            self._conn.execute(
                """
                INSERT INTO projects (project, consecutive_failures, quarantined_until,
                                      last_error, complete)
                VALUES (?, ?, ?, ?, 0)
                ON CONFLICT (project) DO UPDATE SET
                    consecutive_failures = excluded.consecutive_failures,
                    quarantined_until = excluded.quarantined_until,
                    last_error = excluded.last_error,
                    complete = 0
                """,
                (project, failures, until, redact_text(error)),
            )
            state = self._conn.execute(
                f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE project = ?", (project,)
            ).fetchone()
        return _project(state)

    def is_quarantined(self, project: str, *, now: float | None = None) -> bool:
        state = self.project_state(project)
        return state is not None and state.is_quarantined(now=now)

    def release_quarantine(self, project: str | None = None) -> int:
        """End the quarantine of one project (or all); returns how many were set aside.

        The failure count stays, so a project that fails again at once goes
        straight back into quarantine, for twice as long.
        """
        self._writable()
        with self._errors():
            if project is None:
                cursor = self._conn.execute(
                    "UPDATE projects SET quarantined_until = NULL "
                    "WHERE quarantined_until IS NOT NULL"
                )
            else:
                cursor = self._conn.execute(
                    "UPDATE projects SET quarantined_until = NULL "
                    "WHERE project = ? AND quarantined_until IS NOT NULL",
                    (project,),
                )
        return cursor.rowcount

    # --- files ----------------------------------------------------------------

    def file_state(self, project: str, filename: str) -> FileState | None:
        with self._errors():
            row = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE project = ? AND filename = ?",
                (project, filename),
            ).fetchone()
        return _file(row) if row is not None else None

    def files_of(self, project: str) -> list[FileState]:
        with self._errors():
            rows = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE project = ? ORDER BY filename",
                (project,),
            ).fetchall()
        return [_file(row) for row in rows]

    def record_file_pending(
        self, project: str, version: str, filename: str, sha256: str, size: int | None
    ) -> None:
        """A transfer of the file starts (one more attempt)."""
        self._record_file(_UPSERT_PENDING, project, version, filename, sha256, size, "pending")

    def record_file_done(
        self,
        project: str,
        version: str,
        filename: str,
        sha256: str,
        size: int | None,
        manifest_digest: str,
    ) -> None:
        """The file's blobs and manifest are on the target."""
        self._record_file(
            _UPSERT_DONE, project, version, filename, sha256, size, "done", manifest_digest
        )

    def record_file_failed(
        self,
        project: str,
        version: str,
        filename: str,
        sha256: str,
        size: int | None,
        error: str,
    ) -> None:
        """The transfer failed; the reason is kept for ``status``."""
        self._record_file(
            _UPSERT_FAILED, project, version, filename, sha256, size, "failed", error=error
        )

    def _record_file(
        self,
        sql: str,
        project: str,
        version: str,
        filename: str,
        sha256: str,
        size: int | None,
        status: FileStatus,
        manifest_digest: str | None = None,
        error: str | None = None,
    ) -> None:
        self._writable()
        with self._errors():
            self._conn.execute(
                sql,
                {
                    "project": project,
                    "filename": filename,
                    "version": version,
                    "sha256": sha256,
                    "size": size,
                    "status": status,
                    "manifest_digest": manifest_digest,
                    "error": redact_text(error) if error is not None else None,
                    "now": time.time(),
                },
            )

    # --- releases -------------------------------------------------------------

    def record_release(self, project: str, version: str, tag: str, index_digest: str) -> None:
        """The version's index with this digest is tagged on the target."""
        self._writable()
        with self._errors():
            self._conn.execute(
                """
                INSERT INTO releases (project, tag, version, index_digest, updated_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (project, tag) DO UPDATE SET
                    version = excluded.version,
                    index_digest = excluded.index_digest,
                    updated_at = excluded.updated_at
                """,
                (project, tag, version, index_digest, time.time()),
            )

    def release_digests(self, project: str) -> dict[str, str]:
        """The project's tagged index digests, by tag, in one query."""
        with self._errors():
            rows = self._conn.execute(
                "SELECT tag, index_digest FROM releases WHERE project = ?", (project,)
            ).fetchall()
        return dict(rows)

    def release_digest(self, project: str, tag: str) -> str | None:
        with self._errors():
            row = self._conn.execute(
                "SELECT index_digest FROM releases WHERE project = ? AND tag = ?", (project, tag)
            ).fetchone()
        return cast("str", row[0]) if row is not None else None

    # --- blobs ------------------------------------------------------------------

    def record_blob(self, repo: str, digest: str) -> None:
        """The blob is known to live in ``repo`` (a source for cross-repository mounts)."""
        self._writable()
        with self._errors():
            self._conn.execute(
                """
                INSERT INTO blobs (digest, repo, seen_at) VALUES (?, ?, ?)
                ON CONFLICT (digest, repo) DO UPDATE SET seen_at = excluded.seen_at
                """,
                (digest, repo, time.time()),
            )

    def blob_repositories(self, digest: str, *, limit: int = 3) -> list[str]:
        """Repositories that held the blob, most recently seen first."""
        with self._errors():
            rows = self._conn.execute(
                "SELECT repo FROM blobs WHERE digest = ? ORDER BY seen_at DESC, repo LIMIT ?",
                (digest, limit),
            ).fetchall()
        return [row[0] for row in rows]

    # --- what the index served (oci_pypi_sync.index.cache.IndexCache) --------------

    def stored_page(self, url: str) -> StoredPage | None:
        """The copy of the page at ``url`` kept last; ``None``: none is, or it is unreadable."""
        with self._errors():
            row = self._conn.execute(
                "SELECT served_from, content_type, etag, last_modified, body FROM pages "
                "WHERE url = ?",
                (url,),
            ).fetchone()
        if row is None:
            return None
        body = _unpack(row[4], MAX_PAGE_BYTES)
        if body is None:
            return None
        return StoredPage(url, row[0], row[1], body, row[2], row[3])

    def record_page(self, page: StoredPage) -> None:
        """Keep this copy of a page, in place of the one kept before for its URL."""
        self._writable()
        with self._errors():
            self._conn.execute(
                """
                INSERT INTO pages (url, served_from, content_type, etag, last_modified,
                                   body, stored_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (url) DO UPDATE SET
                    served_from = excluded.served_from,
                    content_type = excluded.content_type,
                    etag = excluded.etag,
                    last_modified = excluded.last_modified,
                    body = excluded.body,
                    stored_at = excluded.stored_at
                """,
                (
                    page.url,
                    page.served_from,
                    page.content_type,
                    page.etag,
                    page.last_modified,
                    zlib.compress(page.body),
                    time.time(),
                ),
            )

    def stored_metadata(self, key: str) -> bytes | None:
        """The core metadata kept under ``key``; ``None`` when none is (or it is unreadable)."""
        with self._errors():
            row = self._conn.execute(
                "SELECT raw FROM core_metadata WHERE key = ?", (key,)
            ).fetchone()
        return _unpack(row[0], MAX_CORE_METADATA_BYTES) if row is not None else None

    def record_metadata(self, key: str, raw: bytes) -> None:
        """Keep core metadata under ``key``; what a key names never changes."""
        self._writable()
        with self._errors():
            self._conn.execute(
                "INSERT INTO core_metadata (key, raw, stored_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, zlib.compress(raw), time.time()),
            )

    def stored_closure(self, key: str) -> bytes | None:
        """The closure document kept under ``key``, if any."""
        with self._errors():
            row = self._conn.execute(
                "SELECT document FROM closures WHERE key = ?", (key,)
            ).fetchone()
        return _unpack(row[0], MAX_PAGE_BYTES) if row is not None else None

    def record_closure(self, key: str, document: bytes) -> None:
        """Keep a closure under ``key``; past :data:`CLOSURES_KEPT`, the oldest are dropped."""
        self._writable()
        with self._errors(), self._transaction():
            self._conn.execute(
                "INSERT INTO closures (key, document, stored_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET "
                "document = excluded.document, stored_at = excluded.stored_at",
                (key, zlib.compress(document), time.time()),
            )
            self._conn.execute(
                "DELETE FROM closures WHERE key NOT IN "
                "(SELECT key FROM closures ORDER BY stored_at DESC, key LIMIT ?)",
                (CLOSURES_KEPT,),
            )

    # --- the target this state describes -----------------------------------------

    def binding(self) -> tuple[str | None, str | None]:
        """The identity of the target this state describes, and the catalog digest it last saw."""
        with self._errors():
            meta = dict(
                self._conn.execute(
                    "SELECT key, value FROM meta WHERE key IN ('target_identity', 'catalog_digest')"
                ).fetchall()
            )
        return meta.get("target_identity"), meta.get("catalog_digest")

    def bind(
        self, identity: str, catalog_digest: str | None, catalog_manifest: bytes | None = None
    ) -> None:
        """From now on the state describes the target with this identity."""
        self._writable()
        with self._errors(), self._transaction():
            self._set_meta("target_identity", identity)
            self._set_catalog(catalog_digest, catalog_manifest)

    def record_catalog(self, digest: str | None, manifest: bytes | None = None) -> None:
        """The catalog (its ``latest`` manifest digest) this state last wrote or read, and
        that manifest's bytes when at hand: the next run reads only the parts that differ."""
        self._writable()
        with self._errors(), self._transaction():
            self._set_catalog(digest, manifest)

    def catalog_manifest(self) -> bytes | None:
        """The bytes of the catalog manifest this state last saw, if it kept them."""
        with self._errors():
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'catalog_manifest'"
            ).fetchone()
        return str(row[0]).encode() if row is not None else None

    def _set_catalog(self, digest: str | None, manifest: bytes | None) -> None:
        self._set_meta("catalog_digest", digest)
        self._set_meta("catalog_manifest", manifest.decode() if manifest is not None else None)

    def has_target_records(self) -> bool:
        """Whether the state says anything about what the target holds."""
        with self._errors():
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM files) OR EXISTS (SELECT 1 FROM releases) "
                "OR EXISTS (SELECT 1 FROM blobs) OR EXISTS (SELECT 1 FROM projects WHERE complete)"
            ).fetchone()
        return bool(row[0])

    def forget_target(self) -> None:
        """Drop everything recorded about the target; failure counts and quarantine stay.

        For a target that is not the one the records describe: every
        project is then read from the target again on its next sync.
        """
        self._writable()
        with self._errors(), self._transaction():
            for table in ("files", "releases", "blobs"):
                self._conn.execute(f"DELETE FROM {table}")
            self._conn.execute("UPDATE projects SET page_digest = NULL, etag = NULL, complete = 0")

    def forget_projects(self, projects: Iterable[str]) -> None:
        """Drop what is recorded about these projects on the target (see :meth:`forget_target`)."""
        self._writable()
        names = [(name,) for name in projects]
        with self._errors(), self._transaction():
            self._conn.executemany("DELETE FROM files WHERE project = ?", names)
            self._conn.executemany("DELETE FROM releases WHERE project = ?", names)
            self._conn.executemany("DELETE FROM blobs WHERE repo = ?", names)
            self._conn.executemany(
                "UPDATE projects SET page_digest = NULL, etag = NULL, complete = 0 "
                "WHERE project = ?",
                names,
            )

    def all_release_digests(self) -> dict[str, dict[str, str]]:
        """Every project's tagged index digests, by project and tag."""
        with self._errors():
            rows = self._conn.execute("SELECT project, tag, index_digest FROM releases").fetchall()
        found: dict[str, dict[str, str]] = {}
        for project, tag, digest in rows:
            found.setdefault(project, {})[tag] = digest
        return found

    def _set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- summary ------------------------------------------------------------------

    def summary(self, *, now: float | None = None) -> JournalSummary:
        """Totals, failed files, quarantined and failing projects, read consistently."""
        when = _now(now)
        with self._errors(), self._transaction(write=False):
            counts = {
                status: (count, total)
                for status, count, total in self._conn.execute(
                    "SELECT status, count(*), coalesce(sum(size), 0) FROM files GROUP BY status"
                )
            }
            (projects,) = self._conn.execute(
                "SELECT count(*) FROM (SELECT project FROM projects "
                "UNION SELECT project FROM files UNION SELECT project FROM releases)"
            ).fetchone()
            (releases,) = self._conn.execute("SELECT count(*) FROM releases").fetchone()
            failed = self._conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files WHERE status = 'failed' "
                "ORDER BY project, filename"
            ).fetchall()
            quarantined = self._conn.execute(
                f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE quarantined_until > ? "
                "ORDER BY quarantined_until, project",
                (when,),
            ).fetchall()
            failing = self._conn.execute(
                f"SELECT {_PROJECT_COLUMNS} FROM projects WHERE consecutive_failures > 0 "
                "ORDER BY consecutive_failures DESC, project"
            ).fetchall()
        return JournalSummary(
            target=self.target,
            projects=projects,
            files_done=counts.get("done", (0, 0))[0],
            files_pending=counts.get("pending", (0, 0))[0],
            files_failed=counts.get("failed", (0, 0))[0],
            releases=releases,
            bytes_done=counts.get("done", (0, 0))[1],
            failed=tuple(_file(row) for row in failed),
            quarantined=tuple(_project(row) for row in quarantined),
            failing_projects=tuple(_project(row) for row in failing),
        )

    # --- plumbing -------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise JournalError(f"state file {self.path} was opened read-only")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite failures become JournalError, with the way out when the file is damaged."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            name = exc.sqlite_errorname
            hint = "" if name.startswith(("SQLITE_IOERR", *_ENVIRONMENT_ERRORS)) else _DELETE_HINT
            raise JournalError(
                f"state file {self.path}: {exc}" + (f"; {hint}" if hint else "")
            ) from exc

    @contextlib.contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


# --- targets and paths -----------------------------------------------------------


def target_key(target: str | Target) -> str:
    """The target as the journal records it: ``oci:ABSPATH`` or ``HOST[:PORT][/PREFIX]``.

    Layout paths are made absolute so ``oci:mirror`` and ``oci:./mirror``
    are one target; a registry loses any scheme and user info (a state file
    never holds credentials) and its host is lowercased.
    """
    if isinstance(target, LayoutTarget):
        return f"oci:{target.path.resolve()}"
    text = str(target).strip()
    if text.startswith("oci:"):
        return f"oci:{Path(text[len('oci:') :]).resolve()}"
    text = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", text)
    host, _, prefix = text.partition("/")
    host = host.rpartition("@")[2].lower()
    prefix = prefix.strip("/")
    return f"{host}/{prefix}" if prefix else host


def default_journal_path(target: str | Target) -> Path:
    """Where a target's state file lives unless ``--state`` says otherwise.

    A layout keeps it inside, as a hidden file, so it travels with the
    layout; a registry's goes under ``$XDG_STATE_HOME/oci-pypi/``, named
    after host and prefix plus a short hash that keeps distinct targets apart.
    """
    if isinstance(target, LayoutTarget):
        return _layout_state_path(target.path)
    text = str(target).strip()
    if text.startswith("oci:"):
        return _layout_state_path(Path(text[len("oci:") :]))
    key = target_key(text)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key.replace("/", "__"))[:80]
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return _state_home() / "oci-pypi" / f"{safe}-{digest}.sqlite"


def _layout_state_path(path: Path) -> Path:
    """Inside a layout directory; beside a packed layout (``mirror.tar.oci-pypi-state.sqlite``)."""
    if path.name.endswith(".tar"):
        return path.with_name(path.name + LAYOUT_STATE_FILE)
    return path / LAYOUT_STATE_FILE


def _state_home() -> Path:
    # The XDG spec says relative values are to be ignored.
    value = os.environ.get("XDG_STATE_HOME", "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / ".local" / "state"


# --- locking ----------------------------------------------------------------------


def _acquire_lock(db_path: Path) -> int:
    """Take the exclusive lock on ``<path>.lock`` without waiting, and write our pid in it."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise JournalError(f"cannot open the lock file {lock_path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        raise JournalLockedError(
            f"another oci-pypi sync is using the state file {db_path} (pid {holder})"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise JournalError(f"cannot lock {lock_path}: {exc}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the pid is only for the message; the lock is what matters
    return fd


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return text if text.isdigit() else "unknown"


def _release_lock(fd: int | None) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)  # closing the last descriptor drops the flock


# --- opening ------------------------------------------------------------------------


def _create_private(db_path: Path) -> None:
    """Create the state file readable by its owner only (0600), whatever the umask.

    It is this tool's alone and records what a mirror holds and what failed;
    SQLite gives its WAL and shared-memory files the same mode. A state file
    that exists keeps the mode it has.
    """
    try:
        fd = os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _connect(db_path: Path, *, readonly: bool) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(
            db_path.absolute().as_uri() + "?mode=ro",
            uri=True,
            timeout=_BUSY_TIMEOUT,
            isolation_level=None,
        )
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fails on a non-database
        return conn
    _create_private(db_path)
    conn = sqlite3.connect(db_path, timeout=_BUSY_TIMEOUT, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


ANY_TARGET = "\x00any"


def _check_schema(conn: sqlite3.Connection, db_path: Path, key: str, *, readonly: bool) -> str:
    """Create the schema in a new file; check version and target in an existing one.

    Returns the target key to use (a moved layout updates it).
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    if app_id not in (0, APPLICATION_ID) or (tables and "meta" not in tables):
        raise JournalError(
            f"{db_path} is an SQLite database but not an oci-pypi state file; "
            "pass another --state path or remove it"
        )
    if not tables:
        if readonly:
            raise JournalError(f"state file {db_path} is empty: no sync has recorded state there")
        _create_schema(conn, key)
        return key
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    try:
        version = int(meta["schema_version"])
        stored = meta["target"]
    except (KeyError, ValueError):
        raise JournalError(
            f"state file {db_path} has no valid schema version or target; {_DELETE_HINT}"
        ) from None
    if version > SCHEMA_VERSION:
        raise JournalError(
            f"state file {db_path} was written by a newer oci-pypi (schema {version}; "
            f"this version reads schema {SCHEMA_VERSION}): upgrade oci-pypi, "
            f"or delete the file ({_DELETE_HINT})"
        )
    if version < 1:
        raise JournalError(f"state file {db_path} has unknown schema {version}; {_DELETE_HINT}")
    if stored == key or (readonly and key == ANY_TARGET):
        return str(stored)
    if _moved_layout(stored, key, db_path):
        if not readonly:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'target'", (key,))
        return key
    raise JournalError(
        f"state file {db_path} belongs to target {stored}, not {key}; "
        "pass the state file of this target (--state) or delete this one"
    )


def _moved_layout(stored: str, key: str, db_path: Path) -> bool:
    """A layout directory that moved, carrying its own state file, is still the same target."""
    if not (stored.startswith("oci:") and key.startswith("oci:")):
        return False
    return db_path.resolve().parent == Path(key[len("oci:") :])


def _create_schema(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)",
            [
                ("schema_version", str(SCHEMA_VERSION)),
                ("target", key),
                ("created_at", str(time.time())),
            ],
        )
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --- rows -------------------------------------------------------------------------------


def _unpack(blob: bytes, limit: int) -> bytes | None:
    """Bytes kept compressed, inflated up to ``limit``; ``None`` past it or when damaged."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(blob, limit + 1)
    except zlib.error:
        return None
    if len(data) > limit or not inflater.eof:
        return None
    return data


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _project(row: Any) -> ProjectState:
    return ProjectState(
        project=row[0],
        page_digest=row[1],
        etag=row[2],
        last_serial=row[3],
        consecutive_failures=row[4],
        quarantined_until=row[5],
        last_error=row[6],
        synced_at=row[7],
        complete=bool(row[8]),
    )


def _file(row: Any) -> FileState:
    return FileState(
        project=row[0],
        version=row[1],
        filename=row[2],
        sha256=row[3],
        size=row[4],
        status=cast("FileStatus", row[5]),
        manifest_digest=row[6],
        attempts=row[7],
        last_error=row[8],
        updated_at=row[9],
    )
