"""Writer leases: the tags by which the writers of one registry see each other.

Pure records and rules, no I/O (:mod:`oci_pypi_sync.engine.presence` does
the requests). A writer holds a lease while it writes tags into a registry:
a tag ``writer-N`` of the catalog repository pointing at a small manifest
that names a random nonce, whether the writer is running or has released
the lease, and when it expires unless renewed. ``docs/format.md`` lists
them among the catalog repository's tags.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from oci_pypi_sync.format.descriptors import marker_manifest
from oci_pypi_sync.format.media import A_WRITER_EXPIRES, A_WRITER_NONCE, A_WRITER_STATE
from oci_pypi_sync.limits import loads_json

__all__ = [
    "CLOCK_MARGIN",
    "LEASE_ARTIFACT",
    "LEASE_PREFIX",
    "Lease",
    "Seen",
    "Sighting",
    "expiry",
    "free_slot",
    "is_lease_tag",
    "lease_manifest",
    "read_lease",
    "sight",
    "slot_tag",
]

LEASE_PREFIX = "writer-"
LEASE_ARTIFACT = "application/vnd.oci-pypi.writer.v1"
RUNNING = "running"
RELEASED = "released"
#: How far apart the clocks of two writers' hosts may be: a running lease is
#: taken for dead only this long after the time it names as its expiry.
CLOCK_MARGIN = timedelta(seconds=60)

_TIME = "%Y-%m-%dT%H:%M:%SZ"
_SLOT = re.compile(re.escape(LEASE_PREFIX) + r"(0|[1-9][0-9]{0,3})")


def is_lease_tag(tag: str) -> bool:
    return _SLOT.fullmatch(tag) is not None


def slot_tag(number: int) -> str:
    return f"{LEASE_PREFIX}{number}"


@dataclass(frozen=True, slots=True)
class Lease:
    """What one lease tag says: whose it is, and whether its writer may still write."""

    nonce: str
    running: bool
    expires: datetime | None

    def alive(self, now: datetime) -> bool:
        """Running, and not past its expiry by more than the clocks may differ."""
        if not self.running:
            return False
        return self.expires is None or now <= self.expires + CLOCK_MARGIN


def lease_manifest(nonce: str, *, running: bool, expires: datetime) -> bytes:
    """The manifest of a lease."""
    return marker_manifest(
        LEASE_ARTIFACT,
        {
            A_WRITER_NONCE: nonce,
            A_WRITER_STATE: RUNNING if running else RELEASED,
            A_WRITER_EXPIRES: expires.astimezone(UTC).strftime(_TIME),
        },
    )


def read_lease(body: bytes) -> Lease | None:
    """The lease a manifest describes; ``None`` for anything else under a lease tag.

    Something else under a lease tag is taken as a running writer with no
    expiry by :func:`sight` (the safe reading), never as a free slot.
    """
    try:
        document = loads_json(body, "a writer lease")
        annotations = document.get("annotations") or {}
        nonce = annotations[A_WRITER_NONCE]
        state = annotations[A_WRITER_STATE]
        expires = datetime.strptime(annotations[A_WRITER_EXPIRES], _TIME)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(nonce, str) or state not in (RUNNING, RELEASED):
        return None
    return Lease(nonce, state == RUNNING, expires.replace(tzinfo=UTC))


#: A lease tag's content as a listing saw it: (digest, the lease or None if unreadable).
Seen = Mapping[str, tuple[str, Lease | None]]


@dataclass(frozen=True, slots=True)
class Sighting:
    """What one listing of the leases says to the writer that made it.

    ``held``: the writer's own slot holds the lease it wrote last.
    ``quiet``: held, no other writer's lease alive, and none changed since
    the listing before (a writer may have come and gone in between).
    """

    held: bool
    quiet: bool


def sight(
    seen: Seen,
    before: Seen | None,
    own_slot: str | None,
    own_digest: str | None,
    now: datetime,
) -> Sighting:
    """Judge one listing of the lease tags against the listing before it (``None``: none)."""
    held = own_slot is not None and own_slot in seen and seen[own_slot][0] == own_digest
    others = {slot: entry for slot, entry in seen.items() if slot != own_slot}
    alive = any(lease is None or lease.alive(now) for _, lease in others.values())
    changed = False
    if before is not None:
        previous = {slot: digest for slot, (digest, _) in before.items() if slot != own_slot}
        changed = previous != {slot: digest for slot, (digest, _) in others.items()}
    return Sighting(held, held and not alive and not changed)


def free_slot(seen: Seen, now: datetime, taken: frozenset[str] = frozenset()) -> str:
    """The lowest slot no live writer holds (released, expired or never used)."""
    number = 0
    while True:
        tag = slot_tag(number)
        entry = seen.get(tag)
        if tag not in taken and (
            entry is None or (entry[1] is not None and not entry[1].alive(now))
        ):
            return tag
        number += 1


def expiry(now: datetime, ttl: float) -> datetime:
    return now + timedelta(seconds=ttl)
