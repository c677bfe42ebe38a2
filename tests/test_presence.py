"""Writer leases: a run alone writes tags without coordination reads, never at others' cost.

The rules are checked as pure functions; the writer against the real
registry, with other writers played by their leases and raw writes.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from fixture_index import FixtureIndex, make_wheel, serve_index
from registry_server import RegistryServer
from test_sync_registry import sync_logged
from test_writer import (
    adding,
    announce_writer,
    fake_manifest,
    sha256,
    store_entries,
    titles_of,
)

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine import presence as presence_module
from oci_pypi_sync.engine import writer as writer_module
from oci_pypi_sync.engine.retry import RetryPolicy
from oci_pypi_sync.engine.writer import Writer
from oci_pypi_sync.format.leases import (
    CLOCK_MARGIN,
    Lease,
    free_slot,
    is_lease_tag,
    lease_manifest,
    read_lease,
    sight,
)
from oci_pypi_sync.ops.catalog import CATALOG_REPOSITORY, read_catalog
from oci_pypi_sync.stores.credentials import CredentialStore
from oci_pypi_sync.stores.protocols import TagRead
from oci_pypi_sync.stores.registry import RegistryStore

QUICK = RetryPolicy(attempts=2, initial_wait=0.01)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def alive(nonce: str = "n") -> Lease:
    return Lease(nonce, True, NOW + timedelta(minutes=2))


def released(nonce: str = "n") -> Lease:
    return Lease(nonce, False, NOW)


# --- the rules -------------------------------------------------------------------------


def test_a_listing_with_only_our_lease_is_quiet() -> None:
    seen = {"writer-0": ("sha256:ours", alive("us"))}
    assert sight(seen, seen, "writer-0", "sha256:ours", NOW).quiet


def test_another_live_writer_makes_a_listing_loud() -> None:
    seen = {"writer-0": ("sha256:ours", alive("us")), "writer-1": ("sha256:b", alive("b"))}
    before = dict(seen)  # the listing before saw the same
    sighting = sight(seen, before, "writer-0", "sha256:ours", NOW)
    assert sighting.held
    assert not sighting.quiet


def test_a_writer_that_came_and_went_between_listings_makes_it_loud() -> None:
    seen = {"writer-0": ("sha256:ours", alive("us")), "writer-1": ("sha256:gone", released())}
    was_free = {"writer-0": seen["writer-0"], "writer-1": ("sha256:older", released("o"))}
    assert not sight(seen, was_free, "writer-0", "sha256:ours", NOW).quiet
    never_there = {"writer-0": seen["writer-0"]}
    assert not sight(seen, never_there, "writer-0", "sha256:ours", NOW).quiet
    unchanged = dict(seen)
    assert sight(seen, unchanged, "writer-0", "sha256:ours", NOW).quiet


def test_a_crashed_writer_counts_until_its_expiry_and_the_clock_margin_pass() -> None:
    crashed = Lease("c", True, NOW - timedelta(seconds=30))
    seen = {"writer-0": ("sha256:ours", alive("us")), "writer-1": ("sha256:c", crashed)}
    before = dict(seen)  # the listing before saw the same
    assert not sight(seen, before, "writer-0", "sha256:ours", NOW).quiet
    later = NOW + CLOCK_MARGIN
    assert sight(seen, before, "writer-0", "sha256:ours", later).quiet


def test_something_else_under_a_lease_tag_counts_as_a_live_writer() -> None:
    seen = {"writer-0": ("sha256:ours", alive("us")), "writer-1": ("sha256:x", None)}
    before = dict(seen)  # the listing before saw the same
    assert not sight(seen, before, "writer-0", "sha256:ours", NOW).quiet
    assert free_slot(seen, NOW) == "writer-2"


def test_a_slot_another_writer_took_over_is_not_held() -> None:
    seen = {"writer-0": ("sha256:theirs", alive("them"))}
    ours = {"writer-0": ("sha256:ours", alive("us"))}
    sighting = sight(seen, ours, "writer-0", "sha256:ours", NOW)
    assert not sighting.held
    assert not sighting.quiet


def test_the_lowest_slot_no_live_writer_holds_is_taken() -> None:
    expired = Lease("e", True, NOW - CLOCK_MARGIN - timedelta(seconds=1))
    seen = {
        "writer-0": ("sha256:a", alive("a")),
        "writer-1": ("sha256:b", released("b")),
        "writer-2": ("sha256:c", expired),
    }
    assert free_slot(seen, NOW) == "writer-1"
    assert free_slot(seen, NOW, frozenset({"writer-1"})) == "writer-2"
    assert free_slot(seen, NOW, frozenset({"writer-1", "writer-2"})) == "writer-3"
    assert free_slot({}, NOW) == "writer-0"


def test_a_lease_reads_back_what_was_written_and_nothing_else_reads_as_one() -> None:
    expires = NOW + timedelta(minutes=2)
    lease = read_lease(lease_manifest("abc", running=True, expires=expires))
    assert lease == Lease("abc", True, expires)
    assert read_lease(lease_manifest("abc", running=False, expires=NOW)) == Lease("abc", False, NOW)
    assert read_lease(b"{}") is None
    assert read_lease(b"not json") is None
    assert read_lease(fmt.build_release_index("pkg", "1.0", []).data) is None
    assert is_lease_tag("writer-0")
    assert is_lease_tag("writer-17")
    assert not is_lease_tag("writer-")
    assert not is_lease_tag("writer-01")
    assert not is_lease_tag("latest")


# --- the writer against the registry -------------------------------------------------


@pytest.fixture
async def store(registry: RegistryServer) -> AsyncIterator[RegistryStore]:
    prefix = f"p{uuid.uuid4().hex[:10]}"
    async with RegistryStore(
        registry.host, prefix, plain_http=True, credentials=CredentialStore.empty()
    ) as opened:
        yield opened


def index_of(entries: dict[str, fmt.Descriptor], *titles: str) -> bytes:
    return fmt.build_release_index("pkg", "1.0", [entries[t] for t in sorted(titles)]).data


async def lease_in(store: RegistryStore, slot: str) -> Lease | None:
    manifest = await store.get_manifest(CATALOG_REPOSITORY, slot)
    return read_lease(manifest.body) if manifest is not None else None


def tag_requests(registry: RegistryServer, start: int, store: RegistryStore) -> list[str]:
    """The methods of the requests for ``pkg:1.0`` since ``start`` in the registry's log."""
    path = f"/v2/{store.prefix}/pkg/manifests/1.0"
    log = registry.log_text()[start:]
    return re.findall(r'"(GET|HEAD|PUT) ' + re.escape(path) + r" HTTP", log)


