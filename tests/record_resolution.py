"""Record the data of the pip comparison tests from the real index. Run by hand:

    .venv/bin/python tests/record_resolution.py             # every tree
    .venv/bin/python tests/record_resolution.py requests    # one
    .venv/bin/python tests/record_resolution.py django-conflict

A conflict (``CONFLICTS``) is recorded for one target, without sdists
left out: what the resolver reads until it finds the conflict, and pip's
verdict (it must fail, on the real index and on the replay alike).

For each tree and target environment, pip resolves against the real index
(its answer is kept as ``pip``), then our resolver does, both with pip's
host-evaluated markers and with the target's own, through a client that
keeps every page and every core metadata it reads (``.metadata``, or the
wheel's own METADATA read with ranges where the index serves no
``.metadata``). Kept too: the metadata of every wheel of every version pip
chose. Pages are stored without file
URLs (the replay server makes its own), metadata without its long
description and URL fields (pip and the resolver read neither), each distinct
metadata once, and any real host name is rewritten to ``files.index.test``
so none remains (nor any other host under the index's name). Finally pip
runs against the replay of what was recorded and must answer as it did
against the real index.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from replay_index import (
    RESOLUTION_DIR,
    pip_resolution,
    pip_verdict,
    recorded_index,
    recording_path,
    serving,
)
from test_resolve import CONFLICTS, ENVIRONMENTS, LINUX_312, TREES, PipMarkers

from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.location import resolve_index_url
from oci_pypi_sync.index.records import CoreMetadata, DistributionFile, ProjectPage
from oci_pypi_sync.plan.resolve import resolve_closure

FILES_HOST = "files.index.test"


class RecordingClient(IndexClient):
    """An index client that keeps the pages and core metadata it reads."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.pages: dict[str, ProjectPage] = {}
        self.metadata: dict[str, bytes] = {}
        self._limit = asyncio.Semaphore(16)

    async def get_project_page(self, project: str) -> ProjectPage:
        page = await super().get_project_page(project)
        self.pages[canonicalize_name(project)] = page
        return page

    async def get_core_metadata(
        self, file: DistributionFile, *, probe: bool = False
    ) -> CoreMetadata | None:
        metadata = await super().get_core_metadata(file, probe=probe)
        if metadata is not None:
            self.metadata[file.filename] = metadata.raw
        return metadata

    async def get_wheel_metadata(self, file: DistributionFile) -> bytes:
        """The METADATA read from the wheel itself (this index serves no .metadata for it)."""
        async with self._limit:
            raw = await super().get_wheel_metadata(file)
        self.metadata[file.filename] = raw
        return raw

    async def any_metadata(self, file: DistributionFile) -> None:
        if await self.get_core_metadata(file, probe=True) is None:
            await self.get_wheel_metadata(file)


#: Header fields left out of recorded metadata: no resolver reads them, and their
#: URLs may name real hosts.
DROPPED_FIELDS = ("description:", "home-page:", "download-url:", "project-url:")


def strip_metadata(raw: bytes, hosts: list[str]) -> bytes:
    """Headers only, without the description and URL fields, real hosts rewritten."""
    text = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    headers = text.split("\n\n", 1)[0]
    kept: list[str] = []
    skipping = False
    for line in headers.split("\n"):
        if line[:1] in (" ", "\t") and skipping:
            continue
        skipping = line.lower().startswith(DROPPED_FIELDS)
        if not skipping:
            kept.append(line)
    out = "\n".join(kept) + "\n"
    for host in hosts:
        out = out.replace(host, FILES_HOST)
    return out.encode("utf-8", "surrogateescape")


def page_entry(file: DistributionFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"filename": file.filename, "sha256": file.sha256}
    if file.requires_python is not None:
        entry["requires-python"] = file.requires_python
    if file.yanked:
        entry["yanked"] = file.yanked_reason or True
    if file.size is not None:
        entry["size"] = file.size
    if file.upload_time is not None:
        entry["upload-time"] = file.upload_time
    return entry


async def record(tree: str, url: str, hosts: list[str]) -> dict[str, Any]:
    requirements = TREES[tree]
    pip: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for env in ENVIRONMENTS:
            pip[str(env)] = pip_resolution(
                url, requirements, env.python, env.platform_tags, Path(workdir)
            )
    async with RecordingClient(url) as client:
        # The resolver's ranged reads of wheels are recorded too (get_wheel_metadata).
        reqs = [Requirement(r) for r in requirements]
        await resolve_closure(reqs, client, ENVIRONMENTS, only_binary=True)
        await resolve_closure(
            reqs, client, [PipMarkers.of(e) for e in ENVIRONMENTS], only_binary=True
        )
        chosen = {(p, v) for answer in pip.values() for p, v in answer.items()}
        for project, _ in sorted(chosen):
            if project not in client.pages:
                await client.get_project_page(project)
        wanted = []
        for project, version in sorted(chosen):
            for file in client.pages[project].files:
                if not file.filename.endswith(".whl"):
                    continue
                _, file_version, _, _ = parse_wheel_filename(file.filename)
                if str(file_version) == version and file.filename not in client.metadata:
                    wanted.append(file)
        await asyncio.gather(*(client.any_metadata(f) for f in wanted))
        pages = {
            page.name: [page_entry(f) for f in page.files]
            for _, page in sorted(client.pages.items())
        }
        blobs: dict[str, str] = {}
        metadata: dict[str, str] = {}
        for filename, raw in sorted(client.metadata.items()):
            stripped = strip_metadata(raw, hosts)
            digest = hashlib.sha256(stripped).hexdigest()
            blobs[digest] = stripped.decode("utf-8", "surrogateescape")
            metadata[filename] = digest
    return {
        "requirements": requirements,
        "pip": pip,
        "pages": pages,
        "metadata": metadata,
        "blobs": blobs,
    }


