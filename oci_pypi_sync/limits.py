"""Every bound on what the tool reads from a place it does not control, one constant each.

An index, a registry, the object storage behind it and a mirror carried
across an air gap can all be hostile or broken: a page that never ends, a
gzip bomb, a manifest of hundreds of megabytes, a listing whose next page
is itself, a METADATA that inflates to gigabytes. Each such input is read
with the bound named here and refused with a
:class:`~oci_pypi_sync.errors.LimitExceededError`,
whose message (:func:`exceeded`) names the bound, before it can take the memory of the
process or the event loop's time. The values are far above anything a
real index or registry sends.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterable, Callable
from typing import Any

__all__ = [
    "ACCEPT_ENCODING",
    "INFLATE_STEP_BYTES",
    "MAX_BUFFERED_BYTES",
    "MAX_CORE_METADATA_BYTES",
    "MAX_ERROR_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LISTING_BYTES",
    "MAX_LISTING_PAGES",
    "MAX_MANIFEST_BYTES",
    "MAX_METADATA_RATIO",
    "MAX_PAGE_BYTES",
    "MAX_PROJECT_LIST_BYTES",
    "MAX_PROVENANCE_BYTES",
    "METADATA_RATIO_FLOOR",
    "JsonTooDeepError",
    "UndecodableError",
    "decode_limited",
    "exceeded",
    "inflated_too_much",
    "json_depth",
    "loads_json",
    "read_limited",
]

MiB = 1024 * 1024

#: A project page of the index, after content decoding (the largest real ones are a few MB).
MAX_PAGE_BYTES = 64 * MiB
#: The index's list of every project, after content decoding (a public index's is ~40 MB).
MAX_PROJECT_LIST_BYTES = 512 * MiB
#: A manifest or image index from a registry or a layout: the limit registries apply.
MAX_MANIFEST_BYTES = 4 * MiB
#: Core metadata, as a ``.metadata`` file or a wheel's inflated ``METADATA``.
MAX_CORE_METADATA_BYTES = 16 * MiB
#: How many times its compressed size a wheel's ``METADATA`` may inflate to ...
MAX_METADATA_RATIO = 100
#: ... once it is bigger than this (small files of repeated lines compress very well).
METADATA_RATIO_FLOOR = 1 * MiB
#: A PEP 740 provenance object (a few attestations of about 10 KB each).
MAX_PROVENANCE_BYTES = 4 * MiB
#: Nesting of a JSON document (pages, manifests, listings need fewer than ten levels).
MAX_JSON_DEPTH = 64
#: One page of a registry's tag list or catalog.
MAX_LISTING_BYTES = 64 * MiB
#: Pages of one tag list or catalog (a thousand names a page: ten million names).
MAX_LISTING_PAGES = 10_000
#: An answer the HTTP client reads whole (a token service's, a registry's answer to an
#: upload): anything bigger is streamed by its caller, with a bound of its own.
MAX_BUFFERED_BYTES = 16 * MiB
#: The part of an error answer read to explain a failure.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: The most one step of inflating an answer produces before the event loop gets a turn.
INFLATE_STEP_BYTES = 1 * MiB

#: The content encodings :func:`decode_limited` reads (what ``ACCEPT_ENCODING`` asks for).
ACCEPT_ENCODING = "gzip, deflate"


def exceeded(what: str, limit: int, name: str, unit: str = "bytes") -> str:
    """The message of an exceeded bound: what, the bound and its name."""
    return f"{what} exceeds {limit:,} {unit} ({name}); refused as hostile or broken"


class JsonTooDeepError(ValueError):
    """A JSON document nests deeper than :data:`MAX_JSON_DEPTH` (a :class:`ValueError`)."""


async def read_limited(
    chunks: AsyncIterable[bytes], limit: int, fail: Callable[[], Exception]
) -> bytes:
    """The whole of ``chunks``; ``fail()`` is raised once more than ``limit`` bytes have come."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise fail()
        parts.append(chunk)
    return b"".join(parts)


class UndecodableError(ValueError):
    """An answer's body does not decode with the content encoding it declares."""


async def decode_limited(
    raw: AsyncIterable[bytes],
    encoding: str | None,
    limit: int,
    fail: Callable[[], Exception],
) -> bytes:
    """An answer's body decoded from its ``Content-Encoding``; ``fail()`` past ``limit`` bytes.

    The body is inflated here, step by step, rather than by the HTTP
    client: a gzip bomb is refused once it has produced ``limit`` bytes,
    however well it compresses, and no step holds the event loop for more
    than :data:`INFLATE_STEP_BYTES` of output. ``identity`` (or none),
    ``gzip`` and ``deflate`` (zlib-wrapped or raw) are read; another
    encoding raises :class:`UndecodableError`, and so does a corrupt body.
    """
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return await read_limited(raw, limit, fail)
    if name in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif name == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise UndecodableError(f"content encoding {encoding!r} is not one this tool asked for")
    inflater = zlib.decompressobj(wbits)
    started = False
    parts: list[bytes] = []
    size = 0
    try:
        async for chunk in raw:
            data = chunk
            if not started and data and name == "deflate" and (data[0] & 0x0F) != 8:
                inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, no zlib header
            started = started or bool(data)
            while data:
                if inflater.eof:  # a gzip body may be several members, one after another
                    if wbits != 16 + zlib.MAX_WBITS:
                        break
                    inflater = zlib.decompressobj(wbits)
                piece = inflater.decompress(data, min(INFLATE_STEP_BYTES, limit - size + 1))
                size += len(piece)
                if size > limit:
                    raise fail()
                parts.append(piece)
                data = inflater.unconsumed_tail or (inflater.unused_data if inflater.eof else b"")
                if data:
                    await asyncio.sleep(0)
        tail = inflater.flush()
    except zlib.error as exc:
        raise UndecodableError(f"the body does not decode as {name}: {exc}") from None
    size += len(tail)
    if size > limit:
        raise fail()
    parts.append(tail)
    return b"".join(parts)


def inflated_too_much(size: int, compressed: int, what: str) -> str | None:
    """Why a member that inflated to ``size`` bytes is refused, or ``None`` when it is not.

    Past :data:`MAX_CORE_METADATA_BYTES`, or past :data:`MAX_METADATA_RATIO`
    times its compressed size once bigger than :data:`METADATA_RATIO_FLOOR`.
    """
    if size > MAX_CORE_METADATA_BYTES:
        return exceeded(what, MAX_CORE_METADATA_BYTES, "MAX_CORE_METADATA_BYTES")
    if size > METADATA_RATIO_FLOOR and size > MAX_METADATA_RATIO * max(compressed, 1):
        return exceeded(
            f"{what} (inflated to {size:,} bytes from {compressed:,})",
            MAX_METADATA_RATIO,
            "MAX_METADATA_RATIO",
            "times its compressed size",
        )
    return None


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """How deep ``value`` nests (a scalar is 0), counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if depth > limit:
            return depth
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


def loads_json(data: bytes | str, what: str) -> Any:
    """``json.loads``, refusing a document nested deeper than :data:`MAX_JSON_DEPTH`.

    Raises :class:`ValueError` (``JSONDecodeError`` or :class:`JsonTooDeepError`)
    like ``json.loads``, so callers handle both in one place.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonTooDeepError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise JsonTooDeepError(f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    return value