@pytest.mark.registry
async def test_a_writer_alone_writes_a_tag_it_read_with_no_read_before_or_after(
    store: RegistryStore, registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However late a loaded machine runs the listings (the window is a bound, not the rule).
    monkeypatch.setattr(presence_module, "BLIND_WINDOW", 600.0)
    entries = await store_entries(store, "ours.whl")
    start = len(registry.log_text())
    writer = Writer(store, QUICK)
    read_at = await writer.read_point()
    read = TagRead(await store.get_manifest("pkg", "1.0"), read_at)
    digest = await writer.tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"), read=read)
    assert await writer.settle() == {}
    await writer.close()
    assert digest == sha256(index_of(entries, "ours.whl"))
    # The one read is the caller's; the writer only wrote.
    assert tag_requests(registry, start, store) == ["GET", "PUT"]
    assert titles_of(await store.get_manifest("pkg", "1.0")) == {"ours.whl"}
    # Released at the end: the next writer takes the same slot, so slots do not pile up.
    lease = await lease_in(store, "writer-0")
    assert lease is not None
    assert not lease.running
    again = Writer(store, QUICK)
    await again.tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"))
    await again.settle()
    await again.close()
    tags = await store.list_tags(CATALOG_REPOSITORY)
    assert [tag for tag in tags if is_lease_tag(tag)] == ["writer-0"]


@pytest.mark.registry
async def test_with_another_writer_live_the_tag_is_read_before_and_checked_after(
    store: RegistryStore, registry: RegistryServer
) -> None:
    entries = await store_entries(store, "ours.whl", "theirs.whl")
    await announce_writer(store, "writer-0")
    start = len(registry.log_text())
    writer = Writer(store, QUICK)
    read_at = await writer.read_point()
    read = TagRead(None, read_at)
    await writer.tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"), read=read)
    # That writer read before our write and writes after it: ours is dropped...
    await store.put_manifest("pkg", "1.0", fmt.OCI_INDEX, index_of(entries, "theirs.whl"))
    settled = await writer.settle()
    await writer.close()
    # ...and merged back by the settle check.
    both = sha256(index_of(entries, "ours.whl", "theirs.whl"))
    assert settled == {("pkg", "1.0"): both}
    assert titles_of(await store.get_manifest("pkg", "1.0")) == {"ours.whl", "theirs.whl"}
    methods = tag_requests(registry, start, store)
    assert methods[:2] == ["GET", "PUT"]  # read right before the write, despite ``read``
    assert methods.count("GET") >= 2  # and the settle check
    assert writer.remerged == 1
    # Our lease took the next slot; the other writer's is untouched.
    assert (await lease_in(store, "writer-0")) is not None
    ours = await lease_in(store, "writer-1")
    assert ours is not None
    assert not ours.running


@pytest.mark.parametrize("running", [True, False], ids=["arrived", "came-and-went"])
@pytest.mark.registry
async def test_a_writer_that_appears_after_our_write_gets_our_write_checked(
    store: RegistryStore, running: bool
) -> None:
    entries = await store_entries(store, "ours.whl", "theirs.whl")
    writer = Writer(store, QUICK)
    read_at = await writer.read_point()
    await writer.tag(
        "pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"), read=TagRead(None, read_at)
    )
    # Another writer starts (and, in one case, is done before our next listing),
    # having read the tag before our write landed: it drops our entry.
    await announce_writer(store, "writer-1", running=running)
    await store.put_manifest("pkg", "1.0", fmt.OCI_INDEX, index_of(entries, "theirs.whl"))
    await writer.settle()
    await writer.close()
    assert titles_of(await store.get_manifest("pkg", "1.0")) == {"ours.whl", "theirs.whl"}
    assert writer.remerged == 1