async def record_conflict(tree: str, url: str, hosts: list[str]) -> dict[str, Any]:
    """What the resolver reads to find the conflict, and pip's verdict (a failure)."""
    requirements = CONFLICTS[tree]
    with tempfile.TemporaryDirectory() as workdir:
        pip = pip_verdict(url, requirements, Path(workdir), LINUX_312)
    async with RecordingClient(url) as client:
        # the resolver's ranged reads of wheels are recorded too (get_wheel_metadata)
        closure = await resolve_closure([Requirement(r) for r in requirements], client, [LINUX_312])
        print(f"{tree}: {closure.unresolved}")
        # pip reads the newest release of each dependency before it meets the
        # conflict: their metadata too, so that pip can run on the replay.
        newest = []
        for page in list(client.pages.values()):
            wheels = [f for f in page.files if f.filename.endswith(".whl") and not f.yanked]
            if wheels:
                top = max(parse_wheel_filename(f.filename)[1] for f in wheels)
                newest += [f for f in wheels if parse_wheel_filename(f.filename)[1] == top]
        await asyncio.gather(
            *(client.any_metadata(f) for f in newest if f.filename not in client.metadata)
        )
        return recorded_data(requirements, {str(LINUX_312): pip}, client, hosts)


def recorded_data(
    requirements: list[str], pip: dict[str, Any], client: RecordingClient, hosts: list[str]
) -> dict[str, Any]:
    pages = {
        page.name: [page_entry(f) for f in page.files] for _, page in sorted(client.pages.items())
    }
    blobs: dict[str, str] = {}
    metadata: dict[str, str] = {}
    for filename, raw in sorted(client.metadata.items()):
        stripped = strip_metadata(raw, hosts)
        digest = hashlib.sha256(stripped).hexdigest()
        blobs[digest] = stripped.decode("utf-8", "surrogateescape")
        metadata[filename] = digest
    return {
        "requirements": requirements,
        "pip": pip,
        "pages": pages,
        "metadata": metadata,
        "blobs": blobs,
    }


def main(trees: list[str]) -> int:
    url = resolve_index_url(None).url
    index_host = urlsplit(url).hostname or ""

    async def files_host() -> str:
        async with IndexClient(url) as client:
            page = await client.get_project_page("six")
        return urlsplit(page.files[0].url).hostname or ""

    hosts = [h for h in (asyncio.run(files_host()), index_host) if h]
    RESOLUTION_DIR.mkdir(exist_ok=True)
    failed = False
    for tree in trees:
        conflict = tree in CONFLICTS
        data = asyncio.run((record_conflict if conflict else record)(tree, url, hosts))
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        # The hosts, and any other host under the index's name (older aliases).
        label = index_host.split(".")[0]
        patterns = [re.escape(h) for h in hosts] + [rf"\b{re.escape(label)}\.[a-z]"]
        leaked = [p for p in patterns if re.search(p, text, re.IGNORECASE)]
        if leaked:
            print(f"{tree}: real host names remain; not written", file=sys.stderr)
            failed = True
            continue
        path = recording_path(tree)
        path.write_bytes(gzip.compress(text.encode(), compresslevel=9, mtime=0))
        print(
            f"{tree}: {len(data['pages'])} pages, {len(data['metadata'])} metadata "
            f"({len(data['blobs'])} distinct), {path.stat().st_size} bytes"
        )
        with serving(recorded_index(tree)) as index, tempfile.TemporaryDirectory() as workdir:
            if conflict:
                verdict = pip_verdict(
                    f"{index.url}simple/", data["requirements"], Path(workdir), LINUX_312
                )
                if verdict != data["pip"][str(LINUX_312)]:
                    print(f"{tree}: pip answers differently on the replay", file=sys.stderr)
                    failed = True
                continue
            for env in ENVIRONMENTS:
                replayed = pip_resolution(
                    f"{index.url}simple/",
                    data["requirements"],
                    env.python,
                    env.platform_tags,
                    Path(workdir),
                )
                if replayed != data["pip"][str(env)]:
                    print(f"{tree} {env}: pip answers differently on the replay", file=sys.stderr)
                    failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or [*TREES, *CONFLICTS]))
