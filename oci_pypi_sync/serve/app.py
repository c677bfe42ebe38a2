"""The ASGI application: a PEP 503/691 simple repository answered from a mirror.

URLs (all below the application's root path):

- ``/simple/``: the project list;
- ``/simple/<project>/``: a project page (HTML or JSON by ``Accept``, or
  ``?format=json|html``); other spellings of the name redirect (301);
- ``/files/<project>/<sha256>/<filename>``: the file, streamed from its
  blob, with ``Range`` support; the digest in the path makes the URL
  immutable and the filename is the last segment, as installers want.
  Only bytes that match the digest are ever served completely
  (:mod:`.integrity`): a damaged blob is a 502, or a response cut short;
- ``/files/<project>/<sha256>/<filename>.metadata``: its core metadata
  (PEP 658/714);
- ``/integrity/<project>/<version>/<filename>/provenance``: its PEP 740
  provenance object, as stored (the Integrity API).

Reads go through :class:`~oci_pypi_sync.serve.view.MirrorView`, which
caches; rendered pages are cached too, by the content they show.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from packaging.utils import canonicalize_name
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.flight import SingleFlight
from oci_pypi_sync.errors import DigestMismatchError, SizeMismatchError, TargetError
from oci_pypi_sync.redact import redact_text
from oci_pypi_sync.serve import pages
from oci_pypi_sync.serve.integrity import VerifiedBlobs
from oci_pypi_sync.serve.model import ServedFile
from oci_pypi_sync.serve.ranges import UnsatisfiableRange, parse_range
from oci_pypi_sync.serve.view import DEFAULT_TTL, Listing, Lru, MirrorView
from oci_pypi_sync.stores.protocols import Store

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("oci_pypi_sync.serve.access")

PAGE_CACHE_CONTROL = "public, max-age=60"
FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"
#: For bytes checked only as they stream: a cache keeps them, but asks again (ETag) first.
UNVERIFIED_CACHE_CONTROL = "no-cache"
METADATA_SUFFIX = ".metadata"
INTEGRITY_TYPE = fmt.INTEGRITY_LAYER
_RENDERED_PAGES = 1024
_STORE_ERRORS = (TargetError, DigestMismatchError, SizeMismatchError, OSError)


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One answered request, as the access log writes it."""

    client: str
    method: str
    path: str
    status: int
    bytes_sent: int
    seconds: float

    def __str__(self) -> str:
        return (
            f'{self.client} "{self.method} {self.path}" {self.status} '
            f"{self.bytes_sent} {self.seconds * 1000:.1f}ms"
        )


