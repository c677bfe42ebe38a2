"""The state file: records and queries, quarantine, locking across processes, crash safety."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci_pypi_sync.errors import JournalError, JournalLockedError, OciPypiError
from oci_pypi_sync.index.records import StoredPage
from oci_pypi_sync.state import journal as journal_module
from oci_pypi_sync.state.journal import (
    LAYOUT_STATE_FILE,
    QUARANTINE_AFTER,
    SCHEMA_VERSION,
    Journal,
    default_journal_path,
    quarantine_backoff,
    target_key,
)
from oci_pypi_sync.stores.targets import LayoutTarget, RegistryTarget

TARGET = "127.0.0.1:5000/pypi"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHA_A = "a" * 64
SHA_B = "b" * 64
MANIFEST = "sha256:" + "c" * 64
HOUR = 3600.0


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.sqlite"


@pytest.fixture
def journal(state: Path) -> Iterator[Journal]:
    with Journal.open(state, target=TARGET) as opened:
        yield opened


def _child(code: str) -> subprocess.Popen[str]:
    """A Python child that can import the package, with its stdout readable line by line."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=300)
    assert child.returncode == -signal.SIGKILL


# --- opening ----------------------------------------------------------------


def test_open_creates_parent_dirs_schema_and_lock_file(state: Path) -> None:
    with Journal.open(state, target=TARGET) as journal:
        assert journal.path == state
        assert journal.target == TARGET
        assert not journal.readonly
        assert state.is_file()
        assert Path(f"{state}.lock").read_text().strip() == str(os.getpid())
    conn = sqlite3.connect(state)
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    conn.close()
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert meta["target"] == TARGET
    assert mode == "wal"


def test_reopen_keeps_everything(state: Path) -> None:
    with Journal.open(state, target=TARGET) as journal:
        journal.record_file_done("six", "1.16.0", "six-1.16.0.tar.gz", SHA_A, 34041, MANIFEST)
        journal.record_project_ok(
            "six", page_digest="sha256:p", etag='"e1"', last_serial=7, complete=True
        )
        journal.record_release("six", "1.16.0", "1.16.0", "sha256:idx")
        journal.record_blob("pypi/six", "sha256:" + SHA_A)
    with Journal.open(state, target=TARGET) as journal:
        file = journal.file_state("six", "six-1.16.0.tar.gz")
        project = journal.project_state("six")
        assert file is not None
        assert file.status == "done"
        assert file.manifest_digest == MANIFEST
        assert project is not None
        assert project.etag == '"e1"'
        assert journal.release_digest("six", "1.16.0") == "sha256:idx"
        assert journal.blob_repositories("sha256:" + SHA_A) == ["pypi/six"]


def test_corrupt_file_names_the_path_and_says_it_can_be_deleted(state: Path) -> None:
    state.parent.mkdir(parents=True)
    state.write_bytes(os.urandom(8192))
    with pytest.raises(JournalError) as info:
        Journal.open(state, target=TARGET)
    message = str(info.value)
    assert str(state) in message
    assert "deleted" in message
    # the failed open left no lock behind
    with pytest.raises(JournalError):
        Journal.open(state, target=TARGET)


def test_corrupt_file_is_refused_readonly_too(state: Path) -> None:
    state.parent.mkdir(parents=True)
    state.write_bytes(b"not a database at all\n" * 200)
    with pytest.raises(JournalError, match=re.escape(str(state))):
        Journal.open(state, target=TARGET, readonly=True)


def test_other_sqlite_database_is_refused(state: Path) -> None:
    state.parent.mkdir(parents=True)
    conn = sqlite3.connect(state)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not an oci-pypi state file"):
        Journal.open(state, target=TARGET)


def test_newer_schema_is_refused_clearly(state: Path) -> None:
    Journal.open(state, target=TARGET).close()
    conn = sqlite3.connect(state)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(
        JournalError, match=r"newer oci-pypi \(schema 99; this version reads schema 1\)"
    ):
        Journal.open(state, target=TARGET)


