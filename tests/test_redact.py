"""Secrets never shown: URLs redacted in logs, errors, --json, the state file; targets refused."""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from fixture_index import make_sdist
from hostile_server import RecordingServer, Reply, Seen, file_entry, project_page

from oci_pypi_sync.errors import IndexError_, unexpected_error
from oci_pypi_sync.redact import RedactingFilter, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:s3cret@index.test/simple/", "https://***@index.test/simple/"),
        ("https://token@index.test:8443/simple/", "https://***@index.test:8443/simple/"),
        ("https://u:p%40ss@index.test/", "https://***@index.test/"),
        ("https://index.test/simple/", "https://index.test/simple/"),
        (
            "https://bucket.s3.test/b/x?X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F1"
            "&X-Amz-Signature=abc123&X-Amz-Security-Token=tok",
            "https://bucket.s3.test/b/x?X-Amz-Algorithm=AWS4&X-Amz-Credential=***"
            "&X-Amz-Signature=***&X-Amz-Security-Token=***",
        ),
        (
            "https://store.test/c/b?sv=2022&se=2030&sp=r&sig=S1G%3D",
            "https://store.test/c/b?sv=2022&se=2030&sp=r&sig=***",
        ),
        (
            "https://gcs.test/o?X-Goog-Credential=c&X-Goog-Signature=s&X-Goog-Date=d",
            "https://gcs.test/o?X-Goog-Credential=***&X-Goog-Signature=***&X-Goog-Date=d",
        ),
        (
            "https://cdn.test/f?Expires=1&Signature=zz&Key-Pair-Id=K",
            "https://cdn.test/f?Expires=1&Signature=***&Key-Pair-Id=***",
        ),
        (
            "https://r.test/v2/x/blobs/uploads/u?_state=s&token=t",
            "https://r.test/v2/x/blobs/uploads/u?_state=s&token=***",
        ),
        ("https://r.test/p?access_token=a&page=2", "https://r.test/p?access_token=***&page=2"),
        ("https://r.test/p?n=100&last=b", "https://r.test/p?n=100&last=b"),
    ],
)
def test_redact_url_hides_user_info_tokens_and_signatures(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_covers_every_url_and_authorization_values() -> None:
    text = (
        "GET https://a:b@h.test/x?sig=1 failed, then http://h.test/y?token=2 "
        "'Authorization': 'Basic dXNlcjpwYXNz' and Authorization: Bearer eyJhbGciOi.x.y"
    )
    redacted = redact_text(text)
    assert redacted == (
        "GET https://***@h.test/x?sig=*** failed, then http://h.test/y?token=*** "
        "'Authorization': 'Basic ***' and Authorization: Bearer ***"
    )


def test_errors_are_redacted_when_made() -> None:
    error = IndexError_("the index answered 500 for https://u:pw@h.test/f.whl?Signature=S")
    assert "pw" not in str(error)
    assert "=S" not in str(error)
    assert "https://***@h.test/f.whl?Signature=***" in str(error)


def test_an_unexpected_error_is_said_without_secrets() -> None:
    message = unexpected_error(ValueError("bad answer from https://u:pw@h.test/x?sig=S1G&n=2"))
    assert "https://***@h.test/x?sig=***&n=2" in message
    assert "pw" not in message
    assert "S1G" not in message


def test_the_log_filter_redacts_arguments_and_tracebacks() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("fetching %s", "https://h.test/x?X-Amz-Signature=SECRET1")
        try:
            raise ValueError("https://user:SECRET2@h.test/")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(records)
    assert "SECRET1" not in text
    assert "SECRET2" not in text
    assert "X-Amz-Signature=***" in text
    assert "https://***@h.test/" in text


# --- the command line ----------------------------------------------------------------


def _cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    base["XDG_STATE_HOME"] = str(cwd / "state-home")
    base["NO_PROXY"] = "127.0.0.1"
    return subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", *args],
        cwd=cwd,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://user:hunter2@registry.test/pfx",
        "user:hunter2@registry.test:5000/pfx",
        "http://user:hun/ter2@registry.test/pfx",
    ],
)
@pytest.mark.parametrize("where", ["flag", "environment"])
def test_a_target_with_credentials_is_refused_without_showing_them(
    target: str, where: str, tmp_path: Path
) -> None:
    if where == "flag":
        result = _cli("sync", "six", "--to", target, cwd=tmp_path)
    else:
        result = _cli("sync", "six", cwd=tmp_path, env={"OCI_PYPI_TO": target})
    assert result.returncode == 2, result.stderr
    assert "hunter2" not in result.stderr
    assert "ter2" not in result.stderr
    assert "user:" not in result.stderr
    assert "***@registry.test" in result.stderr
    assert "credentials" in result.stderr
    assert "login" in result.stderr


