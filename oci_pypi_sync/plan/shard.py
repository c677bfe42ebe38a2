"""Deterministic shards: which projects one of N parallel syncs takes.

A project belongs to shard ``int(sha256(normalized name)[:16], 16) % N``,
so N processes, each given its index (0-based, as Kubernetes Indexed Jobs
number their pods), split any project list into disjoint parts whose union
is the whole, without talking to each other.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from oci_pypi_sync.errors import UsageError

_SHARD = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, project: str) -> bool:
        return shard_of(project, self.count) == self.index

    def owns_normalized(self, name: str) -> bool:
        """:meth:`owns` for a name already normalized (a list of a million names)."""
        return _shard_of_normalized(name, self.count) == self.index


def shard_of(project: str, count: int) -> int:
    """The shard a project belongs to among ``count`` shards."""
    return _shard_of_normalized(canonicalize_name(project), count)


def _shard_of_normalized(name: str, count: int) -> int:
    # The first 8 bytes of the digest, big-endian: the first 16 hex digits.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def parse_shard(value: str) -> Shard:
    """Parse ``K/N`` (0-based K), naming the value at fault when it is wrong."""
    match = _SHARD.fullmatch(value.strip())
    if match is None:
        raise UsageError(f"shard {value!r} is not K/N (for example 0/4)")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or index >= count:
        raise UsageError(f"shard {value!r}: K must be between 0 and N-1, and N at least 1")
    return Shard(index, count)


def shard_from_environment(count: int, environ: dict[str, str] | None = None) -> Shard:
    """This process's shard of ``count``, from the job engine's index variable.

    Kubernetes Indexed Jobs set ``JOB_COMPLETION_INDEX`` (0-based); GitLab's
    ``parallel:`` sets ``CI_NODE_INDEX`` (1-based). A CI matrix can pass
    ``--shard K/N`` instead.
    """
    import os

    env = os.environ if environ is None else environ
    if count < 1:
        raise UsageError(f"--shards {count}: the number of shards must be at least 1")
    if env.get("JOB_COMPLETION_INDEX", "").isdigit():
        index = int(env["JOB_COMPLETION_INDEX"])
    elif env.get("CI_NODE_INDEX", "").isdigit():
        index = int(env["CI_NODE_INDEX"]) - 1
    else:
        raise UsageError(
            f"--shards {count} takes this process's shard from JOB_COMPLETION_INDEX "
            "(Kubernetes Indexed Jobs) or CI_NODE_INDEX (GitLab parallel), and neither is set; "
            "use --shard K/N elsewhere"
        )
    if not 0 <= index < count:
        raise UsageError(f"shard index {index} is not below --shards {count}")
    return Shard(index, count)
