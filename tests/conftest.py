"""Shared fixtures: a real Distribution registry started once per test session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from registry_server import INSTALL_HINT, RegistryServer, registry_binary, running_registry


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
