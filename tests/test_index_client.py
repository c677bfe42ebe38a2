"""IndexClient: negotiation, errors, redirects, credentials and integrity.

The first part drives the client against loopback servers standing for the
index, the host of its files and a mirror (``scripted_server.answering``);
the second replays responses recorded from the real index (see
``tests/cassettes.py``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

import httpx
import pytest
from cassettes import INDEX_URL, replay
from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version
from registry_server import free_port
from scripted_server import answering, read_request, serving
from vcr.errors import CannotOverwriteExistingCassetteException

from oci_pypi_sync.engine.retry import is_transient
from oci_pypi_sync.errors import (
    DigestMismatchError,
    FileHostUnreachableError,
    IndexError_,
    IndexUnreachableError,
    ProjectNotFoundError,
    SizeMismatchError,
    UnsupportedUrlError,
    is_fatal,
)
from oci_pypi_sync.index.client import USER_AGENT, IndexClient, verified_chunks
from oci_pypi_sync.index.negotiation import ACCEPT
from oci_pypi_sync.index.records import CoreMetadataRef, DistributionFile
from oci_pypi_sync.stores.http import HttpClient, Request, Response

METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: six\n"
WHEEL = b"PK\x03\x04 not really a wheel" * 1000
WHEEL_SHA = hashlib.sha256(WHEEL).hexdigest()


@dataclass
class Sites:
    """The servers of one test: ``index``, ``files`` and ``mirror`` (origins, no slash)."""

    index: str
    files: str
    mirror: str
    seen: list[httpx.Request]

    def site(self, request: httpx.Request) -> str:
        """Which server got ``request``."""
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        return {self.index: "index", self.files: "files", self.mirror: "mirror"}[origin]

    def file(self, **changes: object) -> DistributionFile:
        return demo_file(**{"url": f"{self.files}/p/demo-1.0-py3-none-any.whl", **changes})

    def client(self, index_url: str | None = None) -> IndexClient:
        return IndexClient(index_url or f"{self.index}/simple/")


SiteHandler = Callable[[Sites, httpx.Request], httpx.Response]


@asynccontextmanager
async def sites(handler: SiteHandler) -> AsyncIterator[Sites]:
    """Three loopback servers answering with ``handler(sites, request)``."""
    seen: list[httpx.Request] = []
    holder: list[Sites] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(holder[0], request)

    async with answering(answer) as index, answering(answer) as files, answering(answer) as mirror:
        holder.append(Sites(index.url, files.url, mirror.url, seen))
        yield holder[0]


def json_page(files: list[dict[str, object]]) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"Content-Type": "application/vnd.pypi.simple.v1+json"},
        content=json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": files}),
    )


def demo_file(**changes: object) -> DistributionFile:
    file = DistributionFile(
        filename="demo-1.0-py3-none-any.whl",
        url="https://files.index.test/p/demo-1.0-py3-none-any.whl",
        hashes=(("sha256", WHEEL_SHA),),
        core_metadata=CoreMetadataRef((("sha256", hashlib.sha256(METADATA).hexdigest()),)),
        size=len(WHEEL),
    )
    return replace(file, **changes)  # type: ignore[arg-type]


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


# --- negotiation -------------------------------------------------------------------


async def test_page_request_negotiates_and_parses_json() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        return json_page([{"filename": "demo-1.0.tar.gz", "url": "/f/demo-1.0.tar.gz"}])

    async with sites(handler) as s, s.client() as client:
        page = await client.get_project_page("Demo_Pkg.Name")
    assert str(s.seen[0].url) == f"{s.index}/simple/demo-pkg-name/"
    assert s.seen[0].headers["Accept"] == ACCEPT
    assert s.seen[0].headers["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("oci-pypi-sync/")
    assert page.name == "demo"
    assert page.api_version == "1.1"
    assert page.files[0].url == f"{s.index}/f/demo-1.0.tar.gz"


@pytest.mark.parametrize(
    "content_type", ["text/html", "text/html; charset=utf-8", "application/vnd.pypi.simple.v1+html"]
)
async def test_html_answer_to_a_json_request_is_parsed_as_html(content_type: str) -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        html = '<html><body><a href="/f/demo-1.0.tar.gz" data-yanked>demo</a></body></html>'
        return httpx.Response(200, headers={"Content-Type": content_type}, content=html)

    async with sites(handler) as s, s.client() as client:
        page = await client.get_project_page("demo")
    assert page.name == "demo"
    assert [(f.filename, f.yanked) for f in page.files] == [("demo-1.0.tar.gz", True)]


async def test_answer_without_content_type_is_sniffed() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        body = json.dumps({"name": "Demo", "files": [], "meta": {"api-version": "1.0"}})
        return httpx.Response(200, content=body.encode())

    async with sites(handler) as s, s.client() as client:
        page = await client.get_project_page("demo")
    assert (page.name, page.api_version) == ("Demo", "1.0")


async def test_project_names_come_from_an_html_list_even_when_json_was_asked() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        body = '<a href="/simple/a/">A</a>\n<a href="/simple/b-c/">b.c</a>'
        return httpx.Response(200, headers={"Content-Type": "text/html"}, content=body)

    async with sites(handler) as s, s.client() as client:
        assert await client.get_project_names() == ["A", "b.c"]
    assert s.seen[0].headers["Accept"] == ACCEPT
    assert str(s.seen[0].url) == f"{s.index}/simple/"


# --- errors ---------------------------------------------------------------------------


async def test_404_is_project_not_found() -> None:
    async with sites(lambda s, request: httpx.Response(404)) as s, s.client() as client:
        with pytest.raises(ProjectNotFoundError) as caught:
            await client.get_project_page("No.Such")
    assert caught.value.project == "No.Such"
    assert caught.value.url == f"{s.index}/simple/no-such/"


async def test_other_statuses_are_index_errors_with_status_and_url() -> None:
    async with sites(lambda s, request: httpx.Response(503)) as s, s.client() as client:
        with pytest.raises(IndexError_, match=r"503 Service Unavailable .*/simple/demo/"):
            await client.get_project_page("demo")


async def test_connection_errors_name_the_host() -> None:
    url = f"http://127.0.0.1:{free_port()}/simple/"
    async with IndexClient(url) as client:
        with pytest.raises(IndexUnreachableError, match=r"127\.0\.0\.1.*ConnectError"):
            await client.get_project_page("demo")
        with pytest.raises(IndexUnreachableError, match=r"127\.0\.0\.1"):
            await client.get_project_names()


async def test_timeouts_are_unreachable_errors() -> None:
    async def stall(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    async with (
        serving(stall) as server,
        IndexClient(f"{server.url}/simple/", timeout=0.2) as client,
    ):
        with pytest.raises(IndexUnreachableError, match="ReadTimeout"):
            await client.get_project_page("demo")


async def test_redirect_loops_are_index_errors() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": str(request.url)})

    async with sites(handler) as s, s.client() as client:
        with pytest.raises(IndexError_, match="too many redirects"):
            await client.get_project_page("demo")


# --- redirects and base URL ---------------------------------------------------------------


async def test_redirects_are_followed_and_links_resolve_against_the_final_url_and_base() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        if s.site(request) == "index":
            return httpx.Response(301, headers={"Location": f"{s.mirror}/m/simple/demo/"})
        html = (
            '<html><head><base href="../../pkgs/"></head><body>'
            f'<a href="demo-1.0.tar.gz#sha256={WHEEL_SHA}">demo</a>'
            '<a href="/abs/demo-2.0.tar.gz">demo</a></body></html>'
        )
        return httpx.Response(200, headers={"Content-Type": "text/html"}, content=html)

    async with sites(handler) as s, s.client() as client:
        page = await client.get_project_page("demo")
    assert page.url == f"{s.mirror}/m/simple/demo/"
    assert [f.url for f in page.files] == [
        f"{s.mirror}/m/pkgs/demo-1.0.tar.gz",
        f"{s.mirror}/abs/demo-2.0.tar.gz",
    ]
    assert page.files[0].sha256 == WHEEL_SHA


# --- credentials ----------------------------------------------------------------------------


async def test_credentials_go_only_to_the_index_and_never_into_errors_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/missing/"):
            return httpx.Response(404)
        if request.url.path.endswith("/broken/"):
            return httpx.Response(500)
        if s.site(request) == "files":
            return httpx.Response(200, content=WHEEL)
        return json_page([{"filename": "demo-1.0-py3-none-any.whl", "url": s.file().url}])

    async with sites(handler) as s:
        secret_url = s.index.replace("://", "://al%40ice:s3cr%2Fet@") + "/simple/"
        async with s.client(secret_url) as client:
            assert client.index_url == f"{s.index}/simple/"
            page = await client.get_project_page("demo")
            async with client.stream_file(page.files[0]) as chunks:
                assert await collect(chunks) == WHEEL
            errors = []
            for project in ("missing", "broken"):
                with pytest.raises(IndexError_) as caught:
                    await client.get_project_page(project)
                errors.append(str(caught.value))

    expected = "Basic " + base64.b64encode(b"al@ice:s3cr/et").decode()
    index_requests = [r for r in s.seen if s.site(r) == "index"]
    file_requests = [r for r in s.seen if s.site(r) == "files"]
    assert len(index_requests) == 3
    assert all(r.headers.get("Authorization") == expected for r in index_requests)
    assert len(file_requests) == 1
    assert "Authorization" not in file_requests[0].headers
    assert all("@" not in str(r.url) for r in s.seen)
    shown = "\n".join([*errors, caplog.text])
    assert "/simple/missing/" in shown
    for secret in ("s3cr", "al%40ice", "al@ice", expected):
        assert secret not in shown


class _SharedAuth:
    """A client-wide auth flow: basic credentials on every request."""

    def flow(self, request: Request) -> Generator[Request, Response, None]:
        request.headers["Authorization"] = "Basic " + base64.b64encode(b"shared:pw").decode()
        yield request


async def test_a_shared_clients_own_auth_applies_when_the_url_has_none() -> None:
    async with sites(lambda s, request: json_page([])) as s:
        http = HttpClient(auth=_SharedAuth())
        async with IndexClient(f"{s.index}/simple/", http=http) as client:
            await client.get_project_page("demo")
        await http.aclose()
    assert s.seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"shared:pw").decode()


async def test_connection_errors_do_not_show_credentials() -> None:
    url = f"http://bob:hunter2@127.0.0.1:{free_port()}/simple/"
    async with IndexClient(url) as client:
        with pytest.raises(IndexUnreachableError) as caught:
            await client.get_project_page("demo")
    assert "hunter2" not in str(caught.value)
    assert "bob" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


# --- core metadata ----------------------------------------------------------------------------


def metadata_handler(body: bytes) -> SiteHandler:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        if str(request.url) == s.file().metadata_url:
            return httpx.Response(200, content=body)
        return httpx.Response(404)

    return handler


async def test_core_metadata_is_fetched_checked_and_parsed() -> None:
    async with sites(metadata_handler(METADATA)) as s, s.client() as client:
        metadata = await client.get_core_metadata(s.file())
    assert metadata is not None
    assert metadata.raw == METADATA
    assert (metadata.name, metadata.version, metadata.requires_dist) == ("demo", "1.0", ("six",))


async def test_core_metadata_with_a_wrong_hash_raises_and_is_never_returned() -> None:
    tampered = METADATA + b"Requires-Dist: evil\n"
    async with sites(metadata_handler(tampered)) as s, s.client() as client:
        with pytest.raises(DigestMismatchError) as caught:
            await client.get_core_metadata(s.file())
    assert caught.value.what == "demo-1.0-py3-none-any.whl.metadata"
    assert caught.value.actual == f"sha256:{hashlib.sha256(tampered).hexdigest()}"


async def test_unadvertised_core_metadata_is_not_fetched_unless_probed() -> None:
    async with sites(metadata_handler(METADATA)) as s, s.client() as client:
        assert await client.get_core_metadata(s.file(core_metadata=None)) is None
        assert s.seen == []
        probed = await client.get_core_metadata(s.file(core_metadata=None), probe=True)
        missing = s.file(core_metadata=None, url=f"{s.files}/p/other.whl")
        assert await client.get_core_metadata(missing, probe=True) is None
    assert probed is not None
    assert probed.name == "demo"
    assert [str(r.url) for r in s.seen] == [
        s.file().metadata_url,
        f"{s.files}/p/other.whl.metadata",
    ]


async def test_advertised_but_missing_core_metadata_is_an_index_error() -> None:
    async with sites(lambda s, request: httpx.Response(404)) as s, s.client() as client:
        with pytest.raises(IndexError_, match="404"):
            await client.get_core_metadata(s.file())


# --- files ---------------------------------------------------------------------------------------


async def test_files_stream_in_chunks_without_content_decoding() -> None:
    big = bytes(range(256)) * 20_000  # ~5 MiB

    async with sites(lambda s, request: httpx.Response(200, content=big)) as s:
        file = s.file(hashes=(("sha256", hashlib.sha256(big).hexdigest()),), size=len(big))
        async with s.client() as client, client.stream_file(file) as chunks:
            received = [chunk async for chunk in verified_chunks(chunks, file)]
    assert b"".join(received) == big
    assert len(received) >= 5
    assert max(len(chunk) for chunk in received) <= 1024 * 1024
    assert s.seen[0].headers["Accept-Encoding"] == "identity"


async def test_missing_file_is_an_index_error_naming_it() -> None:
    async with sites(lambda s, request: httpx.Response(404)) as s, s.client() as client:
        with pytest.raises(IndexError_, match=r"404 Not Found for the file demo-1\.0"):
            async with client.stream_file(s.file()):
                pytest.fail("the body must not run for a 404")


async def test_verified_chunks_raise_on_a_wrong_digest_after_the_last_chunk() -> None:
    wrong = httpx.Response(200, content=b"x" * len(WHEEL))
    async with (
        sites(lambda s, request: wrong) as s,
        s.client() as client,
        client.stream_file(s.file()) as chunks,
    ):
        with pytest.raises(DigestMismatchError) as caught:
            await collect(verified_chunks(chunks, s.file()))
    assert caught.value.expected == f"sha256:{WHEEL_SHA}"


async def test_verified_chunks_raise_on_a_wrong_size() -> None:
    short = httpx.Response(200, content=WHEEL[:-1])
    async with (
        sites(lambda s, request: short) as s,
        s.client() as client,
        client.stream_file(s.file()) as chunks,
    ):
        with pytest.raises(SizeMismatchError) as caught:
            await collect(verified_chunks(chunks, s.file()))
    assert (caught.value.expected, caught.value.actual) == (len(WHEEL), len(WHEEL) - 1)


async def test_a_connection_lost_mid_stream_is_unreachable() -> None:
    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
        await w.drain()

    async with serving(cut) as server, IndexClient(f"{server.url}/simple/") as client:
        file = demo_file(url=f"{server.url}/p/demo-1.0-py3-none-any.whl")
        async with client.stream_file(file) as chunks:
            with pytest.raises(IndexUnreachableError, match="RemoteProtocolError"):
                await collect(chunks)


async def test_a_connection_lost_mid_stream_on_a_file_host_fails_that_file() -> None:
    async def cut(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial")
        await w.drain()

    async with (
        sites(lambda s, request: json_page([])) as s,
        serving(cut) as files,
        s.client() as client,
    ):
        file = demo_file(url=f"{files.url}/p/demo-1.0-py3-none-any.whl")
        async with client.stream_file(file) as chunks:
            with pytest.raises(FileHostUnreachableError, match="RemoteProtocolError"):
                await collect(chunks)


async def test_a_file_host_that_cannot_be_reached_fails_the_file_not_the_index() -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    async with sites(lambda s, request: json_page([])) as s, s.client() as client:
        file = demo_file(url=f"{gone}/p/demo-1.0-py3-none-any.whl")
        with pytest.raises(FileHostUnreachableError) as caught:
            async with client.stream_file(file):
                pass
        assert str(caught.value).startswith(
            f"cannot reach {gone.removeprefix('http://')}, where the index keeps {file.url}: "
        )
        assert not is_fatal(caught.value)
        assert is_transient(caught.value)  # a host that comes back gets the retries
        with pytest.raises(FileHostUnreachableError):
            await client.get_core_metadata(file)
        with pytest.raises(FileHostUnreachableError):
            await client.get_file_size(replace(file, size=None))
        await client.get_project_page("demo")  # the index itself answers
    async with IndexClient(f"{gone}/simple/") as down:
        with pytest.raises(IndexUnreachableError) as page:
            await down.get_project_page("demo")
        assert is_fatal(page.value)
        with pytest.raises(IndexUnreachableError):  # a file on the index's own host
            async with down.stream_file(file):
                pass


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/demo.whl", "file:///etc/passwd"])
async def test_a_url_that_is_not_http_is_refused_without_a_request(url: str) -> None:
    async with sites(lambda s, request: json_page([])) as s, s.client() as client:
        file = demo_file(url=url)
        with pytest.raises(UnsupportedUrlError, match="not an http or https URL"):
            await client.get_core_metadata(file)
        with pytest.raises(UnsupportedUrlError):
            await client.get_file_size(replace(file, size=None))
        with pytest.raises(UnsupportedUrlError):
            async with client.stream_file(file):
                pass
    assert s.seen == []
    assert not is_transient(UnsupportedUrlError("x"))


async def test_a_redirect_to_a_url_that_is_not_http_fails_that_file() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "ftp://127.0.0.1/demo.whl"})

    async with sites(handler) as s, s.client() as client:
        with pytest.raises(UnsupportedUrlError, match=r"ftp://127\.0\.0\.1/demo\.whl"):
            async with client.stream_file(s.file()):
                pass


# --- ownership of the HTTP client ----------------------------------------------------------------


async def test_a_shared_http_client_is_left_open_and_an_own_one_closed() -> None:
    async with sites(lambda s, request: json_page([])) as s:
        shared = HttpClient()
        async with IndexClient(f"{s.index}/simple/", http=shared) as client:
            await client.get_project_page("demo")
        # still usable: its owner closes it
        assert (await shared.request("GET", f"{s.index}/simple/demo/")).status_code == 200
        await shared.aclose()

        own = IndexClient(f"{s.index}/simple/")
        await own.get_project_page("demo")
        await own.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await own.get_project_page("demo")


# --- replayed real responses ---------------------------------------------------------------------


async def test_six_json_page_and_files_replay() -> None:
    with replay("six"):
        async with IndexClient(INDEX_URL) as client:
            page = await client.get_project_page("six")
            files = {f.filename: f for f in page.files}
            wheel = files["six-1.17.0-py2.py3-none-any.whl"]
            sdist = files["six-1.17.0.tar.gz"]
            blobs = {}
            for file in (wheel, sdist):
                async with client.stream_file(file) as chunks:
                    blobs[file.filename] = await collect(verified_chunks(chunks, file))
            assert await client.get_core_metadata(sdist, probe=True) is None
    assert page.name == "six"
    assert page.api_version is not None
    assert page.api_version.startswith("1.")
    assert page.last_serial is not None
    assert page.last_serial > 0
    assert page.versions is not None
    assert "1.17.0" in page.versions
    assert wheel.url.startswith("https://files.index.test/")
    assert hashlib.sha256(blobs[wheel.filename]).hexdigest() == wheel.sha256
    assert hashlib.sha256(blobs[sdist.filename]).hexdigest() == sdist.sha256
    assert len(blobs[wheel.filename]) == wheel.size
    assert blobs[wheel.filename].startswith(b"PK\x03\x04")
    assert blobs[sdist.filename].startswith(b"\x1f\x8b")
    assert wheel.requires_python is not None
    assert wheel.upload_time is not None
    assert wheel.upload_time.startswith("2024-12-04")


async def test_six_html_page_agrees_with_the_json_page() -> None:
    with replay("six_html"):
        async with IndexClient(INDEX_URL) as client:
            html_page = await client.get_project_page("six")
    with replay("six"):
        async with IndexClient(INDEX_URL) as client:
            json_page_ = await client.get_project_page("six")
    assert html_page.versions is None
    assert len(html_page.files) == len(json_page_.files) > 20
    assert {(f.filename, f.url, f.sha256) for f in html_page.files} == {
        (f.filename, f.url, f.sha256) for f in json_page_.files
    }
    wheel = next(f for f in html_page.files if f.filename == "six-1.17.0-py2.py3-none-any.whl")
    assert wheel.requires_python is not None
    assert ">=2.7" in wheel.requires_python  # decoded from &gt;


async def test_yanked_files_replay_with_their_reason() -> None:
    with replay("yanked"):
        async with IndexClient(INDEX_URL) as client:
            page = await client.get_project_page("attrs")
    yanked = {f.filename: f.yanked_reason for f in page.files if f.yanked}
    assert yanked == {
        "attrs-21.1.0-py2.py3-none-any.whl": "Installable but not importable on Python 3.4.",
        "attrs-21.1.0.tar.gz": "Installable but not importable on Python 3.4.",
    }
    assert sum(1 for f in page.files if not f.yanked) > 50


async def test_core_metadata_replays_and_is_checked() -> None:
    with replay("core_metadata"):
        async with IndexClient(INDEX_URL) as client:
            page = await client.get_project_page("packaging")
            wheel = next(f for f in page.files if f.filename == "packaging-26.3-py3-none-any.whl")
            probed = await client.get_core_metadata(wheel, probe=True)
            assert probed is not None
            digest = hashlib.sha256(probed.raw).hexdigest()
            advertised = replace(wheel, core_metadata=CoreMetadataRef((("sha256", digest),)))
            checked = await client.get_core_metadata(advertised)
            lying = replace(wheel, core_metadata=CoreMetadataRef((("sha256", "0" * 64),)))
            with pytest.raises(DigestMismatchError):
                await client.get_core_metadata(lying)
    assert checked is not None
    assert (checked.name, checked.version) == ("packaging", "26.3")
    assert checked.raw == probed.raw
    assert checked.requires_python is not None


async def test_numpy_page_has_wheels_for_several_platforms() -> None:
    with replay("numpy"):
        async with IndexClient(INDEX_URL) as client:
            page = await client.get_project_page("numpy")
    platforms = {
        tag.platform
        for f in page.files
        if f.filename.endswith(".whl")
        for tag in parse_wheel_filename(f.filename)[3]
    }
    assert any(p.startswith("manylinux") for p in platforms)
    assert any(p.startswith("macosx") for p in platforms)
    assert "win_amd64" in platforms
    assert any("aarch64" in p for p in platforms)
    assert len(page.files) > 1000
    assert all(f.sha256 for f in page.files)


async def test_legacy_non_pep440_versions_parse_without_crashing() -> None:
    with replay("legacy_versions"):
        async with IndexClient(INDEX_URL) as client:
            page = await client.get_project_page("pytz")
    assert page.versions is not None
    assert "2004d" in page.versions
    with pytest.raises(InvalidVersion):
        Version("2004d")
    legacy = [f for f in page.files if f.filename.startswith("pytz-2004d")]
    assert [f.filename for f in legacy] == ["pytz-2004d.tar.gz"]
    assert legacy[0].sha256 is not None
    assert legacy[0].url.startswith("https://files.index.test/")
    assert all(f.sha256 for f in page.files)


async def test_a_missing_project_replays_as_not_found() -> None:
    with replay("missing"):
        async with IndexClient(INDEX_URL) as client:
            with pytest.raises(ProjectNotFoundError) as caught:
                await client.get_project_page("oci-pypi-sync-no-such-project")
    assert caught.value.url == "https://index.test/simple/oci-pypi-sync-no-such-project/"


async def test_replay_refuses_requests_it_did_not_record() -> None:
    with replay("missing"):
        async with IndexClient(INDEX_URL) as client:
            with pytest.raises(CannotOverwriteExistingCassetteException, match=r"simple/six/"):
                await client.get_project_page("six")


# --- PEP 740 provenance ------------------------------------------------------

PROVENANCE_PATH = "/integrity/demo/1.0/demo-1.0-py3-none-any.whl/provenance"


async def test_provenance_is_fetched_with_the_integrity_accept_header_and_kept_as_bytes() -> None:
    served = b'{"version":1,"attestation_bundles":[]}'

    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Type": "application/vnd.pypi.integrity.v1+json"}, content=served
        )

    async with sites(handler) as s, s.client() as client:
        got = await client.get_provenance(demo_file(provenance=s.index + PROVENANCE_PATH))
    assert got == served
    assert str(s.seen[0].url) == s.index + PROVENANCE_PATH
    assert s.seen[0].headers["Accept"].startswith("application/vnd.pypi.integrity.v1+json")


async def test_no_provenance_url_asks_nothing_and_404_means_none() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"message": "No provenance available"})

    async with sites(handler) as s, s.client() as client:
        assert await client.get_provenance(demo_file()) is None
        assert s.seen == []
        assert await client.get_provenance(demo_file(provenance=s.index + PROVENANCE_PATH)) is None
    assert len(s.seen) == 1


async def test_provenance_errors_name_the_file_and_an_oversized_body_is_refused() -> None:
    def handler(s: Sites, request: httpx.Request) -> httpx.Response:
        if "big" in str(request.url):
            return httpx.Response(200, content=b" " * (4 << 20) + b"{}")
        return httpx.Response(403, json={"message": "Attestations temporarily disabled"})

    async with sites(handler) as s, s.client() as client:
        url = s.index + PROVENANCE_PATH
        with pytest.raises(IndexError_, match=r"provenance of demo-1.0") as refused:
            await client.get_provenance(demo_file(provenance=url))
        assert refused.value.status == 403
        with pytest.raises(IndexError_, match=r"exceeds 4,194,304 bytes \(MAX_PROVENANCE_BYTES\)"):
            await client.get_provenance(demo_file(provenance=url + "/big"))
