"""Where the index is: found the way pip finds it, and printed without secrets.

A mirror should read the same index the user's pip reads, so the URL comes
from, in order: ``--index-url`` or ``OCI_PYPI_INDEX_URL`` (which must agree
with a requirements file's ``--index-url`` when there is one), the
requirements file's, ``PIP_INDEX_URL``, pip's configuration files, and
finally pip's own default (read from the pip installed beside us rather
than written down here).
"""

from __future__ import annotations

import configparser
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.redact import redact_url

#: pip reads ``[global]`` first, then the command's own section; we act like
#: ``pip install``/``pip download``, later sections overriding earlier ones.
_SECTIONS = ("global", "install", "download")
_KEY = "index-url"


@dataclass(frozen=True, slots=True)
class IndexLocation:
    """The index URL (ending in ``/``) and where it came from, for messages."""

    url: str
    source: str


def _with_slash(url: str, source: str) -> IndexLocation:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise UsageError(f"the index URL {redact_url(url)!r} from {source} is not an http(s) URL")
    return IndexLocation(url=url if url.endswith("/") else url + "/", source=source)


def _xdg_dirs(environ: Mapping[str, str], variable: str, default: str) -> list[str]:
    value = environ.get(variable, "").strip()
    return [d for d in value.split(os.pathsep) if d] if value else [default]


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or Path.home())


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files on POSIX, lowest precedence first.

    Global (``$XDG_CONFIG_DIRS/pip/pip.conf``, ``/etc/pip.conf``), then user
    (``~/.pip/pip.conf``, ``$XDG_CONFIG_HOME/pip/pip.conf``; skipped when
    ``PIP_CONFIG_FILE`` names an existing file), then site
    (``sys.prefix/pip.conf``), then ``PIP_CONFIG_FILE``. pip skips them all
    when ``PIP_CONFIG_FILE`` is the null device.
    """
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = _home(environ)
    global_dirs = [Path(d) / "pip" for d in _xdg_dirs(environ, "XDG_CONFIG_DIRS", "/etc/xdg")] + [
        Path("/etc")
    ]
    files = [d / "pip.conf" for d in global_dirs]
    if not (env_file and Path(env_file).exists()):
        config_home = environ.get("XDG_CONFIG_HOME", "").strip() or str(home / ".config")
        files += [home / ".pip" / "pip.conf", Path(config_home) / "pip" / "pip.conf"]
    files.append(Path(sys.prefix) / "pip.conf")
    if env_file:
        files.append(Path(env_file))
    return files


def _read_config(path: Path) -> Iterator[tuple[str, str, str]]:
    """``(section, normalised key, value)`` triples of one pip configuration file."""
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the pip configuration file {path}: {exc}") from None
    for section in parser.sections():
        for key, value in parser.items(section):
            yield section, key.lower().replace("_", "-").removeprefix("--"), value


def index_url_from_pip_config(environ: Mapping[str, str]) -> IndexLocation | None:
    """The ``index-url`` pip's configuration files give, merged in pip's precedence."""
    found: dict[str, tuple[str, Path]] = {}
    for path in pip_config_files(environ):
        if not path.is_file():
            continue
        for section, key, value in _read_config(path):
            if key == _KEY and section in _SECTIONS and value.strip():
                found[section] = (value, path)
    for section in reversed(_SECTIONS):
        if section in found:
            value, path = found[section]
            return _with_slash(value, f"pip config {path}")
    return None


def pip_default_index_url() -> str:
    """The index pip uses when nothing is configured, from pip itself."""
    try:
        from pip._internal.models.index import PyPI
    except ImportError:
        raise UsageError(
            "no index URL is configured and pip is not installed to say its default: "
            "pass --index-url"
        ) from None
    return str(PyPI.simple_url)


def resolve_index_url(
    cli_value: str | None,
    environ: Mapping[str, str] = os.environ,
    *,
    cli_source: str = "--index-url",
    requirements: IndexLocation | None = None,
) -> IndexLocation:
    """Find the index URL the way pip would, recording where it came from.

    ``cli_value`` is what this tool was given (``cli_source`` says how: the
    flag, ``OCI_PYPI_INDEX_URL``, a config file). ``requirements`` is the
    ``--index-url`` a requirements file names: as in pip, it wins over
    ``PIP_INDEX_URL``, pip's configuration and pip's default; an index given
    to this tool that differs from it is an error, since mirroring from the
    wrong index is how an internal name gets a public package.
    """
    given: IndexLocation | None = None
    if cli_value and cli_value.strip():
        given = _with_slash(cli_value, cli_source)
    elif environ.get("OCI_PYPI_INDEX_URL", "").strip():
        given = _with_slash(environ["OCI_PYPI_INDEX_URL"], "OCI_PYPI_INDEX_URL")
    if requirements is not None:
        wanted = _with_slash(requirements.url, requirements.source)
        if given is not None and given.url != wanted.url:
            raise UsageError(
                f"{wanted.source} names the index {redact_url(wanted.url)} but {given.source} "
                f"names {redact_url(given.url)}: a sync reads one index; remove one of them"
            )
        return wanted
    if given is not None:
        return given
    value = environ.get("PIP_INDEX_URL", "")
    if value.strip():
        return _with_slash(value, "PIP_INDEX_URL")
    from_config = index_url_from_pip_config(environ)
    if from_config is not None:
        return from_config
    return _with_slash(pip_default_index_url(), "pip default")
