"""Byte streams cut to a range: what a store that cannot seek gives for a ``Range`` read."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

__all__ = ["limit_stream", "skip_stream"]


async def limit_stream(
    chunks: AsyncIterator[bytes], length: int | None
) -> AsyncGenerator[bytes, None]:
    """At most ``length`` bytes of a stream (all of it for ``None``)."""
    async for chunk in chunks:
        if length is not None:
            chunk = chunk[:length]
            length -= len(chunk)
        if chunk:
            yield chunk
        if length == 0:
            return


async def skip_stream(
    chunks: AsyncIterator[bytes], start: int, stop: int | None
) -> AsyncGenerator[bytes, None]:
    """Pass through bytes ``start`` to ``stop`` of a stream read from its beginning."""
    position = 0
    try:
        async for chunk in chunks:
            end = position + len(chunk)
            low = max(0, start - position)
            high = None if stop is None else max(0, stop - position)
            position = end
            if piece := chunk[low:high]:
                yield piece
            if stop is not None and position >= stop:
                break
    finally:
        if isinstance(chunks, AsyncGenerator):
            await chunks.aclose()
