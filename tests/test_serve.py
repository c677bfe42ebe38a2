"""``oci-pypi serve`` through ASGI (no sockets): pages, files and metadata from a mirror.

A fixture index is synced into a layout and into the real registry; what
the server answers is read back with this project's own simple-API
parsers and compared, field by field, with what the source index said.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from fixture_index import FixtureFile, FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement
from packaging.version import Version
from registry_server import RegistryServer
from starlette.applications import Starlette

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.errors import RegistryError
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.html import parse_html_page
from oci_pypi_sync.index.pep691 import parse_json_page
from oci_pypi_sync.index.records import DistributionFile, ProjectPage
from oci_pypi_sync.plan.select import SelectionOptions
from oci_pypi_sync.serve import create_app
from oci_pypi_sync.serve.pages import JSON_V1, PageFormat, negotiate
from oci_pypi_sync.serve.ranges import ByteRange, UnsatisfiableRange, parse_range
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store, StoredManifest
from oci_pypi_sync.stores.targets import open_store, parse_target

PROJECT = "Demo.Pkg"
NAME = "demo-pkg"
BASE = "http://mirror.test"
JSON_ACCEPT = f"{JSON_V1}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"


def _fixture_files() -> list[FixtureFile]:
    old = make_wheel(PROJECT, "1.0", requires=("idna>=2",))
    old.requires_python = ">=3.8,<4"
    old.upload_time = "2023-05-06T07:08:09.123456Z"
    yanked_wheel = make_wheel(PROJECT, "2.1")
    yanked_wheel.yanked = "broken <build> & more"
    yanked_wheel.requires_python = "<3.13,>=3.9"
    yanked_bare = make_sdist(PROJECT, "2.1")
    yanked_bare.yanked = True
    legacy = FixtureFile("demo_pkg-0.5-custom.tar.gz", b"legacy sdist bytes" * 50)
    return [
        old,
        make_sdist(PROJECT, "1.0", size=300_000),
        make_wheel(PROJECT, "2.0", tag="cp312-cp312-macosx_11_0_universal2"),
        make_wheel(PROJECT, "2.0", tag="cp312-cp312-manylinux_2_17_x86_64", payload=70_000),
        make_sdist(PROJECT, "2.0"),
        yanked_wheel,
        yanked_bare,
        make_wheel(PROJECT, "10.0rc1"),
        legacy,
    ]


@dataclass
class Mirror:
    """The source index's page and the targets a sync wrote it into."""

    source: ProjectPage
    files: dict[str, FixtureFile]
    layout: Path
    index: FixtureIndex


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    fixture = FixtureIndex()
    fixture.add(PROJECT, *_fixture_files())
    fixture.add("other_project", make_wheel("other_project", "0.1"))
    layout = tmp_path_factory.mktemp("serve") / "layout"
    with serve_index(fixture):
        source = parse_json_page(fixture.page_json(PROJECT), fixture.url + NAME + "/")
        _run_sync(fixture.url, LayoutStore(layout))
        yield Mirror(source, fixture.files_by_name(), layout, fixture)


