"""Running ``oci-pypi`` as a real subprocess, and reading back what it left in a registry.

The CLI runs as ``python -m oci_pypi_sync`` with an environment of its own
(no proxies, no credentials, state under the test's directory), so a test
can kill it like any other process. The registry readers speak the
Distribution API directly, independent of the code under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MANIFEST_ACCEPT = f"{OCI_INDEX}, {OCI_MANIFEST}"


def cli_env(home: Path) -> dict[str, str]:
    """An environment for the CLI, nothing of the caller's configuration; ``home`` is its cwd."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OCI_PYPI_", "PIP_"))
        and key.lower() not in {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    }
    env.update(
        HOME=str(home),
        XDG_STATE_HOME=str(home / "state"),
        XDG_CONFIG_HOME=str(home / "config"),
        DOCKER_CONFIG=str(home / "docker"),
        NO_PROXY="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "oci_pypi_sync", *args]


@dataclass(frozen=True)
class CliResult:
    """A finished CLI run: exit code, output, wall time in seconds."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        return json.loads(self.stdout)

    def describe(self) -> str:
        return (
            f"exit {self.returncode} after {self.seconds:.2f}s\n"
            f"stdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"
        )


def run_cli(args: Sequence[str], env: dict[str, str], *, timeout: float = 600.0) -> CliResult:
    """Run the CLI to completion (killed, and the test failed, after ``timeout``)."""
    start = time.monotonic()
    completed = subprocess.run(
        cli_command(*args),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=env["HOME"],
        check=False,
    )
    return CliResult(
        completed.returncode, completed.stdout, completed.stderr, time.monotonic() - start
    )


@contextmanager
def cli_process(
    args: Sequence[str], env: dict[str, str], *, stdout: Path, stderr: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start the CLI in the background, its output in files; it is killed if still running."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            cli_command(*args),
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=env["HOME"],
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def finish(
    process: subprocess.Popen[bytes], stdout: Path, stderr: Path, *, timeout: float = 600.0
) -> CliResult:
    """Wait for a background CLI run and collect its output."""
    start = time.monotonic()
    try:
        returncode = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        raise
    return CliResult(
        returncode,
        stdout.read_text(errors="replace"),
        stderr.read_text(errors="replace"),
        time.monotonic() - start,
    )


def wait_for(condition: Any, *, timeout: float, what: str, interval: float = 0.005) -> None:
    """Poll ``condition()`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --- reading a registry --------------------------------------------------------------


def repositories(base_url: str, prefix: str) -> list[str]:
    """Repositories under ``prefix/`` from ``/v2/_catalog``, without the prefix."""
    names: list[str] = []
    url: str | None = f"{base_url}/v2/_catalog?n=1000"
    while url is not None:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
        names += response.json().get("repositories") or []
        link = response.headers.get("Link")
        url = f"{base_url}{link.split(';')[0].strip('<> ')}" if link else None
    return sorted(n[len(prefix) + 1 :] for n in names if n.startswith(prefix + "/"))


def tags(base_url: str, name: str) -> list[str]:
    response = httpx.get(f"{base_url}/v2/{name}/tags/list", timeout=10)
    response.raise_for_status()
    return sorted(response.json().get("tags") or [])


def get_manifest(base_url: str, name: str, reference: str) -> tuple[str, bytes]:
    """(digest, body) of a manifest; the digest is checked against the body."""
    response = httpx.get(
        f"{base_url}/v2/{name}/manifests/{reference}",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=10,
    )
    response.raise_for_status()
    digest = "sha256:" + hashlib.sha256(response.content).hexdigest()
    header = response.headers.get("Docker-Content-Digest")
    assert header == digest, f"{name}:{reference} is served as {header} but hashes to {digest}"
    return digest, response.content


def tag_digests(base_url: str, prefix: str) -> dict[tuple[str, str], str]:
    """Every project (repository, tag) under ``prefix`` and the digest its tag points at.

    The catalog repository is left out: its parts depend on how the work was
    split (shards, deltas of concurrent writers), while the projects' tags must not.
    """
    result: dict[tuple[str, str], str] = {}
    for repo in repositories(base_url, prefix):
        if repo == CATALOG_REPOSITORY:
            continue
        for tag in tags(base_url, f"{prefix}/{repo}"):
            result[repo, tag] = get_manifest(base_url, f"{prefix}/{repo}", tag)[0]
    return result


def check_children(base_url: str, name: str, tag: str) -> int:
    """Fetch every manifest and blob a tag's index reaches, checking each digest.

    Returns how many blobs (configs and layers) were fetched and checked.
    """
    _, body = get_manifest(base_url, name, tag)
    index = json.loads(body)
    assert index["mediaType"] == OCI_INDEX, f"{name}:{tag} is not an OCI index"
    checked = 0
    with httpx.Client(timeout=30) as client:
        for child in index["manifests"]:
            digest, manifest_body = get_manifest(base_url, name, child["digest"])
            assert digest == child["digest"]
            assert len(manifest_body) == child["size"]
            manifest = json.loads(manifest_body)
            for blob in [manifest["config"], *manifest["layers"]]:
                head = client.head(f"{base_url}/v2/{name}/blobs/{blob['digest']}")
                assert head.status_code == 200, f"{name}@{blob['digest']}: HEAD {head.status_code}"
                response = client.get(f"{base_url}/v2/{name}/blobs/{blob['digest']}")
                assert response.status_code == 200, f"{name}@{blob['digest']}: GET"
                actual = "sha256:" + hashlib.sha256(response.content).hexdigest()
                assert actual == blob["digest"], f"{name}@{blob['digest']} hashes to {actual}"
                assert len(response.content) == blob["size"]
                checked += 1
    return checked
