"""Registries that need something first: each refusal ends the run with one actionable line.

The refusals are replayed in front of the real registry (see
tests/registry_refusals.py); the CLI runs as a subprocess, as a user runs it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import CliResult, cli_env, run_cli
from fault_proxy import FaultProxy
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from registry_refusals import (
    denied,
    ecr_missing_repository,
    harbor_missing_project,
    quay_artifact_type_refused,
)
from registry_server import RegistryServer, TokenServer

from oci_pypi_sync.errors import (
    AuthenticationError,
    RegistryError,
    RepositoryMissingError,
    TargetRefusedError,
)
from oci_pypi_sync.stores.refusals import Refusal, push_refusal

pytestmark = pytest.mark.registry

EXIT_FATAL = 3
EXIT_USAGE = 2


@pytest.fixture(scope="module")
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("alpha", make_wheel("alpha", "1.0"), make_sdist("alpha", "1.0"))
    with serve_index(fixture) as served:
        yield served


def sync_through(proxy: FaultProxy, prefix: str, index: FixtureIndex, home: Path) -> CliResult:
    target = f"{proxy.host}/{prefix}"
    args = ["sync", "alpha", "--to", target, "--index-url", index.url, "--no-progress"]
    return run_cli([*args, "--no-state", "--retries", "1"], cli_env(home))


def one_error(result: CliResult) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.describe()
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_missing_repository_names_what_to_create(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    with FaultProxy(registry.url, [ecr_missing_repository("ecr/alpha")]) as proxy:
        result = sync_through(proxy, "ecr", index, tmp_path)
    assert result.returncode == EXIT_FATAL, result.describe()
    line = one_error(result)
    assert "NAME_UNKNOWN" in line
    assert "the repository ecr/alpha does not exist" in line
    assert "create it (or enable create-on-push), then run again" in line


def test_a_missing_harbor_project_names_the_project(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    tokens = TokenServer()
    tokens.start()
    try:
        rule = harbor_missing_project("team/alpha", tokens.realm)
        with FaultProxy(registry.url, [rule]) as proxy:
            result = sync_through(proxy, "team", index, tmp_path)
    finally:
        tokens.stop()
    assert result.returncode == EXIT_FATAL, result.describe()
    line = one_error(result)
    assert "unauthorized to access repository: team/alpha, action: push" in line
    assert "create the project 'team'" in line
    assert [r for r in tokens.requests if r[0] == "GET"], "the client asked for a token first"


def test_a_denied_push_says_what_to_check(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    with FaultProxy(registry.url, [denied("hub/alpha")]) as proxy:
        result = sync_through(proxy, "hub", index, tmp_path)
    assert result.returncode == EXIT_FATAL, result.describe()
    line = one_error(result)
    assert "DENIED" in line
    assert "may not push to hub/alpha" in line


def test_an_artifact_type_outside_quays_allow_list_says_what_to_allow(
    registry: RegistryServer, index: FixtureIndex, tmp_path: Path
) -> None:
    with FaultProxy(registry.url, [quay_artifact_type_refused("quay/alpha")]) as proxy:
        result = sync_through(proxy, "quay", index, tmp_path)
        manifest_puts = proxy.seen("PUT", "/manifests/")
    assert result.returncode == EXIT_FATAL, result.describe()
    line = one_error(result)
    assert "MANIFEST_INVALID" in line
    assert "ALLOWED_OCI_ARTIFACT_TYPES" in line
    assert len(manifest_puts) <= 2  # the run stopped at the first refusal (two files in flight)


@pytest.mark.parametrize(
    "target",
    ["registry-1.docker.io/team/pypi", "docker.io", "index.docker.io/a/b/c"],
)
def test_a_docker_hub_target_of_another_shape_is_refused_before_any_request(
    target: str, tmp_path: Path
) -> None:
    result = run_cli(["sync", "alpha", "--to", target, "--dry-run"], cli_env(tmp_path))
    assert result.returncode == EXIT_USAGE, result.describe()
    # a usage error, one line like every other bad target
    [line] = result.stderr.splitlines()
    assert line.startswith("error: target")
    assert "Docker Hub repositories have two path components, NAMESPACE/NAME" in line


# --- the advice for hosted registries (pure) ------------------------------------------------


@pytest.mark.parametrize(
    ("host", "repository", "expected"),
    [
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "pypi/six", "aws ecr create-repository"),
        ("europe-docker.pkg.dev", "proj/repo/six", "create 'repo'"),
        ("registry.example.test", "pypi/six", "create it (or enable create-on-push)"),
    ],
)
def test_name_unknown_on_push_names_the_registry_specific_step(
    host: str, repository: str, expected: str
) -> None:
    advice = push_refusal(
        host, repository, "upload of blob", Refusal(404, "NAME_UNKNOWN", "repository unknown")
    )
    assert advice is not None
    assert advice.error is RepositoryMissingError
    assert expected in advice.hint


def test_denied_on_docker_hub_explains_the_two_components() -> None:
    refusal = Refusal(403, "DENIED", "requested access to the resource is denied")
    advice = push_refusal("registry-1.docker.io", "team/pypi/six", "upload of blob", refusal)
    assert advice is not None
    assert "NAMESPACE/NAME" in advice.hint


def test_other_refusals_get_no_advice() -> None:
    assert push_refusal("r.test", "a/b", "manifest", Refusal(400, "MANIFEST_BLOB_UNKNOWN")) is None
    assert push_refusal("r.test", "a/b", "manifest", Refusal(400, "MANIFEST_INVALID", "x")) is None
    assert push_refusal("r.test", "a/b", "blob", Refusal(500, None)) is None


def test_refusal_errors_stop_a_run() -> None:
    assert issubclass(RepositoryMissingError, TargetRefusedError)
    assert issubclass(TargetRefusedError, RegistryError)
    assert not issubclass(TargetRefusedError, AuthenticationError)
