"""Developer tasks: ``nox`` runs tests, lint and typecheck; ``nox -s NAME`` runs one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"
SYSTEM_TOOLS = {"docker-registry": "docker-registry", "skopeo": "skopeo"}
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
    # pytest exits 5 when a selection (e.g. -k) collects no test: not a failure here.
    session.run("pytest", *(session.posargs or ["-q"]), success_codes=[0, PYTEST_NO_TESTS])


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


if __name__ == "__main__":
    sys.exit("run with nox")
