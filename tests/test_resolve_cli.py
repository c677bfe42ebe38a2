"""``sync --with-deps`` as a user meets a conflict and an interrupted resolution."""

from __future__ import annotations

import signal
from pathlib import Path

from cli_helpers import cli_env, cli_process, finish, run_cli, wait_for
from fault_proxy import Fault, FaultProxy, Rule
from replay_index import recorded_index, serving
from test_resolve import CONFLICTS

CONFLICT_ARGS = ["--with-deps", "--python", "3.12", "--platform", "linux/amd64", "--dry-run"]


def test_a_conflict_is_one_error_with_both_chains(tmp_path: Path) -> None:
    (tree,) = CONFLICTS
    with serving(recorded_index(tree)) as index:
        env = cli_env(tmp_path) | {"OCI_PYPI_INDEX_URL": f"{index.url}simple/"}
        result = run_cli(["sync", *CONFLICTS[tree], *CONFLICT_ARGS, "--json"], env, timeout=600)
        paths = index.paths()
    assert result.returncode == 1, result.describe()
    report = result.json()
    assert report["ok"] is False
    assert report["files"] == []
    chain = (
        "not resolved for cp312-manylinux_2_28_x86_64: no version of django that installs "
        "on cp312-manylinux_2_28_x86_64 satisfies all of: requested django==2.2.28; "
        "requested djangorestframework==3.15.0 -> djangorestframework 3.15.0 requires "
        "django>=3.0"
    )
    assert report["errors"] == [{"project": "django", "error": chain, "quarantined": False}]
    # Said once, as one error line (no warning before it repeating it).
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if chain in line] == [f"error: django: {chain}"]
    assert not [line for line in lines if "WARNING" in line]
    # The target's Python is never asked for as a project of the index.
    assert not [p for p in paths if "python" in p.lower()]


def test_ctrl_c_stops_a_resolution_at_once_with_exit_130(tmp_path: Path) -> None:
    """The resolver runs in a worker thread; an interrupt stops it where it waits.

    The index holds back a dependency's metadata (the proxy stalls it far longer
    than the test waits), so the run is in the middle of resolving when it is
    interrupted; it must end on its own, not when the stall ends.
    """
    (tree,) = CONFLICTS
    stall = Rule(Fault.stall(3600), "GET", r"\.metadata$", times=100)
    with serving(recorded_index(tree)) as index, FaultProxy(index.url.rstrip("/"), [stall]) as p:
        index.url = f"{p.url}/"  # the pages' file URLs lead through the proxy too
        env = cli_env(tmp_path) | {"OCI_PYPI_INDEX_URL": f"{p.url}/simple/"}
        out, err = tmp_path / "out", tmp_path / "err"
        args = ["sync", *CONFLICTS[tree], *CONFLICT_ARGS, "--timeout", "3600"]
        with cli_process(args, env, stdout=out, stderr=err) as process:
            wait_for(lambda: stall.injected > 0, timeout=300, what="a stalled metadata request")
            process.send_signal(signal.SIGINT)
            # A generous bound that only stops a hang: the stall lasts an hour.
            result = finish(process, out, err, timeout=300)
    assert result.returncode == 130, result.describe()
    assert result.stderr.strip().splitlines()[-1].startswith("error: interrupted; ")
    assert "Traceback" not in result.stderr
