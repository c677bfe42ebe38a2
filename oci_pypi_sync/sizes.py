"""Sizes in bytes as people write and read them: ``10GiB`` in, ``1.5 KiB`` out."""

from __future__ import annotations

import re

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)


def parse_size(text: str) -> int | None:
    """``10GiB``, ``500M``, ``1.5g`` or a number of bytes (units are powers of 1024);
    ``None`` when ``text`` is no size."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def human_bytes(count: int) -> str:
    """``512 B``, ``1.5 KiB``... ``2.0 TiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
