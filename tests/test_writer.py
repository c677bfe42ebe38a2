"""The writer against the real registry and real layouts: mounts, single flight, merged tags."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from registry_server import RegistryServer

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine import writer as writer_module
from oci_pypi_sync.engine.retry import RetryPolicy
from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.errors import LayoutError
from oci_pypi_sync.format.leases import lease_manifest
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY
from oci_pypi_sync.stores.credentials import CredentialStore
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import StoredManifest, TagMerge
from oci_pypi_sync.stores.registry import RegistryStore

pytestmark = pytest.mark.registry

QUICK = RetryPolicy(attempts=2, initial_wait=0.01)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def prefix() -> str:
    return f"w{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(registry: RegistryServer, prefix: str) -> AsyncIterator[RegistryStore]:
    async with RegistryStore(
        registry.host, prefix, plain_http=True, credentials=CredentialStore.empty()
    ) as opened:
        yield opened


async def announce_writer(store: RegistryStore, slot: str, *, running: bool = True) -> str:
    """Another writer's lease in ``slot``, as that writer would write it; its digest."""
    empty = fmt.empty_config()
    await store.put_blob_bytes(CATALOG_REPOSITORY, empty.descriptor.digest, empty.data)
    body = lease_manifest(
        uuid.uuid4().hex, running=running, expires=datetime.now(UTC) + timedelta(minutes=2)
    )
    return await store.put_manifest(CATALOG_REPOSITORY, slot, fmt.OCI_MANIFEST, body)


def registry_requests(registry: RegistryServer, start: int) -> list[tuple[str, str]]:
    return re.findall(r'"(POST|PUT|PATCH|HEAD|GET) (/v2/\S*) HTTP', registry.log_text()[start:])


async def test_a_blob_this_run_wrote_is_mounted_into_another_repository_in_one_request(
    registry: RegistryServer, store: RegistryStore, prefix: str
) -> None:
    data = b"x" * 2_000
    digest = sha256(data)
    writer = Writer(store, QUICK)
    assert (await writer.blob_bytes("first", digest, data)).outcome == "uploaded"
    start = len(registry.log_text())
    written = await writer.blob_bytes("second", digest, data)
    assert written.outcome == "mounted"
    assert registry_requests(registry, start) == [
        (
            "POST",
            f"/v2/{prefix}/second/blobs/uploads/?mount={quote(digest, safe='')}"
            f"&from={quote(prefix + '/first', safe='')}",
        )
    ]
    assert await store.has_blob("second", digest)
    assert (await writer.blob_bytes("second", digest, data)).outcome == "present"


async def test_concurrent_writes_of_one_blob_upload_it_once(
    registry: RegistryServer, store: RegistryStore
) -> None:
    data = bytes(range(256)) * 4096
    digest = sha256(data)
    opened = 0

    def source() -> AsyncIterator[bytes]:
        nonlocal opened
        opened += 1

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), 65536):
                await asyncio.sleep(0)
                yield data[start : start + 65536]

        return chunks()

    writer = Writer(store, QUICK)
    results = await asyncio.gather(
        *(writer.blob("pkg", digest, len(data), source) for _ in range(5))
    )
    assert sorted(r.outcome for r in results) == ["present"] * 4 + ["uploaded"]
    assert opened == 1
    got = b"".join([chunk async for chunk in store.open_blob("pkg", digest)])
    assert sha256(got) == digest


def fake_manifest(title: str) -> bytes:
    """A small artifact manifest standing for one file's (its only layer is the empty blob)."""
    empty = fmt.empty_config().descriptor.to_json()
    return fmt.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": fmt.OCI_MANIFEST,
            "config": empty,
            "layers": [empty],
            "annotations": {fmt.TITLE: title},
        }
    )


async def store_entries(
    store: RegistryStore | LayoutStore, *titles: str
) -> dict[str, fmt.Descriptor]:
    """The fake manifests stored (an index's children must be), as index entries by title."""
    empty = fmt.empty_config()
    await store.put_blob_bytes("pkg", empty.descriptor.digest, empty.data)
    entries = {}
    for title in titles:
        body = fake_manifest(title)
        digest = await store.put_manifest("pkg", sha256(body), fmt.OCI_MANIFEST, body)
        entries[title] = fmt.Descriptor(
            fmt.OCI_MANIFEST, digest, len(body), annotations={fmt.A_FILENAME: title}
        )
    return entries


