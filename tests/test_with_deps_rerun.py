"""``--with-deps`` reruns: each project page is read once per run, resolution and sync alike."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_wheel, serve_index

from oci_pypi_sync.state.journal import Journal
from oci_pypi_sync.stores.layout import LayoutStore


def test_each_page_is_read_once_per_run_and_a_rerun_pushes_nothing(tmp_path: Path) -> None:
    fixture = FixtureIndex()
    fixture.add("app", make_wheel("app", "1.0", ("lib>=1", "util")))
    fixture.add("lib", make_wheel("lib", "1.0", ("util",)), make_wheel("lib", "2.0", ("util",)))
    fixture.add("util", make_wheel("util", "1.0"))
    layout = tmp_path / "mirror"
    args = ["sync", "app", "--with-deps", "--to", f"oci:{layout}", "--json"]
    with serve_index(fixture) as index:
        reports = []
        for _ in range(2):
            before = len(index.requests)
            result = run_cli([*args, "-i", index.url], cli_env(tmp_path))
            assert result.returncode == 0, result.describe()
            reports.append(result.json())
            pages = Counter(
                path for _, path in index.requests[before:] if path.startswith("/simple/")
            )
            assert pages == {"/simple/app/": 1, "/simple/lib/": 1, "/simple/util/": 1}
    first, second = reports
    assert first["totals"]["pushed"] == 3
    assert second["totals"]["pushed"] == 0
    assert second["totals"]["projects_unchanged"] == 3
    tags = sorted((r, t) for r, t in LayoutStore(layout).tags() if not r.startswith("oci-pypi."))
    assert tags == [("app", "1.0"), ("lib", "2.0"), ("util", "1.0")]


def _closure_index(**options: Any) -> FixtureIndex:
    fixture = FixtureIndex(**options)
    fixture.add("app", make_wheel("app", "1.0", ("lib>=1", "util")))
    fixture.add("lib", make_wheel("lib", "1.0", ("util",)), make_wheel("lib", "2.0", ("util",)))
    fixture.add("util", make_wheel("util", "1.0"))
    return fixture


def _run(index: FixtureIndex, home: Path, *args: str) -> tuple[dict[str, Any], list[str]]:
    """One sync; its report and the paths it asked the index for, in order."""
    before = len(index.requests)
    result = run_cli(["sync", *args, "--json", "-i", index.url], cli_env(home))
    assert result.returncode == 0, result.describe()
    report: dict[str, Any] = result.json()
    return report, [path for _, path in index.requests[before:]]


def test_a_no_op_rerun_with_deps_asks_the_index_what_one_without_asks(tmp_path: Path) -> None:
    with serve_index(_closure_index(etags=True)) as index:
        with_deps = ["app", "--with-deps", "--to", f"oci:{tmp_path / 'a'}"]
        first, cold = _run(index, tmp_path, *with_deps)
        assert first["totals"]["pushed"] == 3
        # Cold: each page once, each weighed release's metadata once (the sync
        # stores the metadata the resolution read), each file once.
        assert Counter(cold) == {
            "/simple/app/": 1,
            "/simple/lib/": 1,
            "/simple/util/": 1,
            "/files/app-1.0-py3-none-any.whl.metadata": 1,
            "/files/lib-2.0-py3-none-any.whl.metadata": 1,
            "/files/util-1.0-py3-none-any.whl.metadata": 1,
            "/files/app-1.0-py3-none-any.whl": 1,
            "/files/lib-2.0-py3-none-any.whl": 1,
            "/files/util-1.0-py3-none-any.whl": 1,
        }
        statuses = len(index.statuses)
        again, rerun_with_deps = _run(index, tmp_path, *with_deps)
        assert index.statuses[statuses:] == [304, 304, 304]

        pinned = ["app==1.0", "lib==2.0", "util==1.0", "--to", f"oci:{tmp_path / 'b'}"]
        _run(index, tmp_path, *pinned)
        statuses = len(index.statuses)
        plain, rerun_without = _run(index, tmp_path, *pinned)
        assert index.statuses[statuses:] == [304, 304, 304]

    # The same requests: one conditional GET per project, nothing else.
    assert sorted(rerun_with_deps) == sorted(rerun_without)
    assert sorted(rerun_without) == ["/simple/app/", "/simple/lib/", "/simple/util/"]
    for report in (again, plain):
        assert report["totals"]["pushed"] == 0
        assert report["totals"]["projects_unchanged"] == 3
    assert [(f["filename"], f["action"]) for f in again["files"]] == [
        (f["filename"], f["action"]) for f in plain["files"]
    ]


def test_a_changed_page_costs_its_new_metadata_only(tmp_path: Path) -> None:
    with serve_index(_closure_index(etags=True)) as index:
        args = ["app", "--with-deps", "--to", f"oci:{tmp_path / 'mirror'}"]
        _run(index, tmp_path, *args)
        index.add("util", make_wheel("util", "1.1"))
        report, paths = _run(index, tmp_path, *args)
    assert sorted(paths) == [
        "/files/util-1.1-py3-none-any.whl",
        "/files/util-1.1-py3-none-any.whl.metadata",
        "/simple/app/",
        "/simple/lib/",
        "/simple/util/",
    ]
    assert report["totals"]["pushed"] == 1
    tags = sorted(t for t in LayoutStore(tmp_path / "mirror").tags() if t[0] == "util")
    assert tags == [("util", "1.0"), ("util", "1.1")]


def test_an_index_with_last_modified_only_is_revalidated_with_if_modified_since(
    tmp_path: Path,
) -> None:
    fixture = _closure_index(last_modified="Tue, 01 Dec 2026 10:00:00 GMT")
    with serve_index(fixture) as index:
        args = ["app", "--with-deps", "--to", f"oci:{tmp_path / 'mirror'}"]
        _run(index, tmp_path, *args)
        statuses = len(index.statuses)
        report, paths = _run(index, tmp_path, *args)
        assert index.statuses[statuses:] == [304, 304, 304]
    assert sorted(paths) == ["/simple/app/", "/simple/lib/", "/simple/util/"]
    assert report["totals"]["projects_unchanged"] == 3


def test_a_page_naming_a_token_is_not_kept_in_the_state(tmp_path: Path) -> None:
    fixture = _closure_index(etags=True)
    state = tmp_path / "state.sqlite"
    with serve_index(fixture) as index:
        signed = make_wheel("tool", "1.0")
        signed.advertise_metadata = False  # its .metadata URL would end in the token
        signed.url = index.url.removesuffix("/simple/") + f"/files/{signed.filename}?token=s3cr3t"
        fixture.add("tool", signed)
        args = ["app", "tool", "--with-deps", "--to", f"oci:{tmp_path / 'mirror'}"]
        _run(index, tmp_path, *args, "--state", str(state))
        report, paths = _run(index, tmp_path, *args, "--state", str(state))
    assert report["totals"]["projects_unchanged"] == 4
    # Read in full again (no copy to revalidate), the others revalidated.
    assert sorted(paths) == ["/simple/app/", "/simple/lib/", "/simple/tool/", "/simple/util/"]
    with Journal.open(state, target=None, readonly=True) as journal:
        assert journal.stored_page(f"{index.url}tool/") is None
        assert journal.stored_page(f"{index.url}app/") is not None
    assert b"s3cr3t" not in state.read_bytes()