class AccessLog:
    """ASGI middleware logging one line per HTTP request once its response is done.

    The record is also attached to the log record (``record.access``), so
    tests and log shippers can read fields instead of parsing text.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            client = scope.get("client")
            path = scope.get("path", "")
            if scope.get("query_string"):
                path += "?" + scope["query_string"].decode("latin-1")
            record = AccessRecord(
                client=f"{client[0]}:{client[1]}" if client else "-",
                method=str(scope.get("method", "")),
                path=path,
                status=status,
                bytes_sent=sent,
                seconds=time.perf_counter() - started,
            )
            access_logger.info("%s", record, extra={"access": record})


class SimpleRepository:
    """The endpoints, over one :class:`MirrorView`."""

    def __init__(self, view: MirrorView, blobs: VerifiedBlobs) -> None:
        self.view = view
        self.blobs = blobs
        self._rendered: Lru[tuple[str, str, str, str], tuple[bytes, str]] = Lru(_RENDERED_PAGES)
        self._root: tuple[str, dict[pages.PageFormat, pages.Body]] | None = None
        self._rendering: SingleFlight[str] = SingleFlight()

    async def index(self, request: Request) -> Response:
        chosen = _negotiate(request)
        if chosen is None:
            return _not_acceptable()
        body = (await self._root_pages(await self.view.listing()))[chosen.format]
        headers = {"Cache-Control": PAGE_CACHE_CONTROL, "Vary": "Accept, Accept-Encoding"}
        headers["Content-Type"] = chosen.content_type
        if _accepts_gzip(request.headers.get("accept-encoding")):
            data, headers["ETag"] = body.gzipped, body.gzip_etag
            headers["Content-Encoding"] = "gzip"
        else:
            data, headers["ETag"] = body.plain, body.etag
        if _matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Response(headers=headers)
        return Response(data, headers=headers)

    async def _root_pages(self, listing: Listing) -> dict[pages.PageFormat, pages.Body]:
        """The project list rendered once per catalog revision, in a thread, kept in memory."""
        root = self._root
        if root is not None and root[0] == listing.key:
            return root[1]

        async def render() -> dict[pages.PageFormat, pages.Body]:
            rendered = await asyncio.to_thread(pages.render_root, listing.names)
            self._root = (listing.key, rendered)
            return rendered

        return await self._rendering.run(listing.key, render)

    async def project(self, request: Request) -> Response:
        raw = str(request.path_params["project"])
        name = canonicalize_name(raw)
        if raw != name or not request.url.path.endswith("/"):
            target = f"{request.scope.get('root_path', '')}/simple/{name}/"
            if request.url.query:
                target += "?" + request.url.query
            return RedirectResponse(target, status_code=301)
        chosen = _negotiate(request)
        if chosen is None:
            return _not_acceptable()
        project = await self.view.project(name)
        if project is None:
            return PlainTextResponse(f"no project {name!r} in this mirror\n", status_code=404)
        base_url = str(request.base_url)
        key = (name, chosen.content_type, project.key, base_url)
        rendered = self._rendered.get(key)
        if rendered is None:
            body = pages.render_project(project, chosen.format, base_url)
            rendered = (body, fmt.sha256_digest(body))
            self._rendered.put(key, rendered)
        return _page(request, rendered[0], chosen, rendered[1])

    async def file(self, request: Request) -> Response:
        project = str(request.path_params["project"])
        sha256 = str(request.path_params["sha256"])
        filename = str(request.path_params["filename"])
        file = await self.view.file(project, sha256, filename)
        if file is not None:
            return await self._file_response(request, project, file)
        if filename.endswith(METADATA_SUFFIX):
            file = await self.view.file(project, sha256, filename[: -len(METADATA_SUFFIX)])
            if file is not None:
                data = await self.view.metadata(project, file)
                if data is not None:
                    return _metadata_response(request, file, data)
        return PlainTextResponse("not found\n", status_code=404)

    async def provenance(self, request: Request) -> Response:
        """The PEP 740 Integrity API: a file's provenance object as the mirror stores it."""
        project = str(request.path_params["project"])
        version = str(request.path_params["version"])
        filename = str(request.path_params["filename"])
        if not _integrity_acceptable(request.headers.get("accept")):
            return JSONResponse({"message": "Request not acceptable"}, status_code=406)
        found = await self.view.project(canonicalize_name(project))
        file = found.file(filename) if found is not None else None
        data = None
        if file is not None and fmt.normalize_version(version) == file.version:
            data = await self.view.provenance(str(canonicalize_name(project)), file)
        if file is None or data is None:
            return JSONResponse(
                {"message": f"No provenance available for {filename}"},
                status_code=404,
                headers={"Vary": "Accept"},
            )
        headers = {
            "ETag": f'"sha256:{file.provenance_sha256}"',
            "Cache-Control": PAGE_CACHE_CONTROL,
            "Vary": "Accept",
            "Content-Type": INTEGRITY_TYPE,
        }
        if _matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(data))
            return Response(headers=headers)
        return Response(data, headers=headers)

    async def _file_response(self, request: Request, project: str, file: ServedFile) -> Response:
        etag = f'"{file.blob_digest}"'
        headers = {
            "ETag": etag,
            "Cache-Control": FILE_CACHE_CONTROL,
            "Content-Type": pages.file_content_type(file.filename),
        }
        if _matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        start, stop, status = 0, None, 200
        if file.size is not None:  # else not written by this format's sync: stream it whole
            headers["Accept-Ranges"] = "bytes"
            try:
                wanted = parse_range(
                    request.headers.get("range"),
                    file.size,
                    if_range=request.headers.get("if-range"),
                    etag=etag,
                )
            except UnsatisfiableRange:
                headers["Content-Range"] = f"bytes */{file.size}"
                return Response(status_code=416, headers=headers)
            if wanted is None:
                headers["Content-Length"] = str(file.size)
            else:
                headers["Content-Length"] = str(wanted.length)
                headers["Content-Range"] = wanted.content_range
                start, status = wanted.start, 206
                stop = wanted.stop if wanted.stop < file.size else None
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        # A damaged local blob raises here, before any byte: the handler answers 502.
        blob = await self.blobs.open(project, file.blob_digest)
        if not blob.verified:
            headers["Cache-Control"] = UNVERIFIED_CACHE_CONTROL
        return _stream(self.view.store, file, blob.read(start, stop), status, headers)