def titles_of(manifest: StoredManifest | None) -> set[str]:
    assert manifest is not None
    return {
        entry["annotations"][fmt.A_FILENAME] for entry in json.loads(manifest.body)["manifests"]
    }


def adding(entries: dict[str, fmt.Descriptor], title: str) -> TagMerge:
    """A merge in the shape of a release merge: what the tag lists, plus ``title``."""

    def merge(current: StoredManifest | None) -> bytes:
        listed = titles_of(current) if current is not None else set()
        chosen = [entries[t] for t in sorted(listed | {title})]
        return fmt.build_release_index("pkg", "1.0", chosen).data

    return merge


async def test_a_tag_another_writer_overwrote_gets_our_entries_back_after_the_settle_delay(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = await store_entries(store, "ours.whl", "theirs.whl")
    monkeypatch.setattr(writer_module, "SETTLE_FLOOR", 0.3)

    def index_of(*titles: str) -> bytes:
        return fmt.build_release_index("pkg", "1.0", [entries[t] for t in titles]).data

    await announce_writer(store, "writer-3")
    writer = Writer(store, QUICK)
    ours = await writer.tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"))
    assert ours == sha256(index_of("ours.whl"))
    # Another writer read the tag before our write and writes after it: ours is lost.
    await store.put_manifest("pkg", "1.0", fmt.OCI_INDEX, index_of("theirs.whl"))
    assert titles_of(await store.get_manifest("pkg", "1.0")) == {"theirs.whl"}
    settled = await writer.settle()
    assert settled == {("pkg", "1.0"): sha256(index_of("ours.whl", "theirs.whl"))}
    assert writer.remerged == 1
    assert titles_of(await store.get_manifest("pkg", "1.0")) == {"ours.whl", "theirs.whl"}


async def test_a_tag_another_writer_merged_ours_into_is_left_alone(
    store: RegistryStore,
) -> None:
    entries = await store_entries(store, "ours.whl", "theirs.whl")
    await announce_writer(store, "writer-0")
    writer = Writer(store, QUICK)
    await writer.tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"))
    # The other writer did read-merge-write properly: both entries are there.
    both = fmt.build_release_index("pkg", "1.0", list(entries.values())).data
    await store.put_manifest("pkg", "1.0", fmt.OCI_INDEX, both)
    assert await writer.settle() == {("pkg", "1.0"): sha256(both)}
    assert writer.remerged == 0


async def test_a_layout_tag_is_read_merged_and_written_under_its_lock(tmp_path: Path) -> None:
    layout = LayoutStore(tmp_path / "m")
    other = LayoutStore(tmp_path / "m")  # another writer's view of the same layout
    entries = await store_entries(layout, "a.whl", "b.whl", "c.whl")
    await asyncio.gather(
        Writer(layout, QUICK).tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "a.whl")),
        Writer(other, QUICK).tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "b.whl")),
        Writer(layout, QUICK).tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "c.whl")),
    )
    assert titles_of(await other.get_manifest("pkg", "1.0")) == {"a.whl", "b.whl", "c.whl"}


def test_a_layout_another_writer_is_making_right_now_is_written_into(tmp_path: Path) -> None:
    # What another writer's first write has made before its oci-layout file:
    # not someone else's directory, so not refused.
    path = tmp_path / "m"
    (path / "blobs" / "sha256").mkdir(parents=True)
    (path / "index.json").write_bytes(b'{"schemaVersion": 2, "manifests": []}')
    LayoutStore(path)
    # A blob, a tag, a file of another tool: refused, as any non-empty directory.
    (path / "blobs" / "sha256" / ("0" * 64)).write_bytes(b"x")
    with pytest.raises(LayoutError, match="non-empty directory"):
        LayoutStore(path)
    (path / "blobs" / "sha256" / ("0" * 64)).unlink()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(LayoutError, match="non-empty directory"):
        LayoutStore(path)