def test_another_target_is_refused_naming_both(state: Path) -> None:
    Journal.open(state, target=TARGET).close()
    with pytest.raises(JournalError) as info:
        Journal.open(state, target="registry.example:5000/other")
    assert TARGET in str(info.value)
    assert "registry.example:5000/other" in str(info.value)
    assert not isinstance(info.value, JournalLockedError)
    # the refusal released the lock: the right target still opens
    Journal.open(state, target=TARGET).close()


def test_target_forms_of_one_registry_are_one_target(state: Path) -> None:
    Journal.open(state, target=RegistryTarget("127.0.0.1:5000", "pypi", plain_http=True)).close()
    with Journal.open(state, target="http://127.0.0.1:5000/pypi/") as journal:
        assert journal.target == TARGET


def test_target_key_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    layout = f"oci:{tmp_path.resolve() / 'mirror'}"
    assert target_key("oci:mirror") == layout
    assert target_key("oci:./sub/../mirror") == layout
    assert target_key(LayoutTarget(Path("mirror"))) == layout
    assert target_key("https://user:secret@Registry.Example:443/a/b") == "registry.example:443/a/b"
    assert target_key(RegistryTarget("localhost:5000", "", plain_http=True)) == "localhost:5000"


def test_a_layout_moved_with_its_state_file_is_the_same_target(tmp_path: Path) -> None:
    old = tmp_path / "old"
    with Journal.open(default_journal_path(f"oci:{old}"), target=f"oci:{old}") as journal:
        journal.record_file_done("six", "1.16.0", "six-1.16.0.tar.gz", SHA_A, 1, MANIFEST)
    new = tmp_path / "new"
    old.rename(new)
    with Journal.open(default_journal_path(f"oci:{new}"), target=f"oci:{new}") as journal:
        assert journal.target == f"oci:{new.resolve()}"
        assert journal.file_state("six", "six-1.16.0.tar.gz") is not None
    # a state file kept elsewhere does not follow a layout around
    elsewhere = tmp_path / "elsewhere.sqlite"
    Journal.open(elsewhere, target=f"oci:{new}").close()
    with pytest.raises(JournalError, match="belongs to target"):
        Journal.open(elsewhere, target=f"oci:{old}")


# --- locking ----------------------------------------------------------------


def test_second_open_in_the_same_process_is_locked(state: Path) -> None:
    first = Journal.open(state, target=TARGET)
    with pytest.raises(JournalLockedError) as info:
        Journal.open(state, target=TARGET)
    assert str(info.value) == (
        f"another oci-pypi sync is using the state file {state} (pid {os.getpid()})"
    )
    assert isinstance(info.value, OciPypiError)
    first.close()
    first.close()  # twice is harmless
    Journal.open(state, target=TARGET).close()


def test_open_in_another_process_fails_without_waiting(journal: Journal, state: Path) -> None:
    # This process holds the lock until the child has answered: a child that
    # waited for the lock would never answer (the timeout only ends a hang).
    child = _child(
        f"""
        from oci_pypi_sync.state.journal import Journal
        try:
            Journal.open({str(state)!r}, target={TARGET!r})
        except Exception as exc:
            print(type(exc).__name__, exc)
        else:
            print("opened")
        """
    )
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    name, message = out.strip().split(" ", 1)
    assert name == "JournalLockedError"
    assert message.endswith(f"(pid {os.getpid()})")


