"""CredentialStore: explicit, environment, docker config, podman/skopeo auth files, helpers."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from oci_pypi_sync.errors import AuthenticationError
from oci_pypi_sync.stores.credentials import (
    Credentials,
    CredentialStore,
    containers_auth_paths,
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


def test_explicit_credentials_win_for_their_host_only(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"auths": {HOST: {"auth": basic("bob", "other")}}})
    given = Credentials(username="alice", password=SECRET)
    env = {"OCI_PYPI_REGISTRY_USERNAME": "ci", "OCI_PYPI_REGISTRY_PASSWORD": "ci-secret"}
    store = CredentialStore(
        environ=env, config_path=config, auth_files=(), explicit={f"https://{HOST}": given}
    )
    assert store.get(HOST) == given
    assert store.get("elsewhere.test") == Credentials(username="ci", password="ci-secret")


def test_inline_auths_entry_before_creds_store(tmp_path: Path) -> None:
    calls: list[str] = []

    def helper(name: str, host: str) -> Credentials | None:
        calls.append(host)
        return Credentials(username="from-store", password="store-secret")

    config = write_config(
        tmp_path,
        {
            "credsStore": "desktop",
            "auths": {HOST: {"auth": basic("alice", SECRET)}, "marker.test": {}},
        },
    )
    store = CredentialStore(environ={}, config_path=config, auth_files=(), run_helper=helper)
    assert store.get(HOST) == Credentials(username="alice", password=SECRET)
    # docker's empty marker entry means "ask the store".
    assert store.get("marker.test") == Credentials(username="from-store", password="store-secret")
    assert calls == ["marker.test"]


def test_keys_match_by_host_only(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "auths": {
                "https://legacy.test/v1/": {"auth": basic("legacy", "legacy-secret")},
                f"http://{HOST}/some/path": {"auth": basic("alice", SECRET)},
            }
        },
    )
    store = CredentialStore(environ={}, config_path=config, auth_files=())
    assert store.get(HOST) == Credentials(username="alice", password=SECRET)
    assert store.get("legacy.test") == Credentials(username="legacy", password="legacy-secret")
    assert store.get("registry.test") is None  # same name, no port: another registry


def test_containers_auth_paths() -> None:
    assert containers_auth_paths(
        {"REGISTRY_AUTH_FILE": "/x/auth.json", "XDG_RUNTIME_DIR": "/r"}
    ) == (Path("/x/auth.json"),)
    assert containers_auth_paths({"XDG_RUNTIME_DIR": "/run/user/7", "HOME": "/home/u"}) == (
        Path("/run/user/7/containers/auth.json"),
        Path("/home/u/.config/containers/auth.json"),
    )
    assert containers_auth_paths({"HOME": "/home/u"}) == (
        Path("/home/u/.config/containers/auth.json"),
    )


def test_auth_json_after_docker_config_with_its_own_helpers(
    tmp_path: Path, helper_dir: Path
) -> None:
    fake_helper(helper_dir, "podman", {"helped.test": {"Username": "carol", "Secret": SECRET}})
    docker = write_config(tmp_path / "docker", {"auths": {HOST: {"auth": basic("alice", SECRET)}}})
    runtime = tmp_path / "run" / "containers" / "auth.json"
    runtime.parent.mkdir(parents=True)
    runtime.write_text(
        json.dumps(
            {
                "auths": {
                    HOST: {"auth": basic("shadowed", "shadowed")},
                    "podman.test/team": {"auth": basic("dave", SECRET)},
                },
                "credHelpers": {"helped.test": "podman"},
            }
        )
    )
    home = tmp_path / "home" / ".config" / "containers" / "auth.json"
    home.parent.mkdir(parents=True)
    home.write_text(json.dumps({"auths": {"home.test": {"username": "erin", "password": SECRET}}}))
    store = CredentialStore(
        environ={"XDG_RUNTIME_DIR": str(tmp_path / "run"), "HOME": str(tmp_path / "home")},
        config_path=docker,
    )
    assert store.get(HOST) == Credentials(username="alice", password=SECRET)
    assert store.get("podman.test") == Credentials(username="dave", password=SECRET)
    assert store.get("helped.test") == Credentials(username="carol", password=SECRET)
    assert store.get("home.test") == Credentials(username="erin", password=SECRET)
    assert store.get("nowhere.test") is None
    assert SECRET not in repr(store)
    assert repr(store) == (
        f"CredentialStore(config_path={str(docker)!r}, "
        f"auth_files=[{str(runtime)!r}, {str(home)!r}])"
    )


def test_invalid_auth_json_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "auth.json"
    bad.write_text("[1,\n{")
    store = CredentialStore(environ={}, config_path=tmp_path / "none.json", auth_files=(bad,))
    with pytest.raises(AuthenticationError) as caught:
        store.get(HOST)
    assert str(caught.value) == f"containers auth file {bad} is not valid JSON (line 2)"
