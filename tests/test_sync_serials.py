"""Syncing every project by serial: the root list says which projects moved.

The fixture index serves PyPI's JSON root list (``_last-serial`` per
project) and ``X-PyPI-Last-Serial`` on project pages. A re-run fetches the
root list and only the pages of projects whose serial moved; a page older
than the root list promised (a stale cache) is fetched again, never taken.
What the index served and what the layout holds are read back.
"""

from __future__ import annotations

from pathlib import Path

from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index

from oci_pypi_sync.config import Settings
from oci_pypi_sync.engine.job import JobFlags, run_job
from oci_pypi_sync.engine.results import SyncReport
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.state.journal import Journal
from oci_pypi_sync.stores.layout import LayoutStore

ALL = JobFlags(all_projects=True)
QUICK = Settings(retries=1)


def _index(serials: dict[str, int] | None = None) -> FixtureIndex:
    index = FixtureIndex(etags=True, serials=serials)
    index.add("alpha", make_wheel("alpha", "1.0"))
    index.add("beta", make_wheel("beta", "1.0"))
    index.add("gamma", make_sdist("gamma", "1.0"))
    return index


async def _run(index: FixtureIndex, layout: Path, state: Path) -> tuple[SyncReport, list[str]]:
    """A ``sync --all`` into the layout; the paths the index was asked for."""
    seen = len(index.requests)
    with Journal.open(state, target=f"oci:{layout}") as journal:
        async with IndexClient(index.url) as client:
            report = await run_job(QUICK, ALL, client, LayoutStore(layout), journal=journal)
    return report, [path for _, path in index.requests[seen:]]


def _pages(paths: list[str]) -> list[str]:
    return sorted(p for p in paths if p.startswith("/simple/") and p != "/simple/")


async def test_only_projects_whose_serial_moved_are_fetched(tmp_path: Path) -> None:
    serials = {"alpha": 101, "beta": 202, "gamma": 303}
    index = _index(serials)
    layout, state = tmp_path / "mirror", tmp_path / "state.sqlite"
    with serve_index(index):
        first, paths = await _run(index, layout, state)
        assert not first.failed
        assert _pages(paths) == ["/simple/alpha/", "/simple/beta/", "/simple/gamma/"]
        with Journal.open(state, target=None, readonly=True) as journal:
            recorded = {p: journal.project_state(p) for p in ("alpha", "beta", "gamma")}
        assert {p: s.last_serial for p, s in recorded.items() if s} == serials

        # Nothing moved: the root list is the only request, the target is not touched.
        index_json = (layout / "index.json").stat().st_mtime_ns
        again, paths = await _run(index, layout, state)
        assert paths == ["/simple/"]
        assert again.projects_unchanged == 3
        assert not again.failed
        assert (layout / "index.json").stat().st_mtime_ns == index_json

        # beta gets a release: its page alone is fetched, and the release lands.
        index.add("beta", make_wheel("beta", "2.0"))
        serials["beta"] = 205
        moved, paths = await _run(index, layout, state)
        assert _pages(paths) == ["/simple/beta/"]
        assert "/files/beta-2.0-py3-none-any.whl" in paths
        assert ("beta", "2.0") in LayoutStore(layout).tags()
        assert moved.projects_unchanged == 2

        # A serial that moves without a change the selection sees: a 304, recorded.
        serials["alpha"] = 150
        _, paths = await _run(index, layout, state)
        assert _pages(paths) == ["/simple/alpha/"]
        assert index.statuses[-1] == 304
        _, paths = await _run(index, layout, state)
        assert paths == ["/simple/"]


async def test_a_page_older_than_the_root_list_promised_is_fetched_again(tmp_path: Path) -> None:
    serials = {"alpha": 101, "beta": 202, "gamma": 303}
    index = _index(serials)
    layout, state = tmp_path / "mirror", tmp_path / "state.sqlite"
    with serve_index(index):
        await _run(index, layout, state)
        # gamma gets a release, but a cache keeps serving the page it had at 303.
        index.add("gamma", make_sdist("gamma", "2.0"))
        serials["gamma"] = 310
        index.page_serials["gamma"] = 303
        stale, paths = await _run(index, layout, state)
        assert _pages(paths) == ["/simple/gamma/", "/simple/gamma/"]  # retried once
        assert [e.project for e in stale.project_errors] == ["gamma"]
        assert "stale page" in stale.project_errors[0].error
        assert ("gamma", "2.0") not in LayoutStore(layout).tags()
        with Journal.open(state, target=None, readonly=True) as journal:
            gamma = journal.project_state("gamma")
        assert gamma is not None
        assert gamma.last_serial == 303

        # The cache catches up: the next run takes the release.
        del index.page_serials["gamma"]
        caught_up, paths = await _run(index, layout, state)
        assert not caught_up.failed
        assert _pages(paths) == ["/simple/gamma/"]
        assert ("gamma", "2.0") in LayoutStore(layout).tags()


async def test_without_serials_every_project_gets_a_conditional_get(tmp_path: Path) -> None:
    index = _index()  # no serials: an HTML root list, as most indexes serve
    layout, state = tmp_path / "mirror", tmp_path / "state.sqlite"
    with serve_index(index):
        await _run(index, layout, state)
        again, paths = await _run(index, layout, state)
    assert _pages(paths) == ["/simple/alpha/", "/simple/beta/", "/simple/gamma/"]
    assert index.statuses[-3:] == [304, 304, 304]
    assert again.projects_unchanged == 3
