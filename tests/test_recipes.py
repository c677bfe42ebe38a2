"""The recipes and the docs' command lines are checked, not just written.

- Every YAML recipe is valid against its schema, offline: the GitHub
  workflow and the GitLab CI file against the schemastore schemas bundled in
  check-jsonschema, the Kubernetes manifests against the API schemas bundled
  in kubernetes-validate (strict: unknown fields are errors).
- Every ``oci-pypi ...`` command line in the recipe files and in the code
  blocks of the docs names a command and options that the CLI declares.
- ``mirror.toml`` loads with the config loader the CLI uses.
- Every ``OCI_PYPI_*`` variable the docs and recipes use is one the code reads.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from ruamel.yaml import YAML

from oci_pypi_sync.cli import main
from oci_pypi_sync.config import KEYS, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RECIPES = DOCS / "recipes" / "files"
#: The Kubernetes version the manifests are validated for (kubernetes-validate bundles it).
K8S_VERSION = "1.34"
SCHEMA_TIMEOUT = 120

CI_RECIPES = {
    "github-workflow.yml": "vendor.github-workflows",
    "gitlab-ci.yml": "vendor.gitlab-ci",
}
K8S_RECIPES = ("cronjob.yaml", "indexed-job.yaml")
ALL_RECIPES = (*CI_RECIPES, *K8S_RECIPES, "mirror.toml")

#: Code blocks in these languages hold no shell command lines.
NOT_SHELL = frozenset({"python", "py", "json", "toml", "ini", "mermaid", "text"})
ENV_NAME = re.compile(r"\bOCI_PYPI_[A-Z0-9_]*[A-Z0-9]\b")
# `oci-pypi` as a command: not part of `oci-pypi-sync`, `oci-pypi.catalog` or a path segment.
COMMAND = re.compile(r"(?:(?<=^)|(?<=[\s;&|(`$/]))oci-pypi(?=\s|$)")
GITHUB_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
#: Keys whose values are shell commands: GitHub steps, GitLab jobs, Kubernetes containers.
SHELL_KEYS = frozenset({"run", "script", "before_script", "after_script", "command", "args"})
SHELL_OPERATORS = frozenset({"|", "||", "&", "&&", ";", ">", ">>", "<", "2>", "(", ")", "`"})


def yaml_documents(path: Path) -> list[Any]:
    """The documents of a YAML file, read as YAML 1.2 (so ``on:`` stays a string)."""
    loader = YAML(typ="safe", pure=True)
    return [doc for doc in loader.load_all(path.read_text("utf-8")) if doc is not None]


# --- recipe files exist and are shown in the docs ---------------------------------


@pytest.mark.parametrize("name", ALL_RECIPES)
def test_recipe_file_is_included_by_a_recipe_page(name: str) -> None:
    assert (RECIPES / name).is_file()
    pages = [p for p in (DOCS / "recipes").glob("*.md") if f'--8<-- "{name}"' in p.read_text()]
    assert pages, f"no page under docs/recipes includes {name} with --8<--"


# --- schemas ---------------------------------------------------------------------


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=SCHEMA_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize(("name", "schema"), sorted(CI_RECIPES.items()))
def test_ci_recipe_is_valid_against_its_schema(name: str, schema: str) -> None:
    result = check_jsonschema(schema, RECIPES / name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


@pytest.mark.parametrize(
    ("name", "schema", "good", "bad"),
    [
        # a job without runs-on is not a GitHub job
        ("github-workflow.yml", "vendor.github-workflows", "runs-on: ubuntu-latest", "x: 1"),
        # GitLab allows parallel from 1 to 200
        ("gitlab-ci.yml", "vendor.gitlab-ci", "parallel: 4", "parallel: 500"),
    ],
)
def test_ci_schema_check_rejects_a_broken_recipe(
    tmp_path: Path, name: str, schema: str, good: str, bad: str
) -> None:
    text = (RECIPES / name).read_text("utf-8")
    assert good in text
    broken = tmp_path / name
    broken.write_text(text.replace(good, bad, 1), "utf-8")
    result = check_jsonschema(schema, broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Schema validation errors" in result.stdout + result.stderr


@pytest.mark.parametrize("name", K8S_RECIPES)
def test_kubernetes_recipe_is_valid_against_the_api_schemas(name: str) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    documents = yaml_documents(RECIPES / name)
    assert len(documents) == 2
    for document in documents:
        assert kubernetes_validate.validate(document, K8S_VERSION, strict=True) == K8S_VERSION


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("completions", "four"), "four"),
        (("completionz", 4), "completionz"),  # strict: unknown fields are errors
    ],
)
def test_kubernetes_check_rejects_a_broken_job(change: tuple[str, object], message: str) -> None:
    import kubernetes_validate

    job = next(d for d in yaml_documents(RECIPES / "indexed-job.yaml") if d["kind"] == "Job")
    key, value = change
    job["spec"][key] = value
    with pytest.raises(kubernetes_validate.ValidationError, match=message):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


# --- what the recipes say --------------------------------------------------------


def test_mirror_toml_loads_with_the_config_loader() -> None:
    config = load_config(RECIPES / "mirror.toml")
    assert config.to == "registry.example.com/pypi"
    assert config.with_deps is True
    assert config.only_binary is True
    assert config.python == ("3.11", "3.12", "3.13")
    assert config.platform == ("linux/amd64", "linux/arm64")
    # relative to the file: the CI recipes cache this directory
    assert config.state == RECIPES / "state" / "mirror.sqlite"


def test_github_workflow_is_a_scheduled_sync_with_a_cached_state_file() -> None:
    (workflow,) = yaml_documents(RECIPES / "github-workflow.yml")
    (cron,) = [entry["cron"] for entry in workflow["on"]["schedule"]]
    assert len(cron.split()) == 5
    steps = workflow["jobs"]["sync"]["steps"]
    (cache,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/cache@")]
    assert cache["with"]["path"].rstrip("/") == "state"  # mirror.toml's state directory
    (sync,) = [s for s in steps if "oci-pypi sync" in s.get("run", "")]
    assert sync["run"].startswith("oci-pypi sync --config mirror.toml")
    assert sync["env"] == {
        "OCI_PYPI_REGISTRY_USERNAME": "${{ secrets.MIRROR_REGISTRY_USERNAME }}",
        "OCI_PYPI_REGISTRY_PASSWORD": "${{ secrets.MIRROR_REGISTRY_PASSWORD }}",
    }


def test_gitlab_ci_runs_four_shards_on_a_schedule() -> None:
    (pipeline,) = yaml_documents(RECIPES / "gitlab-ci.yml")
    job = pipeline["mirror"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    assert job["parallel"] == 4
    (sync,) = [line for line in job["script"] if line.startswith("oci-pypi sync")]
    assert "--config mirror.toml" in sync
    assert f"--shards {job['parallel']}" in sync
    assert "$CI_NODE_INDEX" in sync  # one state file per shard
    assert job["cache"]["key"] == "oci-pypi-state-$CI_NODE_INDEX"


def test_indexed_job_takes_one_shard_per_completion_index() -> None:
    (job,) = [d for d in yaml_documents(RECIPES / "indexed-job.yaml") if d["kind"] == "Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == 4
    assert spec["parallelism"] == 4
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["OCI_PYPI_SHARDS"]["value"] == str(spec["completions"])
    assert env["OCI_PYPI_REGISTRY_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert "$JOB_COMPLETION_INDEX" in container["args"][0]  # one state file per shard


def test_cronjob_never_runs_two_syncs_at_once() -> None:
    (cronjob,) = [d for d in yaml_documents(RECIPES / "cronjob.yaml") if d["kind"] == "CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "oci-pypi sync --config /etc/oci-pypi/mirror.toml" in container["args"][0]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["pypi-mirror-state"]


# --- command lines ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandLine:
    """One ``oci-pypi ...`` invocation found in a file."""

    where: str
    args: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.where}: oci-pypi {shlex.join(self.args)}"


def _fenced_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of each fenced code block that may hold shell commands."""
    fence: str | None = None
    language = ""
    start = 0
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            match = re.match(r"(`{3,}|~{3,})\s*([\w+-]*)", stripped)
            if match:
                fence, language, start, lines = match.group(1), match.group(2).lower(), number, []
            continue
        if stripped.startswith(fence) and not stripped.strip(fence[0]):
            if language not in NOT_SHELL:
                yield start + 1, lines
            fence = None
            continue
        lines.append(line)


