"""A :class:`~oci_pypi_sync.stores.protocols.Store` over the OCI distribution API (async).

Blobs are streamed: ``POST /blobs/uploads/`` opens a session (and settles
auth with no body), then one ``PUT <Location>&digest=`` carries the body
with its ``Content-Length``. The last chunk is held back until the whole
stream has been hashed, so a body whose digest or size is wrong never
reaches the registry complete and the session is cancelled. Registries that
cap request size (413) get chunked ``PATCH`` uploads from then on.

The URL building and error mapping at the top of the module are pure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import ssl
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urljoin

from yarl import URL

from oci_pypi_sync.errors import (
    AuthenticationError,
    DigestMismatchError,
    InsecureLocationError,
    RegistryError,
    RegistryLimitError,
    RegistryUnreachableError,
    SizeMismatchError,
    parse_retry_after,
)
from oci_pypi_sync.limits import (
    MAX_ERROR_BODY_BYTES,
    MAX_LISTING_BYTES,
    MAX_LISTING_PAGES,
    MAX_MANIFEST_BYTES,
    UndecodableError,
    decode_limited,
    exceeded,
    loads_json,
)
from oci_pypi_sync.redact import redact_url
from oci_pypi_sync.stores.auth import RegistryAuth, normalize_scope, parse_challenges
from oci_pypi_sync.stores.credentials import CredentialStore
from oci_pypi_sync.stores.http import (
    ConnectError,
    ConnectTimeoutError,
    HttpClient,
    HTTPTimeoutError,
    Request,
    Response,
    TransportError,
)
from oci_pypi_sync.stores.protocols import (
    BlobStat,
    ListsReferrers,
    ListsRepositoriesWithin,
    MountsBlobs,
    ReadsRanges,
    StatsBlobs,
    StoredManifest,
)
from oci_pypi_sync.stores.refusals import Refusal, push_refusal
from oci_pypi_sync.stores.streams import limit_stream, skip_stream
from oci_pypi_sync.stores.tls import describe_tls_error, registry_http_client

__all__ = [
    "MANIFEST_ACCEPT",
    "RegistryStore",
    "UploadRestartError",
    "describe_failure",
    "digest_algorithm",
    "parse_error_body",
    "repository_name",
    "upload_url",
]

logger = logging.getLogger(__name__)

#: OCI types first: Distribution 2.8.2 answers 404 to a manifest GET without them.
MANIFEST_ACCEPT: Final = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json;q=0.5",
        "application/vnd.docker.distribution.manifest.v2+json;q=0.5",
    ]
)
OCTET_STREAM: Final = "application/octet-stream"
DEFAULT_CHUNK_SIZE: Final = 8 * 1024 * 1024
_CATALOG_PAGE: Final = 1000
_HASHES: Final = frozenset({"sha256", "sha512"})


class UploadRestartError(RegistryError):
    """The registry refused a single-request upload as too large (HTTP 413).

    The stream was consumed, so the upload must start again with a fresh
    one; the store switches to chunked uploads for every later blob.
    """


# --- pure parts ---------------------------------------------------------------


def repository_name(prefix: str, repo: str) -> str:
    """``prefix/repo`` (or ``repo`` when the prefix is empty)."""
    prefix = prefix.strip("/")
    return f"{prefix}/{repo}" if prefix else repo


def digest_algorithm(digest: str) -> str:
    """The hash algorithm of an ``algo:hex`` digest we can verify (sha256, sha512)."""
    algorithm, sep, hexpart = digest.partition(":")
    if not sep or algorithm not in _HASHES or not hexpart:
        raise ValueError(f"unsupported digest {digest!r}")
    return algorithm


def compute_digest(algorithm: str, data: bytes) -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def is_digest(reference: str) -> bool:
    return ":" in reference


def format_target(name: str, reference: str) -> str:
    """``name@digest`` or ``name:tag``, the way users write references."""
    return f"{name}@{reference}" if is_digest(reference) else f"{name}:{reference}"


def upload_url(current: str | URL, location: str, digest: str | None = None) -> str:
    """Resolve an upload ``Location`` against the URL that returned it, adding ``digest``.

    Registries return absolute or relative locations, with or without a
    query (Distribution's carries ``_state``), so ``digest`` is appended
    with ``?`` or ``&`` accordingly.
    """
    if location.startswith(("https://", "http://")):
        url = location  # Distribution's form; no parsing needed
    elif not location:
        url = str(current)
    else:
        url = str(URL(str(current)).join(URL(location)))
    if digest is None:
        return url
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}digest={quote(digest, safe='')}"


def is_downgrade(base_url: str, url: str) -> bool:
    """Whether ``url`` names the registry's own host over plain HTTP, the registry being HTTPS.

    Any port counts: behind a TLS proxy that does not pass on the scheme,
    Distribution names ``http://HOST/...`` (port 80) for ``https://HOST``.
    """
    base, target = URL(base_url), URL(url)
    return (
        base.scheme == "https"
        and target.scheme == "http"
        and (target.host or "").lower() == (base.host or "").lower()
    )


def downgrade_error(host: str, url: str, what: str) -> InsecureLocationError:
    """The error for a plain-HTTP address of an HTTPS registry: what to set in its proxy."""
    shown = str(URL(url).with_query(None).with_user(None))
    return InsecureLocationError(
        f"registry {host} named a plain-HTTP address for {what} ({shown}) although it is "
        "spoken to over HTTPS; not followed, since that would send the credentials and the "
        "data in clear text. A TLS proxy in front of the registry is not telling it the "
        "original scheme: set the X-Forwarded-Proto header in the proxy (nginx: "
        "proxy_set_header X-Forwarded-Proto $scheme;), or set http.relativeurls: true in "
        "Distribution's config"
    )


def parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    """The first ``{"errors":[{"code","message"}]}`` entry, if the body has one."""
    first = _first_error(body)
    code, message = first.get("code"), first.get("message")
    return (
        code if isinstance(code, str) else None,
        message if isinstance(message, str) else None,
    )


def error_detail(body: bytes) -> str | None:
    """The first error's ``detail`` as text (Quay puts its reason in ``detail.message``)."""
    detail = _first_error(body).get("detail")
    if isinstance(detail, dict) and isinstance(detail.get("message"), str):
        return str(detail["message"])
    return detail if isinstance(detail, str) and detail else None


def _first_error(body: bytes) -> dict[str, Any]:
    try:
        data = loads_json(body, "an error answer")
    except (ValueError, UnicodeDecodeError):
        return {}
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return {}
    return errors[0]


def describe_failure(
    host: str,
    kind: str,
    target: str,
    status: int,
    body: bytes,
    *,
    reason: str = "",
    has_credentials: bool = False,
    challenge: str = "",
    push: bool = False,
) -> RegistryError:
    """Turn a failed answer into a one-line error naming the registry and the target.

    401/403 become :class:`AuthenticationError`, with a hint whether
    credentials were sent; never the credentials themselves. A refused push
    the registry's operator must act on (a repository to create, a setting
    to change: :func:`~oci_pypi_sync.stores.refusals.push_refusal`) says
    what to do, and becomes an error that stops the run.
    """
    code, message = parse_error_body(body)
    if code:
        detail = f"{code} ({message})" if message else code
    else:
        detail = f"HTTP {status}" + (f" {reason}" if reason else "")
    text = f"registry {host} refused {kind} {target}: {detail}"
    advice = None
    if push:
        refusal = Refusal(status, code, message, error_detail(body))
        advice = push_refusal(host, _repository_of(target), kind, refusal)
    if status in (401, 403):
        refused = [c for c in parse_challenges(challenge) if c.error == "insufficient_scope"]
        if refused:
            wanted = " ".join(normalize_scope(s) for s in refused[0].scopes) or "more access"
            hint = f"access was not granted ({wanted})"
        elif has_credentials:
            hint = "the credentials configured for it were not accepted"
        else:
            hint = "no credentials are configured for it"
        if advice is not None:
            hint = f"{advice.hint}; {hint}"
        return AuthenticationError(f"{text}; {hint}", status=status, code=code or "UNAUTHORIZED")
    if advice is not None:
        error_class = advice.error or RegistryError
        return error_class(f"{text}; {advice.hint}", status=status, code=code)
    return RegistryError(text, status=status, code=code)


def _repository_of(target: str) -> str:
    """The repository of ``name@digest``, ``name:tag`` or ``name@digest from other``."""
    name = target.split(" ", 1)[0].split("@", 1)[0]
    head, colon, tail = name.rpartition(":")
    return head if colon and "/" not in tail else name


def describe_transport_error(host: str, exc: TransportError) -> RegistryError:
    """``cannot reach registry HOST: connection refused`` and the like."""
    tls_error = describe_tls_error(host, exc)
    if tls_error is not None:
        return tls_error
    reason = "timed out" if isinstance(exc, HTTPTimeoutError) else _root_reason(exc)
    if isinstance(exc, ConnectError | ConnectTimeoutError):
        return RegistryUnreachableError(f"cannot reach registry {host}: {reason}")
    return RegistryError(f"connection to registry {host} failed: {reason}")


def _root_reason(exc: BaseException) -> str:
    """The OS-level cause (``connection refused``) under the HTTP client's wrappers."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "host name not resolved"
        if isinstance(current, OSError) and current.errno is not None:
            return os.strerror(current.errno).lower()
        current = current.__cause__ or current.__context__
    text = str(exc).strip()
    return (text or type(exc).__name__).lower()


async def verified_stream(
    chunks: AsyncIterable[bytes], digest: str, size: int | None, what: str
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, raising before the last one if digest or size is wrong.

    Holding back one chunk means a wrong body never reaches the registry
    complete, so the upload cannot be committed under the wrong digest.
    ``size`` ``None`` (unknown) skips the size check, not the digest check.
    """
    algorithm = digest_algorithm(digest)
    hasher = hashlib.new(algorithm)
    count = 0
    pending: bytes | None = None
    async for chunk in chunks:
        if not chunk:
            continue
        count += len(chunk)
        if size is not None and count > size:
            raise SizeMismatchError(what, size, count)
        hasher.update(chunk)
        if pending is not None:
            yield pending
        pending = bytes(chunk)
    if size is not None and count != size:
        raise SizeMismatchError(what, size, count)
    actual = f"{algorithm}:{hasher.hexdigest()}"
    if actual != digest:
        raise DigestMismatchError(what, digest, actual)
    if pending is not None:
        yield pending


async def rechunk(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """Regroup a stream into pieces of ``size`` bytes (the last may be shorter)."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


# --- the store ----------------------------------------------------------------


class RegistryStore(MountsBlobs, ListsRepositoriesWithin, StatsBlobs, ReadsRanges, ListsReferrers):
    """An OCI registry as a :class:`~oci_pypi_sync.stores.protocols.Store`.

    ``credentials`` defaults to a :class:`CredentialStore` reading the
    environment and the docker config. ``http`` lets callers share a client
    (its lifetime stays theirs); auth is applied per request either way.
    """

    def __init__(
        self,
        host: str,
        prefix: str,
        *,
        plain_http: bool = False,
        credentials: CredentialStore | None = None,
        http: HttpClient | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        timeout: float | None = None,
        max_connections: int = 100,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.host = host
        self.prefix = prefix.strip("/")
        self.base_url = f"{'http' if plain_http else 'https'}://{host}"
        self._auth = RegistryAuth(credentials or CredentialStore(), host, base_url=self.base_url)
        self._owns_http = http is None
        self._http = http or registry_http_client(
            host, tls=verify, timeout=timeout, max_connections=max_connections
        )
        self._chunk_size = chunk_size
        self.chunked_uploads = False

    @property
    def display_name(self) -> str:
        return f"{self.host}/{self.prefix}" if self.prefix else self.host

    def __repr__(self) -> str:
        return f"RegistryStore({self.display_name!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- blobs ---

    async def has_blob(self, repo: str, digest: str) -> bool:
        name = repository_name(self.prefix, repo)
        response = await self._send("HEAD", self._url(name, "blobs", digest))
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise await self._failure(response, "blob", f"{name}@{digest}")

    async def put_blob(
        self,
        repo: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        *,
        reopen: Callable[[], AsyncIterable[bytes]] | None = None,
    ) -> bool:
        """Stream a blob in; ``reopen`` gives a fresh stream if a 413 forces a restart.

        The request that opens the upload also asks the registry to mount the
        blob from this very repository: a 201 means it is already there (one
        round trip instead of a HEAD and a POST), a 202 opens the upload as
        usual. With ``size`` ``None`` the body goes with chunked transfer
        encoding. Without ``reopen`` a 413 raises :class:`UploadRestartError`;
        the caller's retry then goes chunked.
        """
        name = repository_name(self.prefix, repo)
        what = f"blob {name}@{digest}"
        digest_algorithm(digest)
        location = await self._start_upload(name, digest, probe=True)
        if location is None:
            return False
        if self.chunked_uploads:
            await self._upload_chunked(name, digest, size, chunks, what, location)
            return True
        body = verified_stream(chunks, digest, size, what)
        headers = {"Content-Type": OCTET_STREAM}
        if size is not None:
            headers["Content-Length"] = str(size)
        response = await self._finish_upload(name, digest, location, body, headers)
        if response is not None:
            return True
        self.chunked_uploads = True
        if reopen is None:
            raise UploadRestartError(
                f"registry {self.host} refused a single-request upload of {what} as too "
                "large (HTTP 413); retry with a fresh stream, later uploads use chunks",
                status=413,
            )
        await self._upload_chunked(name, digest, size, reopen(), what)
        return True

    async def put_blob_bytes(self, repo: str, digest: str, data: bytes) -> bool:
        name = repository_name(self.prefix, repo)
        what = f"blob {name}@{digest}"
        actual = compute_digest(digest_algorithm(digest), data)
        if actual != digest:
            raise DigestMismatchError(what, digest, actual)
        location = await self._start_upload(name, digest, probe=True)
        if location is None:  # the registry had it
            return False
        if not self.chunked_uploads:
            headers = {"Content-Type": OCTET_STREAM}
            if await self._finish_upload(name, digest, location, data, headers) is not None:
                return True
            self.chunked_uploads = True
            location = None
        await self._upload_chunked(name, digest, len(data), _once(data), what, location)
        return True

    async def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Mount a blob another repository of this registry holds; False if it could not."""
        name = repository_name(self.prefix, repo)
        source = repository_name(self.prefix, from_repo)
        url = f"{self.base_url}/v2/{name}/blobs/uploads/{_mount_query(digest, source)}"
        response = await self._send("POST", url)
        if response.status_code == 201:
            return True
        if response.status_code == 202:
            location = response.headers.get("Location")
            if location:
                await self._cancel_upload(self._upload_location(response, location, name))
            return False
        raise await self._failure(response, "mount of blob", f"{name}@{digest} from {source}")

    async def open_blob(self, repo: str, digest: str) -> AsyncIterator[bytes]:
        """Stream a blob, following redirects (object storage) and verifying its digest."""
        name = repository_name(self.prefix, repo)
        algorithm = digest_algorithm(digest)
        response = await self._send(
            "GET",
            self._url(name, "blobs", digest),
            headers={"Accept-Encoding": "identity"},
            stream=True,
            follow_redirects=True,
            decode=False,  # the blob is the bytes as stored, whatever encoding is declared
        )
        try:
            if response.status_code != 200:
                raise await self._failure(response, "blob", f"{name}@{digest}")
            hasher = hashlib.new(algorithm)
            try:
                async for chunk in response.aiter_bytes():
                    hasher.update(chunk)
                    yield chunk
            except TransportError as exc:
                raise describe_transport_error(self.host, exc) from exc
            actual = f"{algorithm}:{hasher.hexdigest()}"
            if actual != digest:
                raise DigestMismatchError(f"blob {name}@{digest}", digest, actual)
        finally:
            await response.aclose()

    async def stat_blob(self, repo: str, digest: str) -> BlobStat | None:
        """``HEAD`` the blob: its ``Content-Length`` when given, ``None`` when absent."""
        name = repository_name(self.prefix, repo)
        response = await self._send("HEAD", self._url(name, "blobs", digest))
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise await self._failure(response, "blob", f"{name}@{digest}")
        length = response.headers.get("Content-Length", "")
        return BlobStat(int(length) if length.isdigit() else None)

    async def read_range(
        self, repo: str, digest: str, start: int, stop: int | None
    ) -> AsyncGenerator[bytes, None]:
        """Ask for the range; a registry that answers 200 has the stream skipped to it."""
        name = repository_name(self.prefix, repo)
        wanted = f"bytes={start}-" + ("" if stop is None else str(stop - 1))
        response = await self._send(
            "GET",
            self._url(name, "blobs", digest),
            headers={"Range": wanted, "Accept-Encoding": "identity"},
            stream=True,
            follow_redirects=True,
        )
        try:
            if response.status_code == 206:
                body = limit_stream(response.aiter_bytes(), None if stop is None else stop - start)
            elif response.status_code == 200:
                body = skip_stream(response.aiter_bytes(), start, stop)
            else:
                raise await self._failure(response, "blob", f"{name}@{digest}")
            try:
                async with aclosing(body) as chunks:
                    async for chunk in chunks:
                        yield chunk
            except TransportError as exc:
                raise describe_transport_error(self.host, exc) from exc
        finally:
            await response.aclose()

    # --- listings ---

    async def list_tags(self, repo: str) -> list[str]:
        """Every tag, following ``Link`` pagination where the registry offers it.

        Pagination is bounded: see :meth:`_next_page`.
        """
        name = repository_name(self.prefix, repo)
        url: str | None = f"{self.base_url}/v2/{name}/tags/list?n=1000"
        tags: set[str] = set()
        seen: set[str] = set()
        while url is not None:
            response = await self._send("GET", url, stream=True, decode=False)
            if response.status_code == 404:
                await response.aclose()
                return []
            if response.status_code != 200:
                raise await self._failure(response, "tag list", name)
            data = await self._listing(response, f"the tag list of {name}")
            tags.update(str(tag) for tag in data.get("tags") or ())
            url = self._next_page(response, f"the tag list of {name}", seen)
        return sorted(tags)

    async def list_repositories(self) -> list[str]:
        """Repositories under the prefix, from ``/v2/_catalog`` (often disabled when hosted)."""
        names = await self._catalog(pages=None)
        assert names is not None  # without a page limit the listing is whole
        return sorted(names)

    async def repositories_within(self, pages: int) -> frozenset[str] | None:
        """Repositories under the prefix if the catalog lists them in ``pages`` pages or fewer.

        ``None`` when it needs more: a caller weighing one request per
        repository it cares about against the catalog's pages stops there.
        Raises like :meth:`list_repositories` when the catalog is refused.
        """
        names = await self._catalog(pages=pages)
        return frozenset(names) if names is not None else None

    async def _catalog(self, *, pages: int | None) -> set[str] | None:
        url: str | None = f"{self.base_url}/v2/_catalog?n={_CATALOG_PAGE}"
        prefix = f"{self.prefix}/" if self.prefix else ""
        names: set[str] = set()
        seen: set[str] = set()
        read = 0
        while url is not None:
            if pages is not None and read == pages:
                return None
            response = await self._send("GET", url, stream=True, decode=False)
            if response.status_code != 200:
                raise await self._failure(response, "repository list", "_catalog")
            read += 1
            data = await self._listing(response, "the catalog")
            for repository in data.get("repositories") or ():
                if isinstance(repository, str) and repository.startswith(prefix):
                    names.add(repository[len(prefix) :])
            url = self._next_page(response, "the catalog", seen)
        return names

    async def _listing(self, response: Response, what: str) -> dict[str, Any]:
        """One page of a tag list or catalog: JSON, read with :data:`MAX_LISTING_BYTES`."""
        body = await self._read_bounded(response, what, MAX_LISTING_BYTES, "MAX_LISTING_BYTES")
        try:
            data = loads_json(body, what)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryError(
                f"registry {self.host} sent {what} that is not JSON: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise RegistryError(f"registry {self.host} sent {what} that is not a JSON object")
        return data

    def _next_page(self, response: Response, what: str, seen: set[str]) -> str | None:
        """The next page of a listing, if the registry links one that is safe to follow.

        A ``Link`` to another origin is not followed (credentials and the
        listing stay with the registry) and neither is one already read (a
        registry that links a page to itself would be read for ever): the
        listing ends there, with a warning. A listing of more than
        :data:`MAX_LISTING_PAGES` pages is refused.
        """
        current = str(response.url)
        url = _next_link(current, response.headers.get("Link"))
        if url is None:
            return None
        if is_downgrade(self.base_url, url):
            raise downgrade_error(self.host, url, f"the next page of {what}")
        seen.add(current)
        if _origin(url) != _origin(self.base_url):
            logger.warning(
                "registry %s links the next page of %s to another origin (%s); not followed",
                self.host,
                what,
                redact_url(url),
            )
            return None
        if url in seen:
            logger.warning(
                "registry %s links a page of %s it sent already; the listing ends there",
                self.host,
                what,
            )
            return None
        if len(seen) >= MAX_LISTING_PAGES:
            raise RegistryLimitError(
                exceeded(
                    f"registry {self.host}: {what}", MAX_LISTING_PAGES, "MAX_LISTING_PAGES", "pages"
                )
            )
        return url

    async def _read_bounded(self, response: Response, what: str, limit: int, name: str) -> bytes:
        """A streamed answer's body (sent with ``decode=False``), decoded and bounded.

        A ``Content-Length`` over the bound is refused before any byte is
        read; the answer is closed afterwards.
        """

        def too_big() -> Exception:
            return RegistryLimitError(exceeded(f"registry {self.host}: {what}", limit, name))

        try:
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > limit:
                raise too_big()
            return await decode_limited(
                response.aiter_bytes(), response.headers.get("Content-Encoding"), limit, too_big
            )
        except TransportError as exc:
            raise describe_transport_error(self.host, exc) from exc
        except UndecodableError as exc:
            raise RegistryError(
                f"registry {self.host} sent {what} that is unreadable: {exc}"
            ) from None
        finally:
            await response.aclose()

    # --- manifests ---

    async def get_manifest(self, repo: str, reference: str) -> StoredManifest | None:
        name = repository_name(self.prefix, repo)
        target = format_target(name, reference)
        response = await self._send(
            "GET",
            self._url(name, "manifests", reference),
            headers={"Accept": MANIFEST_ACCEPT},
            stream=True,
            decode=False,
        )
        if response.status_code == 404:
            await response.aclose()
            return None
        if response.status_code != 200:
            raise await self._failure(response, "manifest", target)
        # bounded before the digest check: a registry may send anything
        body = await self._read_bounded(
            response, f"manifest {target}", MAX_MANIFEST_BYTES, "MAX_MANIFEST_BYTES"
        )
        algorithm = digest_algorithm(reference) if is_digest(reference) else "sha256"
        actual = compute_digest(algorithm, body)
        if is_digest(reference) and actual != reference:
            raise DigestMismatchError(f"manifest {target}", reference, actual)
        header = response.headers.get("Docker-Content-Digest")
        if header and header.startswith(f"{algorithm}:") and header != actual:
            raise DigestMismatchError(f"manifest {target}", header, actual)
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return StoredManifest(media_type=media_type, digest=actual, body=body)

    async def has_manifest(self, repo: str, digest: str) -> bool:
        name = repository_name(self.prefix, repo)
        response = await self._send(
            "HEAD", self._url(name, "manifests", digest), headers={"Accept": MANIFEST_ACCEPT}
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise await self._failure(response, "manifest", f"{name}@{digest}")

    async def put_manifest(self, repo: str, reference: str, media_type: str, body: bytes) -> str:
        digest, _ = await self._put_manifest(repo, reference, media_type, body)
        return digest

    async def put_referrer(self, repo: str, digest: str, media_type: str, body: bytes) -> bool:
        """Store a manifest with a ``subject`` by digest; whether the registry lists it itself.

        A registry with the OCI 1.1 referrers API answers the ``PUT`` with
        an ``OCI-Subject`` header naming the subject; without one the caller
        keeps the referrers fallback tag.
        """
        _, response = await self._put_manifest(repo, digest, media_type, body)
        subject = (json.loads(body).get("subject") or {}).get("digest")
        return subject is not None and response.headers.get("OCI-Subject") == subject

    async def _put_manifest(
        self, repo: str, reference: str, media_type: str, body: bytes
    ) -> tuple[str, Response]:
        name = repository_name(self.prefix, repo)
        target = format_target(name, reference)
        digest = compute_digest("sha256", body)
        if is_digest(reference):
            expected = compute_digest(digest_algorithm(reference), body)
            if expected != reference:
                raise DigestMismatchError(f"manifest {target}", reference, expected)
        response = await self._send(
            "PUT",
            self._url(name, "manifests", reference),
            headers={"Content-Type": media_type},
            content=body,
        )
        if response.status_code not in (200, 201):
            raise await self._failure(response, "manifest", target)
        returned = response.headers.get("Docker-Content-Digest")
        if returned and returned != digest:
            raise RegistryError(
                f"registry {self.host} stored manifest {target} under digest {returned}, "
                f"expected {digest}",
                status=response.status_code,
            )
        return digest, response

    # --- plumbing ---

    def _url(self, name: str, kind: str, reference: str) -> str:
        return f"{self.base_url}/v2/{name}/{kind}/{reference}"

    async def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
        decode: bool = True,
    ) -> Response:
        # built here, already quoted: passed on as they are
        parsed = URL(url, encoded=True)
        request = Request.build(method, parsed, headers=headers, body=content, decode=decode)
        try:
            response = await self._http.send(
                request, auth=self._auth, stream=stream, follow_redirects=follow_redirects
            )
        except TransportError as exc:
            raise describe_transport_error(self.host, exc) from exc
        except ssl.SSLError as exc:  # a TLS alert met outside the handshake
            raise describe_tls_error(self.host, exc) or RegistryUnreachableError(
                f"TLS with registry {self.host} failed: {exc.reason or exc}"
            ) from exc
        return response

    async def _failure(self, response: Response, kind: str, target: str) -> RegistryError:
        body = b""
        if response.request.method != "HEAD":
            try:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= MAX_ERROR_BODY_BYTES:
                        break
            except TransportError:
                pass
        await response.aclose()
        error = describe_failure(
            self.host,
            kind,
            target,
            response.status_code,
            body,
            reason=response.reason_phrase,
            has_credentials=self._auth.credentials is not None,
            challenge=response.headers.get("WWW-Authenticate", ""),
            push=response.request.method in ("POST", "PUT", "PATCH"),
        )
        error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return error

    async def _start_upload(self, name: str, digest: str, *, probe: bool = False) -> str | None:
        """Open an upload session; with ``probe``, ``None`` when the blob is already there.

        The probe asks to mount the blob from this very repository: a 201
        says it is there, a 202 opens the session as usual (one request).
        """
        url = f"{self.base_url}/v2/{name}/blobs/uploads/"
        if probe:
            url += _mount_query(digest, name)
        response = await self._send("POST", url)
        location = response.headers.get("Location")
        if probe and response.status_code == 201:
            await response.aclose()
            return None
        if response.status_code != 202:
            raise await self._failure(response, "upload of blob", f"{name}@{digest}")
        if not location:
            raise RegistryError(
                f"registry {self.host} opened an upload for blob {name}@{digest} "
                "without a Location",
                status=response.status_code,
            )
        return self._upload_location(response, location, name)

    def _upload_location(self, response: Response, location: str, name: str) -> str:
        """An upload ``Location`` resolved against the request it answers, checked.

        A plain-HTTP address of this very registry (a TLS proxy that does not
        pass on the scheme) is refused before anything is sent to it; another
        origin (object storage) is followed, without the registry's
        credentials (see :class:`~oci_pypi_sync.stores.auth.RegistryAuth`).
        """
        url = upload_url(response.request.url, location)
        if is_downgrade(self.base_url, url):
            raise downgrade_error(self.host, url, f"the upload of a blob to {name}")
        return url

    async def _finish_upload(
        self,
        name: str,
        digest: str,
        location: str,
        content: bytes | AsyncIterable[bytes],
        headers: Mapping[str, str],
    ) -> Response | None:
        """PUT the body to the session; ``None`` when the registry said 413."""
        try:
            response = await self._send(
                "PUT", upload_url(location, "", digest), headers=headers, content=content
            )
        except BaseException:
            await self._cancel_upload(location)
            raise
        if response.status_code == 413:
            await self._cancel_upload(location)
            return None
        if response.status_code not in (201, 204):
            await self._cancel_upload(location)
            failure = await self._failure(response, "blob", f"{name}@{digest}")
            raise self._upload_error(failure, name, digest)
        return response

    async def _upload_chunked(
        self,
        name: str,
        digest: str,
        size: int | None,
        chunks: AsyncIterable[bytes],
        what: str,
        location: str | None = None,
    ) -> None:
        if location is None:
            location = await self._start_upload(name, digest)
        assert location is not None  # without probe, an upload session always opens
        try:
            offset = 0
            async for piece in rechunk(
                verified_stream(chunks, digest, size, what), self._chunk_size
            ):
                headers = {
                    "Content-Type": OCTET_STREAM,
                    "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                }
                response = await self._send("PATCH", location, headers=headers, content=piece)
                if response.status_code != 202:
                    failure = await self._failure(response, "chunk of blob", f"{name}@{digest}")
                    raise self._upload_error(failure, name, digest)
                location = self._upload_location(
                    response, response.headers.get("Location", location), name
                )
                offset += len(piece)
            response = await self._send(
                "PUT", upload_url(location, "", digest), headers={"Content-Type": OCTET_STREAM}
            )
            if response.status_code not in (201, 204):
                failure = await self._failure(response, "blob", f"{name}@{digest}")
                raise self._upload_error(failure, name, digest)
        except BaseException:
            await self._cancel_upload(location)
            raise

    def _upload_error(self, error: RegistryError, name: str, digest: str) -> Exception:
        """The registry's own digest check failing is a digest mismatch like ours."""
        if error.code == "DIGEST_INVALID":
            return DigestMismatchError(
                f"blob {name}@{digest} (checked by registry {self.host})",
                digest,
                "a different digest",
            )
        return error

    async def _cancel_upload(self, location: str) -> None:
        """Best effort: a session left open only costs the registry a temp file."""
        try:
            response = await self._send("DELETE", location)
            await response.aclose()
        except Exception:  # cleanup must not hide the real error
            logger.debug("could not cancel upload session on %s", self.host)


def _mount_query(digest: str, source: str) -> str:
    """``?mount=<digest>&from=<repository>``, quoted: mount the blob from ``source``."""
    return f"?mount={quote(digest, safe='')}&from={quote(source, safe='')}"


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default port when none is written)."""
    parsed = URL(url)
    return parsed.scheme, parsed.host or "", parsed.port


def _next_link(base_url: str, link: str | None) -> str | None:
    """The ``rel="next"`` URL of an RFC 8288 ``Link`` header, resolved against ``base_url``."""
    if not link:
        return None
    for part in link.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", "") or "rel=next" in params.replace(" ", ""):
            return urljoin(base_url, target.strip().strip("<>"))
    return None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
