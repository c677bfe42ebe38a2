"""Requirements files and PEP 751 lock files, read per target environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName as N

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.plan.environments import TargetEnvironment
from oci_pypi_sync.plan.inputs import (
    InputFileError,
    read_pylock,
    read_requirements_file,
    requirement_applies,
)

DATA = Path(__file__).parent / "data"
LINUX_311 = TargetEnvironment((3, 11), "manylinux_2_28_x86_64")
LINUX_312 = TargetEnvironment((3, 12), "manylinux_2_28_x86_64")
WIN_311 = TargetEnvironment((3, 11), "win_amd64")
WIN_312 = TargetEnvironment((3, 12), "win_amd64")


def _strs(reqs: tuple[Requirement, ...]) -> list[str]:
    return sorted(str(r) for r in reqs)


# --- requirements files ---------------------------------------------------------


def test_requirements_file_with_include_constraints_hashes_and_options() -> None:
    main = DATA / "requirements" / "main.txt"
    reqs = read_requirements_file(main)
    assert [str(r) for r in reqs.requirements] == [
        "numpy>=1.26",
        "six==1.16.0",
        "requests[socks]>=2.31",
        'colorama; sys_platform == "win32"',
        'uvloop>=0.19; sys_platform != "win32"',
        "Django>=4.2",
    ]
    assert [str(r) for r in reqs.constraints] == [
        "django<5.0",
        "Django!=4.2.1",
        'numpy<2; python_version < "3.12"',
        "urllib3==2.2.1",
    ]
    assert reqs.hashes == {
        "requests": frozenset(
            {
                "58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f",
                "942c5a758f98d790eaed1a29cb6eefc7ffb0d1cf7af05c3d2791656dbd6ad1e1",
            }
        ),
        "urllib3": frozenset({"450b20ec296a467077128bff42b73080516e71b56ff59a60a02bef2232c4fa9d"}),
    }
    assert reqs.index_url == "https://mirror.example.test/simple/"
    assert reqs.index_url_source == f"{main}:2"
    assert reqs.files == (
        main,
        main.parent / "sub" / "extra.txt",
        main.parent / "constraints.txt",
    )


def test_constraints_and_markers_per_environment() -> None:
    reqs = read_requirements_file(DATA / "requirements" / "main.txt")
    assert _strs(reqs.for_environments([LINUX_311])) == [
        "Django!=4.2.1,<5.0,>=4.2",
        "numpy<2,>=1.26",
        "requests[socks]>=2.31",
        "six==1.16.0",
        "uvloop>=0.19",
    ]
    assert _strs(reqs.for_environments([WIN_312])) == [
        "Django!=4.2.1,<5.0,>=4.2",
        "colorama",
        "numpy>=1.26",
        "requests[socks]>=2.31",
        "six==1.16.0",
    ]
    # Two targets: the union, each project once per distinct outcome.
    both = _strs(reqs.for_environments([LINUX_311, WIN_312]))
    assert "numpy<2,>=1.26" in both
    assert "numpy>=1.26" in both
    assert "colorama" in both
    assert "uvloop>=0.19" in both
    # No targets: every marker counts as true.
    assert _strs(reqs.for_environments()) == [
        "Django!=4.2.1,<5.0,>=4.2",
        "colorama",
        "numpy<2,>=1.26",
        "requests[socks]>=2.31",
        "six==1.16.0",
        "uvloop>=0.19",
    ]


def test_requirement_applies() -> None:
    req = Requirement('pywin32; sys_platform == "win32" and python_version >= "3.12"')
    assert requirement_applies(req, WIN_312)
    assert not requirement_applies(req, WIN_311)
    assert not requirement_applies(req, LINUX_312)
    assert requirement_applies(req, None)
    assert requirement_applies(Requirement("six"), LINUX_311)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("six\n-e ./src/pkg\n", 2, "editable requirements (-e) cannot be mirrored"),
        ("six\n\n--editable=git+https://host.test/x\n", 3, "editable requirements"),
        ("# c\nfoo @ https://host.test/foo-1.0.tar.gz\n", 2, "is a URL or local path"),
        ("https://host.test/foo-1.0-py3-none-any.whl\n", 1, "is a URL or local path"),
        ("./vendor/foo-1.0.tar.gz\n", 1, "is a URL or local path"),
        ("foo-1.0-py3-none-any.whl\n", 1, "is a URL or local path"),
        ("six\nnot a requirement!\n", 2, "invalid requirement 'not a requirement!'"),
        ("six --hash=md5:abc\n", 1, "--hash md5:... is not supported"),
        ("six --hash=sha256:xyz\n", 1, "is not 64 hex digits"),
        ("six --hash=sha256\n", 1, "is not ALGORITHM:DIGEST"),
        ("six\n-r\n", 2, "-r needs a value"),
        ("six\n-r missing.txt\n", 2, "cannot read requirements file"),
        ("-r https://host.test/reqs.txt\n", 1, "only local files are read"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path, "reqs.txt", text)
    with pytest.raises(InputFileError) as info:
        read_requirements_file(path)
    assert str(info.value).startswith(f"{path}:{line}: ")
    assert message in str(info.value)
    assert isinstance(info.value, UsageError)


def test_include_cycle_is_named(tmp_path: Path) -> None:
    a = _write(tmp_path, "a.txt", "six\n-r b.txt\n")
    b = _write(tmp_path, "b.txt", "--requirement=a.txt\n")
    with pytest.raises(InputFileError, match="includes itself") as info:
        read_requirements_file(a)
    assert f"{a.resolve()} -> {b.resolve()} -> {a.resolve()}" in str(info.value)


def test_same_file_included_twice_is_not_a_cycle(tmp_path: Path) -> None:
    _write(tmp_path, "common.txt", "six\n")
    top = _write(tmp_path, "top.txt", "-r common.txt\n-rcommon.txt\nattrs\n")
    reqs = read_requirements_file(top)
    assert [str(r) for r in reqs.requirements] == ["six", "six", "attrs"]


def test_continuations_comments_and_options_after_requirement(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "reqs.txt",
        "# header\n"
        "attrs \\\n"
        "  >=23 \\\n"
        '  ; python_version >= "3.8"  # trailing comment\n'
        "pkg[a,b]; os_name == 'posix'\n"
        "  \n"
        "six==1.16.0 --hash sha256:" + "A" * 64 + "\n",
    )
    reqs = read_requirements_file(path)
    assert [str(r) for r in reqs.requirements] == [
        'attrs>=23; python_version >= "3.8"',
        'pkg[a,b]; os_name == "posix"',
        "six==1.16.0",
    ]
    assert reqs.hashes == {"six": frozenset({"a" * 64})}


def test_extra_index_url_is_refused_with_the_safe_way(tmp_path: Path) -> None:
    path = _write(tmp_path, "reqs.txt", "six\n--extra-index-url https://extra.test/simple/\n")
    with pytest.raises(InputFileError) as info:
        read_requirements_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: --extra-index-url is not supported")
    assert "dependency confusion" in message
    assert "sync of its own" in message
    assert "--allow" in message


@pytest.mark.parametrize(
    ("line", "named", "hint"),
    [
        ("--pre", "pip option --pre", "pass --pre to oci-pypi sync"),
        ("--trusted-host index.test", "pip option --trusted-host", "SSL_CERT_FILE"),
        ("--find-links ./wheels", "pip option --find-links", "mirror from an index"),
        ("-f ./wheels", "pip option -f", "mirror from an index"),
        ("--no-binary :all:", "pip option --no-binary", "-r, -c, -i/--index-url, --hash"),
        ("--prefer-binary", "pip option --prefer-binary", "-r, -c, -i/--index-url, --hash"),
        ("--no-index", "pip option --no-index", "-r, -c, -i/--index-url, --hash"),
        ("six --config-settings=x=y", "pip option --config-settings", "it may hold"),
        ("six --global-option=x", "pip option --global-option", "it may hold"),
        ("--unknown-thing value", "unknown option --unknown-thing", "may hold -r, -c"),
    ],
)
def test_unsupported_pip_options_are_named_never_ignored(
    tmp_path: Path, line: str, named: str, hint: str
) -> None:
    path = _write(tmp_path, "reqs.txt", f"attrs\n{line}\n")
    with pytest.raises(InputFileError) as info:
        read_requirements_file(path)
    assert str(info.value).startswith(f"{path}:2: {named}")
    assert hint in str(info.value)


@pytest.mark.parametrize(
    "secret_line",
    [
        "API_TOKEN=supersecret123",
        '{"auths": {"registry.test": {"auth": "supersecret123"}}}',
        "machine index.test login me password supersecret123",
        "--password=supersecret123",
        "-psupersecret123",
        "six --hash=supersecret123",
        "six --hash=md5supersecret123:00",
        "six --hash=sha256:supersecret123",
        "./supersecret123",
        "https://index.test/supersecret123.whl",
        "supersecret123 @ https://index.test/x.whl",
        "six supersecret123",
    ],
)
def test_an_included_file_is_never_quoted(tmp_path: Path, secret_line: str) -> None:
    secret = _write(tmp_path, "credentials", f"# keys\n{secret_line}\n")
    top = _write(tmp_path, "reqs.txt", "six\n-r credentials\n")
    with pytest.raises(InputFileError) as info:
        read_requirements_file(top)
    message = str(info.value)
    assert message.startswith(f"{secret}:2: ")
    assert "supersecret123" not in message
    assert "supersecret" not in message
    # the same line in the top file (the user's own) is quoted, to help find it
    own = _write(tmp_path, "own.txt", f"{secret_line}\n")
    with pytest.raises(InputFileError) as own_info:
        read_requirements_file(own)
    if "--password" not in secret_line and "-p" not in secret_line:
        assert "supersecret" in str(own_info.value)


def test_an_included_binary_file_is_not_quoted(tmp_path: Path) -> None:
    (tmp_path / "key.bin").write_bytes(b"six\n\xffsupersecret123\n")
    top = _write(tmp_path, "reqs.txt", "-c key.bin\n")
    with pytest.raises(InputFileError) as info:
        read_requirements_file(top)
    assert str(info.value).startswith(f"{top}:1: {tmp_path / 'key.bin'} is not a requirements file")
    assert "supersecret" not in str(info.value)


def test_index_url_lines_must_agree(tmp_path: Path) -> None:
    _write(tmp_path, "inner.txt", "--index-url=https://other.test/simple/\n")
    top = _write(tmp_path, "reqs.txt", "-i https://inside.test/simple\n-r inner.txt\n")
    with pytest.raises(InputFileError, match="another index than") as info:
        read_requirements_file(top)
    assert str(info.value).startswith(f"{tmp_path / 'inner.txt'}:1: --index-url")
    same = _write(
        tmp_path,
        "same.txt",
        "-i https://inside.test/simple/\n--index-url=https://inside.test/simple\n",
    )
    assert read_requirements_file(same).index_url_source == f"{same}:1"


# --- pylock.toml --------------------------------------------------------------------------


def test_pylock_packages_files_and_versions() -> None:
    lock = read_pylock(DATA / "pylock.toml")
    assert lock.lock_version == "1.0"
    assert lock.created_by == "hand"
    assert str(lock.requires_python) == ">=3.11"
    assert [p.name for p in lock.packages] == ["certifi", "colorama", "numpy", "pytest", "tomli"]
    assert lock.versions[N("numpy")] == frozenset({"2.1.1"})
    assert lock.files[N("colorama")] == frozenset(
        {
            (
                "colorama-0.4.6-py2.py3-none-any.whl",  # taken from the URL
                "4f1d9991f5acc0ca119f9d443620b77f9d6b33703e51011c16baf57afb285fc6",
            )
        }
    )
    assert len(lock.files[N("numpy")]) == 4
    certifi = lock.packages[0]
    assert [(f.filename, f.is_wheel, f.size) for f in certifi.files] == [
        ("certifi-2024.8.30-py3-none-any.whl", True, 167321),
        ("certifi-2024.8.30.tar.gz", False, 168507),
    ]
    assert lock.warnings == ()


def test_pylock_per_environment() -> None:
    lock = read_pylock(DATA / "pylock.toml")
    assert _strs(lock.requirements([LINUX_312])) == [
        "certifi==2024.8.30",
        "numpy==2.1.1",
    ]
    assert _strs(lock.requirements([WIN_311])) == [
        "certifi==2024.8.30",
        "colorama==0.4.6",
        "numpy==2.1.1",
    ]
    # The dev group is installed only when asked for; tomli only below 3.11.
    assert "pytest==8.3.3" in _strs(lock.requirements([LINUX_312], groups=["dev"]))
    assert "tomli==2.0.1" in _strs(lock.requirements([TargetEnvironment((3, 10), "win_amd64")]))
    # Without targets, everything the lock names.
    assert len(lock.requirements()) == 5
    hashes = lock.hashes([LINUX_311])
    assert set(hashes) == {"certifi", "numpy"}
    assert len(hashes[N("numpy")]) == 4
    assert (
        "bec941d2aa8195e248a60b31ff9f0558284cf01a52591ceda73ea9afffd69fd9" in hashes[N("certifi")]
    )


_GOOD_PACKAGE = """
[[packages]]
name = "six"
version = "1.16.0"
wheels = [{ name = "six-1.16.0-py2.py3-none-any.whl", hashes = { sha256 = "%s" } }]
""" % ("a" * 64)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('lock-version = "2.0"\n', "lock-version '2.0' is not supported"),
        ("created-by = 'x'\n", "'lock-version' is missing"),
        ('lock-version = "1.0"\n[[packages]]\nversion = "1"\n', "packages[0]: 'name' is missing"),
        (
            'lock-version = "1.0"\n[[packages]]\nname = "six"\n'
            'wheels = [{ name = "six-1.0-py3-none-any.whl", hashes = { sha256 = "'
            + "a" * 64
            + '" } }]\n',
            "packages[0] (six): 'version' is missing",
        ),
        (
            'lock-version = "1.0"\n' + _GOOD_PACKAGE + '[[packages]]\nname = "mine"\n'
            'directory = { path = "." }\n',
            "packages[1] (mine): a directory source cannot be mirrored",
        ),
        (
            'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1.16.0"\n'
            'wheels = [{ name = "six-1.16.0-py3-none-any.whl", hashes = { md5 = "00" } }]\n',
            "packages[0] (six 1.16.0): wheels[0] (six-1.16.0-py3-none-any.whl): no sha256",
        ),
        (
            'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1.16.0"\n'
            'sdist = { name = "six-1.16.0.tar.gz" }\n',
            "packages[0] (six 1.16.0): sdist (six-1.16.0.tar.gz): 'hashes' is missing",
        ),
        (
            'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1.16.0"\n',
            "packages[0] (six 1.16.0): names no wheel and no sdist",
        ),
        (
            'lock-version = "1.0"\n[[packages]]\nname = "six"\nversion = "1"\nmarker = "os ="\n'
            'sdist = { name = "six-1.tar.gz", hashes = { sha256 = "' + "a" * 64 + '" } }\n',
            "packages[0] (six 1): invalid marker 'os ='",
        ),
        ("lock-version = \n", "not a TOML file"),
    ],
)
def test_pylock_errors_name_the_entry(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, "pylock.toml", text)
    with pytest.raises(InputFileError) as info:
        read_pylock(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_pylock_newer_minor_is_read_with_a_warning(tmp_path: Path) -> None:
    path = _write(tmp_path, "pylock.toml", 'lock-version = "1.3"\n' + _GOOD_PACKAGE)
    lock = read_pylock(path)
    assert lock.warnings == (f"{path}: lock-version '1.3' is newer than 1.0; read as 1.0",)
    assert lock.hashes() == {"six": frozenset({"a" * 64})}