def test_login_to_a_host_with_credentials_is_refused_without_showing_them(tmp_path: Path) -> None:
    result = _cli("login", "https://me:hunter2@registry.test", "-u", "me", cwd=tmp_path)
    assert result.returncode == 2
    assert "hunter2" not in result.stderr
    assert "***@registry.test" in result.stderr


def test_vv_logs_redirects_to_signed_urls_without_their_signatures(tmp_path: Path) -> None:
    sdist = make_sdist("tool", "1.0")
    signed = "X-Amz-Algorithm=AWS4&X-Amz-Credential=CREDSECRET&X-Amz-Signature=SIGSECRET"

    def handle(seen: Seen) -> Reply:
        if seen.path == "/simple/tool/":
            url = f"{server.origin}/files/{sdist.filename}"
            return project_page("tool", [file_entry(sdist.filename, url, sdist.data)])
        if seen.path == f"/files/{sdist.filename}":
            location = f"{server.origin}/signed/{sdist.filename}?{signed}"
            return Reply(302, [("Location", location)])
        if seen.path == f"/signed/{sdist.filename}":
            return Reply(200, [("Content-Type", "application/gzip")], sdist.data)
        return Reply(404)

    with RecordingServer(handle) as server:
        result = _cli(
            "sync", "tool", "-vv", "--to", "oci:mirror", "--index-url",
            f"{server.origin}/simple/", cwd=tmp_path,
        )  # fmt: skip
        assert any(s.path.startswith("/signed/") for s in server.seen)
    assert result.returncode == 0, result.stderr
    assert "SIGSECRET" not in result.stderr
    assert "CREDSECRET" not in result.stderr
    # the redirected request was logged, without its query
    assert f"GET {server.origin}/signed/{sdist.filename} -> 200" in result.stderr
    blob = tmp_path / "mirror" / "blobs" / "sha256" / hashlib.sha256(sdist.data).hexdigest()
    assert blob.read_bytes() == sdist.data


def test_errors_in_json_and_the_state_file_carry_no_tokens(tmp_path: Path) -> None:
    sdist = make_sdist("tool", "1.0")

    def handle(seen: Seen) -> Reply:
        if seen.path == "/simple/tool/":
            url = f"{server.origin}/files/{sdist.filename}?token=TOKSECRET&sig=SIGSECRET"
            return project_page("tool", [file_entry(sdist.filename, url, sdist.data)])
        return Reply(403, body=b"denied")

    with RecordingServer(handle) as server:
        result = _cli(
            "sync", "tool", "--json", "--retries", "0", "--to", "oci:mirror",
            "--index-url", f"http://me:IDXSECRET@127.0.0.1:{server.port}/simple/", cwd=tmp_path,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "token=***" in result.stdout
    state = tmp_path / "mirror" / ".oci-pypi-state.sqlite"
    with sqlite3.connect(state) as db:
        stored = " ".join(str(row) for row in db.execute("SELECT * FROM files"))
    assert "token=***" in stored
    for secret in ("TOKSECRET", "SIGSECRET", "IDXSECRET"):
        assert secret not in result.stdout
        assert secret not in result.stderr
        assert secret not in stored
