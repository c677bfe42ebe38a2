"""Small things met on a first day: serve's log, ls without a mirror, a fresh copy's counts."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import tarfile
from pathlib import Path

import httpx
import pytest
from cli_helpers import cli_env, cli_process, finish, run_cli, wait_for
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("everyday")
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    fixture.add("tool", make_wheel("tool", "2.0"))
    with serve_index(fixture):
        result = run_cli(
            ["sync", "tool", "--to", f"oci:{home / 'mirror'}", "-i", fixture.url], cli_env(home)
        )
    assert result.returncode == 0, result.describe()
    return home / "mirror"


def served_url(err: Path) -> str:
    """The address ``serve`` says it serves on, once it says it."""
    wait_for(lambda: "serving" in err.read_text(), timeout=300, what="the server to start")
    return err.read_text().split(" on ", 1)[1].split()[0]


def test_serve_logs_each_request_once(mirror: Path, tmp_path: Path) -> None:
    args = ["serve", "--from", f"oci:{mirror}", "--port", "0"]
    out, err = tmp_path / "out", tmp_path / "err"
    with cli_process(args, cli_env(tmp_path), stdout=out, stderr=err) as process:
        url = served_url(err)
        page = httpx.get(f"{url}tool/", timeout=60)
        assert page.status_code == 200
        assert "tool-2.0-py3-none-any.whl" in page.text
        wait_for(lambda: "/simple/tool/" in err.read_text(), timeout=300, what="the log line")
        process.send_signal(signal.SIGINT)
        result = finish(process, out, err, timeout=300)
    lines = [line for line in result.stderr.splitlines() if "/simple/tool/" in line]
    assert len(lines) == 1, result.stderr


def test_serve_on_a_taken_port_is_one_line_before_anything_is_said(
    mirror: Path, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--from", f"oci:{mirror}", "--port", str(port)]
        result = run_cli(args, cli_env(tmp_path), timeout=300)
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1 port {port}: Address already in use; "
        "choose another --port or --host"
    ]


@pytest.mark.parametrize(
    ("command", "how"),
    [
        (["ls"], "--from TARGET"),
        (["serve", "--port", "0"], "--from TARGET"),
        (["verify"], "a TARGET argument"),
    ],
)
@pytest.mark.parametrize("debris", [False, True])
def test_no_mirror_here_suggests_naming_one(
    tmp_path: Path, command: list[str], how: str, debris: bool
) -> None:
    default = tmp_path / "oci-pypi-mirror"
    if debris:  # what a sync that stopped before its first write leaves: a state file
        default.mkdir()
        (default / ".oci-pypi-state.sqlite").write_bytes(b"")
    result = run_cli(command, cli_env(tmp_path))
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        f"error: there is no mirror in ./oci-pypi-mirror (the default); name one with {how} "
        "(oci:PATH for a layout, HOST[:PORT]/PREFIX for a registry)"
    ]
    # Nothing created or changed by looking.
    if debris:
        assert sorted(p.name for p in default.iterdir()) == [".oci-pypi-state.sqlite"]
    else:
        assert not default.exists()


@pytest.mark.parametrize("name", ["copy.tar", "copy"])
def test_a_fresh_copy_says_nothing_was_already_there(
    mirror: Path, tmp_path: Path, name: str
) -> None:
    destination = tmp_path / name
    result = run_cli(["copy", f"oci:{mirror}", f"oci:{destination}", "--json"], cli_env(tmp_path))
    assert result.returncode == 0, result.describe()
    report = result.json()
    assert report["blobs_present"] == 0
    # The destination holds every blob of the source, each under its digest.
    if name.endswith(".tar"):
        with tarfile.open(destination) as tar:
            blobs = {
                m.name.rsplit("/", 1)[1]: hashlib.sha256(tar.extractfile(m).read()).hexdigest()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile() and "blobs/sha256/" in m.name
            }
    else:
        blobs = {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (destination / "blobs" / "sha256").iterdir()
        }
    assert all(name == digest for name, digest in blobs.items())
    assert report["blobs_copied"] > 0
    # Every blob but the manifest of the source's identity, which stays with its target.
    refs = json.loads((mirror / "index.json").read_bytes())["manifests"]
    identity = {
        m["digest"].split(":")[1]
        for m in refs
        if m["annotations"]["org.opencontainers.image.ref.name"] == "oci-pypi.catalog/identity"
    }
    source = {p.name for p in (mirror / "blobs" / "sha256").iterdir()}
    assert set(blobs) == source - identity
    # A second copy finds every blob there.
    again = run_cli(["copy", f"oci:{mirror}", f"oci:{destination}", "--json"], cli_env(tmp_path))
    assert again.returncode == 0, again.describe()
    assert json.loads(again.stdout)["blobs_copied"] == 0
