"""Partial downloads do not pile up: a writer sweeps up after dead ones, never after live ones.

Real CLI processes write into one layout from a throttled fixture index;
one is killed with SIGKILL mid-download (what it leaves is what a crash
leaves), another runs beside a live writer. What stays under ``.tmp`` and
what the layout holds are read back.
"""

from __future__ import annotations

import hashlib
import os
import signal
import tarfile
import time
from pathlib import Path

from cli_helpers import cli_env, cli_process, finish, run_cli, wait_for
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index
from layout_check import check_layout, held_files

from oci_pypi_sync.stores.scratch import STRAY_AGE


def sha256(file: FixtureFile) -> str:
    return hashlib.sha256(file.data).hexdigest()


def partial_downloads(layout: Path) -> list[Path]:
    return [p for p in (layout / ".tmp").rglob("blob-*") if p.is_file()]


def slow_index() -> FixtureIndex:
    index = FixtureIndex(throttle=400_000.0)  # bytes per second: a big file lasts seconds
    index.add("slow", make_sdist("slow", "1.0", size=2_000_000))
    index.add("quick", make_wheel("quick", "1.0"))
    return index


def test_a_killed_writer_s_partial_download_goes_at_the_next_start(tmp_path: Path) -> None:
    index = slow_index()
    env = cli_env(tmp_path)
    layout = tmp_path / "mirror"
    with serve_index(index):
        out, err = tmp_path / "out", tmp_path / "err"
        with cli_process(
            ["sync", "slow", "--to", "oci:mirror", "-i", index.url], env, stdout=out, stderr=err
        ) as process:
            wait_for(lambda: partial_downloads(layout), timeout=300, what="a partial download")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        left = partial_downloads(layout)
        assert left, "the kill left no partial download to clean"
        stray_old, stray_new = layout / ".tmp" / "blob-old", layout / ".tmp" / "blob-new"
        stray_old.write_bytes(b"from an older version, long ago")
        stray_new.write_bytes(b"from an older version, maybe still running")
        long_ago = time.time() - STRAY_AGE - 60
        os.utime(stray_old, (long_ago, long_ago))

        index.throttle = None
        again = run_cli(["sync", "slow", "--to", "oci:mirror", "-i", index.url], env)
    assert again.returncode == 0, again.describe()
    assert not any(path.exists() for path in left)
    assert not stray_old.exists()
    assert stray_new.exists()  # too young to be sure its writer is gone
    assert sorted(p.name for p in (layout / ".tmp").iterdir()) == ["blob-new"]
    check_layout(layout)
    assert {n: d for n, (_, d) in held_files(layout).items()} == {
        f.filename: sha256(f) for f in index.projects["slow"]
    }


def test_a_live_writer_s_partial_download_is_left_alone(tmp_path: Path) -> None:
    index = slow_index()
    env = cli_env(tmp_path)
    layout = tmp_path / "mirror"
    with serve_index(index):
        out, err = tmp_path / "out", tmp_path / "err"
        with cli_process(
            ["sync", "slow", "--to", "oci:mirror", "-i", index.url, "--no-state"],
            env,
            stdout=out,
            stderr=err,
        ) as slow:
            wait_for(lambda: partial_downloads(layout), timeout=300, what="a partial download")
            [download] = partial_downloads(layout)
            beside = run_cli(
                ["sync", "quick", "--to", "oci:mirror", "-i", index.url, "--no-state"], env
            )
            assert beside.returncode == 0, beside.describe()
            assert download.exists()  # the other writer's file, still being written
            assert slow.poll() is None
            finished = finish(slow, out, err, timeout=120)
    assert finished.returncode == 0, finished.describe()
    assert list((layout / ".tmp").iterdir()) == []
    check_layout(layout)
    assert {n: d for n, (_, d) in held_files(layout).items()} == {
        f.filename: sha256(f) for files in index.projects.values() for f in files
    }


def test_a_tar_writer_removes_a_partial_pack_and_a_dead_writer_s_downloads(
    tmp_path: Path,
) -> None:
    index = slow_index()
    env = cli_env(tmp_path)
    tar = tmp_path / "mirror.tar"
    staging = tmp_path / "mirror.tar.staging"
    with serve_index(index):
        out, err = tmp_path / "out", tmp_path / "err"
        with cli_process(
            ["sync", "slow", "--to", "oci:mirror.tar", "-i", index.url], env, stdout=out, stderr=err
        ) as process:
            wait_for(lambda: partial_downloads(staging), timeout=300, what="a partial download")
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        left = partial_downloads(staging)
        assert left
        partial = tmp_path / "mirror.tar.partial"
        partial.write_bytes(b"a pack cut short")
        index.throttle = None
        again = run_cli(["sync", "slow", "--to", "oci:mirror.tar", "-i", index.url], env)
    assert again.returncode == 0, again.describe()
    assert not partial.exists()
    assert not staging.exists()
    with tarfile.open(tar) as archive:
        names = archive.getnames()
        extracted = tmp_path / "extracted"
        archive.extractall(extracted, filter="data")
    assert not any(".tmp" in name or name.endswith(".partial") for name in names)
    assert {n: d for n, (_, d) in held_files(extracted).items()} == {
        f.filename: sha256(f) for f in index.projects["slow"]
    }
