"""Parsing targets, and deciding loopback (plain HTTP by default) on addresses, not names."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.stores.targets import (
    LayoutTarget,
    RegistryTarget,
    Resolver,
    is_loopback_host,
    parse_target,
)


def resolver(table: dict[str, list[str]]) -> Resolver:
    def resolve(name: str) -> Iterable[str]:
        return table.get(name, [])

    return resolve


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost:5000", True),
        ("LOCALHOST", True),
        ("127.0.0.1:5000", True),
        ("127.4.5.6", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry.example.test:443", False),
        ("[2001:db8::1]:5000", False),
        # a name that looks like a loopback address is a name: it does not resolve here
        ("127.mirror.example", False),
        ("127.0.0.1.nip.example:5000", False),
    ],
)
def test_loopback_is_decided_on_addresses(host: str, expected: bool) -> None:
    assert is_loopback_host(host) is expected


def test_a_name_is_loopback_only_when_every_address_it_resolves_to_is() -> None:
    table = {
        "127.mirror.example": ["203.0.113.7"],
        "inside.example": ["127.0.0.1", "::1"],
        "split.example": ["127.0.0.1", "198.51.100.1"],
    }
    resolve = resolver(table)
    assert is_loopback_host("127.mirror.example:5000", resolve=resolve) is False
    assert is_loopback_host("inside.example:5000", resolve=resolve) is True
    assert is_loopback_host("split.example", resolve=resolve) is False
    assert is_loopback_host("unknown.example", resolve=resolve) is False


def test_a_127_prefixed_name_gets_https() -> None:
    target = parse_target("127.mirror.example:5000/pypi")
    assert target == RegistryTarget("127.mirror.example:5000", "pypi", plain_http=False)
    assert parse_target("127.0.0.1:5000/pypi") == RegistryTarget("127.0.0.1:5000", "pypi", True)
    assert parse_target("localhost:5000/pypi") == RegistryTarget("localhost:5000", "pypi", True)
    assert parse_target("oci:m") == LayoutTarget(Path("m"))


@pytest.mark.parametrize(
    "value",
    ["https://u:pw@registry.test/p", "u:pw@registry.test/p", "registry.test@evil.test/p"],
)
def test_a_target_with_user_info_is_refused(value: str) -> None:
    with pytest.raises(UsageError, match=r"has credentials in it") as caught:
        parse_target(value)
    assert "pw" not in str(caught.value)
    assert "u:" not in str(caught.value)
