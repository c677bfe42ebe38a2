"""``copy`` and ``verify --repair`` killed with SIGKILL mid-run: a rerun ends where an
uninterrupted run ends, and nothing completed before the kill is sent again.

The real CLI runs in a subprocess; the test watches what the target holds
(the registry's storage, the layout's blob files) to pick the moment.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import check_children, cli_env, cli_process, run_cli, tag_digests, wait_for
from fault_proxy import Fault, FaultProxy, Rule
from fixture_index import FixtureIndex, serve_index
from registry_server import running_registry
from test_crash_resume import (
    PROJECTS,
    blob_puts,
    build_index,
    expected_tags,
    linked_blobs,
    stored_tags,
)

from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY

pytestmark = pytest.mark.registry


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    with serve_index(build_index()) as served:
        yield served


@pytest.fixture(scope="module")
def mirror(index: FixtureIndex, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout synced from the index, the source of the copies and of the repairs."""
    tmp = tmp_path_factory.mktemp("mirror")
    layout = tmp / "mirror"
    result = run_cli(
        ["sync", *PROJECTS, "--to", f"oci:{layout}", "--index-url", index.url, "--no-state"],
        cli_env(tmp / "home"),
    )
    assert result.returncode == 0, result.describe()
    return layout


def blob_files(layout: Path) -> dict[str, str]:
    """Every blob file of a layout, by name, with the sha256 of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (layout / "blobs" / "sha256").iterdir()
        if path.is_file()
    }


def test_copy_killed_then_rerun_matches_an_uninterrupted_copy(mirror: Path, tmp_path: Path) -> None:
    env = cli_env(tmp_path / "home")
    with running_registry(tmp_path / "registry") as registry:
        clean = run_cli(["copy", f"oci:{mirror}", f"{registry.host}/clean"], env)
        assert clean.returncode == 0, clean.describe()
        expected = tag_digests(registry.url, "clean")
        assert set(expected) == expected_tags()

        # Each blob upload held back a while, so that the copy can be caught mid-way.
        stall = Rule(Fault.stall(0.2, then="continue"), "PUT", r"/blobs/uploads/", times=10_000)
        with FaultProxy(registry.url, [stall]) as proxy:
            args = ["copy", f"oci:{mirror}", f"{proxy.host}/crash", "--jobs", "2"]
            with cli_process(
                args, env, stdout=tmp_path / "killed.out", stderr=tmp_path / "killed.err"
            ) as process:
                wait_for(
                    lambda: len(stored_tags(registry, "crash")) >= 3 or process.poll() is not None,
                    timeout=60,
                    what="three tags copied",
                )
                assert process.poll() is None, (tmp_path / "killed.err").read_text()
                process.send_signal(signal.SIGKILL)
                assert process.wait(timeout=10) == -signal.SIGKILL
        time.sleep(0.3)  # let the registry finish a request whose body it already had
        tags_at_kill = stored_tags(registry, "crash")
        linked_at_kill = linked_blobs(registry, "crash")
        assert 3 <= len(tags_at_kill) < len(expected_tags())

        offset = len(registry.log_text())
        rerun = run_cli(["copy", f"oci:{mirror}", f"{registry.host}/crash", "--json"], env)
        assert rerun.returncode == 0, rerun.describe()
        report = rerun.json()
        assert tag_digests(registry.url, "crash") == expected
        unchanged = {
            (t["repository"], t["tag"]) for t in report["tags"] if t["action"] == "unchanged"
        }
        assert tags_at_kill <= unchanged
        again = [
            (repo, digest)
            for repo, digest in blob_puts(registry.log_text()[offset:], "crash")
            if repo != CATALOG_REPOSITORY and digest in linked_at_kill.get(repo, set())
        ]
        assert again == [], f"blobs uploaded again after the kill: {again}"
        for project, tag in expected:
            assert check_children(registry.url, f"crash/{project}", tag) >= 2


def test_repair_killed_then_rerun_mends_everything(
    mirror: Path, index: FixtureIndex, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    layout = tmp_path / "damaged"
    shutil.copytree(mirror, layout)
    original = blob_files(layout)
    original_index = (layout / "index.json").read_bytes()
    # Every file blob of every project is lost: a repair must fetch them all again.
    files = {f.sha256 for f in index.files_by_name().values()}
    for name in files:
        (layout / "blobs" / "sha256" / name).unlink()
    damaged = run_cli(["verify", f"oci:{layout}", "--json"], env)
    assert damaged.returncode == 1
    assert {f["kind"] for f in damaged.json()["findings"]} == {"missing-blob"}

    index.throttle = 3_000_000.0
    try:
        args = ["verify", f"oci:{layout}", "--repair", "--index-url", index.url]
        with cli_process(
            args, env, stdout=tmp_path / "killed.out", stderr=tmp_path / "killed.err"
        ) as process:
            wait_for(
                lambda: len(files & set(blob_files(layout))) >= 5 or process.poll() is not None,
                timeout=60,
                what="five file blobs written back",
            )
            assert process.poll() is None, (tmp_path / "killed.err").read_text()
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        index.throttle = None
    restored_at_kill = files & set(blob_files(layout))
    assert 5 <= len(restored_at_kill) < len(files)

    requests_before = len(index.requests)
    rerun = run_cli([*args, "--json"], env)
    assert rerun.returncode == 0, rerun.describe()
    document = rerun.json()
    assert document["ok"] is True
    # Only what was still missing was fetched again.
    fetched = {
        path.rsplit("/", 1)[1]
        for method, path in index.requests[requests_before:]
        if method == "GET" and "/files/" in path and not path.endswith(".metadata")
    }
    names = {f.sha256: f.filename for f in index.files_by_name().values()}
    assert fetched == {names[sha] for sha in files - restored_at_kill}
    # The layout is byte for byte the mirror it was: every blob back, with its bytes.
    assert blob_files(layout) == original
    assert all(name == digest for name, digest in blob_files(layout).items())
    assert (layout / "index.json").read_bytes() == original_index
    assert json.loads(run_cli(["verify", f"oci:{layout}", "--json"], env).stdout)["ok"]
