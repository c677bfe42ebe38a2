"""The projects of a run over the index's whole list (``--all``), one at a time.

A run over every project of an index meets up to a million names. They
come from the project list (held compactly, see
:class:`~oci_pypi_sync.index.records.ProjectIndex`) in its order, each
filtered by shard and by the allow and deny lists as it passes, and turned
into requirements only when the run needs them: most projects of an hourly
run are passed over by their serial, and building a requirement costs more
than everything else a passed-over project costs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from oci_pypi_sync.format import is_project_repository
from oci_pypi_sync.index.records import ProjectIndex
from oci_pypi_sync.plan.shard import Shard

__all__ = ["ListedProject", "ListedProjects"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListedProject:
    """One project of the run: its normalized name, its serial, and what names it.

    ``named`` holds the requirements that name the project (``-r``, arguments);
    a project the index lists is also taken whole (``listed``). A project
    taken only because it is listed is ``optional``: selecting none of its
    files is no failure.
    """

    name: str
    serial: int | None = None
    named: tuple[Requirement, ...] = ()
    listed: bool = True

    @property
    def optional(self) -> bool:
        return not self.named

    def requirements(self) -> list[Requirement]:
        """What selects the project's files: what names it, and all of it when listed."""
        return [*self.named, *((Requirement(self.name),) if self.listed else ())]

    def requirement_texts(self) -> list[str]:
        """``str()`` of each of :meth:`requirements`, without making them."""
        return [*(str(r) for r in self.named), *((self.name,) if self.listed else ())]


class ListedProjects:
    """The index's projects for one run (this shard's, allowed), with the ones named besides.

    Iterating gives each project once per listing (a list naming one project
    twice gives it twice), in the index's order, then the named projects the
    index does not list. ``len`` is known before the first project is made:
    counting takes one pass over the names, which keeps a byte per name.
    """

    def __init__(
        self,
        index: ProjectIndex,
        named: Sequence[Requirement] = (),
        *,
        shard: Shard | None = None,
        allowed: Callable[[str], bool] | None = None,
    ) -> None:
        self._index = index
        self._named: dict[str, list[Requirement]] = {}
        for requirement in named:
            name = str(canonicalize_name(requirement.name))
            if (shard is None or shard.owns_normalized(name)) and (
                allowed is None or allowed(name)
            ):
                self._named.setdefault(name, []).append(requirement)
        # One byte per listed name: 1 when this run takes it.
        self._taken = bytearray(len(index))
        listed_named: set[str] = set()
        skipped = 0
        for position, (spelled, _serial) in enumerate(index):
            normal = _normalized(spelled)
            if normal is None:
                skipped += 1
            elif (shard is None or shard.owns_normalized(normal)) and (
                allowed is None or allowed(normal)
            ):
                self._taken[position] = 1
                if normal in self._named:
                    listed_named.add(normal)
        if skipped:
            log.warning("%d names of the project list are not project names; skipped", skipped)
        self._count = self._taken.count(1) + len(self._named) - len(listed_named)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[ListedProject]:
        named = dict(self._named)
        for taken, (spelled, serial) in zip(self._taken, self._index, strict=True):
            if not taken:
                continue
            normal = _normalized(spelled)
            assert normal is not None  # taken: a project name
            yield ListedProject(normal, serial, tuple(named.pop(normal, ())) if named else ())
        for name, requirements in named.items():
            yield ListedProject(name, None, tuple(requirements), listed=False)


def _normalized(spelled: str) -> str | None:
    """The normalized name a list entry spells; ``None`` when it is no project name.

    A name already in normal form (most of a large list) is taken as it is.
    """
    if is_project_repository(spelled):  # the one test of a name in normal form
        return spelled
    name = str(canonicalize_name(spelled))
    return name if is_project_repository(name) else None