def test_lock_is_released_when_the_holder_is_killed(state: Path) -> None:
    child = _child(
        f"""
        import time
        from oci_pypi_sync.state.journal import Journal
        journal = Journal.open({str(state)!r}, target={TARGET!r})
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(JournalLockedError, match=rf"\(pid {child.pid}\)"):
            Journal.open(state, target=TARGET)
    finally:
        _kill(child)
    with Journal.open(state, target=TARGET) as journal:
        assert journal.summary().files_done == 0


def test_readonly_open_works_while_a_sync_holds_the_lock(journal: Journal, state: Path) -> None:
    journal.record_file_done("six", "1.16.0", "six-1.16.0.tar.gz", SHA_A, 34041, MANIFEST)
    with Journal.open(state, target=TARGET, readonly=True) as reader:
        assert reader.readonly
        assert reader.summary().files_done == 1
        journal.record_file_failed(
            "six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", SHA_B, 11053, "boom"
        )
        assert reader.summary().files_failed == 1  # sees the writer's later commits
        with pytest.raises(JournalError, match="read-only"):
            reader.record_blob("pypi/six", "sha256:" + SHA_A)
    journal.record_blob("pypi/six", "sha256:" + SHA_A)  # the writer is unaffected


def test_readonly_open_of_a_missing_file_does_not_create_it(state: Path) -> None:
    with pytest.raises(JournalError, match="no state file"):
        Journal.open(state, target=TARGET, readonly=True)
    assert not state.exists()


# --- crash safety -------------------------------------------------------------


def test_killed_writer_leaves_a_readable_prefix_of_its_records(state: Path) -> None:
    child = _child(
        f"""
        from oci_pypi_sync.state.journal import Journal
        journal = Journal.open({str(state)!r}, target={TARGET!r})
        for i in range(1_000_000):
            journal.record_file_done("big", "1.0", f"f{{i:07d}}.whl", "%064x" % i, i, "m")
            print(i, flush=True)
        """
    )
    try:
        assert child.stdout is not None
        last_reported = -1
        while last_reported < 300:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else ""
            last_reported = int(line)
    finally:
        _kill(child)
    with Journal.open(state, target=TARGET) as journal:
        names = [f.filename for f in journal.files_of("big")]
        summary = journal.summary()
    count = len(names)
    assert count > last_reported  # every commit the child reported survived
    assert names == [f"f{i:07d}.whl" for i in range(count)]  # and nothing out of order
    assert summary.files_done == count
    conn = sqlite3.connect(state)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()


# --- projects and quarantine ----------------------------------------------------


def test_project_ok_round_trip(journal: Journal) -> None:
    assert journal.project_state("six") is None
    journal.record_project_ok(
        "six", page_digest="sha256:page", etag='W/"x"', last_serial=123, complete=False, now=1000.0
    )
    assert journal.project_state("six") == journal_module.ProjectState(
        project="six",
        page_digest="sha256:page",
        etag='W/"x"',
        last_serial=123,
        consecutive_failures=0,
        quarantined_until=None,
        last_error=None,
        synced_at=1000.0,
        complete=False,
    )
    journal.record_project_ok(
        "six", page_digest="sha256:p2", etag=None, last_serial=None, complete=True
    )
    state = journal.project_state("six")
    assert state is not None
    assert (state.page_digest, state.etag, state.last_serial, state.complete) == (
        "sha256:p2",
        None,
        None,
        True,
    )
    assert state.synced_at is not None
    assert abs(state.synced_at - time.time()) < 60


@pytest.mark.parametrize(
    ("failures", "backoff"),
    [
        (1, None),
        (2, None),
        (3, HOUR),
        (4, 2 * HOUR),
        (5, 4 * HOUR),
        (7, 16 * HOUR),
        (8, 24 * HOUR),
        (9, 24 * HOUR),
        (500, 24 * HOUR),
    ],
)
def test_quarantine_backoff(failures: int, backoff: float | None) -> None:
    assert quarantine_backoff(failures) == backoff


def test_quarantine_after_three_failures_doubling_to_a_day(journal: Journal) -> None:
    now = 1_700_000_000.0
    journal.record_project_ok(
        "numpy", page_digest="sha256:p", etag=None, last_serial=None, complete=True
    )
    first = journal.record_project_failure("numpy", "page unreadable", now=now)
    assert (first.consecutive_failures, first.quarantined_until) == (1, None)
    assert not first.complete  # the next attempt walks the files again
    assert first.page_digest == "sha256:p"
    second = journal.record_project_failure("numpy", "HTTP 503", now=now)
    assert second.quarantined_until is None
    assert not journal.is_quarantined("numpy", now=now)
    untils = []
    for n in range(QUARANTINE_AFTER, 10):
        state = journal.record_project_failure("numpy", f"failure {n}", now=now)
        assert state.consecutive_failures == n
        assert state.last_error == f"failure {n}"
        assert state.quarantined_until is not None
        untils.append(state.quarantined_until - now)
    assert untils == [HOUR, 2 * HOUR, 4 * HOUR, 8 * HOUR, 16 * HOUR, 24 * HOUR, 24 * HOUR]
    assert journal.project_state("numpy") == state
    assert journal.is_quarantined("numpy", now=now + 24 * HOUR - 1)
    assert not journal.is_quarantined("numpy", now=now + 24 * HOUR)
    assert not journal.is_quarantined("unknown", now=now)


def test_first_failure_of_an_unknown_project(journal: Journal) -> None:
    state = journal.record_project_failure("ghost", "project 'ghost' not found", now=5.0)
    assert state == journal_module.ProjectState(
        project="ghost",
        page_digest=None,
        etag=None,
        last_serial=None,
        consecutive_failures=1,
        quarantined_until=None,
        last_error="project 'ghost' not found",
        synced_at=None,
        complete=False,
    )


def test_project_ok_ends_failures_and_quarantine(journal: Journal) -> None:
    for _ in range(4):
        journal.record_project_failure("numpy", "boom", now=100.0)
    assert journal.is_quarantined("numpy", now=101.0)
    journal.record_project_ok(
        "numpy", page_digest="sha256:p", etag=None, last_serial=9, complete=True
    )
    state = journal.project_state("numpy")
    assert state is not None
    assert (state.consecutive_failures, state.quarantined_until, state.last_error) == (
        0,
        None,
        None,
    )
    assert not journal.is_quarantined("numpy", now=101.0)


def test_release_quarantine_one_or_all(journal: Journal) -> None:
    for project in ("a", "b", "c"):
        for _ in range(QUARANTINE_AFTER):
            journal.record_project_failure(project, "boom", now=100.0)
    journal.record_project_failure("d", "once", now=100.0)
    assert journal.release_quarantine("a") == 1
    assert journal.release_quarantine("a") == 0
    assert journal.release_quarantine("d") == 0
    assert not journal.is_quarantined("a", now=101.0)
    assert journal.is_quarantined("b", now=101.0)
    assert journal.release_quarantine() == 2
    assert not journal.is_quarantined("c", now=101.0)
    # the count stays: failing again goes straight back, for twice as long
    again = journal.record_project_failure("a", "still broken", now=200.0)
    assert again.consecutive_failures == QUARANTINE_AFTER + 1
    assert again.quarantined_until == 200.0 + 2 * HOUR


# --- files --------------------------------------------------------------------------


def test_file_lifecycle_pending_failed_pending_done(journal: Journal) -> None:
    name = "six-1.16.0-py2.py3-none-any.whl"
    assert journal.file_state("six", name) is None
    journal.record_file_pending("six", "1.16.0", name, SHA_A, 11053)
    pending = journal.file_state("six", name)
    assert pending is not None
    assert (pending.status, pending.attempts, pending.last_error) == ("pending", 1, None)
    assert (pending.version, pending.sha256, pending.size) == ("1.16.0", SHA_A, 11053)
    assert abs(pending.updated_at - time.time()) < 60

    journal.record_file_failed("six", "1.16.0", name, SHA_A, 11053, "size mismatch")
    failed = journal.file_state("six", name)
    assert failed is not None
    assert (failed.status, failed.attempts, failed.last_error) == ("failed", 1, "size mismatch")

    journal.record_file_pending("six", "1.16.0", name, SHA_A, None)
    retry = journal.file_state("six", name)
    assert retry is not None
    assert (retry.status, retry.attempts) == ("pending", 2)
    assert retry.last_error == "size mismatch"  # why the previous attempt failed
    assert retry.size == 11053  # an unknown size does not erase a known one

    journal.record_file_done("six", "1.16.0", name, SHA_A, 11053, MANIFEST)
    done = journal.file_state("six", name)
    assert done is not None
    assert dataclasses.replace(done, updated_at=0.0) == journal_module.FileState(
        project="six",
        version="1.16.0",
        filename=name,
        sha256=SHA_A,
        size=11053,
        status="done",
        manifest_digest=MANIFEST,
        attempts=2,
        last_error=None,
        updated_at=0.0,
    )


def test_done_or_failed_without_pending_count_one_attempt(journal: Journal) -> None:
    journal.record_file_done("six", "1.16.0", "six-1.16.0.tar.gz", SHA_A, 34041, MANIFEST)
    journal.record_file_failed("six", "1.15.0", "six-1.15.0.tar.gz", SHA_B, None, "HTTP 404")
    done = journal.file_state("six", "six-1.16.0.tar.gz")
    failed = journal.file_state("six", "six-1.15.0.tar.gz")
    assert done is not None
    assert failed is not None
    assert (done.status, done.attempts) == ("done", 1)
    assert (failed.status, failed.attempts, failed.size, failed.manifest_digest) == (
        "failed",
        1,
        None,
        None,
    )


def test_a_replaced_file_starts_over(journal: Journal) -> None:
    name = "pkg-1.0.tar.gz"
    for _ in range(3):
        journal.record_file_pending("pkg", "1.0", name, SHA_A, 10)
    journal.record_file_failed("pkg", "1.0", name, SHA_A, 10, "digest mismatch")
    journal.record_file_pending("pkg", "1.0", name, SHA_B, 12)  # upstream replaced it
    state = journal.file_state("pkg", name)
    assert state is not None
    assert (state.sha256, state.size, state.attempts, state.last_error, state.status) == (
        SHA_B,
        12,
        1,
        None,
        "pending",
    )


def test_files_of_lists_one_project_by_filename(journal: Journal) -> None:
    journal.record_file_done("six", "1.16.0", "six-1.16.0.tar.gz", SHA_A, 1, MANIFEST)
    journal.record_file_pending("six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", SHA_B, 2)
    journal.record_file_done("idna", "3.7", "idna-3.7.tar.gz", SHA_A, 3, MANIFEST)
    files = journal.files_of("six")
    assert [(f.filename, f.status) for f in files] == [
        ("six-1.16.0-py2.py3-none-any.whl", "pending"),
        ("six-1.16.0.tar.gz", "done"),
    ]
    assert journal.files_of("nothing") == []


# --- releases and blobs ---------------------------------------------------------------


def test_release_digests(journal: Journal) -> None:
    assert journal.release_digest("six", "1.16.0") is None
    journal.record_release("six", "1.16.0", "1.16.0", "sha256:one")
    journal.record_release("six", "1.0+local", "1.0_local", "sha256:two")
    journal.record_release("six", "1.16.0", "1.16.0", "sha256:three")  # re-tagged
    assert journal.release_digest("six", "1.16.0") == "sha256:three"
    assert journal.release_digest("six", "1.0_local") == "sha256:two"
    assert journal.release_digest("idna", "1.16.0") is None
    assert journal.summary().releases == 2


def test_blob_repositories_most_recent_first(
    journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([10.0, 20.0, 30.0, 40.0, 50.0])
    monkeypatch.setattr(time, "time", lambda: next(clock))
    blob = "sha256:" + SHA_A
    for repo in ("pypi/a", "pypi/b", "pypi/c", "pypi/d"):
        journal.record_blob(repo, blob)
    journal.record_blob("pypi/a", blob)  # seen again, now the newest
    assert journal.blob_repositories(blob) == ["pypi/a", "pypi/d", "pypi/c"]
    assert journal.blob_repositories(blob, limit=1) == ["pypi/a"]
    assert journal.blob_repositories("sha256:" + SHA_B) == []


# --- summary ----------------------------------------------------------------------------


def test_summary_with_real_content(journal: Journal) -> None:
    journal.record_file_done("six", "1.16.0", "six-1.16.0.tar.gz", SHA_A, 34041, MANIFEST)
    journal.record_file_done(
        "six", "1.16.0", "six-1.16.0-py2.py3-none-any.whl", SHA_B, 11053, MANIFEST
    )
    journal.record_file_done("idna", "3.7", "idna-3.7.tar.gz", SHA_A, None, MANIFEST)
    journal.record_file_pending("idna", "3.7", "idna-3.7-py3-none-any.whl", SHA_B, 66836)
    journal.record_file_failed("zz", "1.0", "zz-1.0.tar.gz", SHA_A, 5, "HTTP 404")
    journal.record_file_failed("aa", "2.0", "aa-2.0.tar.gz", SHA_B, 6, "digest mismatch")
    journal.record_release("six", "1.16.0", "1.16.0", "sha256:idx")
    journal.record_project_ok(
        "six", page_digest="sha256:p", etag=None, last_serial=None, complete=True
    )
    for _ in range(3):
        journal.record_project_failure("broken", "page unreadable", now=1000.0)
    journal.record_project_failure("flaky", "HTTP 502", now=1000.0)
    for _ in range(3):
        journal.record_project_failure("expired", "old trouble", now=-HOUR)

    summary = journal.summary(now=2000.0)
    assert summary.target == TARGET
    # six, idna, zz, aa, broken, flaky, expired
    assert summary.projects == 7
    assert (summary.files_done, summary.files_pending, summary.files_failed) == (3, 1, 2)
    assert summary.bytes_done == 34041 + 11053
    assert summary.releases == 1
    assert [(f.project, f.last_error) for f in summary.failed] == [
        ("aa", "digest mismatch"),
        ("zz", "HTTP 404"),
    ]
    assert [p.project for p in summary.quarantined] == ["broken"]
    assert summary.quarantined[0].quarantined_until == 1000.0 + HOUR
    assert [p.project for p in summary.failing_projects] == ["broken", "expired", "flaky"]


def test_summary_of_an_empty_journal(journal: Journal) -> None:
    assert journal.summary() == journal_module.JournalSummary(
        target=TARGET,
        projects=0,
        files_done=0,
        files_pending=0,
        files_failed=0,
        releases=0,
        bytes_done=0,
        failed=(),
        quarantined=(),
        failing_projects=(),
    )


# --- default paths ------------------------------------------------------------------------


def test_default_path_of_a_layout_is_a_hidden_file_inside_it(tmp_path: Path) -> None:
    layout = tmp_path / "mirror"
    expected = layout / LAYOUT_STATE_FILE
    assert default_journal_path(LayoutTarget(layout)) == expected
    assert default_journal_path(f"oci:{layout}") == expected
    assert expected.name.startswith(".")


def test_default_path_of_a_registry_is_under_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    path = default_journal_path(RegistryTarget("127.0.0.1:5000", "pypi", plain_http=True))
    assert path.parent == tmp_path / "xdg" / "oci-pypi"
    assert re.fullmatch(r"127\.0\.0\.1_5000__pypi-[0-9a-f]{8}\.sqlite", path.name)
    assert default_journal_path("127.0.0.1:5000/pypi") == path
    assert default_journal_path("http://127.0.0.1:5000/pypi") == path
    others = {
        default_journal_path("127.0.0.1:5000/other"),
        default_journal_path("127.0.0.1:5000"),
        default_journal_path("127.0.0.1_5000/pypi"),  # same safe name, another target
    }
    assert path not in others
    assert len(others) == 3
    with Journal.open(path, target="127.0.0.1:5000/pypi") as journal:  # creates the directories
        assert journal.path.is_file()


def test_default_path_without_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", "relative/is/ignored")
    path = default_journal_path("localhost:5000/pypi")
    assert path.parent == tmp_path / ".local" / "state" / "oci-pypi"
    assert path.name.startswith("localhost_5000__pypi-")


def test_pages_and_metadata_are_kept_and_read_back(journal: Journal, state: Path) -> None:
    page = StoredPage(
        "http://127.0.0.1/simple/six/",
        "http://127.0.0.1/simple/six/",
        "application/vnd.pypi.simple.v1+json",
        b'{"files": []}' * 100,
        '"v1"',
        "Tue, 01 Dec 2026 10:00:00 GMT",
    )
    journal.record_page(page)
    assert journal.stored_page(page.url) == page
    assert journal.stored_page("http://127.0.0.1/simple/other/") is None
    newer = dataclasses.replace(page, body=b"{}", etag='"v2"', last_modified=None)
    journal.record_page(newer)
    assert journal.stored_page(page.url) == newer
    journal.record_metadata("sha256:" + SHA_A, b"Metadata-Version: 2.1\n")
    journal.record_metadata("sha256:" + SHA_A, b"never replaced\n")  # a key names one thing
    assert journal.stored_metadata("sha256:" + SHA_A) == b"Metadata-Version: 2.1\n"
    assert journal.stored_metadata("sha256:" + SHA_B) is None
    journal.close()
    # A damaged body is no copy at all: the page is read in full again.
    with sqlite3.connect(state) as conn:
        conn.execute("UPDATE pages SET body = ?", (b"not zlib",))
        conn.execute("UPDATE core_metadata SET raw = ?", (b"not zlib",))
    with Journal.open(state, target=TARGET) as reopened:
        assert reopened.stored_page(page.url) is None
        assert reopened.stored_metadata("sha256:" + SHA_A) is None


def test_a_state_file_without_the_cache_tables_gets_them(state: Path) -> None:
    with Journal.open(state, target=TARGET) as journal:
        journal.record_project_ok(
            "six", page_digest="d", etag=None, last_serial=None, complete=True
        )
    with sqlite3.connect(state) as conn:  # as an earlier version wrote it
        conn.execute("DROP TABLE pages")
        conn.execute("DROP TABLE core_metadata")
    with Journal.open(state, target=TARGET) as journal:
        assert journal.stored_metadata("sha256:" + SHA_A) is None
        journal.record_metadata("sha256:" + SHA_A, b"m")
        assert journal.stored_metadata("sha256:" + SHA_A) == b"m"
        assert journal.project_state("six") is not None


# --- bound to its target -------------------------------------------------------------


def test_the_binding_survives_a_reopen_and_forgetting_keeps_failures(state: Path) -> None:
    with Journal.open(state, target=TARGET) as journal:
        assert journal.binding() == (None, None)
        assert not journal.has_target_records()
        journal.bind("id-1", "sha256:" + "c" * 64)
        journal.record_file_done("six", "1.0", "six-1.0.tar.gz", "a" * 64, 10, "sha256:" + "m" * 64)
        journal.record_release("six", "1.0", "1.0", "sha256:" + "i" * 64)
        journal.record_blob("six", "sha256:" + "a" * 64)
        journal.record_project_ok("six", page_digest="p", etag="e", last_serial=1, complete=True)
        journal.record_release("lxml", "5.0", "5.0", "sha256:" + "j" * 64)
        journal.record_project_failure("lxml", "boom")
    with Journal.open(state, target=TARGET) as journal:
        assert journal.binding() == ("id-1", "sha256:" + "c" * 64)
        assert journal.all_release_digests() == {
            "six": {"1.0": "sha256:" + "i" * 64},
            "lxml": {"5.0": "sha256:" + "j" * 64},
        }
        journal.forget_projects(["six"])
        assert journal.all_release_digests() == {"lxml": {"5.0": "sha256:" + "j" * 64}}
        six = journal.project_state("six")
        assert six is not None
        assert (six.page_digest, six.etag, six.complete) == (None, None, False)
        assert journal.files_of("six") == []
        assert journal.blob_repositories("sha256:" + "a" * 64) == []
        journal.forget_target()
        assert not journal.has_target_records()
        lxml = journal.project_state("lxml")
        assert lxml is not None
        assert lxml.consecutive_failures == 1  # failures are kept
        journal.record_catalog(None)
        assert journal.binding() == ("id-1", None)
