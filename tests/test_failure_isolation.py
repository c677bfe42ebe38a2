"""A bad file or a bad page fails alone; only the index or the target being gone stops a run.

Each case is a real CLI run against a fixture index on 127.0.0.1 that mixes
good projects with one broken thing; the run must report the broken thing
by name, exit 1, print its JSON report, and leave every other file in the
layout (read back and hashed) and in its catalog.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliResult, cli_env, run_cli
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index
from layout_check import check_layout, held_files


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole test (bound, not listening)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def sha256(file: FixtureFile) -> str:
    return hashlib.sha256(file.data).hexdigest()


def sync(index: FixtureIndex, home: Path, *args: str) -> CliResult:
    return run_cli(
        ["sync", *args, "--to", "oci:mirror", "-i", index.url, "--json", "--retries", "1"],
        cli_env(home),
    )


def files_by_action(report: dict[str, Any]) -> dict[str, set[str]]:
    actions: dict[str, set[str]] = {}
    for file in report["files"]:
        actions.setdefault(file["action"], set()).add(file["filename"])
    return actions


def errors_of(report: dict[str, Any]) -> dict[str, str]:
    return {f["filename"]: f["error"] for f in report["files"] if f["action"] == "failed"}


def catalog_projects(home: Path) -> list[str]:
    listed = run_cli(["ls", "--from", "oci:mirror", "--json"], cli_env(home))
    assert listed.returncode == 0, listed.describe()
    document = listed.json()
    assert document["source"] == "catalog"
    return [p["name"] for p in document["projects"]]


def test_files_on_an_unreachable_host_or_a_non_http_url_fail_alone(
    tmp_path: Path, closed_port: int
) -> None:
    good = [make_wheel("good", "1.0"), make_sdist("good", "1.0")]
    local = make_wheel("mixed", "1.0")
    far = make_sdist("mixed", "1.0")
    far.url = f"http://127.0.0.1:{closed_port}/files/{far.filename}"
    ftp = make_wheel("mixed", "1.0", tag="py2-none-any")
    ftp.url = f"ftp://127.0.0.1/files/{ftp.filename}"
    local_file = make_wheel("mixed", "1.0", tag="cp312-none-any")
    local_file.url = "file:///etc/passwd"
    index = FixtureIndex()
    index.add("good", *good)
    index.add("mixed", local, far, ftp, local_file)
    with serve_index(index):
        result = sync(index, tmp_path, "good", "mixed")

    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.stderr
    report = result.json()
    assert report["ok"] is False
    assert report["aborted"] is None
    actions = files_by_action(report)
    assert actions["pushed"] == {good[0].filename, good[1].filename, local.filename}
    errors = errors_of(report)
    assert set(errors) == {far.filename, ftp.filename, local_file.filename}
    assert errors[far.filename].startswith(f"cannot reach 127.0.0.1:{closed_port}, where the index")
    for name in (ftp.filename, local_file.filename):
        assert "not an http or https URL" in errors[name], errors[name]
    assert f"error: {far.filename}: cannot reach 127.0.0.1:{closed_port}" in result.stderr
    # Only http(s) is ever fetched: the ftp and file URLs were refused without a request.
    assert not any(ftp.filename in path for _, path in index.requests)

    root = tmp_path / "mirror"
    check_layout(root)
    held = held_files(root)
    assert {name: digest for name, (_, digest) in held.items()} == {
        f.filename: sha256(f) for f in (*good, local)
    }
    assert held[local.filename][0] == "mixed:1.0"
    assert catalog_projects(tmp_path) == ["good", "mixed"]


def test_a_page_nested_too_deeply_fails_its_project_alone(tmp_path: Path) -> None:
    good = make_wheel("good", "1.0")
    index = FixtureIndex()
    index.add("good", good)
    deep = 100_000
    index.raw_pages["deep"] = (
        b'{"meta": {"api-version": "1.1"}, "name": "deep", "files": '
        + b"[" * deep
        + b"]" * deep
        + b"}"
    )
    with serve_index(index):
        result = sync(index, tmp_path, "deep", "good")

    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.stderr
    assert "RecursionError" not in result.stderr
    report = result.json()
    [error] = report["errors"]
    assert error["project"] == "deep"
    assert error["error"].startswith("the page http://127.0.0.1:")
    assert "simple/deep/ nests deeper than" in error["error"]
    assert "error: deep: the page http://127.0.0.1:" in result.stderr
    # A broken page is not retried: it would read the same.
    assert [p for _, p in index.requests if p.startswith("/simple/deep")] == ["/simple/deep/"]
    held = held_files(tmp_path / "mirror")
    assert held == {good.filename: ("good:1.0", sha256(good))}
    assert catalog_projects(tmp_path) == ["good"]


def test_an_unreachable_index_stops_the_run_and_still_prints_the_report(
    tmp_path: Path, closed_port: int
) -> None:
    down = FixtureIndex(url=f"http://127.0.0.1:{closed_port}/simple/")
    result = sync(down, tmp_path, "good")

    assert result.returncode == 3, result.describe()
    report = result.json()
    assert report["ok"] is False
    assert report["aborted"].startswith(f"cannot reach the index at 127.0.0.1:{closed_port}")
    assert report["files"] == []
    assert result.stderr.strip().splitlines()[-1] == f"error: {report['aborted']}"
    assert all(" INFO reading the index" in line for line in result.stderr.splitlines()[:-1])
    assert (
        not (tmp_path / "mirror" / "index.json").exists() or held_files(tmp_path / "mirror") == {}
    )


def test_an_unreachable_registry_stops_the_run_after_what_landed(
    tmp_path: Path, closed_port: int
) -> None:
    index = FixtureIndex()
    index.add("good", make_wheel("good", "1.0"))
    with serve_index(index):
        result = run_cli(
            [
                *("sync", "good", "--to", f"127.0.0.1:{closed_port}/pypi"),
                *("-i", index.url, "--json", "--retries", "0"),
            ],
            cli_env(tmp_path),
        )
    assert result.returncode == 3, result.describe()
    report = json.loads(result.stdout)
    assert report["aborted"] == f"cannot reach registry 127.0.0.1:{closed_port}: connection refused"
    *phases, error = result.stderr.strip().splitlines()
    assert error == f"error: {report['aborted']}"
    # The target is asked first (is the state file this target's?), before the index.
    assert phases == []


def test_a_requirement_that_selects_nothing_fails_the_run(tmp_path: Path) -> None:
    good = make_wheel("good", "1.0")
    index = FixtureIndex()
    index.add("good", good)
    index.add("other", make_wheel("other", "2.0"))
    with serve_index(index):
        result = sync(index, tmp_path, "good==9.9", "good==1.0", "other")
        dry = run_cli(
            ["sync", "good==9.9", "--dry-run", "--json", "-i", index.url], cli_env(tmp_path)
        )

    assert result.returncode == 1, result.describe()
    report = result.json()
    assert report["ok"] is False
    assert report["errors"] == [
        {
            "project": "good",
            "error": "no file matches good==9.9 (the index has versions 1.0)",
            "quarantined": False,
        }
    ]
    assert "error: good: no file matches good==9.9 (the index has versions 1.0)" in result.stderr
    held = held_files(tmp_path / "mirror")
    assert set(held) == {good.filename, "other-2.0-py3-none-any.whl"}
    assert held[good.filename] == ("good:1.0", sha256(good))
    assert dry.returncode == 1, dry.describe()
    assert dry.json()["errors"][0]["error"].startswith("no file matches good==9.9")


def test_files_the_page_cannot_vouch_for_are_refused_and_named(tmp_path: Path) -> None:
    good = make_wheel("demo", "1.0")
    twin = make_sdist("demo", "1.0")
    liar = FixtureFile(twin.filename, b"other bytes under the same name")
    intruder = make_wheel("intruder", "1.0")
    index = FixtureIndex()
    index.add("demo", good, twin, liar, intruder)
    index.add("intruder", make_wheel("intruder", "2.0"))
    with serve_index(index):
        result = sync(index, tmp_path, "demo", "-v")

    assert result.returncode == 0, result.describe()
    report = result.json()
    assert [f["filename"] for f in report["files"]] == [good.filename]
    assert {(e["filename"], e["kind"]) for e in report["excluded"]} == {
        (twin.filename, "conflicting-hashes"),
        (intruder.filename, "other-project"),
    }
    digests = ", ".join(sorted((sha256(twin), sha256(liar))))
    assert (
        f"WARNING {twin.filename}: not mirrored: listed more than once with different sha256 "
        f"digests ({digests}); neither is mirrored"
    ) in result.stderr
    assert (
        f"WARNING {intruder.filename}: not mirrored: its name says it belongs to the project "
        "'intruder', not 'demo'; not mirrored under 'demo'"
    ) in result.stderr
    held = held_files(tmp_path / "mirror")
    assert held == {good.filename: ("demo:1.0", sha256(good))}
    assert not any(p.endswith((twin.filename, intruder.filename)) for _, p in index.requests)


def test_a_project_listed_by_the_index_may_select_nothing(tmp_path: Path) -> None:
    wheel = make_wheel("binary", "1.0")
    index = FixtureIndex()
    index.add("binary", wheel)
    index.add("sources", make_sdist("sources", "1.0"))
    with serve_index(index):
        listed = sync(index, tmp_path, "--all", "--only-binary")
        named = run_cli(
            [
                *("sync", "--all", "sources", "--only-binary", "--to", "oci:named"),
                *("-i", index.url, "--json"),
            ],
            cli_env(tmp_path),
        )
    # --all takes what each listed project has for the targets; nothing is no failure.
    assert listed.returncode == 0, listed.describe()
    assert listed.json()["errors"] == []
    assert held_files(tmp_path / "mirror") == {wheel.filename: ("binary:1.0", sha256(wheel))}
    # A project also named on the command line must select something.
    assert named.returncode == 1, named.describe()
    assert [e["project"] for e in named.json()["errors"]] == ["sources"]
    assert named.json()["errors"][0]["error"].startswith("no file matches sources (")