@pytest.mark.registry
async def test_a_read_older_than_another_writers_arrival_is_not_trusted(
    store: RegistryStore,
) -> None:
    entries = await store_entries(store, "ours.whl", "theirs.whl")
    writer = Writer(store, QUICK)
    read_at = await writer.read_point()
    stale = TagRead(None, read_at)
    # While our files transfer, another writer arrives and tags the version.
    await announce_writer(store, "writer-1")
    await store.put_manifest("pkg", "1.0", fmt.OCI_INDEX, index_of(entries, "theirs.whl"))
    presence = writer.presence
    assert presence is not None  # taken by read_point
    await presence.confirm()  # the listing the next tick would make
    assert not presence.blind_ok(stale.read_at)
    await writer.tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"), read=stale)
    assert titles_of(await store.get_manifest("pkg", "1.0")) == {"ours.whl", "theirs.whl"}
    await writer.settle()
    await writer.close()
    assert writer.remerged == 0


@pytest.mark.registry
async def test_a_writer_whose_slot_was_taken_takes_another_and_loses_nothing(
    store: RegistryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_module, "SETTLE_FLOOR", 0.1)
    entries = await store_entries(store, "ours.whl", "theirs.whl")
    writer = Writer(store, QUICK)
    await writer.tag("pkg", "1.0", fmt.OCI_INDEX, adding(entries, "ours.whl"))
    # Another writer took our slot for free (as if ours had expired) and wrote.
    await announce_writer(store, "writer-0")
    await store.put_manifest("pkg", "1.0", fmt.OCI_INDEX, index_of(entries, "theirs.whl"))
    await writer.settle()
    await writer.close()
    assert titles_of(await store.get_manifest("pkg", "1.0")) == {"ours.whl", "theirs.whl"}
    theirs = await lease_in(store, "writer-0")
    assert theirs is not None
    assert theirs.running
    ours = await lease_in(store, "writer-1")
    assert ours is not None
    assert not ours.running


# --- a sync, as a user runs it ---------------------------------------------------------


