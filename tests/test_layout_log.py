"""A layout's tags through its write-ahead log: cost per tag, readers, crashes, two writers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
from layout_check import check_layout

from oci_pypi_sync import format as fmt
from oci_pypi_sync.errors import LayoutError
from oci_pypi_sync.stores import layout_refs
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.layout_lines import LineIndex
from oci_pypi_sync.stores.layout_log import LOG_FILE
from oci_pypi_sync.stores.tarball import pack_layout

REPO_ROOT = Path(__file__).resolve().parent.parent


def release(name: str) -> bytes:
    """A version index without entries: a real manifest with no children to store first."""
    index = {"schemaVersion": 2, "mediaType": fmt.OCI_INDEX, "manifests": []}
    return fmt.canonical_json({**index, "annotations": {"n": name}})


def digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


async def tag(store: LayoutStore, repo: str, version: str = "1.0") -> str:
    return await store.put_manifest(repo, version, fmt.OCI_INDEX, release(f"{repo}-{version}"))


def on_disk(path: Path) -> dict[str, str]:
    """ref name -> digest, as another tool reads ``index.json`` (the log not read)."""
    document = json.loads((path / "index.json").read_bytes())
    return {
        e["annotations"][fmt.REF_NAME]: e["digest"]
        for e in document["manifests"]
        if fmt.REF_NAME in e.get("annotations", {})
    }


def writer_script(path: Path, prefix: str, count: int, *, threshold: int | None = None) -> str:
    """A process that tags ``count`` releases, printing each once it is committed."""
    return textwrap.dedent(
        f"""
        import asyncio, os, sys
        from oci_pypi_sync import format as fmt
        from oci_pypi_sync.stores import layout_refs
        from oci_pypi_sync.stores.layout import LayoutStore
        if {threshold!r} is not None:
            layout_refs.LOG_MIN_BYTES = {threshold!r}
        async def main():
            store = LayoutStore({str(path)!r})
            for k in range({count}):
                name = f"{prefix}{{k:04d}}"
                body = fmt.canonical_json({{"schemaVersion": 2, "mediaType": fmt.OCI_INDEX,
                    "manifests": [], "annotations": {{"n": f"{{name}}-1.0"}}}})
                await store.put_manifest(name, "1.0", fmt.OCI_INDEX, body)
                print(name, flush=True)
            if os.environ.get("CLOSE") == "1":
                await store.aclose()
        asyncio.run(main())
        """
    )


def python(script: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
    )


# --- the cost of a tag -------------------------------------------------------------------


async def test_a_tag_is_a_line_in_the_log_and_index_json_is_written_once_at_the_end(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m"
    store = LayoutStore(path)
    await tag(store, "base")
    await store.aclose()
    before = (path / "index.json").stat()

    store = LayoutStore(path)
    digests = {f"p{k:03d}": await tag(store, f"p{k:03d}") for k in range(50)}
    # index.json untouched, one log line per tag; every tag readable meanwhile
    assert (path / "index.json").stat().st_ino == before.st_ino
    assert (path / "index.json").stat().st_size == before.st_size
    assert len((path / LOG_FILE).read_bytes().splitlines()) == 50
    assert store.folds() == 0
    for repo, digest in digests.items():
        manifest = await store.get_manifest(repo, "1.0")
        assert manifest is not None
        assert manifest.digest == digest
    assert set(on_disk(path)) == {"base/1.0"}  # other tools see the tags after the fold

    await store.aclose()
    assert store.folds() == 1
    assert not (path / LOG_FILE).exists()
    assert on_disk(path) == {"base/1.0": digest_of(release("base-1.0"))} | {
        f"{repo}/1.0": d for repo, d in digests.items()
    }
    assert LineIndex.parse((path / "index.json").read_bytes()) is not None
    check_layout(path)


async def rewritten_bytes_per_tag(path: Path, existing: int, added: int) -> float:
    """Bytes of ``index.json`` written per tag added to a layout of ``existing`` tags."""
    store = LayoutStore(path)
    for k in range(existing):
        await tag(store, f"old{k:05d}")
    await store.aclose()
    store = LayoutStore(path)
    written = 0
    current = (path / "index.json").stat().st_ino
    for k in range(added):
        await tag(store, f"new{k:05d}")
        stat = (path / "index.json").stat()
        if stat.st_ino != current:
            written += stat.st_size
            current = stat.st_ino
    await store.aclose()
    assert len(on_disk(path)) == existing + added
    return written / added


async def test_the_bytes_of_index_json_rewritten_per_tag_do_not_grow_with_the_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Folds at a share of index.json's size only (no floor), so they happen here.
    monkeypatch.setattr(layout_refs, "LOG_MIN_BYTES", 0)
    small = await rewritten_bytes_per_tag(tmp_path / "small", 300, 400)
    large = await rewritten_bytes_per_tag(tmp_path / "large", 3000, 400)
    line = len(fmt.canonical_json({"annotations": {fmt.REF_NAME: "new00000/1.0"}})) + 120
    # Ten times the tags, the same bytes per tag: about LOG_SHARE lines' worth.
    assert small > 0
    assert large > 0
    assert large < 2 * small
    assert large < 3 * layout_refs.LOG_SHARE * line


# --- readers ---------------------------------------------------------------------------


async def test_another_process_sees_every_committed_tag_and_a_reader_never_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m"
    writer = python(writer_script(path, "w", 20))
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert len(out.split()) == 20
    assert (path / LOG_FILE).is_file()  # the writer ended without closing

    reader = LayoutStore(path, create=False)
    assert await reader.list_repositories() == [f"w{k:04d}" for k in range(20)]
    assert await reader.list_tags("w0007") == ["1.0"]
    manifest = await reader.get_manifest("w0007", "1.0")
    assert manifest is not None
    assert manifest.digest == digest_of(release("w0007-1.0"))
    assert reader.tag_digests()["w0019"] == {"1.0": digest_of(release("w0019-1.0"))}
    index_before = (path / "index.json").read_bytes()
    await reader.aclose()
    assert (path / "index.json").read_bytes() == index_before
    assert (path / LOG_FILE).is_file()

    # The next writer's close folds what the dead one committed.
    writer_store = LayoutStore(path)
    await writer_store.aclose()
    assert not (path / LOG_FILE).exists()
    assert len(on_disk(path)) == 20


async def test_a_packed_layout_holds_the_tags_of_the_log(tmp_path: Path) -> None:
    path = tmp_path / "m"
    store = LayoutStore(path)
    digest = await tag(store, "six", "1.17.0")
    assert (path / LOG_FILE).is_file()
    pack_layout(path, tmp_path / "m.tar")
    with tarfile.open(tmp_path / "m.tar") as archive:
        member = archive.extractfile("index.json")
        assert member is not None
        manifests = json.loads(member.read())["manifests"]
    assert [(e["annotations"][fmt.REF_NAME], e["digest"]) for e in manifests] == [
        ("six/1.17.0", digest)
    ]
    await store.aclose()


# --- crashes ---------------------------------------------------------------------------


async def test_a_writer_killed_mid_run_loses_no_committed_tag_and_a_cut_line_is_no_tag(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m"
    writer = python(writer_script(path, "k", 5000))
    assert writer.stdout is not None
    committed = [writer.stdout.readline().strip() for _ in range(30)]
    writer.send_signal(signal.SIGKILL)
    rest, _ = writer.communicate(timeout=60)
    committed += rest.split()
    assert writer.returncode == -signal.SIGKILL

    reader = LayoutStore(path, create=False)
    tagged = set(await reader.list_repositories())
    assert set(committed) <= tagged  # every tag reported done is there
    for repo in committed:
        manifest = await reader.get_manifest(repo, "1.0")
        assert manifest is not None
        assert manifest.digest == digest_of(release(f"{repo}-1.0"))

    # A write cut short: the bytes of half a line, no newline.
    with (path / LOG_FILE).open("ab") as log:
        log.write(b'{"entry":{"digest":"sha256:00')
    assert set(await reader.list_repositories()) == tagged
    store = LayoutStore(path)
    digest = await tag(store, "after")
    assert all(line.startswith(b"{") for line in (path / LOG_FILE).read_bytes().splitlines())
    await store.aclose()
    expected = {f"{repo}/1.0": digest_of(release(f"{repo}-1.0")) for repo in tagged}
    assert on_disk(path) == expected | {"after/1.0": digest}
    check_layout(path)


async def test_a_damaged_log_line_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m"
    store = LayoutStore(path)
    await tag(store, "six")
    with (path / LOG_FILE).open("ab") as log:
        log.write(b'{"what":"is this"}\n')
    with pytest.raises(LayoutError, match=r"\.index\.log: line 2 is not a tag change.*aside"):
        await LayoutStore(path, create=False).list_tags("six")
    # Moved aside as the message says: the layout opens, without the tags the log held.
    (path / LOG_FILE).rename(tmp_path / "damaged.log")
    assert await LayoutStore(path, create=False).list_tags("six") == []
    await store.aclose()
    check_layout(path)


# --- concurrent writers ----------------------------------------------------------------


async def test_two_writers_and_a_reader_at_once_the_union_stays_and_no_tag_vanishes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m"
    store = LayoutStore(path)
    await tag(store, "base")
    await store.aclose()
    # Folds every few tags, so the writers fold under each other and the reader.
    threshold = "3000"
    writers = [
        python(writer_script(path, prefix, 150, threshold=int(threshold)), CLOSE="1")
        for prefix in ("a", "b")
    ]
    reader = LayoutStore(path, create=False)
    seen: set[str] = set()
    rounds = 0
    while any(w.poll() is None for w in writers) or rounds == 0:
        rounds += 1
        now = set(await reader.list_repositories())
        assert seen <= now, sorted(seen - now)  # a tag once seen is never missing later
        seen = now
        await asyncio.sleep(0.01)
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        assert len(out.split()) == 150
    expected = {"base"} | {f"{p}{k:04d}" for p in ("a", "b") for k in range(150)}
    assert set(await reader.list_repositories()) == expected
    assert not (path / LOG_FILE).exists()  # the last writer to close folded
    assert set(on_disk(path)) == {f"{repo}/1.0" for repo in expected}
    check_layout(path)


# --- another tool's index.json ---------------------------------------------------------


async def test_another_tools_index_json_is_read_then_rewritten_keeping_its_entries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m"
    store = LayoutStore(path)
    six = await tag(store, "six", "1.17.0")
    old = await tag(store, "attrs", "23.1.0")
    await store.aclose()
    # As oras or skopeo leave it: indented, unsorted, a child listed untagged with its
    # annotations, a bare ref name, a format-1 ref name, another member.
    child: dict[str, Any] = {
        "mediaType": fmt.OCI_INDEX,
        "digest": six,
        "size": len(release("six-1.17.0")),
        "annotations": {"org.opencontainers.image.title": "six"},
    }
    document = {
        "schemaVersion": 2,
        "annotations": {"org.example": "kept"},
        "manifests": [
            {**child, "annotations": {fmt.REF_NAME: "six/1.17.0"}},
            child,
            {**child, "digest": old, "annotations": {fmt.REF_NAME: "attrs:23.1.0"}},
            {**child, "annotations": {fmt.REF_NAME: "latest"}},
        ],
    }
    (path / "index.json").write_text(json.dumps(document, indent=2))

    store = LayoutStore(path)
    assert await store.list_tags("attrs") == ["23.1.0"]
    assert store.tagged("six", "1.17.0") == six
    assert store.format1_refs() == {"attrs:23.1.0": ("attrs", "23.1.0")}
    new = await tag(store, "attrs", "24.1.0")
    assert await store.list_tags("attrs") == ["23.1.0", "24.1.0"]
    await store.aclose()

    data = (path / "index.json").read_bytes()
    assert LineIndex.parse(data) is not None
    after = json.loads(data)
    assert after["annotations"] == {"org.example": "kept"}
    assert child in after["manifests"]
    assert on_disk(path) == {
        "attrs/23.1.0": old,
        "attrs/24.1.0": new,
        "latest": six,
        "six/1.17.0": six,
    }


async def test_a_referrers_subject_is_listed_untagged_once(tmp_path: Path) -> None:
    path = tmp_path / "m"
    store = LayoutStore(path)
    subject_body = release("subject")
    subject = await store.put_manifest("six", digest_of(subject_body), fmt.OCI_INDEX, subject_body)
    fallback = "sha256-" + subject.removeprefix("sha256:")
    await store.put_manifest("six", fallback, fmt.OCI_INDEX, release("referrers-1"))
    await store.put_manifest("six", fallback, fmt.OCI_INDEX, release("referrers-2"))
    await store.aclose()
    manifests = json.loads((path / "index.json").read_bytes())["manifests"]
    assert [e["digest"] for e in manifests if "annotations" not in e] == [subject]
    assert on_disk(path) == {f"six/{fallback}": digest_of(release("referrers-2"))}
