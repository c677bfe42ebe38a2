"""``serve`` over a crafted mirror: every value it puts in a page is escaped or refused.

A mirror can arrive as a tar across an air gap, made by anyone: its
annotations are input. The release index of a real synced mirror is
rewritten with hostile values, then the pages are read back through the
ASGI app and parsed with this project's own simple-API parsers, so the
test checks both that no markup gets through and that the values survive
escaping intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index

from oci_pypi_sync import format as fmt
from oci_pypi_sync.index.html import parse_html_page
from oci_pypi_sync.index.pep691 import parse_json_page
from oci_pypi_sync.serve import create_app
from oci_pypi_sync.stores.layout import LayoutStore

BASE = "http://mirror.test"
REQUIRES = '"><script>alert(1)</script>'
REASON = "</a><img src=x onerror=alert(2)>&amp;"
EVIL_NAME = 'tool-1.0"><img src=x onerror=alert(4)>.tar.gz'


def _sync(tmp_path: Path) -> Path:
    fixture = FixtureIndex()
    fixture.add("tool", make_wheel("tool", "1.0"), make_sdist("tool", "1.0"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "OCI_PYPI_"))}
    with serve_index(fixture):
        subprocess.run(
            [sys.executable, "-m", "oci_pypi_sync", "sync", "tool", "--to", "oci:m",
             "--index-url", fixture.url],
            cwd=tmp_path,
            env={**env, "XDG_STATE_HOME": str(tmp_path / "state")},
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
    return tmp_path / "m"


async def _craft(layout: Path) -> str:
    """Rewrite tool 1.0's index with hostile annotations; the sdist's sha256."""
    store = LayoutStore(layout, create=False)
    manifest = await store.get_manifest("tool", "1.0")
    assert manifest is not None
    index = json.loads(manifest.body)
    by_name = {entry["annotations"][fmt.A_FILENAME]: entry for entry in index["manifests"]}
    wheel, sdist = by_name["tool-1.0-py3-none-any.whl"], by_name["tool-1.0.tar.gz"]
    wheel["annotations"].update(
        {
            fmt.A_REQUIRES_PYTHON: REQUIRES,
            fmt.A_YANKED: "true",
            fmt.A_YANKED_REASON: REASON,
            fmt.A_METADATA_SHA256: '"><script>alert(3)</script>',
        }
    )
    renamed = json.loads(json.dumps(sdist))
    renamed["annotations"][fmt.A_FILENAME] = EVIL_NAME
    bad_digest = json.loads(json.dumps(sdist))
    bad_digest["annotations"][fmt.A_FILENAME] = "tool-1.0.zip"
    bad_digest["annotations"][fmt.A_SHA256] = '0" onmouseover="alert(5)'
    slashed = json.loads(json.dumps(sdist))
    slashed["annotations"][fmt.A_FILENAME] = "../../../etc/passwd"
    index["manifests"] += [renamed, bad_digest, slashed]
    body = fmt.canonical_json(index)
    await store.put_manifest("tool", "1.0", fmt.OCI_INDEX, body)
    return str(sdist["annotations"][fmt.A_SHA256])


async def test_hostile_annotations_are_escaped_or_dropped(tmp_path: Path) -> None:
    layout = _sync(tmp_path)
    sdist_sha256 = await _craft(layout)
    app = create_app(LayoutStore(layout, create=False))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        html = await client.get("/simple/tool/", headers={"Accept": "text/html"})
        page_json = await client.get(
            "/simple/tool/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        evil_file = await client.get(
            f"/files/tool/{sdist_sha256}/{httpx.URL(path=EVIL_NAME).raw_path.decode()}"
        )
    assert html.status_code == 200
    text = html.text
    for markup in ("<script", "<img", '"><', "onmouseover", "alert(3)", "alert(5)"):
        assert markup not in text
    assert "etc/passwd" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=alert(2)&gt;&amp;amp;" in text

    # What an installer reads back is exactly what the mirror says, nothing more.
    parsed = parse_html_page(text, f"{BASE}/simple/tool/", "tool")
    by_name = {f.filename: f for f in parsed.files}
    assert set(by_name) == {"tool-1.0-py3-none-any.whl", "tool-1.0.tar.gz", EVIL_NAME}
    wheel = by_name["tool-1.0-py3-none-any.whl"]
    assert wheel.requires_python == REQUIRES
    assert wheel.yanked_reason == REASON
    assert wheel.core_metadata is None  # a malformed digest drops the metadata, not the file
    assert by_name[EVIL_NAME].sha256 == sdist_sha256
    from_json = parse_json_page(page_json.content, f"{BASE}/simple/tool/")
    assert {f.filename for f in from_json.files} == set(by_name)
    assert {f.filename: f.requires_python for f in from_json.files}[wheel.filename] == REQUIRES

    # The link to the oddly named file leads to the file's bytes.
    assert evil_file.status_code == 200
    assert hashlib.sha256(evil_file.content).hexdigest() == sdist_sha256