def _logical_lines(lines: list[str], first: int) -> Iterator[tuple[int, str]]:
    """Join lines continued with a backslash; yield (line number, text)."""
    buffer = ""
    begin = first
    for offset, line in enumerate(lines):
        if not buffer:
            begin = first + offset
        if line.rstrip().endswith("\\"):
            buffer += line.rstrip()[:-1] + " "
            continue
        yield begin, buffer + line
        buffer = ""
    if buffer:
        yield begin, buffer


def _args_after(text: str) -> tuple[str, ...]:
    """The arguments of the ``oci-pypi`` at the start of ``text``, up to a shell operator."""
    text = GITHUB_EXPRESSION.sub("GITHUB-EXPRESSION", text)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    assert tokens[0] == "oci-pypi", text
    args: list[str] = []
    for token in tokens[1:]:
        if token in SHELL_OPERATORS or set(token) <= set("|&;<>()"):
            break
        # `[--deep]` in a synopsis is the option --deep
        optional = re.fullmatch(r"\[(-[^\]]+)\]", token)
        args.append(optional.group(1) if optional else token)
    return tuple(args)


def _shell_strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(where, text) of the values a CI runner or a container hands to a shell."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in SHELL_KEYS:
                values = value if isinstance(value, list) else [value]
                for i, item in enumerate(values):
                    if isinstance(item, str):
                        yield f"{where}[{i}]", item
            else:
                yield from _shell_strings(value, where)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _shell_strings(item, f"{path}[{i}]")


