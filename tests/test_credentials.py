"""CredentialStore: environment, docker config, credential helpers (fake ones on PATH)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from oci_pypi_sync.errors import AuthenticationError
from oci_pypi_sync.oci.credentials import (
    Credentials,
    CredentialStore,
    docker_config_path,
    normalize_registry_key,
    parse_helper_output,
)

HOST = "registry.test:5000"
SECRET = "pa55-w0rd-secret"


def write_config(directory: Path, config: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps(config))
    return path


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def helper_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on PATH holding fake ``docker-credential-*`` programs."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", f"{directory}:/usr/bin:/bin")
    return directory


def fake_helper(directory: Path, name: str, answers: dict[str, dict[str, str]]) -> Path:
    """A helper answering ``get`` for the hosts in ``answers``, like docker's do."""
    script = directory / f"docker-credential-{name}"
    cases = "".join(
        f"  {host}) echo '{json.dumps(answer)}' ;;\n" for host, answer in answers.items()
    )
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 2\n'
        "read host\n"
        'case "$host" in\n'
        f"{cases}"
        "  *) echo 'credentials not found in native keychain'; exit 1 ;;\n"
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_repr_hides_secrets() -> None:
    creds = Credentials(username="alice", password=SECRET)
    token = Credentials(identity_token=SECRET)
    for text in (repr(creds), str(creds), repr(token), f"{token}"):
        assert SECRET not in text
    assert repr(creds) == "Credentials(username='alice', password=***)"
    assert repr(token) == "Credentials(username=None, identity_token=***)"
    assert creds.has_basic is True
    assert token.has_basic is False


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("registry.test:5000", "registry.test:5000"),
        ("https://registry.test:5000", "registry.test:5000"),
        ("http://Registry.Test:5000/v1/", "registry.test:5000"),
        ("[::1]:5000", "[::1]:5000"),
    ],
)
def test_normalize_registry_key(key: str, expected: str) -> None:
    assert normalize_registry_key(key) == expected


def test_environment_wins_for_any_host(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {HOST: {"auth": basic("bob", "other")}}})
    store = CredentialStore(
        environ={"OCI_PYPI_REGISTRY_USERNAME": "ci", "OCI_PYPI_REGISTRY_PASSWORD": SECRET},
        config_path=config,
    )
    assert store.get(HOST) == Credentials(username="ci", password=SECRET)
    assert store.get("elsewhere.test") == Credentials(username="ci", password=SECRET)


@pytest.mark.parametrize("key", [HOST, f"https://{HOST}", f"https://{HOST}/v2/"])
def test_auths_entry_base64(tmp_path: Path, key: str) -> None:
    config = write_config(tmp_path, {"auths": {key: {"auth": basic("alice", SECRET)}}})
    store = CredentialStore(environ={}, config_path=config)
    assert store.get(HOST) == Credentials(username="alice", password=SECRET)
    assert store.get("other.test") is None


def test_auths_entry_username_password_and_identity_token(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "auths": {
                "a.test": {"username": "alice", "password": SECRET},
                "b.test": {"auth": basic("bob", ""), "identitytoken": "refresh-me"},
                "c.test": {},
            }
        },
    )
    store = CredentialStore(environ={}, config_path=config)
    assert store.get("a.test") == Credentials(username="alice", password=SECRET)
    assert store.get("b.test") == Credentials(username="bob", identity_token="refresh-me")
    assert store.get("c.test") is None


def test_docker_config_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "cfg", {"auths": {HOST: {"auth": basic("alice", SECRET)}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "cfg"))
    monkeypatch.delenv("OCI_PYPI_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("OCI_PYPI_REGISTRY_PASSWORD", raising=False)
    assert docker_config_path() == tmp_path / "cfg" / "config.json"
    assert CredentialStore().get(HOST) == Credentials(username="alice", password=SECRET)
    assert docker_config_path({"HOME": "x"}) == Path.home() / ".docker" / "config.json"


def test_missing_or_empty_config_means_anonymous(tmp_path: Path) -> None:
    assert CredentialStore(environ={}, config_path=tmp_path / "none.json").get(HOST) is None
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert CredentialStore(environ={}, config_path=empty).get(HOST) is None


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(AuthenticationError) as caught:
        CredentialStore(environ={}, config_path=bad).get(HOST)
    assert str(caught.value) == f"docker config {bad} is not valid JSON (line 1)"


def test_cred_helper_for_the_host(tmp_path: Path, helper_dir: Path) -> None:
    fake_helper(helper_dir, "test", {HOST: {"Username": "alice", "Secret": SECRET}})
    config = write_config(
        tmp_path,
        {
            "credHelpers": {f"https://{HOST}": "test"},
            "auths": {HOST: {"auth": basic("stale", "stale")}},
        },
    )
    store = CredentialStore(environ={}, config_path=config)
    assert store.get(HOST) == Credentials(username="alice", password=SECRET)


def test_creds_store_with_identity_token_and_fallback(tmp_path: Path, helper_dir: Path) -> None:
    fake_helper(helper_dir, "desktop", {HOST: {"Username": "<token>", "Secret": "refresh-me"}})
    config = write_config(
        tmp_path,
        {"credsStore": "desktop", "auths": {"inline.test": {"auth": basic("bob", SECRET)}}},
    )
    store = CredentialStore(environ={}, config_path=config)
    assert store.get(HOST) == Credentials(identity_token="refresh-me")
    # The store does not know inline.test: the inline entry is used.
    assert store.get("inline.test") == Credentials(username="bob", password=SECRET)
    assert store.get("unknown.test") is None


def test_missing_helper_names_it(tmp_path: Path, helper_dir: Path) -> None:
    config = write_config(tmp_path, {"credHelpers": {HOST: "absent"}})
    with pytest.raises(AuthenticationError) as caught:
        CredentialStore(environ={}, config_path=config).get(HOST)
    assert "'docker-credential-absent'" in str(caught.value)
    assert "not installed" in str(caught.value)


def test_lookups_are_cached(tmp_path: Path) -> None:
    calls: list[tuple[str, str]] = []

    def helper(name: str, host: str) -> Credentials | None:
        calls.append((name, host))
        return Credentials(username="u", password=SECRET)

    config = write_config(tmp_path, {"credsStore": "counting"})
    store = CredentialStore(environ={}, config_path=config, run_helper=helper)
    assert store.get(HOST) == store.get(f"https://{HOST}")
    assert calls == [("counting", HOST)]


def test_parse_helper_output() -> None:
    assert parse_helper_output('{"Username":"u","Secret":"s"}') == Credentials("u", "s")
    assert parse_helper_output('{"Username":"<token>","Secret":"t"}') == Credentials(
        identity_token="t"
    )
    assert parse_helper_output('{"Username":"u","Secret":""}') is None
    assert parse_helper_output("credentials not found") is None


def test_static_and_empty_stores() -> None:
    fixed = Credentials(username="alice", password=SECRET)
    assert CredentialStore.static(fixed).get("any.test") == fixed
    assert CredentialStore.empty().get("any.test") is None
    assert SECRET not in repr(CredentialStore.static(fixed))
