"""Record the index cassettes from the real index. Run by hand, never by pytest:

    .venv/bin/python tests/record_cassettes.py            # all cassettes
    .venv/bin/python tests/record_cassettes.py six numpy  # some

The index is pip's default index, asked of pip at run time. As each
interaction is recorded, every real host is rewritten to a placeholder: the
index host to ``index.test``, the files host to ``files.index.test``, any
other to ``<n>.hosts.test``, in request URLs, response headers (only a few
harmless ones are kept) and page bodies. Bodies that are not pages (files,
``.metadata``) are kept byte for byte, since their digests are checked; a
recording fails if one of them names a real host. Afterwards every cassette
is searched for the real host names and the script fails on any hit.
"""

from __future__ import annotations

import asyncio
import gzip
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cassettes import FILES_HOST, INDEX_HOST, cassette_path, make_vcr

from oci_pypi_sync.index.client import IndexClient, verified_chunks
from oci_pypi_sync.index.location import pip_default_index_url
from oci_pypi_sync.index.negotiation import HTML_V1
from oci_pypi_sync.index.records import DistributionFile

_KEPT_RESPONSE_HEADERS = frozenset(
    {"content-type", "location", "etag", "last-modified", "x-pypi-last-serial", "accept-ranges"}
)
_KEPT_REQUEST_HEADERS = frozenset({"accept", "accept-encoding", "user-agent"})
_TEXT_TYPES = ("text/", "application/json", "+json", "+html")

MISSING_PROJECT = "oci-pypi-sync-no-such-project"


class HostRewriter:
    """Maps real hosts to placeholder hosts, in URLs, headers and page bodies."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = dict(mapping)

    def placeholder(self, host: str) -> str:
        if host in self.mapping.values():
            return host
        if host not in self.mapping:
            self.mapping[host] = f"{len(self.mapping) - 1}.hosts.test"
        return self.mapping[host]

    def url(self, url: str) -> str:
        parts = urlsplit(url)
        if not parts.hostname:
            return url
        netloc = self.placeholder(parts.hostname)
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def text(self, body: bytes) -> bytes:
        for real in sorted(self.mapping, key=len, reverse=True):
            body = body.replace(real.encode(), self.mapping[real].encode())
        return body

    def names_real_host(self, data: bytes) -> bool:
        return any(real.encode() in data for real in self.mapping)

    # --- vcrpy hooks -----------------------------------------------------------

    def before_record_request(self, request: Any) -> Any:
        request.uri = self.url(request.uri)
        for name in list(request.headers):
            if name.lower() not in _KEPT_REQUEST_HEADERS:
                del request.headers[name]
        return request

    def before_record_response(self, response: dict[str, Any]) -> dict[str, Any]:
        headers: dict[str, list[str]] = {}
        for name, values in response["headers"].items():
            if name.lower() not in _KEPT_RESPONSE_HEADERS:
                continue
            if name.lower() == "location":
                values = [self.url(v) for v in values]
            headers[name.lower()] = values
        content_type = ",".join(headers.get("content-type", [])).lower()
        body: bytes = response["body"]["string"]
        if any(marker in content_type for marker in _TEXT_TYPES):
            body = self.text(body)
        elif self.names_real_host(body):
            raise RuntimeError(
                f"a {content_type or 'binary'} body names a real host and cannot be "
                "rewritten without breaking its digest: record another file"
            )
        headers["content-length"] = [str(len(body))]
        response["headers"] = headers
        response["body"]["string"] = body
        return response


Recording = Callable[[IndexClient], Awaitable[None]]


def _file(files: tuple[DistributionFile, ...], filename: str) -> DistributionFile:
    for file in files:
        if file.filename == filename:
            return file
    raise LookupError(f"{filename} is not on the page")


async def _download(client: IndexClient, file: DistributionFile) -> bytes:
    async with client.stream_file(file) as chunks:
        return b"".join([chunk async for chunk in verified_chunks(chunks, file)])


async def record_six(client: IndexClient) -> None:
    page = await client.get_project_page("six")
    wheel = _file(page.files, "six-1.17.0-py2.py3-none-any.whl")
    sdist = _file(page.files, "six-1.17.0.tar.gz")
    for file in (wheel, sdist):
        await _download(client, file)
        await client.get_core_metadata(file)  # fetched only if the page advertises it
    # The wheel's .metadata quotes the index host in its description, so only the
    # sdist's (absent) one is probed.
    await client.get_core_metadata(sdist, probe=True)


async def record_six_html(client: IndexClient) -> None:
    response = await client._http.request(
        "GET", client.project_url("six"), headers={"Accept": f"{HTML_V1}, text/html;q=0.5"}
    )
    assert response.status_code == 200, response.status_code


async def record_yanked(client: IndexClient) -> None:
    page = await client.get_project_page("attrs")
    assert any(file.yanked and file.yanked_reason for file in page.files)


async def record_core_metadata(client: IndexClient) -> None:
    page = await client.get_project_page("packaging")
    wheel = _file(page.files, "packaging-26.3-py3-none-any.whl")
    assert await client.get_core_metadata(wheel, probe=True) is not None


async def record_numpy(client: IndexClient) -> None:
    await client.get_project_page("numpy")


async def record_legacy_versions(client: IndexClient) -> None:
    await client.get_project_page("pytz")


async def record_missing(client: IndexClient) -> None:
    response = await client._http.request("GET", client.project_url(MISSING_PROJECT))
    assert response.status_code == 404, response.status_code


RECORDINGS: dict[str, Recording] = {
    "six": record_six,
    "six_html": record_six_html,
    "yanked": record_yanked,
    "core_metadata": record_core_metadata,
    "numpy": record_numpy,
    "legacy_versions": record_legacy_versions,
    "missing": record_missing,
}


def _cassette_text(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


async def main(names: list[str]) -> int:
    index_url = pip_default_index_url().rstrip("/") + "/"
    index_host = urlsplit(index_url).hostname
    assert index_host
    async with IndexClient(index_url) as client:
        sample = await client.get_project_page("six")
    files_host = urlsplit(sample.files[0].url).hostname
    assert files_host
    rewriter = HostRewriter({index_host: INDEX_HOST, files_host: FILES_HOST})

    for name in names:
        path = cassette_path(name)
        path.unlink(missing_ok=True)
        recorder = make_vcr(
            before_record_request=rewriter.before_record_request,
            before_record_response=rewriter.before_record_response,
        )
        with recorder.use_cassette(str(path), record_mode="all"):
            async with IndexClient(index_url) as client:
                await RECORDINGS[name](client)
        print(f"recorded {path.name}: {path.stat().st_size} bytes")

    leaks = [
        path.name
        for path in sorted(cassette_path("x").parent.glob("*.yaml*"))
        if rewriter.names_real_host(_cassette_text(path))
    ]
    if leaks:
        print(f"real host names found in: {', '.join(leaks)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:] or list(RECORDINGS))))
