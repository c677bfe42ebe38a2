"""The index's HTTP client: the one place the index side does I/O.

Pages are fetched with content negotiation and parsed by whatever the server
sent, each read with a bound on its decoded size (:mod:`oci_pypi_sync.limits`);
files are streamed in chunks, never held whole, and exactly as served: no
content decoding, as pip does. Credentials embedded in the index URL are
sent on every request to the index's own origin (scheme, host and port),
range requests included, and nowhere else; every URL in an error or a log
line goes through :func:`redact_url`.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Generator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Self
from urllib.parse import unquote, urlsplit, urlunsplit

from packaging.utils import canonicalize_name
from yarl import URL

from oci_pypi_sync import __version__
from oci_pypi_sync.errors import (
    DigestMismatchError,
    FileHostUnreachableError,
    IndexError_,
    IndexLimitError,
    IndexUnreachableError,
    ProjectNotFoundError,
    SizeMismatchError,
    StalePageError,
    UnsupportedUrlError,
    parse_retry_after,
)
from oci_pypi_sync.index.metadata import parse_core_metadata, verify_metadata
from oci_pypi_sync.index.negotiation import ACCEPT, parse_project_page
from oci_pypi_sync.index.pep691 import parse_last_serial
from oci_pypi_sync.index.projects import parse_project_index
from oci_pypi_sync.index.records import (
    CoreMetadata,
    DistributionFile,
    ProjectIndex,
    ProjectPage,
    StoredPage,
)
from oci_pypi_sync.index.remote_wheel import fetch_wheel_metadata
from oci_pypi_sync.limits import (
    ACCEPT_ENCODING,
    MAX_CORE_METADATA_BYTES,
    MAX_PAGE_BYTES,
    MAX_PROJECT_LIST_BYTES,
    MAX_PROVENANCE_BYTES,
    UndecodableError,
    decode_limited,
    exceeded,
)
from oci_pypi_sync.redact import redact_url
from oci_pypi_sync.stores.http import (
    Auth,
    HttpClient,
    Request,
    Response,
    Timeouts,
    TooManyRedirectsError,
    TransportError,
)

logger = logging.getLogger(__name__)

USER_AGENT = f"oci-pypi-sync/{__version__}"
SERIAL_HEADER = "X-PyPI-Last-Serial"
CHUNK_SIZE = 1024 * 1024
#: What a PEP 740 Integrity API answers with; plain JSON is its fallback.
INTEGRITY_ACCEPT = "application/vnd.pypi.integrity.v1+json, application/json;q=0.5"
TIMEOUTS = Timeouts(connect=15.0, read=60.0)
#: The URL schemes files and pages are fetched over.
FETCHED_SCHEMES = frozenset({"http", "https"})


class _IndexOriginAuth:
    """HTTP basic auth sent only to the index's own origin (scheme, host, port).

    Files often live on another host (a CDN); the index password must not
    travel there (nor after a redirect elsewhere: :class:`HttpClient` drops it).
    """

    def __init__(self, username: str, password: str, index_url: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._header = f"Basic {token}"
        url = URL(index_url)
        self._origin = (url.scheme, url.host or "", url.port)

    def flow(self, request: Request) -> Generator[Request, Response, None]:
        if request.origin == self._origin:
            request.headers["Authorization"] = self._header
        yield request


def _split_credentials(index_url: str) -> tuple[str, _IndexOriginAuth | None]:
    """The index URL without userinfo, and an auth for the userinfo it had."""
    parts = urlsplit(index_url)
    if "@" not in parts.netloc:
        return index_url, None
    userinfo, host = parts.netloc.rsplit("@", 1)
    username, _, password = userinfo.partition(":")
    bare = urlunsplit(parts._replace(netloc=host))
    return bare, _IndexOriginAuth(unquote(username), unquote(password), bare)


def _default_http(timeout: float | None = None, max_connections: int = 100) -> HttpClient:
    return HttpClient(
        max_connections=max_connections,
        timeouts=TIMEOUTS if timeout is None else Timeouts(timeout, timeout),
        headers={"User-Agent": USER_AGENT},
    )


async def verified_chunks(
    chunks: AsyncIterator[bytes], file: DistributionFile
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, then raise if their sha256 or size is not what the page said.

    The check comes after the last chunk, so a consumer must not commit
    what it wrote until the iteration has ended without error.
    """
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        yield chunk
    if file.size is not None and size != file.size:
        raise SizeMismatchError(file.filename, file.size, size)
    expected = file.sha256
    if expected is not None and digest.hexdigest() != expected:
        raise DigestMismatchError(
            file.filename, f"sha256:{expected}", f"sha256:{digest.hexdigest()}"
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    """An answer of the index with its body read (decoded and bounded)."""

    status_code: int
    reason_phrase: str
    url: str
    headers: Mapping[str, str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300


def unsupported_url(url: str) -> UnsupportedUrlError:
    return UnsupportedUrlError(
        f"the index points at {redact_url(url)}, which is not an http or https URL: "
        "only those are fetched (the index must serve the file over HTTP)"
    )


def check_fetchable(url: str) -> None:
    """Refuse, before any request, a URL whose scheme is not fetched over HTTP."""
    if urlsplit(url).scheme.lower() not in FETCHED_SCHEMES:
        raise unsupported_url(url)


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = URL(url)
    return parsed.scheme, parsed.host or "", parsed.port


def _check_fresh(project: str, serial: int | None, min_serial: int | None) -> None:
    """Raise :class:`StalePageError` for a page older than the project list promised."""
    if serial is not None and min_serial is not None and serial < min_serial:
        raise StalePageError(
            f"the index served a stale page of {project!r} (serial {serial}, "
            f"the project list says {min_serial}); trying again"
        )


def _conditional_headers(stored: StoredPage) -> dict[str, str]:
    """The validators of a stored copy, as the headers of a conditional GET (RFC 9110)."""
    headers = {}
    if stored.etag:
        headers["If-None-Match"] = stored.etag
    if stored.last_modified:
        headers["If-Modified-Since"] = stored.last_modified
    return headers


class IndexClient:
    """An async reader of one simple repository index.

    ``index_url`` is the index root (``.../simple/``); user name and
    password in it are used for basic auth and never shown. Pass ``http``
    to share a client (its owner closes it); otherwise one is made
    (:class:`~oci_pypi_sync.stores.http.HttpClient`) with bounded timeouts.
    Redirects are followed.
    """

    def __init__(
        self,
        index_url: str,
        *,
        http: HttpClient | None = None,
        timeout: float | None = None,
        max_connections: int = 100,
    ) -> None:
        bare_url, url_auth = _split_credentials(index_url)
        # Without credentials in the URL, a shared client's own auth (if any) applies.
        self._auth: Auth | None = url_auth
        self.index_url = bare_url if bare_url.endswith("/") else bare_url + "/"
        self._owns_http = http is None
        self._http = http if http is not None else _default_http(timeout, max_connections)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- requests -----------------------------------------------------------

    @staticmethod
    def _headers(accept: str | None = None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if accept:
            headers["Accept"] = accept
        return headers

    def _unreachable(self, url: str, exc: TransportError, *, file: bool = False) -> IndexError_:
        """The error for a request that got no answer, by whose fault it is.

        Pages are the index: not reaching them stops a run. A ``file`` (or
        its core metadata, its provenance) on another host than the index's
        own (a CDN), or at a URL that is not HTTP (a redirect to ``ftp:``),
        fails alone.
        """
        failed = str(exc.url) if exc.url is not None else url
        if urlsplit(failed).scheme.lower() not in FETCHED_SCHEMES:
            return unsupported_url(failed)
        host = urlsplit(failed).netloc.rpartition("@")[2] or redact_url(failed)
        reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
        if file and _origin(failed) != _origin(self.index_url):
            return FileHostUnreachableError(
                f"cannot reach {host}, where the index keeps {redact_url(url)}: {reason}"
            )
        return IndexUnreachableError(
            f"cannot reach the index at {host} ({redact_url(failed)}): {reason}"
        )

    async def _get(
        self,
        url: str,
        what: str,
        limit: tuple[int, str],
        *,
        accept: str | None = None,
        extra_headers: dict[str, str] | None = None,
        file: bool = False,
    ) -> _Answer:
        """GET ``url``; the body of a successful answer is read decoded, up to ``limit``.

        ``limit`` is the bound and its name. The body is decoded here, not by
        the HTTP client, so a gzip bomb stops at the bound (see
        :func:`~oci_pypi_sync.limits.decode_limited`).
        """
        logger.debug("GET %s", redact_url(url))
        headers = {
            **self._headers(accept),
            "Accept-Encoding": ACCEPT_ENCODING,
            **(extra_headers or {}),
        }
        bound, name = limit
        try:
            response = await self._http.request(
                "GET",
                url,
                headers=headers,
                auth=self._auth,
                stream=True,
                follow_redirects=True,
                decode=False,
            )
            try:
                body = b""
                if response.is_success:

                    def too_big() -> Exception:
                        where = redact_url(str(response.url))
                        return IndexLimitError(exceeded(f"{what} ({where})", bound, name))

                    body = await decode_limited(
                        response.aiter_bytes(),
                        response.headers.get("content-encoding"),
                        bound,
                        too_big,
                    )
            finally:
                await response.aclose()
        except TooManyRedirectsError:
            raise IndexError_(f"too many redirects fetching {redact_url(url)}") from None
        except TransportError as exc:
            raise self._unreachable(url, exc, file=file) from exc
        except UndecodableError as exc:
            raise IndexError_(f"{what} ({redact_url(url)}) is unreadable: {exc}") from None
        return _Answer(
            response.status_code,
            response.reason_phrase,
            str(response.url),
            response.headers,
            body,
        )

    @staticmethod
    def _raise_for_status(response: Response | _Answer, what: str) -> None:
        if response.is_success:
            return
        raise IndexError_(
            f"the index answered {response.status_code} {response.reason_phrase} "
            f"for {what} ({redact_url(str(response.url))})",
            status=response.status_code,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    # --- pages --------------------------------------------------------------

    async def get_project_names(self) -> list[str]:
        """Every project the index lists, as it spells them."""
        return list((await self.get_project_index()).names)

    async def get_project_index(self) -> ProjectIndex:
        """The project list, with each project's ``_last-serial`` when the index gives them."""
        response = await self._get(
            self.index_url,
            "the project list",
            (MAX_PROJECT_LIST_BYTES, "MAX_PROJECT_LIST_BYTES"),
            accept=ACCEPT,
        )
        self._raise_for_status(response, "the project list")
        return parse_project_index(
            response.content,
            response.headers.get("content-type"),
            redact_url(str(response.url)),
        )

    def project_url(self, project: str) -> str:
        """The PEP 503 URL of a project's page: the index URL plus its normalized name."""
        return f"{self.index_url}{canonicalize_name(project)}/"

    async def get_project_page(self, project: str) -> ProjectPage:
        """A project's page, parsed as JSON or HTML according to what the server sent.

        Raises :class:`ProjectNotFoundError` on 404/410.
        """
        page = await self.get_project_page_if_changed(project, None)
        if page is None:  # pragma: no cover - no validator was sent
            raise IndexError_(f"the index answered 304 for {project!r} unasked")
        return page

    async def get_project_page_if_changed(
        self, project: str, etag: str | None, *, min_serial: int | None = None
    ) -> ProjectPage | None:
        """The page, or ``None`` when the index says it has not changed since ``etag``.

        A conditional GET (``If-None-Match``) costs the index almost nothing
        for an unchanged project; indexes that send no ``ETag`` simply
        answer in full. ``min_serial`` is the serial the project list gave
        the project: a page (or a 304) whose ``X-PyPI-Last-Serial`` (or
        ``_last-serial``) is older came from a stale cache, and raises
        :class:`StalePageError`, which is retried.
        """
        url = self.project_url(project)
        headers = {"If-None-Match": etag} if etag else None
        response = await self._get(
            url,
            f"the page of {project!r}",
            (MAX_PAGE_BYTES, "MAX_PAGE_BYTES"),
            accept=ACCEPT,
            extra_headers=headers,
        )
        header_serial = parse_last_serial(response.headers.get(SERIAL_HEADER), redact_url(url))
        if etag and response.status_code == 304:
            _check_fresh(project, header_serial, min_serial)
            return None
        if response.status_code in {404, 410}:
            raise ProjectNotFoundError(project, redact_url(url))
        self._raise_for_status(response, f"the project {project!r}")
        page = parse_project_page(
            response.content,
            response.headers.get("content-type"),
            redact_url(str(response.url)),
            project,
        )
        serial = header_serial if header_serial is not None else page.last_serial
        _check_fresh(project, serial, min_serial)
        new_etag = response.headers.get("etag")
        return replace(page, etag=new_etag or page.etag, last_serial=serial)

    async def get_project_page_copy(
        self, project: str, stored: StoredPage | None
    ) -> tuple[StoredPage, bool]:
        """The page's bytes as the index serves them, and whether they are new.

        A ``stored`` copy's ``ETag`` and ``Last-Modified`` go back as
        ``If-None-Match`` and ``If-Modified-Since``: an answer 304 means the
        copy is still the page, and it is returned with ``False``. Otherwise
        the answer is the new copy, with the validators it came with (none
        when the index gives none). Parse it with
        :func:`~oci_pypi_sync.index.cache.read_page`. Raises
        :class:`ProjectNotFoundError` on 404/410.
        """
        url = self.project_url(project)
        headers = _conditional_headers(stored) if stored is not None and stored.url == url else {}
        response = await self._get(
            url,
            f"the page of {project!r}",
            (MAX_PAGE_BYTES, "MAX_PAGE_BYTES"),
            accept=ACCEPT,
            extra_headers=headers,
        )
        if stored is not None and headers and response.status_code == 304:
            return stored, False
        if response.status_code in {404, 410}:
            raise ProjectNotFoundError(project, redact_url(url))
        self._raise_for_status(response, f"the project {project!r}")
        copy = StoredPage(
            url,
            redact_url(str(response.url)),
            response.headers.get("content-type"),
            response.content,
            response.headers.get("etag"),
            response.headers.get("last-modified"),
        )
        return copy, True

    # --- files --------------------------------------------------------------

    async def get_core_metadata(
        self, file: DistributionFile, *, probe: bool = False
    ) -> CoreMetadata | None:
        """The file's PEP 658 core metadata, checked against the advertised hash.

        ``None`` when the page does not offer it. Bytes that fail the check
        raise :class:`DigestMismatchError` and are never returned. With
        ``probe``, a ``.metadata`` the page does not advertise is fetched
        anyway (some indexes serve it unadvertised): a 404 then gives
        ``None``, and there is no advertised hash to check it against.
        """
        if file.core_metadata is None and not probe:
            return None
        check_fetchable(file.metadata_url)
        response = await self._get(
            file.metadata_url,
            f"the core metadata of {file.filename}",
            (MAX_CORE_METADATA_BYTES, "MAX_CORE_METADATA_BYTES"),
            file=True,
        )
        if file.core_metadata is None and response.status_code in {404, 410}:
            return None
        self._raise_for_status(response, f"the core metadata of {file.filename}")
        raw = response.content
        if file.core_metadata is not None:
            verify_metadata(raw, file.core_metadata, f"{file.filename}.metadata")
        return parse_core_metadata(raw)

    async def get_provenance(self, file: DistributionFile) -> bytes | None:
        """The file's PEP 740 provenance object, byte for byte as served; ``None`` when none.

        Asked of the URL the page gave (the index's Integrity API) with
        ``Accept: application/vnd.pypi.integrity.v1+json``; a 404 or 410
        means the file has no provenance. The body is read up to
        :data:`MAX_PROVENANCE_BYTES` and is not parsed here: its bytes are
        what the mirror stores.
        """
        url = file.provenance
        if url is None:
            return None
        check_fetchable(url)
        what = f"the provenance of {file.filename}"
        response = await self._get(
            url,
            what,
            (MAX_PROVENANCE_BYTES, "MAX_PROVENANCE_BYTES"),
            accept=INTEGRITY_ACCEPT,
            file=True,
        )
        if response.status_code in {404, 410}:
            return None
        self._raise_for_status(response, what)
        return response.content

    async def get_file_size(self, file: DistributionFile) -> int:
        """The file's size: PEP 700's ``size`` when the page gave it, else a HEAD request."""
        if file.size is not None:
            return file.size
        check_fetchable(file.url)
        logger.debug("HEAD %s", redact_url(file.url))
        try:
            response = await self._http.request(
                "HEAD",
                file.url,
                headers={**self._headers(), "Accept-Encoding": "identity"},
                auth=self._auth,
                follow_redirects=True,
            )
        except TooManyRedirectsError:
            raise IndexError_(f"too many redirects fetching {redact_url(file.url)}") from None
        except TransportError as exc:
            raise self._unreachable(file.url, exc, file=True) from exc
        self._raise_for_status(response, f"the file {file.filename}")
        length = response.headers.get("content-length")
        if length is None or not length.isdigit():
            raise IndexError_(
                f"the index gives no size for {file.filename} ({redact_url(file.url)})"
            )
        return int(length)

    async def get_wheel_metadata(self, file: DistributionFile) -> bytes:
        """A wheel's ``METADATA``, read with range requests (see :mod:`.remote_wheel`).

        The requests carry the index's credentials when the wheel is on the
        index's origin, as every request there does.
        """
        return await fetch_wheel_metadata(self._http, file.url, file.filename, auth=self._auth)

    def stream_file(
        self, file: DistributionFile
    ) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream a file's bytes in ~1 MiB chunks exactly as served, never content-decoded.

        ``Accept-Encoding: identity`` asks for no encoding; a server that
        encodes anyway (a ``.tar.gz`` sent with ``Content-Encoding: gzip``)
        still gives its raw bytes, which are the file, as pip keeps them.

        Use as ``async with client.stream_file(f) as chunks: async for chunk in chunks``.
        Wrap ``chunks`` in :func:`verified_chunks` to check sha256 and size.
        """
        return self._stream(file)

    @asynccontextmanager
    async def _stream(self, file: DistributionFile) -> AsyncIterator[AsyncIterator[bytes]]:
        check_fetchable(file.url)
        logger.debug("GET %s (streamed)", redact_url(file.url))
        try:
            response = await self._http.request(
                "GET",
                file.url,
                headers={**self._headers(), "Accept-Encoding": "identity"},
                auth=self._auth,
                stream=True,
                follow_redirects=True,
                decode=False,
            )
        except TooManyRedirectsError:
            raise IndexError_(f"too many redirects fetching {redact_url(file.url)}") from None
        except TransportError as exc:
            raise self._unreachable(file.url, exc, file=True) from exc
        try:
            self._raise_for_status(response, f"the file {file.filename}")
            yield self._chunks(response, file.url)
        finally:
            await response.aclose()

    async def _chunks(self, response: Response, url: str) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_bytes(CHUNK_SIZE):
                yield chunk
        except TransportError as exc:
            raise self._unreachable(url, exc, file=True) from exc
