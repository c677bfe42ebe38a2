"""What a sync does with PEP 740 provenance: the policy, the pinned publishers, the trust root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from packaging.utils import NormalizedName

from oci_pypi_sync.provenance.publishers import Publisher

#: ``ignore``: neither fetched nor checked; ``mirror``: stored when it verifies, a file
#: without any mirrored; ``require``: a file without valid provenance is not mirrored.
ProvenancePolicy = Literal["ignore", "mirror", "require"]
POLICIES: tuple[ProvenancePolicy, ...] = ("ignore", "mirror", "require")


@dataclass(frozen=True, slots=True)
class ProvenanceOptions:
    """What to do with provenance: the policy, the pinned publishers, the trusted root."""

    policy: ProvenancePolicy = "mirror"
    trusted: Mapping[NormalizedName, tuple[Publisher, ...]] = field(default_factory=dict)
    trusted_root: Path | None = None

    def pins(self, project: str) -> tuple[Publisher, ...]:
        return self.trusted.get(NormalizedName(project), ())

    def key(self) -> dict[str, object]:
        """What of these options decides what a sync accepts (for the state file's keys).

        A changed policy or pin makes the next sync check every project again.
        """
        return {
            "provenance": self.policy,
            "trusted_publishers": {
                name: sorted(str(p) for p in pins) for name, pins in sorted(self.trusted.items())
            },
        }