@pytest.mark.registry
async def test_a_sync_alone_reads_no_version_tag_and_beside_another_writer_reads_each_twice(
    registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(presence_module, "BLIND_WINDOW", 600.0)  # as above
    fixture = FixtureIndex()
    names = ("lz-a", "lz-b", "lz-c")
    for name in names:
        fixture.add(name, make_wheel(name, "1.0"))
    prefix = f"lz{uuid.uuid4().hex[:10]}"

    async def run() -> str:
        return await sync_logged(registry, fixture.url, prefix, names)

    def requests(log: str, method: str, version: str) -> list[str]:
        """The statuses of ``method`` on the projects' ``version`` tags."""
        path = rf"/v2/{prefix}/lz-[abc]/manifests/{re.escape(version)}"
        return sorted(re.findall(rf'"{method} {path} HTTP/1\.1" (\d+)', log))

    with serve_index(fixture):
        alone = await run()
        assert requests(alone, "GET", "1.0") == []
        assert requests(alone, "PUT", "1.0") == ["201"] * 3
        store = RegistryStore(
            registry.host, prefix, plain_http=True, credentials=CredentialStore.empty()
        )
        async with store:
            await announce_writer(store, "writer-5")
        for name in names:
            fixture.add(name, make_wheel(name, "2.0"))
        beside = await run()
        # Each new tag read right before its write (absent) and after the settle delay.
        assert requests(beside, "GET", "2.0") == ["200"] * 3 + ["404"] * 3
        assert requests(beside, "PUT", "2.0") == ["201"] * 3
    async with RegistryStore(
        registry.host, prefix, plain_http=True, credentials=CredentialStore.empty()
    ) as store:
        for name in names:
            assert await store.list_tags(name) == ["1.0", "2.0"]
        leases = [tag for tag in await store.list_tags(CATALOG_REPOSITORY) if is_lease_tag(tag)]
        assert leases == ["writer-0", "writer-5"]  # ours reused, theirs kept
        ours = await lease_in(store, "writer-0")
        assert ours is not None
        assert not ours.running


@pytest.mark.registry
async def test_every_tag_another_writer_moved_before_the_settle_check_is_recorded_again(
    registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The settle checks wait long enough for the other writer below to act first.
    monkeypatch.setattr(writer_module, "SETTLE_FLOOR", 5.0)
    fixture = FixtureIndex()
    for version in ("1.0", "2.0"):
        fixture.add("mv", make_wheel("mv", version))
    prefix = f"mv{uuid.uuid4().hex[:10]}"
    async with RegistryStore(
        registry.host, prefix, plain_http=True, credentials=CredentialStore.empty()
    ) as store:
        await announce_writer(store, "writer-3")
        empty = fmt.empty_config()

        async def other_writer() -> dict[str, str]:
            """Once our sync tagged both versions, add a file of its own to each."""
            while any([await store.get_manifest("mv", tag) is None for tag in ("1.0", "2.0")]):
                await asyncio.sleep(0.05)
            await store.put_blob_bytes("mv", empty.descriptor.digest, empty.data)
            moved = {}
            for tag in ("1.0", "2.0"):
                theirs = fake_manifest(f"theirs-{tag}.whl")
                digest = await store.put_manifest("mv", sha256(theirs), fmt.OCI_MANIFEST, theirs)
                entry = fmt.Descriptor(
                    fmt.OCI_MANIFEST,
                    digest,
                    len(theirs),
                    annotations={fmt.A_FILENAME: f"theirs-{tag}.whl"},
                )
                current = await store.get_manifest("mv", tag)
                assert current is not None
                ours = list(fmt.read_release_index(current.body).entries)
                body = fmt.build_release_index("mv", tag, [*ours, entry]).data
                moved[tag] = await store.put_manifest("mv", tag, fmt.OCI_INDEX, body)
            return moved

        with serve_index(fixture):
            _, moved = await asyncio.wait_for(
                asyncio.gather(sync_logged(registry, fixture.url, prefix, ["mv"]), other_writer()),
                timeout=120,  # stops a hang only
            )
        catalog = await read_catalog(store)
    assert catalog is not None
    # Both versions, not only the first, recorded with what their tags hold now.
    assert {tag: r.digest for tag, r in catalog.projects["mv"].items()} == moved
