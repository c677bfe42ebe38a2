"""The config file (``--config FILE``, TOML) and the precedence of settings (pure).

A whole sync can be declared in a file, kept in version control and run
from cron or CI unchanged. Every setting has one name, the long CLI flag:
``only-binary`` is ``--only-binary`` on the command line, ``only-binary``
in the file's ``[sync]`` table and ``OCI_PYPI_ONLY_BINARY`` in the
environment. First match wins: the command line, the environment, the
config file, the default. Lists in environment variables are
comma-separated; booleans are ``1``/``true``/``yes``/``on`` or
``0``/``false``/``no``/``off``; an empty variable counts as unset.

The file holds one table per command; only ``[sync]`` exists so far, and
an unknown table or key is an error naming it, a value of the wrong type an
error naming the key and the type expected. Relative paths in the file
(``requirements-files``, ``pylock``, ``state``, an ``oci:`` target) are
relative to the file's directory.

How the ``sync`` command uses this::

    config = load_config(config_path) if config_path else None  # --config / OCI_PYPI_CONFIG
    settings = merge_settings(
        {"to": target, "index_url": index_url, "requirements": requirements,
         "requirement_files": requirement_files, "pylock": pylock,
         "python": python, "platform": platform, "pre": pre, ...},  # None: not given
        os.environ,
        config,
    )
    envs = settings.environments()
    options = settings.selection_options(hashes=...)  # from inputs.py

The keys of the first mapping are the field names of :class:`Settings`.
A value of ``None`` (or an empty list) means the flag was not given. The
``sync`` command's options are generated from :data:`KEYS`
(:mod:`oci_pypi_sync.cli.options`), which declares each setting's flag,
help text, bounds and default once.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

from packaging.utils import NormalizedName

from oci_pypi_sync import sizes
from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.plan.environments import (
    TargetEnvironment,
    environments,
    parse_environment,
    parse_platform,
    parse_python,
)
from oci_pypi_sync.plan.select import SelectionOptions, check_patterns, parse_requirements
from oci_pypi_sync.plan.shard import parse_shard
from oci_pypi_sync.provenance.policy import POLICIES
from oci_pypi_sync.provenance.publishers import parse_pins

Kind = Literal["str", "strs", "bool", "int", "number", "path", "paths", "location", "envs", "size"]
#: Kinds that hold several values: repeatable flags, comma-separated variables, arrays.
MANY: frozenset[Kind] = frozenset({"strs", "paths", "envs"})

ENV_PREFIX = "OCI_PYPI_"
SECTION = "sync"


class ConfigError(UsageError):
    """The config file, an environment variable or a flag holds a value that cannot be used."""


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: its field, flag (and config key), type, default, range and help.

    The command line's options are generated from these (see
    :mod:`oci_pypi_sync.cli.options`), so a setting's flag, environment
    variable, config key, help text and bounds are declared here only.
    """

    field: str
    flag: str | None
    kind: Kind
    config_key: str
    default: object = None
    help: str = ""
    metavar: str | None = None
    short: str | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def env_var(self) -> str | None:
        """``OCI_PYPI_`` + the flag upper-cased, ``-`` as ``_``; none for positional values."""
        if self.flag is None:
            return None
        return ENV_PREFIX + self.flag.upper().replace("-", "_")

    @property
    def bounds(self) -> str | None:
        """The range a number must be in, as an error or help text says it."""
        if self.low is None:
            return None
        low = _number(self.low)
        return f"at least {low}" if self.high is None else f"between {low} and {_number(self.high)}"


def format_default(key: Key) -> str | None:
    """The default as help text and docs show it; ``None`` when there is nothing to say."""
    if key.default is None or key.default is False or key.default == ():
        return None
    return str(key.default)


def parse_size(text: str, where: str) -> int:
    """A size setting (see :func:`oci_pypi_sync.sizes.parse_size`), naming where it came from."""
    size = sizes.parse_size(text)
    if size is None:
        raise ConfigError(f"{where}: {text!r} is not a size (such as 10GiB, 500M or 1048576)")
    return size


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


