"""Shared fixtures: real Distribution registries (2.8.2, and v3 when present), once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from registry_server import (
    INSTALL_HINT,
    V3_HINT,
    RegistryServer,
    registry_binary,
    registry_v3_binary,
    running_registry,
)


def require_registry() -> None:
    """Fail loudly when docker-registry is missing, unless skipping was asked for."""
    if registry_binary() is not None:
        return
    message = f"docker-registry is not installed; install it with: {INSTALL_HINT}"
    if os.environ.get("OCI_PYPI_ALLOW_SKIP_REGISTRY") == "1":
        pytest.skip(message)
    pytest.fail(message)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry without auth, on 127.0.0.1, shared by the whole session."""
    require_registry()
    with running_registry(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="session")
def registry_v3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """Distribution v3 without auth, on 127.0.0.1; the test is skipped when it is absent."""
    if registry_v3_binary() is None:
        pytest.skip(V3_HINT)
    with running_registry(tmp_path_factory.mktemp("registry-v3"), v3=True) as server:
        yield server


@pytest.fixture(params=["distribution-2.8", "distribution-3"])
def any_registry(request: pytest.FixtureRequest) -> RegistryServer:
    """Each registry implementation in turn: Distribution 2.8.2, then v3."""
    name = "registry" if request.param == "distribution-2.8" else "registry_v3"
    server: RegistryServer = request.getfixturevalue(name)
    return server
