"""The quickstart's examples say what the commands print.

Its first project is six, every version of it: the claims about its size
and its ``ls`` line are checked against six's recorded page, and the shape
of an ``ls`` line against a real ``ls`` of a mirror.
"""

from __future__ import annotations

import re
from pathlib import Path

from cassettes import INDEX_URL, replay
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement

from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.stores.layout import LayoutStore

QUICKSTART = (Path(__file__).parent.parent / "docs" / "quickstart.md").read_text()
LS_LINE = re.compile(r"^\.venv/bin/oci-pypi ls +# (\S+) +(\d+) +\(the number of versions", re.M)


def test_ls_prints_a_name_and_its_number_of_versions(tmp_path: Path) -> None:
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    fixture.add("tool", make_wheel("tool", "2.0"), make_wheel("tool", "3.0"))
    mirror = f"oci:{tmp_path / 'mirror'}"
    with serve_index(fixture):
        synced = run_cli(["sync", "tool", "--to", mirror, "-i", fixture.url], cli_env(tmp_path))
    assert synced.returncode == 0, synced.describe()
    listed = run_cli(["ls", "--from", mirror], cli_env(tmp_path))
    assert listed.returncode == 0, listed.describe()
    # One line per project: its name and how many versions it has (not files: four).
    assert listed.stdout.splitlines() == ["tool\t3"]


async def test_the_quickstart_says_what_syncing_six_takes(tmp_path: Path) -> None:
    found = LS_LINE.search(QUICKSTART)
    assert found is not None, "the quickstart shows the ls line of its first sync"
    name, versions = found.group(1), int(found.group(2))
    assert name == "six"
    store = LayoutStore(tmp_path / "mirror")
    try:
        with replay("six"):
            async with IndexClient(INDEX_URL) as client:
                options = SyncOptions(dry_run=True, probe_metadata=False)
                report = await sync([Requirement("six")], client, store, options)
    finally:
        await store.aclose()
    assert not report.failed
    planned = {release.version for release in report.releases}
    assert len(planned) == versions
    # "about 30 releases, under a megabyte in all"
    assert "six\nhas about 30 releases, under a megabyte in all" in QUICKSTART
    assert 25 <= versions <= 35
    assert 0 < sum(f.size or 0 for f in report.files) < 1024 * 1024
    assert not (tmp_path / "mirror").exists()  # a dry run writes nothing