#: Every setting of ``[sync]``, in the order the docs and ``--help`` list them.
KEYS: tuple[Key, ...] = (
    Key(
        "index_url",
        "index-url",
        "str",
        "index-url",
        help="Simple repository index to read (default: PIP_INDEX_URL, "
        "pip's configuration, then pip's default).",
        metavar="URL",
        short="-i",
    ),
    Key(
        "to",
        "to",
        "location",
        "to",
        help="HOST[:PORT]/PREFIX for a registry, or oci:PATH for an OCI image layout "
        "(a PATH ending in .tar is a packed layout; default: oci:./oci-pypi-mirror).",
        metavar="TARGET",
    ),
    Key(
        "requirements",
        None,
        "strs",
        "requirements",
        (),
        help="PEP 508 requirements, e.g. 'scipy>=1.11,<1.13'.",
        metavar="[REQ]...",
    ),
    Key(
        "requirement_files",
        "requirement",
        "paths",
        "requirements-files",
        (),
        help="A pip requirements file (-r/-c includes, hashes, markers); repeatable.",
        metavar="FILE",
        short="-r",
    ),
    Key(
        "pylock",
        "pylock",
        "path",
        "pylock",
        help="Mirror the files a pylock.toml names.",
        metavar="FILE",
    ),
    Key(
        "python",
        "python",
        "strs",
        "python",
        (),
        help="Target Python version; repeatable. Each is combined with each --platform "
        "(for exact pairs, use --target).",
        metavar="X.Y",
    ),
    Key(
        "platform",
        "platform",
        "strs",
        "platform",
        (),
        help="Target wheel platform tag (manylinux_2_28_x86_64, win_amd64...) or shorthand "
        "(linux/amd64, darwin/arm64...); repeatable. Each is combined with each --python.",
        metavar="TAG",
    ),
    Key(
        "targets",
        "target",
        "envs",
        "target",
        (),
        help="One target machine: a Python version and a platform, e.g. "
        "3.12/manylinux_2_28_x86_64 or 3.11/windows/amd64; repeatable. Unlike "
        "--python with --platform, no other combination is added.",
        metavar="PYTHON/PLATFORM",
    ),
    Key("pre", "pre", "bool", "pre", False, help="Include pre-release versions."),
    Key(
        "include_yanked",
        "include-yanked",
        "bool",
        "include-yanked",
        False,
        help="Include yanked files (PEP 592).",
    ),
    Key(
        "only_binary",
        "only-binary",
        "bool",
        "only-binary",
        False,
        help="Mirror wheels only, no sdists.",
    ),
    Key(
        "latest", "latest", "int", "latest", help="Keep the N newest versions.", metavar="N", low=1
    ),
    Key(
        "allow",
        "allow",
        "strs",
        "allow",
        (),
        help="Only these projects.",
        metavar="NAME|re:PATTERN",
    ),
    Key(
        "deny", "deny", "strs", "deny", (), help="Never these projects.", metavar="NAME|re:PATTERN"
    ),
    Key("with_deps", "with-deps", "bool", "with-deps", False, help="Add the dependency closure."),
    Key(
        "max_bytes",
        "max-bytes",
        "size",
        "max-bytes",
        help="Refuse the run, before any transfer, when its selected files add up to more "
        "(e.g. 10GiB, 500M, or bytes).",
        metavar="SIZE",
    ),
    Key(
        "jobs",
        "jobs",
        "int",
        "jobs",
        8,
        help="Files at once.",
        metavar="N",
        short="-j",
        low=1,
        high=256,
    ),
    Key(
        "state",
        "state",
        "path",
        "state",
        help="The state file. Default: .oci-pypi-state.sqlite in a layout, "
        "or one per registry under $XDG_STATE_HOME/oci-pypi.",
        metavar="PATH",
    ),
    Key(
        "shard",
        "shard",
        "str",
        "shard",
        help="Take only the projects of shard K (0-based) of N, by normalized name.",
        metavar="K/N",
    ),
    Key(
        "prune",
        "prune",
        "bool",
        "prune",
        False,
        help="Take files the index dropped out of indexes.",
    ),
    Key(
        "retries",
        "retries",
        "int",
        "retries",
        4,
        help="Retries of a step after a transient fault.",
        metavar="N",
        low=0,
        high=20,
    ),
    Key(
        "timeout",
        "timeout",
        "number",
        "timeout",
        help="Network timeout for connecting and for each read or write.",
        metavar="SECONDS",
        low=0.1,
    ),
    Key(
        "provenance",
        "provenance",
        "str",
        "provenance",
        "mirror",
        help="PEP 740 provenance: mirror it when the index has it and it verifies, "
        "require it for every file, or ignore it.",
        choices=POLICIES,
    ),
    Key(
        "trusted_publisher",
        "trusted-publisher",
        "strs",
        "trusted-publishers",
        (),
        help="Accept PROJECT's files only from this Trusted Publisher, e.g. "
        "sampleproject=github:pypa/sampleproject[@release.yml]; repeatable.",
        metavar="PROJECT=PUBLISHER",
    ),
    Key(
        "trusted_root",
        "trusted-root",
        "path",
        "trusted-root",
        help="A Sigstore trusted_root.json to verify provenance with (default: the one "
        "the sigstore package ships).",
        metavar="FILE",
    ),
)
KEYS_BY_FIELD: Mapping[str, Key] = {key.field: key for key in KEYS}
KEYS_BY_CONFIG: Mapping[str, Key] = {key.config_key: key for key in KEYS}
DEFAULTS: Mapping[str, object] = {key.field: key.default for key in KEYS}

