"""``six==1.17.0`` synced from recorded real index responses, to a layout and a registry."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from cassettes import INDEX_URL, replay
from layout_check import check_layout
from packaging.requirements import Requirement
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.run import SyncOptions, SyncReport, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.targets import open_store, parse_target

# The recorded page advertises no core metadata, and six's wheel .metadata
# is not recorded: no probing in these replays.
OPTIONS = SyncOptions(probe_metadata=False)


async def _sync_six(target: str) -> SyncReport:
    store = open_store(parse_target(target))
    try:
        with replay("six", pass_loopback=True):
            async with IndexClient(INDEX_URL) as client:
                page = await client.get_project_page("six")
                report = await sync([Requirement("six==1.17.0")], client, store, OPTIONS)
    finally:
        await store.aclose()
    expected = {f.filename: f.sha256 for f in page.files if "1.17.0" in f.filename}
    assert {f.filename: f.sha256 for f in report.files} == expected
    return report


async def test_six_into_layout_and_registry(registry: RegistryServer, tmp_path: Path) -> None:
    layout_report = await _sync_six(f"oci:{tmp_path / 'layout'}")
    registry_report = await _sync_six(f"{registry.host}/pypi")
    assert not layout_report.failed
    assert not registry_report.failed
    (layout_release,) = layout_report.releases
    (registry_release,) = registry_report.releases
    assert layout_release.tag == registry_release.tag == "1.17.0"
    assert layout_release.digest == registry_release.digest
    check_layout(tmp_path / "layout")

    raw = subprocess.run(
        [
            "skopeo",
            "inspect",
            "--raw",
            "--tls-verify=false",
            f"docker://{registry.host}/pypi/six:1.17.0",
        ],
        capture_output=True,
        check=True,
        timeout=600,
    ).stdout
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == registry_release.digest
    index = json.loads(raw)
    by_title = {m["annotations"][fmt.A_FILENAME]: m for m in index["manifests"]}
    assert sorted(by_title) == ["six-1.17.0-py2.py3-none-any.whl", "six-1.17.0.tar.gz"]
    wheel_entry = by_title["six-1.17.0-py2.py3-none-any.whl"]
    assert "platform" not in wheel_entry
    layout = LayoutStore(tmp_path / "layout")
    wheel_manifest = json.loads(layout.blob_path(wheel_entry["digest"]).read_bytes())
    sha256 = next(f.sha256 for f in registry_report.files if f.filename.endswith(".whl"))
    assert wheel_manifest["layers"][0]["digest"] == f"sha256:{sha256}"
    wheel_bytes = layout.blob_path(f"sha256:{sha256}").read_bytes()
    assert hashlib.sha256(wheel_bytes).hexdigest() == sha256


async def test_six_rerun_is_a_no_op(tmp_path: Path) -> None:
    first = await _sync_six(f"oci:{tmp_path / 'm'}")
    second = await _sync_six(f"oci:{tmp_path / 'm'}")
    assert first.count("pushed") == 2
    assert second.count("pushed") == 0
    assert second.count("present") == 2
    assert [r.action for r in second.releases] == ["unchanged"]
