"""Errors and exits as a user meets them: one ``error:`` line, the right exit code, no traceback.

Real conditions, not mocks: a disk that fills up (a small tmpfs in a
private mount namespace when running as root, else a file-size limit), a
layout another user may read but not write, or not read at all (the CLI
runs as ``nobody`` through ``setpriv`` when the tests run as root), a
damaged ``index.json``, and Ctrl-C (SIGINT) in the middle of a download.
After each, what the layout holds is read back.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from cli_helpers import CliResult, cli_command, cli_env, cli_process, finish, run_cli, wait_for
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index
from layout_check import check_layout, held_files

from oci_pypi_sync.cli.common import fail
from oci_pypi_sync.state.journal import Journal

NOBODY = 65534
AS_ROOT = os.geteuid() == 0


def sha256(file: FixtureFile) -> str:
    return hashlib.sha256(file.data).hexdigest()


def one_error_line(result: CliResult) -> str:
    """The run's single ``error:`` line, after checking nothing else went wrong on stderr."""
    assert "Traceback" not in result.stderr, result.describe()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.describe()
    return errors[0]


def scratch_files(layout: Path) -> list[Path]:
    """Temporary files left under the layout's ``.tmp`` (directories aside)."""
    tmp = layout / ".tmp"
    return [p for p in tmp.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are its owner's alone)."""
    path = Path(tempfile.mkdtemp(prefix="oci-pypi-exits-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def as_other_user(args: Sequence[str], home: Path) -> CliResult:
    """The CLI as a user who does not own the test's files (``nobody`` when we are root)."""
    prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    completed = subprocess.run(
        [*(prefix if AS_ROOT else []), *cli_command(*args)],
        env=cli_env(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=600,  # only ends a hang
        check=False,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr, 0.0)


def can_mount_tmpfs() -> bool:
    if not AS_ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", "mount -t tmpfs none /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


# --- a full disk --------------------------------------------------------------------------


def test_a_full_disk_stops_the_run_with_one_line_and_no_partial_file(tmp_path: Path) -> None:
    small, later = make_wheel("small", "1.0"), make_wheel("later", "1.0")
    big = make_sdist("big", "1.0", size=3_000_000)
    index = FixtureIndex()
    index.add("small", small)
    index.add("big", big)
    index.add("later", later)
    disk, kept = tmp_path / "disk", tmp_path / "kept"
    disk.mkdir()
    home = tmp_path / "home"
    env = cli_env(home)
    tmpfs = can_mount_tmpfs()
    with serve_index(index):
        common = ("--to", f"oci:{disk}/mirror", "-i", index.url, "-j", "1")
        state = ("--state", str(home / "state.sqlite"))
        # First what fits (so the layout holds something), then what does not.
        first = cli_command("sync", "small", *common, *state)
        args = cli_command("sync", "small", "big", "later", "--json", *common, *state)
        if tmpfs:
            # A 1 MiB file system of our own, gone with the namespace; its content copied out.
            script = (
                f"mount -t tmpfs -o size=1m tmpfs {disk} && {shlex.join(first)} && "
                f"{{ {shlex.join(args)} > {home}/out 2> {home}/err; rc=$?; "
                f"cp -a {disk}/. {kept}; exit $rc; }}"
            )
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
            code = subprocess.run(argv, env=env, cwd=home, timeout=120, check=False).returncode
        else:
            limit = 1 << 20

            def limited() -> None:  # a write past the limit fails (EFBIG) instead of killing us
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

            subprocess.run(first, env=env, cwd=home, check=True, timeout=120)
            with (home / "out").open("w") as out, (home / "err").open("w") as err:
                code = subprocess.run(
                    args, env=env, cwd=home, stdout=out, stderr=err, preexec_fn=limited, timeout=120
                ).returncode
            shutil.copytree(disk, kept)
    result = CliResult(code, (home / "out").read_text(), (home / "err").read_text(), 0.0)
    report = result.json()
    line = one_error_line(result)
    layout = kept / "mirror"
    if tmpfs:
        assert code == 3, result.describe()
        assert line == (
            f"error: cannot write to oci:{disk}/mirror (No space left on device): "
            "free some space there, or choose another target"
        )
        assert report["aborted"] == line.removeprefix("error: ")
    else:
        assert code == 1, result.describe()
        assert line.startswith(f"error: {big.filename}: cannot write to oci:{disk}/mirror")
        assert "File too large" in line
    assert scratch_files(layout) == []
    check_layout(layout)
    held = held_files(layout)
    assert big.filename not in held
    assert small.filename in held
    assert {n: d for n, (_, d) in held.items()} == {
        f.filename: sha256(f) for f in (small, later) if f.filename in held
    }
    landed = {
        f["filename"] for f in report["files"] if f["action"] in ("pushed", "present", "unchanged")
    }
    assert landed == set(held)


# --- permissions ------------------------------------------------------------------------


def test_a_read_only_layout_with_no_state_is_one_line_exit_3(shared_dir: Path) -> None:
    first, second = make_wheel("first", "1.0"), make_wheel("second", "1.0")
    index = FixtureIndex()
    index.add("first", first)
    index.add("second", second)
    layout = shared_dir / "mirror"
    with serve_index(index):
        made = run_cli(
            ["sync", "first", "--to", f"oci:{layout}", "-i", index.url, "--no-state"],
            cli_env(shared_dir / "owner"),
        )
        assert made.returncode == 0, made.describe()
        before = (layout / "index.json").read_bytes()
        if not AS_ROOT:
            for path in [layout, *layout.rglob("*")]:
                path.chmod(path.stat().st_mode & ~0o222)
        result = as_other_user(
            ["sync", "second", "--to", f"oci:{layout}", "-i", index.url, "--no-state", "--json"],
            shared_dir,
        )
    assert result.returncode == 3, result.describe()
    line = one_error_line(result)
    assert line == (
        f"error: cannot write to oci:{layout} (Permission denied): "
        "this user may not write there: fix the permissions, or run as its owner"
    )
    assert result.json()["aborted"] == line.removeprefix("error: ")
    assert (layout / "index.json").read_bytes() == before
    assert held_files(layout) == {first.filename: ("first:1.0", sha256(first))}


def test_ls_of_a_layout_this_user_cannot_read_is_one_line_exit_3(shared_dir: Path) -> None:
    index = FixtureIndex()
    index.add("first", make_wheel("first", "1.0"))
    layout = shared_dir / "mirror"
    with serve_index(index):
        made = run_cli(
            ["sync", "first", "--to", f"oci:{layout}", "-i", index.url],
            cli_env(shared_dir / "owner"),
        )
    assert made.returncode == 0, made.describe()
    layout.chmod(0o700 if AS_ROOT else 0o000)
    try:
        result = as_other_user(["ls", "--from", f"oci:{layout}"], shared_dir)
    finally:
        layout.chmod(0o755)
    assert result.returncode == 3, result.describe()
    assert one_error_line(result) == (
        f"error: cannot read {layout}/oci-layout (Permission denied): "
        "run as a user who may read the layout, or fix its permissions"
    )
    assert result.stdout == ""


# --- a damaged layout --------------------------------------------------------------------


def test_copy_from_a_layout_whose_entry_lacks_its_digest_fails_that_tag(tmp_path: Path) -> None:
    good, damaged = make_wheel("good", "1.0"), make_wheel("damaged", "1.0")
    index = FixtureIndex()
    index.add("good", good)
    index.add("damaged", damaged)
    env = cli_env(tmp_path)
    with serve_index(index):
        made = run_cli(["sync", "good", "damaged", "--to", "oci:src", "-i", index.url], env)
    assert made.returncode == 0, made.describe()
    index_json = tmp_path / "src" / "index.json"
    document = json.loads(index_json.read_bytes())
    damaged_refs = [
        entry
        for entry in document["manifests"]
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == "damaged/1.0"
    ]
    assert len(damaged_refs) == 1
    del damaged_refs[0]["digest"]
    index_json.write_text(json.dumps(document))

    result = run_cli(["copy", "oci:src", "oci:dst"], env)
    assert result.returncode == 1, result.describe()
    assert one_error_line(result) == (
        "error: damaged:1.0: the index.json entry damaged:1.0 has no digest: the layout is "
        "damaged (remove that entry from index.json, then sync the project again)"
    )
    check_layout(tmp_path / "dst")
    assert held_files(tmp_path / "dst") == {good.filename: ("good:1.0", sha256(good))}

    verify = run_cli(["verify", "oci:src", "--json"], env)
    assert verify.returncode == 1
    [finding] = verify.json()["findings"]
    assert (finding["kind"], finding["repository"], finding["tag"]) == (
        "unreadable",
        "damaged",
        "1.0",
    )


# --- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_exits_130_after_removing_partial_downloads(tmp_path: Path) -> None:
    files = {p: [make_wheel(p, "1.0"), make_sdist(p, "1.0", size=1_500_000)] for p in ("a", "b")}
    index = FixtureIndex(throttle=400_000.0)  # bytes per second: a file lasts seconds
    for project, project_files in files.items():
        index.add(project, *project_files)
    env = cli_env(tmp_path)
    layout = tmp_path / "mirror"
    args = ["sync", "a", "b", "--to", "oci:mirror", "--json", "-i"]
    with serve_index(index):
        with cli_process(
            [*args, index.url], env, stdout=tmp_path / "out", stderr=tmp_path / "err"
        ) as process:
            wait_for(
                lambda: any(p.name.startswith("blob-") for p in scratch_files(layout)),
                timeout=300,
                what="a download in progress",
            )
            process.send_signal(signal.SIGINT)
            result = finish(process, tmp_path / "out", tmp_path / "err")

        assert result.returncode == 130, result.describe()
        assert one_error_line(result) == (
            "error: interrupted; what was finished is kept and partial downloads are removed "
            "(run the same command again to go on)"
        )
        assert result.json()["aborted"] == "interrupted"
        assert scratch_files(layout) == []
        assert list((layout / ".tmp").iterdir()) == []
        # The state file opens, and claims nothing the layout lacks.
        with Journal.open(layout / ".oci-pypi-state.sqlite", target=None, readonly=True) as journal:
            done = [f for p in files for f in journal.files_of(p) if f.status == "done"]
        held = held_files(layout)
        assert {f.filename for f in done} <= set(held)

        again = run_cli([*args, index.url], env, timeout=120)
    assert again.returncode == 0, again.describe()
    check_layout(layout)
    assert {n: d for n, (_, d) in held_files(layout).items()} == {
        f.filename: sha256(f) for project_files in files.values() for f in project_files
    }


# --- whatever else ------------------------------------------------------------------------


def test_an_unforeseen_error_is_one_line_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        fail(RecursionError("maximum recursion depth exceeded\nwhile decoding"))
    assert caught.value.code == 3
    err = capsys.readouterr().err
    assert err == (
        "error: unexpected RecursionError: maximum recursion depth exceeded "
        "(rerun with -vv for the traceback, and please report it)\n"
    )
    with pytest.raises(SystemExit) as caught:
        fail(FileNotFoundError(2, "No such file or directory", "/no/such/file"))
    assert caught.value.code == 3
    assert capsys.readouterr().err == "error: /no/such/file: No such file or directory\n"


def test_verbose_twice_logs_the_traceback_of_an_unforeseen_error(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from oci_pypi_sync.cli.common import configure_logging, fail\n"
        "configure_logging(int(sys.argv[1]))\n"
        "try:\n"
        "    raise KeyError('surprise')\n"
        "except KeyError as exc:\n"
        "    fail(exc)\n"
    )
    for verbosity, traceback in ((0, False), (2, True)):
        completed = subprocess.run(
            [sys.executable, "-c", script, str(verbosity)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,  # only ends a hang
        )
        assert completed.returncode == 3
        assert completed.stderr.strip().endswith(
            "error: unexpected KeyError: 'surprise' "
            "(rerun with -vv for the traceback, and please report it)"
        )
        assert ("Traceback" in completed.stderr) is traceback


def test_ctrl_c_is_how_serve_ends_exit_0(tmp_path: Path) -> None:
    index = FixtureIndex()
    index.add("first", make_wheel("first", "1.0"))
    env = cli_env(tmp_path)
    with serve_index(index):
        made = run_cli(["sync", "first", "--to", "oci:mirror", "-i", index.url], env)
    assert made.returncode == 0, made.describe()
    out, err = tmp_path / "out", tmp_path / "err"
    with cli_process(
        ["serve", "--from", "oci:mirror", "--port", "0"], env, stdout=out, stderr=err
    ) as process:
        wait_for(lambda: "serving" in err.read_text(), timeout=300, what="the server to start")
        url = err.read_text().split(" on ", 1)[1].split()[0]
        assert not url.startswith("http://127.0.0.1:0/")  # the port it listens on, said
        # Said once listening: the page answers at once.
        page = httpx.get(f"{url}first/", timeout=300)
        assert "first-1.0-py3-none-any.whl" in page.text
        process.send_signal(signal.SIGINT)
        result = finish(process, out, err)
    assert result.returncode == 0, result.describe()
    assert "error:" not in result.stderr
    assert "Traceback" not in result.stderr
