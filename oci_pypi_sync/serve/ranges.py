"""HTTP ``Range`` requests (RFC 9110 §14) on an immutable file of known size, pure.

One range is served as 206; several ranges are answered with the whole
file (allowed, and simpler than ``multipart/byteranges``), which no
installer asks for anyway.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``stop`` (exclusive) of a file of ``total`` bytes."""

    start: int
    stop: int
    total: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{self.total}"


class UnsatisfiableRange(Exception):  # noqa: N818 - named after the HTTP status
    """No byte of the requested range exists: answer 416."""


def parse_range(
    header: str | None, total: int, *, if_range: str | None, etag: str
) -> ByteRange | None:
    """The range to serve, or ``None`` for the whole file.

    ``None`` too when the header is malformed, names several ranges, or an
    ``If-Range`` validator does not match ``etag`` (the file changed, as
    far as the client knows). Raises :class:`UnsatisfiableRange` when the
    range starts past the end.
    """
    if not header or (if_range is not None and if_range.strip() != etag):
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise UnsatisfiableRange(header)
            return ByteRange(max(0, total - suffix), total, total)
        start = int(first)
        stop = int(last) + 1 if last else max(total, start + 1)
    except ValueError:
        return None
    if start < 0 or stop <= start:
        return None  # "last" before "first": invalid, so ignored (RFC 9110 §14.1.1)
    if start >= total:
        raise UnsatisfiableRange(header)
    return ByteRange(start, min(stop, total), total)
