"""One sync at a time per state file: a second one fails at once; ``status`` reads alongside."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CliResult, cli_env, cli_process, finish, run_cli, wait_for
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from registry_server import RegistryServer

from oci_pypi_sync.state.journal import Journal

pytestmark = pytest.mark.registry

PROJECTS = ["lock-a", "lock-b", "lock-c"]


def build_index() -> FixtureIndex:
    fixture = FixtureIndex()
    for project in PROJECTS:
        fixture.add(
            project,
            make_wheel(project, "1.0", payload=400 << 10),
            make_sdist(project, "1.0", size=600 << 10),
        )
    return fixture


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    with serve_index(build_index()) as served:
        yield served


@pytest.fixture
def idle_index() -> Iterator[FixtureIndex]:
    """The same content on another server, to see whether a refused sync asked anything."""
    with serve_index(build_index()) as served:
        yield served


def sync_args(target: str, index: FixtureIndex, state: Path) -> list[str]:
    return [
        "sync",
        *PROJECTS,
        "--to",
        target,
        "--index-url",
        index.url,
        "--state",
        str(state),
        "--jobs",
        "2",
        "--json",
    ]


def lock_pid(state: Path) -> str:
    lock = state.with_name(state.name + ".lock")
    return lock.read_text().strip() if lock.exists() else ""


def assert_refused(result: CliResult, state: Path, holder: int) -> None:
    """Exit 3, one line naming the state file and saying another sync uses it.

    The holder keeps the lock until the test lets it go, after this returns:
    a sync that waited for the lock would never end (the run's timeout would
    fail the test), so a refusal here is a refusal without waiting, however
    slow the machine.
    """
    assert result.returncode == 3, result.describe()
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert str(state) in lines[0]
    assert "another oci-pypi sync is using the state file" in lines[0]
    assert f"pid {holder}" in lines[0]
    print(f"\nrefused in {result.seconds:.3f}s: {lines[0]}")


def status_totals(result: CliResult) -> dict[str, Any]:
    assert result.returncode == 0, result.describe()
    document = json.loads(result.stdout)
    totals: dict[str, Any] = document["totals"]
    return totals


def expected_totals(report: dict[str, Any]) -> dict[str, Any]:
    """What ``status`` must say after this (complete, first) run."""
    return {
        "projects": report["totals"]["projects"],
        "files_done": report["totals"]["files"],
        "files_pending": 0,
        "files_failed": 0,
        "releases": len(report["releases"]),
        "bytes_done": sum(f["size"] for f in report["files"]),
    }


def test_a_second_sync_on_a_held_state_file_fails_fast_then_succeeds(
    registry: RegistryServer, index: FixtureIndex, idle_index: FixtureIndex, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    state = tmp_path / "state.sqlite"
    target = f"{registry.host}/lock-busy"
    index.gate = threading.Event()  # the first sync transfers until the gate opens
    try:
        with cli_process(
            sync_args(target, index, state),
            env,
            stdout=tmp_path / "first.out",
            stderr=tmp_path / "first.err",
        ) as first:
            wait_for(
                lambda: (
                    lock_pid(state) == str(first.pid) and sum(index.sent_snapshot().values()) > 0
                ),
                timeout=300,
                what="the first sync to hold the lock and transfer",
            )
            second = run_cli(sync_args(target, idle_index, state), env, timeout=300)
            assert first.poll() is None, first.returncode
            assert_refused(second, state, first.pid)
            assert idle_index.requests == []  # refused before reading anything
            assert lock_pid(state) == str(first.pid)  # the refused sync left the lock alone
            index.gate.set()
            done = finish(first, tmp_path / "first.out", tmp_path / "first.err", timeout=300)
    finally:
        if index.gate is not None:
            index.gate.set()
        index.gate = None
    assert done.returncode == 0, done.describe()
    first_report = done.json()
    assert first_report["totals"]["pushed"] == 6

    again = run_cli(sync_args(target, idle_index, state), env, timeout=300)
    assert again.returncode == 0, again.describe()
    report = again.json()
    assert report["ok"] is True
    assert report["totals"]["pushed"] == 0
    assert report["totals"]["unchanged"] == 6
    assert report["totals"]["projects_unchanged"] == 3
    assert {(r["project"], r["tag"], r["digest"]) for r in report["releases"]} == {
        (r["project"], r["tag"], r["digest"]) for r in first_report["releases"]
    }


def test_a_sync_refused_while_the_test_holds_the_lock(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    state = tmp_path / "state.sqlite"
    target = f"{registry.host}/lock-held"
    with Journal.open(state, target=target):
        refused = run_cli(sync_args(target, index, state), env, timeout=300)
        assert_refused(refused, state, os.getpid())
        assert index.requests == []
    result = run_cli(sync_args(target, index, state), env, timeout=300)
    assert result.returncode == 0, result.describe()
    assert result.json()["totals"]["pushed"] == 6


def run_status_during_and_after(
    registry: RegistryServer,
    index: FixtureIndex,
    tmp_path: Path,
    target: str,
    status_args: list[str],
) -> None:
    """``status`` works while a sync holds the lock, and matches the finished run afterwards."""
    env = cli_env(tmp_path / "home")
    state = tmp_path / "state.sqlite"
    args = ["status", *status_args, "--state", str(state), "--json"]
    index.gate = threading.Event()  # the sync transfers until the gate opens
    try:
        with cli_process(
            sync_args(target, index, state),
            env,
            stdout=tmp_path / "sync.out",
            stderr=tmp_path / "sync.err",
        ) as sync:
            wait_for(
                lambda: (
                    lock_pid(state) == str(sync.pid) and sum(index.sent_snapshot().values()) > 0
                ),
                timeout=300,
                what="the sync to hold the lock and transfer",
            )
            during = run_cli(args, env, timeout=300)
            assert sync.poll() is None, sync.returncode
            totals = status_totals(during)
            assert totals["files_failed"] == 0
            assert totals["files_done"] < 6
            assert totals["files_done"] + totals["files_pending"] <= 6
            assert lock_pid(state) == str(sync.pid)
            index.gate.set()
            done = finish(sync, tmp_path / "sync.out", tmp_path / "sync.err", timeout=300)
    finally:
        if index.gate is not None:
            index.gate.set()
        index.gate = None
    assert done.returncode == 0, done.describe()
    after = status_totals(run_cli(args, env, timeout=300))
    assert after == expected_totals(done.json())
    assert after["files_done"] == 6
    assert after["releases"] == 3
    assert after["bytes_done"] == sum(len(f.data) for f in index.files_by_name().values())


def test_status_of_a_state_file_reads_while_a_sync_holds_it(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    # Each test its own target: the fixture's wheels are rebuilt per test with other
    # timestamps inside, so a shared target would hold files replaced upstream.
    run_status_during_and_after(registry, index, tmp_path, f"{registry.host}/lock-status-a", [])


def test_status_of_a_target_and_state_file_reads_while_a_sync_holds_it(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    target = f"{registry.host}/lock-status-b"
    run_status_during_and_after(registry, index, tmp_path, target, ["--to", target])
