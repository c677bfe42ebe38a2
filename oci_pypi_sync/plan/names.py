"""Close project names, to suggest what a user may have meant by a name the index lacks."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from packaging.utils import canonicalize_name


def close_names(name: str, known: Iterable[str], *, count: int = 3) -> list[str]:
    """Up to ``count`` normalized names of ``known`` that look like ``name``, best first."""
    wanted = canonicalize_name(name)
    candidates = sorted({canonicalize_name(k) for k in known} - {wanted})
    return difflib.get_close_matches(wanted, candidates, n=count, cutoff=0.75)
