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

import json
from collections.abc import AsyncIterable, Callable
from typing import Any

__all__ = [
    "MAX_CORE_METADATA_BYTES",
    "MAX_ERROR_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_LISTING_BYTES",
    "MAX_LISTING_PAGES",
    "MAX_MANIFEST_BYTES",
    "MAX_METADATA_RATIO",
    "MAX_PAGE_BYTES",
    "MAX_PROJECT_LIST_BYTES",
    "MAX_TOKEN_RESPONSE_BYTES",
    "METADATA_RATIO_FLOOR",
    "JsonTooDeepError",
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
#: Nesting of a JSON document (pages, manifests, listings need fewer than ten levels).
MAX_JSON_DEPTH = 64
#: One page of a registry's tag list or catalog.
MAX_LISTING_BYTES = 64 * MiB
#: Pages of one tag list or catalog (a thousand names a page: ten million names).
MAX_LISTING_PAGES = 10_000
#: A token service's answer.
MAX_TOKEN_RESPONSE_BYTES = 1 * MiB
#: The part of an error answer read to explain a failure.
MAX_ERROR_BODY_BYTES = 64 * 1024


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