def _run_sync(url: str, store: Store) -> None:
    """Sync in a thread of its own: module fixtures may be set up inside a running loop."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _sync(url, store)).result()


async def _sync(url: str, store: Store) -> None:
    options = SyncOptions(selection=SelectionOptions(pre=True, include_yanked=True))
    requirements = [Requirement(NAME), Requirement("other-project")]
    async with IndexClient(url) as client:
        report = await sync(requirements, client, store, options)
    await store.aclose()
    assert not report.failed, report


@pytest.fixture(scope="module")
def registry_target(mirror: Mirror, registry: RegistryServer) -> str:
    """The same files synced into the real registry, under a prefix of their own."""
    target = f"{registry.host}/serve"
    with serve_index(mirror.index):
        _run_sync(mirror.index.url, open_store(parse_target(target)))
    return target


@pytest.fixture(
    params=["layout", "any-store", pytest.param("registry", marks=pytest.mark.registry)]
)
async def store(request: pytest.FixtureRequest, mirror: Mirror) -> AsyncIterator[Store]:
    """A layout, a store known only by its protocol (whole-blob reads), and a registry."""
    if request.param == "layout":
        yield LayoutStore(mirror.layout, create=False)
        return
    if request.param == "any-store":
        yield CountingStore(LayoutStore(mirror.layout, create=False))
        return
    target = request.getfixturevalue("registry_target")
    opened = open_store(parse_target(target))
    yield opened
    await opened.aclose()


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(store)) as http:
        yield http


def by_name(page: ProjectPage) -> dict[str, DistributionFile]:
    return {file.filename: file for file in page.files}


# --- pages ------------------------------------------------------------------------


async def test_json_page_lists_every_file_as_the_source_index_did(
    client: httpx.AsyncClient, mirror: Mirror
) -> None:
    response = await client.get(f"/simple/{NAME}/", headers={"Accept": JSON_ACCEPT})
    assert response.status_code == 200
    assert response.headers["content-type"] == JSON_V1
    page = parse_json_page(response.content, str(response.url))
    assert page.api_version == "1.4"
    assert page.name == NAME
    served, source = by_name(page), by_name(mirror.source)
    assert sorted(served) == sorted(source)
    for filename, original in source.items():
        file = served[filename]
        assert file.sha256 == original.sha256
        assert file.size == original.size == len(mirror.files[filename].data)
        assert file.upload_time == original.upload_time
        assert file.requires_python == original.requires_python
        assert (file.yanked, file.yanked_reason) == (original.yanked, original.yanked_reason)
        assert file.core_metadata == original.core_metadata
        assert file.url == f"{BASE}/files/{NAME}/{original.sha256}/{filename}"
    assert served["demo_pkg-2.1-py3-none-any.whl"].yanked_reason == "broken <build> & more"
    assert served["demo_pkg-1.0-py3-none-any.whl"].requires_python == ">=3.8,<4"
    # PEP 700 versions, in PEP 440 order, the legacy version first.
    assert page.versions == ("0.5-custom", "1.0", "2.0", "2.1", "10.0rc1")
    raw = json.loads(response.content)
    yanks = {f["filename"]: f["yanked"] for f in raw["files"]}
    assert yanks["demo_pkg-2.1.tar.gz"] is True
    assert yanks["demo_pkg-2.0.tar.gz"] is False
    assert all("dist-info-metadata" not in f for f in raw["files"])


async def test_html_page_carries_hashes_yanks_and_metadata(
    client: httpx.AsyncClient, mirror: Mirror
) -> None:
    response = await client.get(f"/simple/{NAME}/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    page = parse_html_page(response.content, str(response.url), NAME)
    assert page.api_version == "1.4"
    served, source = by_name(page), by_name(mirror.source)
    assert sorted(served) == sorted(source)
    for filename, original in source.items():
        file = served[filename]
        assert file.hashes == (("sha256", str(original.sha256)),)
        assert file.requires_python == original.requires_python
        assert (file.yanked, file.yanked_reason) == (original.yanked, original.yanked_reason)
        assert file.core_metadata == original.core_metadata
    text = response.text
    assert 'data-requires-python="&lt;3.13,&gt;=3.9"' in text
    assert 'data-yanked="broken &lt;build&gt; &amp; more"' in text
    metadata_sha = hashlib.sha256(
        mirror.files["demo_pkg-1.0-py3-none-any.whl"].metadata or b""
    ).hexdigest()
    assert f'data-core-metadata="sha256={metadata_sha}"' in text
    assert f'data-dist-info-metadata="sha256={metadata_sha}"' in text


async def test_a_universal2_wheel_is_listed_once(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/simple/{NAME}/?format=json")
    names = [f["filename"] for f in response.json()["files"]]
    universal = "demo_pkg-2.0-cp312-cp312-macosx_11_0_universal2.whl"
    assert names.count(universal) == 1
    assert len(names) == len(set(names)) == 9


async def test_project_list_skips_repositories_that_are_not_projects(
    mirror: Mirror, tmp_path: Path
) -> None:
    async with client_for(create_app(LayoutStore(mirror.layout, create=False))) as http:
        html_page = await http.get("/simple/")
        json_page = await http.get("/simple/", headers={"Accept": JSON_ACCEPT})
    assert html_page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<a href="demo-pkg/">demo-pkg</a>' in html_page.text
    assert json_page.json() == {
        "meta": {"api-version": "1.4"},
        "projects": [{"name": "demo-pkg"}, {"name": "other-project"}],
    }
    # A repository that cannot be a project (a dot in its name) is not listed.
    layout = LayoutStore(tmp_path / "extra")
    empty = fmt.canonical_json({"schemaVersion": 2, "mediaType": fmt.OCI_INDEX, "manifests": []})
    await layout.put_manifest("oci-pypi.catalog", "latest", fmt.OCI_INDEX, empty)
    await layout.put_manifest("a_b", "latest", fmt.OCI_INDEX, empty)
    async with client_for(create_app(layout)) as http:
        assert (await http.get("/simple/?format=json")).json()["projects"] == []


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "text/html; charset=utf-8"),
        ("*/*", "text/html; charset=utf-8"),
        ("text/html", "text/html; charset=utf-8"),
        (JSON_ACCEPT, JSON_V1),
        ("application/vnd.pypi.simple.v1+html", "application/vnd.pypi.simple.v1+html"),
        ("application/vnd.pypi.simple.latest+json", JSON_V1),
        (f"text/html;q=0.5, {JSON_V1};q=0.6", JSON_V1),
        (f"text/html;q=0.7, {JSON_V1};q=0.6", "text/html; charset=utf-8"),
        (f"{JSON_V1};q=0, */*;q=0.1", "text/html; charset=utf-8"),
        ("application/*", "application/vnd.pypi.simple.v1+html"),  # a tie: HTML
    ],
)
async def test_content_negotiation(mirror: Mirror, accept: str | None, expected: str) -> None:
    headers = {"Accept": accept} if accept is not None else {}
    async with client_for(create_app(LayoutStore(mirror.layout, create=False))) as http:
        response = await http.get(f"/simple/{NAME}/", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == expected
    assert response.headers["vary"] == "Accept"


async def test_negotiation_edges(mirror: Mirror) -> None:
    async with client_for(create_app(LayoutStore(mirror.layout, create=False))) as http:
        refused = await http.get(f"/simple/{NAME}/", headers={"Accept": "application/json"})
        forced = await http.get(
            f"/simple/{NAME}/?format={JSON_V1}", headers={"Accept": "text/html"}
        )
        short = await http.get(f"/simple/{NAME}/?format=html", headers={"Accept": JSON_ACCEPT})
        bogus = await http.get(f"/simple/{NAME}/?format=xml")
    assert refused.status_code == 406
    assert forced.headers["content-type"] == JSON_V1
    assert short.headers["content-type"] == "application/vnd.pypi.simple.v1+html"
    assert bogus.status_code == 406
    assert negotiate("text/html;q=abc, application/vnd.pypi.simple.v1+json") == negotiate(JSON_V1)
    chosen = negotiate("application/vnd.pypi.simple.v1+json;q=0.9, text/*;q=0.9")
    assert chosen is not None
    assert chosen.format is PageFormat.HTML  # ties go to HTML


async def test_non_normalized_names_redirect(client: httpx.AsyncClient) -> None:
    for path in ("/simple/Demo.Pkg/", "/simple/demo_pkg/", "/simple/DEMO--pkg", "/simple/demo-pkg"):
        response = await client.get(path)
        assert response.status_code == 301, path
        assert response.headers["location"] == f"/simple/{NAME}/"
    kept = await client.get("/simple/Demo.Pkg/?format=json")
    assert kept.headers["location"] == f"/simple/{NAME}/?format=json"
    followed = await client.get("/simple/Demo_Pkg", follow_redirects=True)
    assert followed.status_code == 200
    assert str(followed.url) == f"{BASE}/simple/{NAME}/"
    assert (await client.get("/simple")).headers["location"] == "/simple/"


# --- files and metadata -------------------------------------------------------------


async def _json_files(client: httpx.AsyncClient) -> dict[str, DistributionFile]:
    response = await client.get(f"/simple/{NAME}/", headers={"Accept": JSON_ACCEPT})
    return by_name(parse_json_page(response.content, str(response.url)))


async def test_files_and_metadata_are_the_source_bytes(
    client: httpx.AsyncClient, mirror: Mirror, store: Store
) -> None:
    # A layout's blob is hashed before it is served; a streamed one only as it
    # streams, so its first answer is not immutable, the next (verified) one is.
    local = isinstance(store, LayoutStore)
    for filename, file in (await _json_files(client)).items():
        original = mirror.files[filename]
        response = await client.get(file.url)
        assert response.status_code == 200, filename
        assert response.content == original.data
        assert response.headers["content-length"] == str(len(original.data))
        assert response.headers["etag"] == f'"sha256:{original.sha256}"'
        immutable = "public, max-age=31536000, immutable"
        assert response.headers["cache-control"] == (immutable if local else "no-cache")
        again = await client.get(file.url)
        assert again.content == original.data
        assert again.headers["cache-control"] == immutable
        assert response.headers["accept-ranges"] == "bytes"
        expected_type = "application/zip" if filename.endswith(".whl") else "application/gzip"
        assert response.headers["content-type"] == expected_type
        assert "content-encoding" not in response.headers
        metadata = await client.get(file.metadata_url)
        if original.metadata is None:
            assert metadata.status_code == 404
            assert file.core_metadata is None
        else:
            assert metadata.status_code == 200
            assert metadata.content == original.metadata
            assert file.core_metadata is not None
            assert file.core_metadata.sha256 == hashlib.sha256(metadata.content).hexdigest()
            assert metadata.headers["etag"] == f'"sha256:{file.core_metadata.sha256}"'


async def test_range_requests(client: httpx.AsyncClient, mirror: Mirror) -> None:
    files = await _json_files(client)
    name = "demo_pkg-1.0.tar.gz"
    url, data, size = files[name].url, mirror.files[name].data, len(mirror.files[name].data)
    etag = f'"sha256:{files[name].sha256}"'
    cases = {
        "bytes=0-9": (0, 10),
        "bytes=1000-263143": (1000, 263144),
        "bytes=299990-": (299990, size),
        "bytes=-7": (size - 7, size),
        "bytes=5-999999999": (5, size),
    }
    for header, (start, stop) in cases.items():
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == data[start:stop], header
        assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{size}"
        assert response.headers["content-length"] == str(stop - start)
    beyond = await client.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    for header, if_range in (("bytes=0-1,5-6", None), ("bytes=0-9", '"sha256:other"')):
        headers = {"Range": header} | ({"If-Range": if_range} if if_range else {})
        whole = await client.get(url, headers=headers)
        assert (whole.status_code, whole.content) == (200, data)
    matching = await client.get(url, headers={"Range": "bytes=2-3", "If-Range": etag})
    assert (matching.status_code, matching.content) == (206, data[2:4])


async def test_conditional_and_head_requests(client: httpx.AsyncClient, mirror: Mirror) -> None:
    files = await _json_files(client)
    file = files["demo_pkg-1.0-py3-none-any.whl"]
    first = await client.get(file.url)
    again = await client.get(file.url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    head = await client.head(file.url)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(file.size)

    page = await client.get(f"/simple/{NAME}/")
    assert page.headers["cache-control"] == "public, max-age=60"
    cached = await client.get(f"/simple/{NAME}/", headers={"If-None-Match": page.headers["etag"]})
    assert cached.status_code == 304
    json_page = await client.get(f"/simple/{NAME}/", headers={"Accept": JSON_ACCEPT})
    assert json_page.headers["etag"] != page.headers["etag"]
    page_head = await client.head(f"/simple/{NAME}/")
    assert page_head.headers["content-length"] == str(len(page.content))


async def test_not_found(client: httpx.AsyncClient) -> None:
    files = await _json_files(client)
    wheel = files["demo_pkg-1.0-py3-none-any.whl"]
    assert wheel.sha256 is not None
    other = files["demo_pkg-2.0.tar.gz"].sha256
    assert other is not None
    missing = [
        "/simple/no-such-project/",
        "/simple/no-such-project/?format=json",
        f"/files/{NAME}/{other}/demo_pkg-1.0-py3-none-any.whl",  # a digest of another file
        f"/files/{NAME}/{wheel.sha256}/demo_pkg-9.9-py3-none-any.whl",
        f"/files/other-project/{wheel.sha256}/demo_pkg-1.0-py3-none-any.whl",
        f"/files/no-such/{wheel.sha256}/demo_pkg-1.0-py3-none-any.whl",
        f"/files/{NAME}/{other}/demo_pkg-2.0.tar.gz.metadata",  # no metadata for the sdist
        f"/files/{NAME}/{wheel.sha256}",
        "/elsewhere",
    ]
    for path in missing:
        assert (await client.get(path)).status_code == 404, path


# --- caching -------------------------------------------------------------------------


class CountingStore:
    """A store that counts reads and can be told to fail; delegates to a real one."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self.fail = False
        self.display_name = inner.display_name

    def _count(self, what: str) -> None:
        self.calls.append(what)
        if self.fail:
            raise RegistryError("registry 127.0.0.1:1 is unreachable (test)")

    async def has_blob(self, repo: str, digest: str) -> bool:
        return await self.inner.has_blob(repo, digest)

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        raise NotImplementedError("serving never writes")

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        raise NotImplementedError("serving never writes")

    def open_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        self._count(f"blob {digest}")
        return self.inner.open_blob(repo, digest)

    async def get_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        self._count(f"manifest {reference}")
        await asyncio.sleep(0.001)  # let concurrent requests pile up
        return await self.inner.get_manifest(repo, reference)

    async def has_manifest(self, repo: str, digest: str) -> bool:
        return await self.inner.has_manifest(repo, digest)

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        raise NotImplementedError

    async def list_tags(self, repo: str) -> list[str]:
        self._count("tags")
        await asyncio.sleep(0.001)
        return await self.inner.list_tags(repo)

    async def list_repositories(self) -> list[str]:
        self._count("repositories")
        return await self.inner.list_repositories()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_warm_page_needs_no_store_reads_and_concurrent_requests_share_one(
    mirror: Mirror,
) -> None:
    store = CountingStore(LayoutStore(mirror.layout, create=False))
    now = [1000.0]
    app = create_app(store, ttl=60, clock=lambda: now[0])
    async with client_for(app) as http:
        pages = await asyncio.gather(*(http.get(f"/simple/{NAME}/") for _ in range(20)))
        assert {page.status_code for page in pages} == {200}
        versions = 5
        # The tags (the truth) and each version's index; the catalog (revision,
        # manifest, blob) for the project's status.
        assert store.calls.count("tags") == 1
        assert store.calls.count("manifest latest") == 1
        assert sum(call.startswith("manifest") for call in store.calls) == versions + 2
        store.calls.clear()
        for _ in range(5):
            assert (await http.get(f"/simple/{NAME}/?format=json")).status_code == 200
        assert store.calls == []
        now[0] += 61  # the tags may have moved: read them and the indexes again
        assert (await http.get(f"/simple/{NAME}/")).text == pages[0].text
        assert store.calls.count("manifest latest") == 1  # the catalog's revision, unchanged
        assert store.calls.count("tags") == 1
        assert sum(call.startswith("manifest") for call in store.calls) == versions + 1
        # Metadata is content-addressed: read once, then from memory.
        file = (await _json_files(http))["demo_pkg-1.0-py3-none-any.whl"]
        store.calls.clear()
        for _ in range(3):
            assert (await http.get(file.metadata_url)).status_code == 200
        assert file.core_metadata is not None
        # The file's manifest, then its metadata blob.
        assert store.calls[0].startswith("manifest sha256:")
        assert store.calls[1:] == [f"blob sha256:{file.core_metadata.sha256}"]