def _integrity_acceptable(accept: str | None) -> bool:
    """Whether ``Accept`` admits the Integrity API's JSON (its own type, JSON, or anything)."""
    if not accept or not accept.strip():
        return True
    for part in accept.split(","):
        media_type, *params = (piece.strip().lower() for piece in part.split(";"))
        zero = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
        if media_type in (INTEGRITY_TYPE, "application/json", "application/*", "*/*") and not zero:
            return True
    return False


def _negotiate(request: Request) -> pages.Negotiated | None:
    return pages.negotiate(request.headers.get("accept"), request.query_params.get("format"))


def _not_acceptable() -> Response:
    offered = ", ".join((pages.JSON_V1, pages.HTML_V1, pages.TEXT_HTML))
    return PlainTextResponse(f"this index serves {offered}\n", status_code=406)


def _accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (present, and not with q=0)."""
    for part in (accept_encoding or "").split(","):
        coding, *params = (piece.strip().lower() for piece in part.split(";"))
        if coding in ("gzip", "x-gzip"):
            return not any(
                p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params
            )
    return False


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in candidates or "*" in candidates


def _page(request: Request, body: bytes, chosen: pages.Negotiated, digest: str) -> Response:
    headers = {
        "ETag": f'"{digest.removeprefix("sha256:")[:32]}"',
        "Cache-Control": PAGE_CACHE_CONTROL,
        "Vary": "Accept",
        "Content-Type": chosen.content_type,
    }
    if _matches(request.headers.get("if-none-match"), headers["ETag"]):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(body))
        return Response(headers=headers)
    return Response(body, headers=headers)


def _metadata_response(request: Request, file: ServedFile, data: bytes) -> Response:
    etag = f'"sha256:{file.metadata_sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": FILE_CACHE_CONTROL,
        "Content-Type": "application/octet-stream",
    }
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        headers["Content-Length"] = str(len(data))
        return Response(headers=headers)
    return Response(data, headers=headers)


def _stream(
    store: Store,
    file: ServedFile,
    chunks: AsyncGenerator[bytes, None],
    status: int,
    headers: dict[str, str],
) -> Response:
    async def body() -> AsyncIterator[bytes]:
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    yield chunk
        except _STORE_ERRORS as exc:
            # Headers are gone already: all that is left is to cut the response short.
            logger.error("reading %s from %s failed: %s", file.filename, store.display_name, exc)
            raise

    return StreamingResponse(body(), status_code=status, headers=headers)


async def _store_failure(request: Request, exc: Exception) -> Response:
    logger.error("%s %s: the mirror could not be read: %s", request.method, request.url.path, exc)
    reason = redact_text(str(exc))
    if isinstance(exc, DigestMismatchError | SizeMismatchError):
        return PlainTextResponse(
            f"the mirror holds damaged bytes for this file ({reason}); "
            "`oci-pypi verify --repair` on the mirror mends it\n",
            status_code=502,
        )
    return PlainTextResponse(f"the mirror could not be read: {reason}\n", status_code=502)


async def _root(request: Request) -> Response:
    return RedirectResponse(f"{request.scope.get('root_path', '')}/simple/", status_code=301)


def create_app(
    store: Store,
    *,
    ttl: float = DEFAULT_TTL,
    clock: Callable[[], float] = time.monotonic,
    view: MirrorView | None = None,
) -> Starlette:
    """The simple repository over ``store`` as an ASGI app; the caller keeps owning the store.

    ``ttl`` is how long mutable facts (project list, tags) are trusted; the
    view is on ``app.state.view``.
    """
    mirror = view or MirrorView(store, ttl=ttl, clock=clock)
    endpoints = SimpleRepository(mirror, VerifiedBlobs(mirror.store, clock=clock))
    methods = ["GET", "HEAD"]
    routes = [
        Route("/", _root, methods=methods),
        Route("/simple", _root, methods=methods),
        Route("/simple/", endpoints.index, methods=methods),
        Route("/simple/{project}", endpoints.project, methods=methods),
        Route("/simple/{project}/", endpoints.project, methods=methods),
        Route("/files/{project}/{sha256}/{filename}", endpoints.file, methods=methods),
        Route(
            "/integrity/{project}/{version}/{filename}/provenance",
            endpoints.provenance,
            methods=methods,
        ),
    ]
    handlers: dict[Any, Any] = dict.fromkeys(_STORE_ERRORS, _store_failure)
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.add_middleware(AccessLog)
    app.state.view = mirror
    return app