_TYPE_NAMES: Mapping[Kind, str] = {
    "str": "a string",
    "strs": "an array of strings",
    "bool": "a boolean",
    "int": "an integer",
    "number": "a number",
    "path": "a string (a path)",
    "paths": "an array of strings (paths)",
    "location": "a string (a target)",
    "envs": "an array of tables (python, platform) or of PYTHON/PLATFORM strings",
    "size": 'a size (bytes as an integer, or a string such as "10GiB")',
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class SyncConfig:
    """The ``[sync]`` table of a config file; ``None`` (or empty) where the file says nothing.

    Paths are already resolved against the file's directory.
    """

    path: Path
    index_url: str | None = None
    to: str | None = None
    requirements: tuple[str, ...] = ()
    requirement_files: tuple[Path, ...] = ()
    pylock: Path | None = None
    python: tuple[str, ...] = ()
    platform: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    pre: bool | None = None
    include_yanked: bool | None = None
    only_binary: bool | None = None
    latest: int | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    with_deps: bool | None = None
    max_bytes: int | None = None
    jobs: int | None = None
    state: Path | None = None
    shard: str | None = None
    prune: bool | None = None
    retries: int | None = None
    timeout: float | None = None
    provenance: str | None = None
    trusted_publisher: tuple[str, ...] = ()
    trusted_root: Path | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """The settings of one sync after precedence, checked; ``origins`` says where each came from.

    An origin is ``"--flag"``, the environment variable's name, ``"FILE
    [sync] key"`` or ``"default"``: error messages and ``-v`` logs can say
    why a value is what it is.
    """

    index_url: str | None = None
    to: str | None = None
    requirements: tuple[str, ...] = ()
    requirement_files: tuple[Path, ...] = ()
    pylock: Path | None = None
    python: tuple[str, ...] = ()
    platform: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    pre: bool = False
    include_yanked: bool = False
    only_binary: bool = False
    latest: int | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    with_deps: bool = False
    max_bytes: int | None = None
    jobs: int = 8
    state: Path | None = None
    shard: str | None = None
    prune: bool = False
    retries: int = 4
    timeout: float | None = None
    provenance: str = "mirror"
    trusted_publisher: tuple[str, ...] = ()
    trusted_root: Path | None = None
    origins: Mapping[str, str] = field(default_factory=dict)

    def environments(self) -> tuple[TargetEnvironment, ...]:
        """The target environments: every ``python`` with every ``platform``, and the
        ``targets`` pairs (none when all are unset)."""
        return environments(self.python, self.platform, self.targets)

    def selection_options(
        self, hashes: Mapping[NormalizedName, frozenset[str]] | None = None
    ) -> SelectionOptions:
        """The selection these settings describe; ``hashes`` from the requirements or lock file."""
        return SelectionOptions(
            pre=self.pre,
            include_yanked=self.include_yanked,
            only_binary=self.only_binary,
            environments=self.environments(),
            latest=self.latest,
            allow=self.allow,
            deny=self.deny,
            hashes=dict(hashes or {}),
        )


# --- the config file -----------------------------------------------------------------


def load_config(path: str | Path) -> SyncConfig:
    """Read and check a config file; relative paths in it are made relative to its directory."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    for table in data:
        if table != SECTION:
            raise ConfigError(f"{path}: unknown table or key {table!r} (known: [{SECTION}])")
    section = data.get(SECTION, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {SECTION!r} must be a table ([{SECTION}])")
    base = path.parent
    values: dict[str, object] = {}
    for name, value in section.items():
        key = KEYS_BY_CONFIG.get(name)
        if key is None:
            known = ", ".join(sorted(KEYS_BY_CONFIG))
            raise ConfigError(f"{path}: unknown key {name!r} in [{SECTION}] (known: {known})")
        where = f"{path}: [{SECTION}] {name}"
        values[key.field] = _from_toml(key, value, where, base)
    config = SyncConfig(path=path, **values)  # type: ignore[arg-type]
    _check(
        {f.name: getattr(config, f.name) for f in fields(config) if f.name != "path"},
        {k: f"{path} [{SECTION}] {KEYS_BY_FIELD[k].config_key}" for k in values},
        complete=False,
    )
    return config


def _from_toml(key: Key, value: object, where: str, base: Path) -> object:
    expected = _TYPE_NAMES[key.kind]
    wrong = ConfigError(f"{where}: expected {expected}, got {_toml_type(value)}")
    if key.kind in ("str", "path", "location"):
        if not isinstance(value, str):
            raise wrong
        if key.kind == "path":
            return base / Path(value).expanduser()
        if key.kind == "location":
            return _resolve_target(value, base)
        return value
    if key.kind == "envs":
        if not isinstance(value, list):
            raise wrong
        return tuple(_environment_entry(item, where) for item in value)
    if key.kind in ("strs", "paths"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise wrong
        if key.kind == "paths":
            return tuple(base / Path(v).expanduser() for v in value)
        return tuple(value)
    if key.kind == "bool":
        if not isinstance(value, bool):
            raise wrong
        return value
    if key.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise wrong
        return value
    if key.kind == "size":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise wrong
        return parse_size(value, where)
    # number
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise wrong
    return float(value)


def _environment_entry(item: object, where: str) -> str:
    """A target environment of the file as ``PYTHON/PLATFORM``: a table or such a string."""
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        python, platform = item.get("python"), item.get("platform")
        extra = sorted(set(item) - {"python", "platform"})
        if extra:
            raise ConfigError(f"{where}: unknown key {extra[0]!r} (known: platform, python)")
        if isinstance(python, str) and isinstance(platform, str):
            return f"{python}/{platform}"
        raise ConfigError(f"{where}: each table needs python and platform, both strings")
    raise ConfigError(
        f"{where}: expected {_TYPE_NAMES['envs']}, got an array holding {_toml_type(item)}"
    )


def _toml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    for kind, name in names.items():
        if type(value) is kind:
            return name
    if isinstance(value, list):
        return "an array" if all(isinstance(v, str) for v in value) else "an array of non-strings"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _resolve_target(value: str, base: Path) -> str:
    """An ``oci:`` layout path is relative to the config file; a registry is left alone."""
    if value.startswith("oci:"):
        layout = Path(value[len("oci:") :]).expanduser()
        return f"oci:{base / layout}"
    return value


# --- precedence -------------------------------------------------------------------------


def merge_settings(
    cli: Mapping[str, object | None],
    environ: Mapping[str, str],
    config: SyncConfig | None,
) -> Settings:
    """Apply the precedence: ``cli`` values, then ``OCI_PYPI_*`` in ``environ``, then ``config``.

    ``cli`` is keyed by :class:`Settings` field names; ``None`` or an empty
    sequence means "not given". Values are checked once merged, and an error
    names where the bad value came from.
    """
    unknown = set(cli) - set(KEYS_BY_FIELD)
    if unknown:
        raise ValueError(f"unknown setting names: {', '.join(sorted(unknown))}")
    values: dict[str, object] = {}
    origins: dict[str, str] = {}
    for key in KEYS:
        given = cli.get(key.field)
        env_var = key.env_var
        env_value = environ.get(env_var, "").strip() if env_var else ""
        config_value = getattr(config, key.field) if config is not None else None
        if given is not None and not _empty(given):
            values[key.field] = _from_cli(key, given)
            origins[key.field] = f"--{key.flag}" if key.flag else key.field
        elif env_var and env_value:
            values[key.field] = _from_env(key, env_value, env_var)
            origins[key.field] = env_var
        elif config is not None and config_value is not None and not _empty(config_value):
            values[key.field] = config_value
            origins[key.field] = f"{config.path} [{SECTION}] {key.config_key}"
        else:
            values[key.field] = key.default
            origins[key.field] = "default"
    settings = Settings(**values)  # type: ignore[arg-type]
    _check(values, origins)
    return replace(settings, origins=origins)


def _empty(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 0


def _from_cli(key: Key, value: object) -> object:
    if key.kind in MANY:
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise ValueError(f"setting {key.field} takes a sequence of strings, not {value!r}")
        items = tuple(str(v) for v in value)
        return tuple(Path(v) for v in items) if key.kind == "paths" else items
    if key.kind == "path":
        return Path(str(value))
    if key.kind == "size" and isinstance(value, str):
        return parse_size(value, f"--{key.flag}")
    return value


def _from_env(key: Key, text: str, name: str) -> object:
    if key.kind in MANY:
        items = tuple(item.strip() for item in text.split(",") if item.strip())
        return tuple(Path(item) for item in items) if key.kind == "paths" else items
    if key.kind == "path":
        return Path(text)
    if key.kind == "bool":
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{name}: {text!r} is not a boolean (1/0, true/false, yes/no, on/off)")
    if key.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{name}: {text!r} is not an integer") from None
    if key.kind == "size":
        return parse_size(text, name)
    if key.kind == "number":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{name}: {text!r} is not a number") from None
    return text


def _check(
    values: Mapping[str, object], origins: Mapping[str, str], *, complete: bool = True
) -> None:
    """Check the values that can be checked without I/O, naming where a bad one came from.

    ``complete`` is false for a config file alone: its ``python`` may meet a
    ``--platform`` from the command line.
    """

    def fail(name: str, message: str) -> ConfigError:
        return ConfigError(f"{origins.get(name, name)}: {message}")

    for key in KEYS:
        value = values.get(key.field)
        if key.low is None or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        if value < key.low or (key.high is not None and value > key.high):
            raise fail(key.field, f"{value} is out of range (must be {key.bounds})")
    for name, parse in (
        ("python", parse_python),
        ("platform", parse_platform),
        ("targets", parse_environment),
    ):
        for item in _strings(values.get(name)):
            try:
                parse(item)
            except UsageError as exc:
                raise fail(name, str(exc)) from exc
    pythons, platforms = _strings(values.get("python")), _strings(values.get("platform"))
    if complete and pythons and not platforms:
        raise fail("python", "a target Python needs a target platform too (--platform)")
    if complete and platforms and not pythons:
        raise fail("platform", "a target platform needs a target Python too (--python)")
    for name in ("allow", "deny"):
        try:
            check_patterns(_strings(values.get(name)), name)
        except UsageError as exc:
            raise fail(name, str(exc)) from exc
    try:
        parse_requirements(_strings(values.get("requirements")))
    except UsageError as exc:
        raise fail("requirements", str(exc)) from exc
    shard = values.get("shard")
    if isinstance(shard, str):
        try:
            parse_shard(shard)
        except UsageError as exc:
            raise fail("shard", str(exc)) from exc
    policy = values.get("provenance")
    if isinstance(policy, str) and policy not in POLICIES:
        raise fail("provenance", f"{policy!r} is not one of {', '.join(POLICIES)}")
    pins = _strings(values.get("trusted_publisher"))
    try:
        parse_pins(pins)
    except UsageError as exc:
        raise fail("trusted_publisher", str(exc)) from exc
    if complete and pins and policy == "ignore":
        raise fail("trusted_publisher", "pinned publishers need --provenance mirror or require")


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, tuple | list):
        return tuple(str(v) for v in value)
    return ()
