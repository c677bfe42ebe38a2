"""Developer tasks: ``nox`` runs tests, lint and typecheck; ``nox -s NAME`` runs one."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
SYSTEM_TOOLS = {"docker-registry": "docker-registry", "skopeo": "skopeo", "umoci": "umoci"}
# The ORAS CLI and Distribution v3 come as binaries in ../shared/bin where the
# machine provides them; the interop tests find them on PATH or skip.
SHARED_BIN = Path(__file__).resolve().parent.parent / "shared" / "bin"
APT_INSTALL = "apt-get update && apt-get install -y " + " ".join(sorted(set(SYSTEM_TOOLS.values())))
PYTEST_NO_TESTS = 5


def ensure_system_tools(session: nox.Session) -> None:
    """Install Debian's registry and skopeo when missing and we are root; else say how."""
    missing = sorted({pkg for tool, pkg in SYSTEM_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.error(f"the tests need {', '.join(missing)}; install them with: sudo {APT_INSTALL}")
    session.log(f"installing {', '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite, against the real registry started by the tests."""
    ensure_system_tools(session)
    session.install("-e", ".[test]")
    env = {}
    if SHARED_BIN.is_dir():
        env["PATH"] = f"{os.environ.get('PATH', '')}{os.pathsep}{SHARED_BIN}"
    # pytest exits 5 when a selection (e.g. -k) collects no test: not a failure here.
    session.run("pytest", *(session.posargs or ["-q"]), success_codes=[0, PYTEST_NO_TESTS], env=env)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and the tests."""
    session.install("-e", ".[test]", "mypy>=1.13", "nox")
    session.run("mypy", "--strict")


@nox.session(python=PYTHON)
def memory(session: nox.Session) -> None:
    """Sync a 1 GiB file into a registry and a layout; fail at a peak RSS of 100 MB.

    Not run by default (it writes ~3 GiB to a temp dir). ``-- --size-mb 64`` for a
    quick run; the arguments go to benchmarks/memory.py.
    """
    ensure_system_tools(session)
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/memory.py", *session.posargs)


@nox.session(python=PYTHON)
def bounds(session: nox.Session) -> None:
    """Hostile inputs (huge and gzip-bomb pages, deep JSON, a huge manifest, an endless tag
    list, a METADATA zip bomb), each against the CLI in a subprocess: its peak RSS and time,
    and the error naming the bound. Fails at a peak RSS of 300 MB (``-- --limit-mb N``).

    Not run by default (it serves some hundreds of MB over loopback).
    """
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/bounds.py", *session.posargs)


DOCS_REQUIREMENTS = ("mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocs-click>=0.8")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with ``mkdocs build --strict``.

    Not run by default. The command reference is generated from the click
    commands, so the package is installed too. ``-- serve`` previews instead.
    """
    session.install("-e", ".", *DOCS_REQUIREMENTS)
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:])
        return
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)


def _package_version() -> str:
    """``__version__`` as written in oci_pypi_sync/__init__.py, the one place it lives."""
    text = (Path(__file__).parent / "oci_pypi_sync" / "__init__.py").read_text("utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no __version__ in oci_pypi_sync/__init__.py")
    return match.group(1)


def _wheel_metadata_version(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode("utf-8")
    match = re.search(r"^Version: (.+)$", metadata, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no Version in the METADATA of {wheel.name}")
    return match.group(1).strip()


@nox.session(python=PYTHON)
def package(session: nox.Session) -> None:
    """Build the sdist and wheel, ``twine check`` them, install the wheel with pipx and uv.

    Not run by default (the tool installs fetch the dependencies from the
    index). Each install goes into a temporary tool home, and its
    ``oci-pypi --version`` must print the version of oci_pypi_sync/__init__.py.
    """
    session.install("build>=1.2", "twine>=5", "pipx>=1.5", "uv>=0.5")
    version = _package_version()
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist), ".")
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        session.error(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    session.run("twine", "check", "--strict", str(wheels[0]), str(sdists[0]))
    built = _wheel_metadata_version(wheels[0])
    if built != version:
        session.error(f"the wheel says version {built}, oci_pypi_sync says {version}")
    expected = f"oci-pypi, version {version}"

    installs = {
        "pipx": (
            ["pipx", "install", "--force", str(wheels[0])],
            {"PIPX_HOME": "pipx-home", "PIPX_BIN_DIR": "pipx-bin", "PIPX_MAN_DIR": "pipx-man"},
            "pipx-bin",
        ),
        "uv tool": (
            ["uv", "tool", "install", "--force", str(wheels[0])],
            {"UV_TOOL_DIR": "uv-tools", "UV_TOOL_BIN_DIR": "uv-bin"},
            "uv-bin",
        ),
    }
    for label, (command, dirs, bin_dir) in installs.items():
        env = {name: str(tmp / folder) for name, folder in dirs.items()}
        for folder in dirs.values():
            shutil.rmtree(tmp / folder, ignore_errors=True)
        session.run(*command, env=env)
        executable = tmp / bin_dir / "oci-pypi"
        output = session.run(str(executable), "--version", external=True, silent=True)
        printed = str(output).strip()
        if printed != expected:
            session.error(f"{label}: oci-pypi --version printed {printed!r}, not {expected!r}")
        session.log(f"{label}: {printed}")


BENCH_TOOLS = {"docker-registry": "docker-registry", "nginx": "nginx-light"}


def ensure_bench_tools(session: nox.Session) -> None:
    """Install nginx and the registry with apt-get when missing and we are root; else say how."""
    missing = sorted(
        {
            pkg
            for tool, pkg in BENCH_TOOLS.items()
            if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}")
        }
    )
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            session.error(f"the benchmark needs: sudo apt-get install -y {' '.join(missing)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """End-to-end benchmark against baselines measured in the same run (loopback only).

    Not run by default: the full corpus is ~1.3 GB and takes several minutes.
    ``-- --quick`` for a reduced corpus in 5 to 10 minutes; the arguments go
    to benchmarks/bench.py (``--runs N``, ``--json PATH``, ``--profile DIR``...).
    The ORAS CLI rows need ``oras`` on PATH (or ``ORAS=PATH``); without it
    they are skipped with a note.
    """
    ensure_bench_tools(session)
    session.install("-e", ".[test]", "oras", "bandersnatch", "py-spy")
    session.run("python", "benchmarks/bench.py", *session.posargs)


@nox.session(python=PYTHON)
def scale(session: nox.Session) -> None:
    """Costs against the size of the mirror, 1k to 1M projects, with growth exponents and targets.

    Not run by default: indexes are generated once under .bench/scale/ (about
    4 KB of disk per project) and a registry is filled once per size up to
    ``--fill-max``; a first run at 100k takes about an hour. The arguments go
    to benchmarks/scale.py (``--sizes 1000,10000,100000,1000000``, ``--only``,
    ``--json PATH``).
    """
    ensure_bench_tools(session)
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/scale.py", *session.posargs)


if __name__ == "__main__":
    sys.exit("run with nox")