def command_lines_in(path: Path) -> list[CommandLine]:
    text = path.read_text("utf-8")
    where = str(path.relative_to(ROOT))
    chunks: list[tuple[str, str]] = []
    if path.suffix == ".md":
        for start, lines in _fenced_blocks(text):
            chunks += [(f"{where}:{n}", line) for n, line in _logical_lines(lines, start)]
    elif path.suffix in (".yml", ".yaml"):
        for i, document in enumerate(yaml_documents(path)):
            for key, value in _shell_strings(document):
                lines = value.splitlines()
                chunks += [(f"{where}#{i}:{key}", line) for _, line in _logical_lines(lines, 1)]
    found: list[CommandLine] = []
    for place, line in chunks:
        for match in COMMAND.finditer(line):
            found.append(CommandLine(place, _args_after(line[match.start() :])))
    return found


def documented_files() -> list[Path]:
    pages = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)
    recipes = sorted(RECIPES / name for name in ALL_RECIPES)
    return [ROOT / "README.md", *pages, *recipes]


COMMAND_LINES = [line for path in documented_files() for line in command_lines_in(path)]


def problems_with(line: CommandLine) -> list[str]:
    """Why the CLI would not accept this command line (empty when it would)."""
    args = list(line.args)
    while args and args[0].startswith("-"):
        option = args.pop(0).split("=", 1)[0]
        if option not in {"--version", "--help", "-h"}:
            return [f"no such option of oci-pypi: {option}"]
    if not args:
        return []
    name, rest = args[0], args[1:]
    command = main.commands.get(name)
    if command is None:
        return [f"no such command: oci-pypi {name}"]
    declared = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    declared |= {"-h", "--help"}
    problems = []
    for token in rest:
        if token == "--":
            break
        if token.startswith("-") and len(token) > 1 and not token[1].isdigit():
            option = token.split("=", 1)[0]
            if option not in declared and not re.fullmatch(r"-[a-zA-Z]+", option):
                problems.append(f"oci-pypi {name} has no option {option}")
    try:
        command.make_context(f"oci-pypi {name}", list(rest), resilient_parsing=True)
    except click.ClickException as exc:
        problems.append(f"oci-pypi {name}: {exc.format_message()}")
    return problems


def test_command_lines_are_found_in_every_kind_of_file() -> None:
    places = {re.split(r"[:#]", line.where)[0] for line in COMMAND_LINES}
    for name in ALL_RECIPES:
        if name != "mirror.toml":
            assert f"docs/recipes/files/{name}" in places
    assert "README.md" in places
    assert "docs/troubleshooting.md" in places
    commands = {line.args[0] for line in COMMAND_LINES if line.args}
    assert {"sync", "serve", "copy", "verify", "status", "ls", "projects"} <= commands


@pytest.mark.parametrize("line", COMMAND_LINES, ids=str)
def test_command_line_uses_declared_commands_and_options(line: CommandLine) -> None:
    assert problems_with(line) == []


def test_the_command_line_check_finds_unknown_commands_and_options() -> None:
    assert problems_with(CommandLine("x", ("sync", "six", "--to", "oci:m"))) == []
    assert problems_with(CommandLine("x", ("sync", "--bogus", "six"))) == [
        "oci-pypi sync has no option --bogus"
    ]
    assert _args_after("oci-pypi verify T [--deep] | tee log") == ("verify", "T", "--deep")
    assert problems_with(CommandLine("x", ("mirror", "six"))) == [
        "no such command: oci-pypi mirror"
    ]
    found = command_lines_in(DOCS / "recipes" / "files" / "gitlab-ci.yml")
    assert found[0].args[:4] == ("sync", "--config", "mirror.toml", "--shards")
    assert ">" not in found[0].args


# --- environment variables -------------------------------------------------------


def declared_env_vars() -> set[str]:
    """``OCI_PYPI_*`` names of the settings and of the click options."""
    names = {key.env_var for key in KEYS if key.env_var is not None}
    for command in main.commands.values():
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                names.add(envvar)
            elif envvar:
                names.update(envvar)
    return names


def configuration_env_vars() -> set[str]:
    return set(ENV_NAME.findall((DOCS / "configuration.md").read_text("utf-8")))


def test_env_vars_documented_in_configuration_are_read_by_the_code() -> None:
    source = "\n".join(p.read_text("utf-8") for p in (ROOT / "oci_pypi_sync").rglob("*.py"))
    documented = configuration_env_vars()
    assert {"OCI_PYPI_REGISTRY_USERNAME", "OCI_PYPI_REGISTRY_PASSWORD"} <= documented
    unread = sorted(n for n in documented if n not in declared_env_vars() and n not in source)
    assert unread == []


@pytest.mark.parametrize("path", documented_files(), ids=lambda p: str(Path(p).relative_to(ROOT)))
def test_env_vars_used_in_docs_and_recipes_exist(path: Path) -> None:
    known = declared_env_vars() | configuration_env_vars()
    used = set(ENV_NAME.findall(path.read_text("utf-8")))
    assert sorted(used - known) == []
