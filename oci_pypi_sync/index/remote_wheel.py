"""A wheel's ``METADATA`` read over HTTP without downloading the wheel.

Indexes that serve no PEP 658 ``.metadata`` still serve the wheel, and a
wheel is a zip whose central directory sits at its end. So: one range
request for the last 16 KiB (end-of-central-directory record and, usually,
the whole central directory), more only when the directory is bigger, then
one for the ``*.dist-info/METADATA`` member alone, inflated here. That is
a few KiB instead of a wheel of tens of MiB. ``Accept-Encoding: identity``
keeps byte offsets meaningful. A server that ignores ``Range`` (answers
200) gets a full download instead, spooled to a temporary file so memory
stays bounded whatever the wheel's size.

A wheel is input like any other: every answer is read with a bound (a range
answer no longer than what was asked), and ``METADATA`` is inflated in a
thread with the bounds of :func:`~oci_pypi_sync.limits.inflated_too_much`,
so a zip bomb neither takes the memory nor holds the event loop.
:func:`read_metadata_member` is the one reader of a wheel's ``METADATA``,
used for wheels held in memory too.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO

from packaging.utils import canonicalize_name, parse_wheel_filename

from oci_pypi_sync.errors import (
    IndexError_,
    IndexLimitError,
    IndexUnreachableError,
    parse_retry_after,
)
from oci_pypi_sync.limits import (
    MAX_CORE_METADATA_BYTES,
    exceeded,
    inflated_too_much,
    read_limited,
)
from oci_pypi_sync.redact import redact_url
from oci_pypi_sync.stores.http import Auth, HttpClient, Response, TransportError

logger = logging.getLogger(__name__)

#: How much of the wheel's end the first request asks for.
TAIL_SIZE = 16 * 1024
#: A central directory bigger than this is refused (about 200k members).
MAX_DIRECTORY_SIZE = 64 * 1024 * 1024

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD = b"PK\x06\x06"
_ZIP64_EOCD_SIZE = 56
_CENTRAL = b"PK\x01\x02"
_CENTRAL_STRUCT = struct.Struct("<4s6H3I5H2I")
_LOCAL = b"PK\x03\x04"
_LOCAL_STRUCT = struct.Struct("<4s5H3I2H")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class RemoteWheelError(IndexError_):
    """The wheel could not be read: not a zip, no METADATA, or a broken member."""


class _RangesIgnoredError(Exception):
    """The server answered a range request with the whole file."""


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    method: int
    crc: int
    compressed_size: int
    size: int
    offset: int


class _RangeReader:
    """Byte ranges of one URL, remembering what has been read (the tail holds most)."""

    def __init__(self, http: HttpClient, url: str, filename: str, auth: Auth | None) -> None:
        self._http = http
        self._url = url
        self._filename = filename
        self._auth = auth
        self._chunks: list[tuple[int, bytes]] = []
        self.size = 0
        self.requests = 0

    async def tail(self, length: int) -> tuple[int, bytes]:
        start, data = await self._get(f"bytes=-{length}", length)
        return start, data

    async def read(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, from what was read already when possible."""
        end = min(end, self.size)
        for chunk_start, chunk in self._chunks:
            if chunk_start <= start and end <= chunk_start + len(chunk):
                return chunk[start - chunk_start : end - chunk_start]
        got_start, data = await self._get(f"bytes={start}-{end - 1}", end - start)
        if got_start != start or len(data) < end - start:
            raise RemoteWheelError(f"the server sent the wrong range of {self._filename}")
        return data[: end - start]

    async def _get(self, range_header: str, length: int) -> tuple[int, bytes]:
        """One range; an answer longer than the ``length`` asked for is refused unread."""
        self.requests += 1
        headers = {"Range": range_header, "Accept-Encoding": "identity"}
        try:
            response = await self._http.request(
                "GET",
                self._url,
                headers=headers,
                auth=self._auth,
                stream=True,
                follow_redirects=True,
                decode=False,
            )
            try:
                if response.status_code == 200:
                    raise _RangesIgnoredError
                if response.status_code != 206:
                    raise _status_error(response, self._filename)
                if response.headers.get("content-encoding", "identity").lower() != "identity":
                    raise _RangesIgnoredError  # offsets into an encoded body mean nothing
                match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
                if match is None or match.group(3) == "*":
                    raise _RangesIgnoredError

                def too_long() -> Exception:
                    return RemoteWheelError(
                        f"the server sent more of {self._filename} than the {length} bytes asked"
                    )

                data = await read_limited(response.aiter_bytes(), length, too_long)
            finally:
                await response.aclose()
        except TransportError as exc:
            raise _unreachable(self._url, exc) from exc
        start, total = int(match.group(1)), int(match.group(3))
        self.size = total
        self._chunks.append((start, data))
        return start, data


def _unreachable(url: str, exc: Exception) -> IndexUnreachableError:
    reason = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {exc}"
    return IndexUnreachableError(f"cannot fetch {redact_url(url)}: {reason}")


