"""The command line as a user meets it: exit codes, messages, JSON, quiet logs off a terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index

from oci_pypi_sync import format as fmt


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    with serve_index(fixture):
        yield fixture


def oci_pypi(
    *args: str, cwd: Path, index: FixtureIndex | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    if index is not None:
        env["OCI_PYPI_INDEX_URL"] = index.url
    env["XDG_STATE_HOME"] = str(cwd / "state-home")
    return subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_default_target_is_a_layout_in_the_current_directory(
    index: FixtureIndex, tmp_path: Path
) -> None:
    result = oci_pypi("sync", "tool", "--json", cwd=tmp_path, index=index)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["totals"]["pushed"] == 2
    assert {f["action"] for f in report["files"]} == {"pushed"}
    assert all(
        set(f) >= {"project", "version", "filename", "sha256", "size", "action"}
        for f in report["files"]
    )
    assert (tmp_path / "oci-pypi-mirror" / "oci-layout").is_file()
    # Off a terminal: no control characters, a line per phase, one summary line.
    assert "\x1b" not in result.stderr
    reading, planned, summary_line = result.stderr.strip().splitlines()
    assert reading.endswith(" INFO reading the index: 1 projects")
    assert re.search(r" INFO sync: 2 files, \d+\.\d KiB planned into oci:oci-pypi-mirror$", planned)
    assert summary_line.startswith("oci:oci-pypi-mirror: 2 pushed (")
    assert summary_line.endswith("), 0 present on the target, 1 releases tagged")

    again = oci_pypi("sync", "tool", "--json", cwd=tmp_path, index=index)
    assert again.returncode == 0
    assert json.loads(again.stdout)["totals"]["pushed"] == 0

    status = oci_pypi("status", "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    totals = json.loads(status.stdout)["totals"]
    assert totals["files_done"] == 2
    assert totals["files_failed"] == 0


def test_verbose_logs_are_plain_timestamped_lines(index: FixtureIndex, tmp_path: Path) -> None:
    result = oci_pypi("sync", "tool", "-v", cwd=tmp_path, index=index)
    assert result.returncode == 0
    lines = result.stderr.strip().splitlines()
    assert any(" INFO pushed tool-1.0.tar.gz" in line for line in lines)
    assert all(line[:4].isdigit() for line in lines[:-1])  # ISO timestamps first
    assert "\x1b" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sync", "tool["], "invalid requirement 'tool['"),
        (["sync", "tool", "--to", "not a target"], "target 'not a target'"),
        (["sync", "tool", "--to", "example.com/UPPER"], "'UPPER'"),
        (["sync", "tool", "--shard", "4/4"], "shard '4/4'"),
        (["sync", "tool", "--jobs", "0"], "--jobs"),
    ],
)
def test_usage_errors_exit_2_naming_the_culprit(
    args: list[str], message: str, index: FixtureIndex, tmp_path: Path
) -> None:
    result = oci_pypi(*args, cwd=tmp_path, index=index)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "oci-pypi-mirror").exists()


def test_unknown_project_is_named_and_exits_1(index: FixtureIndex, tmp_path: Path) -> None:
    result = oci_pypi("sync", "tool", "no-such-thing", "--json", cwd=tmp_path, index=index)
    assert result.returncode == 1
    assert "no-such-thing" in result.stderr
    report = json.loads(result.stdout)
    assert [e["project"] for e in report["errors"]] == ["no-such-thing"]
    assert report["totals"]["pushed"] == 2  # the other project still landed


def test_unreachable_registry_exits_3_in_one_line(index: FixtureIndex, tmp_path: Path) -> None:
    result = oci_pypi(
        "sync", "tool", "--to", "127.0.0.1:1/pypi", "--retries", "0", cwd=tmp_path, index=index
    )
    assert result.returncode == 3
    *phases, error = result.stderr.strip().splitlines()
    assert error == "error: cannot reach registry 127.0.0.1:1: connection refused"
    # The target is asked first (is the state file this target's?), before the index.
    assert phases == []


def test_unreachable_index_exits_3(tmp_path: Path) -> None:
    env_index = FixtureIndex(url="http://127.0.0.1:1/simple/")
    result = oci_pypi("sync", "tool", "--retries", "0", cwd=tmp_path, index=env_index)
    assert result.returncode == 3
    assert "cannot reach the index at 127.0.0.1" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2


def test_dry_run_writes_nothing(index: FixtureIndex, tmp_path: Path) -> None:
    result = oci_pypi("sync", "tool", "--dry-run", "--json", cwd=tmp_path, index=index)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert {f["action"] for f in report["files"]} == {"planned"}
    assert report["totals"]["bytes_planned"] == sum(f["size"] for f in report["files"])
    assert not (tmp_path / "oci-pypi-mirror").exists()
    assert not (tmp_path / "state-home").exists()


def test_ls_copy_and_verify_round_trip(index: FixtureIndex, tmp_path: Path) -> None:
    assert oci_pypi("sync", "tool", cwd=tmp_path, index=index).returncode == 0
    listing = oci_pypi("ls", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout) == {
        "source": "catalog",
        "projects": [{"name": "tool", "versions": 1}],
    }
    releases = json.loads(oci_pypi("ls", "Tool", "--json", cwd=tmp_path).stdout)
    assert [r["version"] for r in releases] == ["1.0"]
    assert sorted(f["filename"] for f in releases[0]["files"]) == [
        "tool-1.0-py3-none-any.whl",
        "tool-1.0.tar.gz",
    ]
    assert oci_pypi("ls", "absent", cwd=tmp_path).returncode == 1

    packed = oci_pypi("copy", "oci:oci-pypi-mirror", "oci:carry.tar", "--json", cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    assert json.loads(packed.stdout)["ok"] is True
    unpacked = oci_pypi("copy", "oci:carry.tar", "oci:inside", cwd=tmp_path)
    assert unpacked.returncode == 0, unpacked.stderr
    original = json.loads((tmp_path / "oci-pypi-mirror" / "index.json").read_bytes())
    copied = json.loads((tmp_path / "inside" / "index.json").read_bytes())
    # Everything but the target's identity, which stays with the target it names.
    identity = "oci-pypi.catalog/identity"
    assert copied["manifests"] == [
        m for m in original["manifests"] if m["annotations"][fmt.REF_NAME] != identity
    ]

    verified = oci_pypi("verify", "oci:inside", "--json", cwd=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    wheel_digest = releases[0]["files"][0]
    assert wheel_digest["filename"] == "tool-1.0-py3-none-any.whl"
    sha256 = index.files_by_name()["tool-1.0-py3-none-any.whl"].sha256
    (tmp_path / "inside" / "blobs" / "sha256" / sha256).unlink()
    damaged = oci_pypi("verify", "oci:inside", "--json", cwd=tmp_path)
    assert damaged.returncode == 1
    findings = json.loads(damaged.stdout)["findings"]
    assert [(f["kind"], f["digest"]) for f in findings] == [("missing-blob", f"sha256:{sha256}")]
    mended = oci_pypi("verify", "oci:inside", "--repair", "--json", cwd=tmp_path, index=index)
    assert mended.returncode == 0, mended.stdout + mended.stderr
    assert (tmp_path / "inside" / "blobs" / "sha256" / sha256).is_file()


def test_shards_come_from_the_job_engine_index() -> None:
    from oci_pypi_sync.errors import UsageError
    from oci_pypi_sync.plan.shard import Shard, shard_from_environment

    assert shard_from_environment(4, {"JOB_COMPLETION_INDEX": "3"}) == Shard(3, 4)
    assert shard_from_environment(4, {"CI_NODE_INDEX": "1"}) == Shard(0, 4)  # 1-based
    with pytest.raises(UsageError, match="JOB_COMPLETION_INDEX"):
        shard_from_environment(4, {})
    with pytest.raises(UsageError, match="not below --shards 4"):
        shard_from_environment(4, {"JOB_COMPLETION_INDEX": "4"})


def test_shards_flag_picks_up_the_indexed_job(index: FixtureIndex, tmp_path: Path) -> None:
    index.add("other", make_wheel("other", "1.0"))
    env_index = {"JOB_COMPLETION_INDEX": "0"}
    reports = []
    for k in ("0", "1"):
        env_index["JOB_COMPLETION_INDEX"] = k
        result = subprocess.run(
            [
                *(sys.executable, "-m", "oci_pypi_sync", "sync", "tool", "other"),
                *("--shards", "2", "--dry-run", "--json", "--index-url", index.url),
            ],
            cwd=tmp_path,
            env={**os.environ, **env_index},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        reports.append({f["project"] for f in json.loads(result.stdout)["files"]})
    assert reports[0].isdisjoint(reports[1])
    assert reports[0] | reports[1] == {"tool", "other"}


def test_dry_run_prints_a_plan_table(index: FixtureIndex, tmp_path: Path) -> None:
    result = oci_pypi("sync", "tool", "--dry-run", cwd=tmp_path, index=index)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["project", "version", "files", "size"]
    assert lines[2].split()[:3] == ["tool", "1.0", "2"]
    assert lines[-1].split()[:5] == ["1", "projects", "1", "versions", "2"]
    assert not (tmp_path / "oci-pypi-mirror").exists()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(shell: str, tmp_path: Path) -> None:
    result = oci_pypi("completion", shell, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "_OCI_PYPI_COMPLETE" in result.stdout
    assert f"{shell}_complete" in result.stdout


def test_completion_completes_commands_and_options(tmp_path: Path) -> None:
    env = {**os.environ, "_OCI_PYPI_COMPLETE": "bash_complete"}
    env.update(COMP_WORDS="oci-pypi sync --only-b", COMP_CWORD="2")
    result = subprocess.run(
        [sys.executable, "-m", "oci_pypi_sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert "--only-binary" in result.stdout


def test_version_and_help_examples(tmp_path: Path) -> None:
    from oci_pypi_sync import __version__

    assert oci_pypi("--version", cwd=tmp_path).stdout.strip() == f"oci-pypi, version {__version__}"
    for command in ("sync", "serve", "copy", "verify", "ls", "status", "completion"):
        text = oci_pypi(command, "--help", cwd=tmp_path).stdout
        assert "Examples:" in text, command


def test_login_sync_logout_against_an_htpasswd_registry(
    index: FixtureIndex, tmp_path: Path
) -> None:
    from registry_server import running_registry

    secret = "s3cret-Pa55"
    docker = tmp_path / "docker"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    env = {**base, "DOCKER_CONFIG": str(docker), "XDG_STATE_HOME": str(tmp_path / "state")}

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "oci_pypi_sync", *args],
            input=stdin,
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    with running_registry(tmp_path / "registry", htpasswd={"alice": secret}) as registry:
        wrong = cli("login", registry.host, "-u", "alice", "--password-stdin", stdin="nope\n")
        assert wrong.returncode == 3
        assert "alice" in wrong.stderr
        assert "nope" not in wrong.stderr + wrong.stdout
        assert not (docker / "config.json").exists()

        ok = cli("login", registry.host, "-u", "alice", "--password-stdin", stdin=secret + "\n")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("Login Succeeded")
        assert secret not in ok.stdout + ok.stderr
        assert registry.host in json.loads((docker / "config.json").read_text())["auths"]

        synced = cli("sync", "tool", "--to", f"{registry.host}/auth", "--index-url", index.url)
        assert synced.returncode == 0, synced.stderr

        assert cli("logout", registry.host).stdout.strip() == (
            f"Removed login credentials for {registry.host}"
        )
        refused = cli(
            "sync", "tool", "--to", f"{registry.host}/auth", "--index-url", index.url, "--recheck"
        )
        assert refused.returncode == 3
        assert "no credentials are configured" in refused.stderr

        explicit = cli(
            *("sync", "tool", "--to", f"{registry.host}/auth2", "--index-url", index.url),
            *("-u", "alice", "--password-stdin"),
            stdin=secret,
        )
        assert explicit.returncode == 0, explicit.stderr


def test_a_sync_off_a_terminal_imports_no_display_code() -> None:
    # the rich display costs start-up time; the HTTP stack needs neither it nor httpx
    code = (
        "import sys, oci_pypi_sync.cli, oci_pypi_sync.cli.progress, "
        "oci_pypi_sync.stores.registry, oci_pypi_sync.index.client; "
        "print(sorted(m for m in ('pygments', 'rich', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
