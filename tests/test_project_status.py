"""PEP 792 project status: read from the index, kept in the catalog, shown by ``serve``.

A project the index quarantines keeps its mirrored releases, but ``serve``
offers none of its files; archived and deprecated projects keep their files
and show the status. Everything is read back from the layout and over HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement

from oci_pypi_sync.engine.run import sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.html import parse_html_page
from oci_pypi_sync.index.pep691 import parse_json_page
from oci_pypi_sync.ops.catalog import ProjectStatus, read_catalog
from oci_pypi_sync.serve import create_app
from oci_pypi_sync.serve.pages import JSON_V1
from oci_pypi_sync.stores.layout import LayoutStore

NAMES = ("calm", "old-tool", "bad-pkg", "legacy-api")


def _index() -> FixtureIndex:
    index = FixtureIndex()
    for name in NAMES:
        index.add(name, make_wheel(name, "1.0"), make_sdist(name, "1.0"))
    return index


async def _sync(index: FixtureIndex, store: LayoutStore) -> None:
    async with IndexClient(index.url) as client:
        report = await sync([Requirement(n) for n in NAMES], client, store)
    assert not report.failed, report


def _client(store: LayoutStore) -> httpx.AsyncClient:
    app = create_app(store, ttl=0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mirror.test")


async def _json_page(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await http.get(f"/simple/{name}/", headers={"Accept": JSON_V1})
    assert response.status_code == 200
    page: dict[str, Any] = response.json()
    return page


async def test_statuses_are_kept_and_a_quarantined_project_offers_no_file(tmp_path: Path) -> None:
    index = _index()
    store = LayoutStore(tmp_path / "mirror")
    with serve_index(index):
        await _sync(index, store)
        async with _client(store) as http:
            bad = await _json_page(http, "bad-pkg")
            assert len(bad["files"]) == 2
            file_url = "/simple/bad-pkg/" + bad["files"][0]["url"]
            assert (await http.get(file_url)).status_code == 200

        # The index archives one project, deprecates one, quarantines one (and
        # stops listing its files, as PEP 792 asks).
        index.project_status["old-tool"] = ("archived", "no longer maintained")
        index.project_status["legacy-api"] = ("deprecated", None)
        index.project_status["bad-pkg"] = ("quarantined", "malware report <123>")
        withheld = index.projects["bad-pkg"]
        index.projects["bad-pkg"] = []
        await _sync(index, store)

    catalog = await read_catalog(store)
    assert catalog is not None
    assert catalog.statuses == {
        "old-tool": ProjectStatus("archived", "no longer maintained"),
        "legacy-api": ProjectStatus("deprecated"),
        "bad-pkg": ProjectStatus("quarantined", "malware report <123>"),
    }
    # The quarantined project's releases stay in the mirror.
    assert set(catalog.projects["bad-pkg"]) == {"1.0"}
    assert ("bad-pkg", "1.0") in store.tags()

    async with _client(store) as http:
        bad = await _json_page(http, "bad-pkg")
        assert bad["project-status"] == {"status": "quarantined", "reason": "malware report <123>"}
        assert bad["files"] == []
        assert bad["versions"] == []
        assert bad["meta"] == {"api-version": "1.4"}
        assert (await http.get(file_url)).status_code == 404
        html = await http.get("/simple/bad-pkg/")
        parsed = parse_html_page(html.content, str(html.url), "bad-pkg")
        assert (parsed.status, parsed.status_reason, parsed.files) == (
            "quarantined",
            "malware report <123>",
            (),
        )

        old = await _json_page(http, "old-tool")
        assert old["project-status"] == {"status": "archived", "reason": "no longer maintained"}
        response = await http.get("/simple/old-tool/?format=json")
        page = parse_json_page(response.content, str(response.url))
        assert page.status == "archived"
        assert len(page.files) == 2
        assert (await http.get(page.files[0].url)).status_code == 200
        legacy = await _json_page(http, "legacy-api")
        assert legacy["project-status"] == {"status": "deprecated"}
        calm = await _json_page(http, "calm")
        assert "project-status" not in calm
        listing = (await http.get("/simple/", headers={"Accept": JSON_V1})).json()
        assert [p["name"] for p in listing["projects"]] == sorted(NAMES)

    # The index lifts the quarantine and lists the files again: they are offered again.
    index.project_status["bad-pkg"] = ("active", None)
    index.projects["bad-pkg"] = withheld
    with serve_index(index):
        await _sync(index, store)
    catalog = await read_catalog(store)
    assert catalog is not None
    assert "bad-pkg" not in catalog.statuses
    async with _client(store) as http:
        bad = await _json_page(http, "bad-pkg")
        assert "project-status" not in bad
        assert len(bad["files"]) == 2
        assert (await http.get(file_url)).status_code == 200


async def test_a_quarantined_project_is_not_downloaded_even_if_listed(tmp_path: Path) -> None:
    """An index that quarantines a project but still lists files: none is taken."""
    index = _index()
    index.project_status["bad-pkg"] = ("quarantined", None)
    store = LayoutStore(tmp_path / "mirror")
    with serve_index(index):
        await _sync(index, store)
    assert not any(
        path.endswith((".whl", ".tar.gz")) for _, path in index.requests if "bad" in path
    )
    assert not any(repo == "bad-pkg" for repo, _ in store.tags())
    catalog = await read_catalog(store)
    assert catalog is not None
    assert catalog.status("bad-pkg") == ProjectStatus("quarantined")
    async with _client(store) as http:
        bad = await _json_page(http, "bad-pkg")
        assert bad["project-status"] == {"status": "quarantined"}
        assert bad["files"] == []