def _status_error(response: Response, filename: str) -> IndexError_:
    return IndexError_(
        f"the index answered {response.status_code} {response.reason_phrase} "
        f"for the file {filename} ({redact_url(str(response.url))})",
        status=response.status_code,
        retry_after=parse_retry_after(response.headers.get("Retry-After")),
    )


def metadata_member_names(filename: str) -> tuple[str, str]:
    """The project and version a wheel's ``.dist-info`` directory should name."""
    name, version, _build, _tags = parse_wheel_filename(filename)
    return name, str(version)


def _pick_metadata(names: list[str], filename: str) -> str:
    """The top-level ``*.dist-info/METADATA`` member, the one naming the project if several."""
    project, _version = metadata_member_names(filename)
    found = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
    if not found:
        raise RemoteWheelError(f"{filename} has no .dist-info/METADATA")
    for name in found:
        directory = name.split("/", 1)[0][: -len(".dist-info")]
        if canonicalize_name(directory.rsplit("-", 1)[0]) == project:
            return name
    return found[0]


def _find_eocd(tail: bytes, filename: str) -> int:
    position = tail.rfind(_EOCD)
    while position >= 0:
        if position + _EOCD_SIZE <= len(tail):
            comment_length = struct.unpack_from("<H", tail, position + 20)[0]
            if position + _EOCD_SIZE + comment_length == len(tail):
                return position
        position = tail.rfind(_EOCD, 0, position)
    raise RemoteWheelError(f"{filename} is not a zip (no end-of-central-directory record)")


async def _directory_bounds(
    reader: _RangeReader, tail_start: int, tail: bytes, filename: str
) -> tuple[int, int, int]:
    """Offset, size and entry count of the central directory (ZIP64 aware)."""
    eocd = _find_eocd(tail, filename)
    (_disk, _cd_disk, _disk_entries, entries, cd_size, cd_offset) = struct.unpack_from(
        "<4H2I", tail, eocd + 4
    )
    if entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
        locator_at = tail_start + eocd - _ZIP64_LOCATOR_SIZE
        locator = await reader.read(locator_at, locator_at + _ZIP64_LOCATOR_SIZE)
        if locator[:4] != _ZIP64_LOCATOR:
            raise RemoteWheelError(f"{filename}: ZIP64 end record expected but not found")
        (zip64_at,) = struct.unpack_from("<Q", locator, 8)
        record = await reader.read(zip64_at, zip64_at + _ZIP64_EOCD_SIZE)
        if record[:4] != _ZIP64_EOCD:
            raise RemoteWheelError(f"{filename}: broken ZIP64 end-of-central-directory record")
        entries, _total, cd_size, cd_offset = struct.unpack_from("<4Q", record, 24)
    return cd_offset, cd_size, entries