async def test_a_layout_is_read_once_per_ttl(
    mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``index.json`` gives every tag's digest in one read; warm pages read nothing."""
    layout = LayoutStore(mirror.layout, create=False)
    reads = {"index.json": 0, "manifests": 0}
    tag_digests, get_manifest = layout.tag_digests, layout.get_manifest

    def counted_tags() -> Mapping[str, Mapping[str, str]]:
        reads["index.json"] += 1
        return tag_digests()

    async def counted_get_manifest(repo: str, reference: str) -> StoredManifest | None:
        reads["manifests"] += 1
        return await get_manifest(repo, reference)

    monkeypatch.setattr(layout, "tag_digests", counted_tags)
    monkeypatch.setattr(layout, "get_manifest", counted_get_manifest)
    now = [0.0]
    async with client_for(create_app(layout, clock=lambda: now[0])) as http:
        for _ in range(3):
            assert (await http.get(f"/simple/{NAME}/")).status_code == 200
            assert (await http.get("/simple/other-project/")).status_code == 200
        # 'latest' and the catalog's manifest (for statuses), 5 versions + 1
        assert reads == {"index.json": 1, "manifests": 8}
        now[0] += 61
        assert (await http.get(f"/simple/{NAME}/")).status_code == 200
        # Tags and 'latest' re-read; the indexes they point at are known by digest.
        assert reads == {"index.json": 2, "manifests": 9}


async def test_a_failing_store_answers_502(mirror: Mirror) -> None:
    store = CountingStore(LayoutStore(mirror.layout, create=False))
    store.fail = True
    async with client_for(create_app(store)) as http:
        response = await http.get(f"/simple/{NAME}/")
        listing = await http.get("/simple/")
    assert response.status_code == 502
    assert "unreachable" in response.text
    assert listing.status_code == 502


# --- pure parts ------------------------------------------------------------------------


def test_parse_range() -> None:
    def parsed(header: str | None, if_range: str | None = None) -> ByteRange | None:
        return parse_range(header, 100, if_range=if_range, etag='"e"')

    assert parsed("bytes=0-0") == ByteRange(0, 1, 100)
    assert parsed("bytes=90-") == ByteRange(90, 100, 100)
    assert parsed("bytes=-200") == ByteRange(0, 100, 100)
    assert parsed("bytes=0-9", '"e"') == ByteRange(0, 10, 100)
    for ignored in (None, "", "items=0-1", "bytes=5", "bytes=a-b", "bytes=9-3", "bytes=0-1,3-4"):
        assert parsed(ignored) is None, ignored
    assert parsed("bytes=0-9", '"other"') is None
    for refused in ("bytes=100-", "bytes=-0"):
        with pytest.raises(UnsatisfiableRange):
            parsed(refused)


# --- a large project -------------------------------------------------------------------


class MemoryStore:
    """Manifests in memory, for a large generated project (no blobs needed for pages)."""

    display_name = "memory"

    def __init__(self) -> None:
        self.manifests: dict[str, dict[str, StoredManifest]] = {}

    def tag(self, repo: str, tag: str, body: bytes) -> None:
        digest = fmt.sha256_digest(body)
        stored = StoredManifest(fmt.OCI_INDEX, digest, body)
        self.manifests.setdefault(repo, {})[tag] = stored
        self.manifests[repo][digest] = stored

    async def get_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        return self.manifests.get(repo, {}).get(reference)

    async def list_tags(self, repo: str) -> list[str]:
        return sorted(t for t in self.manifests.get(repo, {}) if not t.startswith("sha256:"))

    async def list_repositories(self) -> list[str]:
        return sorted(self.manifests)

    async def aclose(self) -> None:
        return None


def _large_project(versions: int, per_version: int) -> MemoryStore:
    store = MemoryStore()
    tags = ("cp312-cp312-manylinux_2_17_x86_64", "cp312-cp312-win_amd64", "py3-none-any")
    for v in range(versions):
        version = f"{v // 100}.{v % 100}.0"
        entries: list[fmt.Descriptor] = []
        for n in range(per_version):
            filename = f"big-{version}-{n}-{tags[n % len(tags)]}.whl"
            dist = DistributionFile(
                filename,
                f"https://files.invalid/{filename}",
                hashes=(("sha256", hashlib.sha256(filename.encode()).hexdigest()),),
                requires_python=">=3.9",
                upload_time="2025-01-01T00:00:00Z",
            )
            artifact = fmt.build_file_artifact(dist, "big", 1000 + n, metadata=b"Name: big\n")
            entries.extend(artifact.entries)
        store.tag(
            "big", fmt.version_tag(version), fmt.build_release_index("big", version, entries).data
        )
    return store


async def test_a_warm_page_of_2500_files_is_answered_from_memory() -> None:
    """Once read, a large project's page is served without asking the store again.

    The clock stands still, so nothing expires however slow the machine; the
    store counts what it is asked. (How fast a warm page is, is measured by
    the benchmarks, not here.)
    """
    store = _large_project(versions=500, per_version=5)
    asked: list[str] = []
    read_manifest, read_tags = store.get_manifest, store.list_tags

    async def get_manifest(repo: str, reference: str) -> StoredManifest | None:
        asked.append(f"manifest {repo} {reference}")
        return await read_manifest(repo, reference)

    async def list_tags(repo: str) -> list[str]:
        asked.append(f"tags {repo}")
        return await read_tags(repo)

    store.get_manifest = get_manifest  # type: ignore[method-assign]
    store.list_tags = list_tags  # type: ignore[method-assign]
    app = create_app(store, clock=lambda: 0.0)  # type: ignore[arg-type]
    async with client_for(app) as http:
        cold = await http.get("/simple/big/", headers={"Accept": JSON_ACCEPT})
        assert len(cold.json()["files"]) == 2500
        assert cold.json()["versions"][:3] == ["0.0.0", "0.1.0", "0.2.0"]
        assert Version(cold.json()["versions"][-1]) == Version("4.99.0")
        assert len(asked) >= 500  # the cold page read every version's index
        asked.clear()
        bodies: dict[str, set[bytes]] = {}
        for accept in (JSON_ACCEPT, "text/html") * 100:
            warm = await http.get("/simple/big/", headers={"Accept": accept})
            assert warm.status_code == 200
            bodies.setdefault(accept, set()).add(warm.content)
    assert asked == []
    assert {accept: len(contents) for accept, contents in bodies.items()} == {
        JSON_ACCEPT: 1,
        "text/html": 1,
    }
    assert bodies[JSON_ACCEPT] == {cold.content}


def test_files_without_size_annotation_are_parsed() -> None:
    dist = DistributionFile("x-1.0.tar.gz", "u", hashes=(("sha256", "ab" * 32),))
    artifact = fmt.build_file_artifact(dist, "x", 10)
    entry = artifact.entries[0]
    notes = {k: v for k, v in entry.annotations.items() if k != fmt.A_SIZE}
    index = fmt.build_release_index("x", "1.0", [replace(entry, annotations=notes)])
    from oci_pypi_sync.serve.model import release_from_index

    release = release_from_index(index.descriptor.digest, index.data, "1.0")
    assert release.version == "1.0"
    assert [(f.filename, f.size) for f in release.files] == [("x-1.0.tar.gz", None)]


async def test_the_project_list_is_rendered_once_per_catalog_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendered in a thread when the catalog changes, then answered from memory, gzipped."""
    from oci_pypi_sync.engine.writer import Writer
    from oci_pypi_sync.ops.catalog import CatalogChange, CatalogRelease, update_catalog
    from oci_pypi_sync.serve import pages

    def catalog(*names: str) -> CatalogChange:
        digest = "sha256:" + "0" * 64
        return CatalogChange({n: {"1.0": CatalogRelease("1.0", "1.0", digest)} for n in names})

    layout = LayoutStore(tmp_path / "mirror")
    await update_catalog(Writer(layout), catalog("alpha", "beta"))
    renders: list[tuple[str, ...]] = []
    render_root = pages.render_root

    def counted(names: tuple[str, ...]) -> dict[PageFormat, pages.Body]:
        renders.append(tuple(names))
        return render_root(names)

    monkeypatch.setattr(pages, "render_root", counted)
    now = [0.0]
    async with client_for(create_app(layout, clock=lambda: now[0])) as http:
        plain = await http.get("/simple/", headers={"Accept-Encoding": "identity"})
        packed = await http.get("/simple/", headers={"Accept-Encoding": "gzip"})
        both = await asyncio.gather(*(http.get("/simple/?format=json") for _ in range(5)))
        assert renders == [("alpha", "beta")]
        assert "content-encoding" not in plain.headers
        assert packed.headers["content-encoding"] == "gzip"
        assert packed.text == plain.text  # httpx decodes it
        assert packed.headers["etag"] != plain.headers["etag"]
        assert "Accept-Encoding" in packed.headers["vary"]
        assert {r.json()["projects"][1]["name"] for r in both} == {"beta"}
        again = await http.get(
            "/simple/",
            headers={"Accept-Encoding": "gzip", "If-None-Match": packed.headers["etag"]},
        )
        assert again.status_code == 304
        now[0] += 61  # the revision is read again; unchanged, nothing is rendered
        assert (await http.get("/simple/")).text == plain.text
        assert len(renders) == 1
        await update_catalog(Writer(layout), catalog("gamma"))
        assert (await http.get("/simple/")).text == plain.text  # still within the TTL
        now[0] += 61
        listed = (await http.get("/simple/?format=json")).json()["projects"]
        assert [p["name"] for p in listed] == ["alpha", "beta", "gamma"]
        assert renders == [("alpha", "beta"), ("alpha", "beta", "gamma")]
