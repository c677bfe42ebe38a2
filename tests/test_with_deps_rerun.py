"""``--with-deps`` reruns: each project page is read once per run, resolution and sync alike."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_wheel, serve_index

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