def _zip64_extra(
    extra: bytes, size: int, compressed_size: int, offset: int
) -> tuple[int, int, int]:
    """Sizes and offset from the ZIP64 extra field, for those the header left at 0xFFFFFFFF."""
    position = 0
    while position + 4 <= len(extra):
        kind, length = struct.unpack_from("<2H", extra, position)
        body = extra[position + 4 : position + 4 + length]
        position += 4 + length
        if kind != 0x0001:
            continue
        values = [v[0] for v in struct.iter_unpack("<Q", body[: len(body) // 8 * 8])]
        if size == 0xFFFFFFFF and values:
            size = values.pop(0)
        if compressed_size == 0xFFFFFFFF and values:
            compressed_size = values.pop(0)
        if offset == 0xFFFFFFFF and values:
            offset = values.pop(0)
    return size, compressed_size, offset


def parse_central_directory(data: bytes, filename: str) -> list[_Member]:
    """The members a central directory lists."""
    members = []
    position = 0
    while position + _CENTRAL_STRUCT.size <= len(data):
        fields = _CENTRAL_STRUCT.unpack_from(data, position)
        if fields[0] != _CENTRAL:
            break
        flags, method = fields[3], fields[4]
        crc, compressed_size, size = fields[7], fields[8], fields[9]
        name_length, extra_length, comment_length = fields[10], fields[11], fields[12]
        offset = fields[16]
        start = position + _CENTRAL_STRUCT.size
        raw_name = data[start : start + name_length]
        extra = data[start + name_length : start + name_length + extra_length]
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        size, compressed_size, offset = _zip64_extra(extra, size, compressed_size, offset)
        members.append(_Member(name, method, crc, compressed_size, size, offset))
        position = start + name_length + extra_length + comment_length
    if not members:
        raise RemoteWheelError(f"{filename}: empty or unreadable central directory")
    return members


def _check_inflated(size: int, compressed: int, filename: str) -> None:
    reason = inflated_too_much(size, compressed, f"the METADATA of {filename}")
    if reason is not None:
        raise IndexLimitError(reason)


def _inflate(member: _Member, compressed: bytes, filename: str) -> bytes:
    """The member inflated, never past the bounds; run in a thread (it is CPU work)."""
    _check_inflated(member.size, member.compressed_size, filename)
    if member.method == zipfile.ZIP_STORED:
        data = compressed
    elif member.method == zipfile.ZIP_DEFLATED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(compressed, MAX_CORE_METADATA_BYTES + 1)
        except zlib.error as exc:
            raise RemoteWheelError(f"{filename}: METADATA does not inflate: {exc}") from exc
    else:
        raise RemoteWheelError(f"{filename}: METADATA uses compression method {member.method}")
    _check_inflated(len(data), len(compressed), filename)
    if len(data) != member.size or zlib.crc32(data) != member.crc:
        raise RemoteWheelError(f"{filename}: METADATA fails its size or CRC check")
    return data


async def _ranged(reader: _RangeReader, filename: str) -> bytes:
    tail_start, tail = await reader.tail(TAIL_SIZE)
    cd_offset, cd_size, _entries = await _directory_bounds(reader, tail_start, tail, filename)
    if cd_size > MAX_DIRECTORY_SIZE or cd_offset + cd_size > reader.size:
        raise RemoteWheelError(f"{filename}: implausible central directory")
    directory = await reader.read(cd_offset, cd_offset + cd_size)
    members = {m.name: m for m in parse_central_directory(directory, filename)}
    member = members[_pick_metadata(list(members), filename)]
    if member.compressed_size > MAX_CORE_METADATA_BYTES:
        raise IndexLimitError(
            exceeded(
                f"the METADATA of {filename} (compressed)",
                MAX_CORE_METADATA_BYTES,
                "MAX_CORE_METADATA_BYTES",
            )
        )
    # The local header's extra field may differ from the central one: guess
    # generously, read again only if the guess was short.
    guess = _LOCAL_STRUCT.size + len(member.name.encode()) + 256 + member.compressed_size
    local = await reader.read(member.offset, member.offset + guess)
    if len(local) < _LOCAL_STRUCT.size or local[:4] != _LOCAL:
        raise RemoteWheelError(f"{filename}: no local header where METADATA should be")
    fields = _LOCAL_STRUCT.unpack_from(local, 0)
    data_start = _LOCAL_STRUCT.size + fields[9] + fields[10]
    data_end = data_start + member.compressed_size
    if data_end > len(local):
        local = await reader.read(member.offset, member.offset + data_end)
    return await asyncio.to_thread(_inflate, member, local[data_start:data_end], filename)


def read_metadata_member(wheel: IO[bytes], filename: str) -> bytes:
    """The ``*.dist-info/METADATA`` of a whole wheel (a file or bytes in memory), bounded.

    The member is inflated no further than :data:`MAX_CORE_METADATA_BYTES`
    and refused past the ratio bound, whatever sizes the zip declares.
    CPU work: call it in a thread from async code. Raises
    :class:`RemoteWheelError` for a wheel without a readable METADATA and
    :class:`~oci_pypi_sync.errors.IndexLimitError` for one past a bound.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(_pick_metadata(archive.namelist(), filename))
            _check_inflated(info.file_size, info.compress_size, filename)
            with archive.open(info) as member:
                data = member.read(MAX_CORE_METADATA_BYTES + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise RemoteWheelError(f"{filename} is not a readable zip: {exc}") from exc
    except (KeyError, ValueError, OSError) as exc:
        raise RemoteWheelError(f"{filename} is not a readable zip: {exc}") from exc
    _check_inflated(len(data), info.compress_size, filename)
    return data


async def _downloaded(http: HttpClient, url: str, filename: str, auth: Auth | None) -> bytes:
    """The whole wheel exactly as served, spooled to disk, then its METADATA read from there."""
    with tempfile.TemporaryFile() as spool:
        try:
            response = await http.request(
                "GET",
                url,
                headers={"Accept-Encoding": "identity"},
                auth=auth,
                stream=True,
                follow_redirects=True,
                decode=False,
            )
            try:
                if response.status_code != 200:
                    raise _status_error(response, filename)
                async for chunk in response.aiter_bytes(1024 * 1024):
                    spool.write(chunk)
            finally:
                await response.aclose()
        except TransportError as exc:
            raise _unreachable(url, exc) from exc
        spool.seek(0)
        return await asyncio.to_thread(read_metadata_member, spool, filename)


async def fetch_wheel_metadata(
    http: HttpClient, url: str, filename: str, *, auth: Auth | None = None
) -> bytes:
    """The bytes of the wheel's ``*.dist-info/METADATA``, read with range requests.

    ``auth`` is the index client's (its credentials go to the index's origin
    only). Falls back to a full (spooled) download when the server ignores
    ``Range``. Raises :class:`RemoteWheelError` when the wheel has no
    readable METADATA, :class:`~oci_pypi_sync.errors.IndexError_` on an
    HTTP error status or an exceeded bound.
    """
    reader = _RangeReader(http, url, filename, auth)
    try:
        data = await _ranged(reader, filename)
    except _RangesIgnoredError:
        logger.debug("%s: no range support, downloading the whole wheel", redact_url(url))
        return await _downloaded(http, url, filename, auth)
    logger.debug("%s: METADATA in %d range requests", redact_url(url), reader.requests)
    return data
