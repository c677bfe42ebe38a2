"""Check a mirror against the format, and mend what the index can give back.

A mirror can be damaged after it was written: a blob deleted from a
registry's storage or a layout's ``blobs/``, a file truncated, a tag pointed
at another index by hand. :func:`verify` walks every tag (index, child
manifests, config and layers) and reports each fault as a :class:`Finding`;
:func:`repair` fetches from the package index what the mirror was made of
and writes it back, children first and the tag last, checking every byte
against the digest the mirror expects. Nothing is rewritten that would
change a digest the mirror already records, except a tag whose index is
not a valid index of this format.

Some findings are warnings, not faults: content written in format 1
(version indexes, layout ref names, fallback tags, the two sdist media
types format 2 renamed) and a version index another tool re-encoded with
its content intact (skopeo drops ``artifactType``). :func:`repair` rewrites
them in format 2's canonical bytes from what the mirror holds, without the
package index. Tags that are not versions (``latest``, the referrers
fallback tags signing tools write) are not ours to judge and are skipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from oci_pypi_sync.engine.metadata import MetadataSource
from oci_pypi_sync.engine.release import release_merge
from oci_pypi_sync.engine.retry import RetryPolicy, with_retries
from oci_pypi_sync.engine.writer import BlobSource, Child, Writer
from oci_pypi_sync.errors import FATAL_ERRORS, DigestMismatchError, OciPypiError, first_error
from oci_pypi_sync.format import (
    A_FORMAT,
    A_METADATA_SHA256,
    A_PROJECT,
    A_SHA256,
    A_SIZE,
    DISTRIBUTION_ARTIFACT,
    FORMAT1_LAYER_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    TITLE,
    Descriptor,
    FileArtifact,
    FileName,
    UnsupportedFileError,
    build_file_artifact,
    build_release_index,
    empty_config,
    entry_filename,
    format1_version_tag,
    format2_file_manifest,
    has_renamed_media_type,
    is_project_repository,
    is_referrers_tag,
    is_release_tag,
    layout_ref_name,
    parse_filename,
    read_release_index,
    release_index_content_equal,
    sha256_digest,
    version_tag,
)
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.records import DistributionFile
from oci_pypi_sync.ops.catalog import (
    CATALOG_ARTIFACT,
    CATALOG_REPOSITORY,
    LATEST_TAG,
    is_first_version,
    read_catalog,
    write_catalog,
)
from oci_pypi_sync.ops.walk import Listed, each_tag_list, mirror_repositories
from oci_pypi_sync.stores.protocols import (
    EditsLayoutRefs,
    HashesBlobs,
    KnowsTagDigests,
    StatsBlobs,
    Store,
    StoredManifest,
)

__all__ = [
    "Finding",
    "FindingKind",
    "RepairAction",
    "RepairReport",
    "VerifyReport",
    "repair",
    "verify",
]

log = logging.getLogger(__name__)

FindingKind = Literal[
    "missing-manifest",
    "missing-blob",
    "digest-mismatch",
    "size-mismatch",
    "bad-index",
    "bad-manifest",
    "annotation-mismatch",
    "unreadable",
    "re-encoded",
    "old-format",
]
Role = Literal["index", "manifest", "config", "file", "metadata", "blob", "ref"]
#: How many blobs' results verify keeps, so a blob several tags share is checked once.
BLOB_RESULTS_KEPT = 100_000
#: Findings that leave the mirror readable: reported, repaired, but not failures.
WARNING_KINDS: frozenset[str] = frozenset({"re-encoded", "old-format"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One fault under one tag.

    ``digest`` is what the mirror expects (the descriptor's digest);
    ``role`` says what the content is (``index``, ``manifest``, ``config``,
    ``file``, ``metadata`` or ``blob`` for other artifacts); ``title`` is
    the distribution filename when the fault belongs to one file.
    """

    kind: FindingKind
    repository: str
    tag: str
    digest: str | None
    detail: str
    role: Role = "blob"
    title: str | None = None

    @property
    def warning(self) -> bool:
        """Readable as it is (format 1, or re-encoded by another tool): not a failure."""
        return self.kind in WARNING_KINDS


class _Add(Protocol):
    def __call__(
        self,
        kind: FindingKind,
        digest: str | None,
        detail: str,
        role: Role,
        title: str | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What was checked and what was found."""

    target: str
    tags_checked: int = 0
    manifests_checked: int = 0
    blobs_checked: int = 0
    findings: tuple[Finding, ...] = ()
    deep: bool = False
    tags_skipped: int = 0
    tags_listed: int = 0
    sample: float | None = None  # the fraction of the tags drawn for a check, when sampled

    @property
    def ok(self) -> bool:
        """No fault: nothing missing or wrong (warnings allowed)."""
        return all(finding.warning for finding in self.findings)

    @property
    def warnings(self) -> int:
        return sum(1 for finding in self.findings if finding.warning)

    def kinds(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        return counts


# --- verify ---------------------------------------------------------------------


@dataclass
class _Verifier:
    store: Store
    deep: bool
    manifests_checked: int = 0
    blobs_checked: int = 0
    _blob_cache: dict[tuple[str, str], asyncio.Future[tuple[FindingKind, str] | None]] = field(
        default_factory=dict
    )

    async def check_tag(self, repo: str, tag: str) -> list[Finding]:
        found: list[Finding] = []

        def add(
            kind: FindingKind,
            digest: str | None,
            detail: str,
            role: Role,
            title: str | None = None,
        ) -> None:
            found.append(Finding(kind, repo, tag, digest, detail, role, title))

        try:
            top = await self.store.get_manifest(repo, tag)
        except DigestMismatchError as exc:
            add("digest-mismatch", exc.expected, str(exc), "index")
            return found
        except FATAL_ERRORS:
            raise
        except OciPypiError as exc:
            add("unreadable", None, str(exc), "index")
            return found
        if top is None:
            add("missing-manifest", _tagged_digest(self.store, repo, tag), "tag", "index")
            return found
        self.manifests_checked += 1
        if not is_project_repository(repo) or is_referrers_tag(tag):
            # Not a version: a catalog, another artifact, a file's referrers. Structure only.
            await self._check_tree(repo, tag, top, found, 0)
            if repo == CATALOG_REPOSITORY and _format1_catalog(top.body):
                add("old-format", top.digest, "catalog manifest of format 1", "index")
            return found
        problem, entries = release_index_problem(top, repo, tag)
        if problem is not None:
            add("bad-index", top.digest, problem, "index")
        if entries is None:
            return found
        if problem is None and (warning := release_index_warning(top.body, tag)) is not None:
            add(warning[0], top.digest, warning[1], "index")
        by_digest: dict[str, list[Descriptor]] = {}
        for entry in entries:
            by_digest.setdefault(entry.digest, []).append(entry)
        for digest, group in by_digest.items():
            await self._check_file(repo, tag, digest, group, add)
        return found

    async def _check_file(
        self, repo: str, tag: str, digest: str, group: list[Descriptor], add: _Add
    ) -> None:
        entry = group[0]
        title = entry_filename(entry)
        try:
            manifest = await self.store.get_manifest(repo, digest)
        except DigestMismatchError as exc:
            add("digest-mismatch", digest, str(exc), "manifest", title)
            return
        if manifest is None:
            add("missing-manifest", digest, f"manifest of {title}", "manifest", title)
            return
        self.manifests_checked += 1
        if len(manifest.body) != entry.size:
            add(
                "size-mismatch",
                digest,
                f"manifest of {title}: {len(manifest.body)} bytes, the index says {entry.size}",
                "manifest",
                title,
            )
        try:
            data = json.loads(manifest.body)
            config = Descriptor.from_json(data["config"])
            layers = [Descriptor.from_json(layer) for layer in data["layers"]]
        except (ValueError, KeyError, TypeError) as exc:
            add("bad-manifest", digest, f"manifest of {title} unreadable: {exc}", "manifest", title)
            return
        if (
            data.get("mediaType") != OCI_MANIFEST
            or data.get("artifactType") != DISTRIBUTION_ARTIFACT
            or not layers
        ):
            add("bad-manifest", digest, f"{title}: not a distribution manifest", "manifest", title)
            return
        if layers[0].media_type in FORMAT1_LAYER_TYPES:
            detail = f"{title}: format 1's media type {layers[0].media_type}"
            add("old-format", digest, detail, "manifest", title)
        for one in group:
            for problem in _entry_problems(one, layers):
                add("annotation-mismatch", digest, problem, "manifest", title)
        roles: list[tuple[Descriptor, Role]] = [(config, "config"), (layers[0], "file")]
        roles.extend((layer, "metadata") for layer in layers[1:])
        for descriptor, role in roles:
            fault = await self.check_blob(repo, descriptor)
            if fault is not None:
                add(fault[0], descriptor.digest, f"{title}: {fault[1]}", role, title)

    async def _check_tree(
        self, repo: str, tag: str, manifest: StoredManifest, found: list[Finding], depth: int
    ) -> None:
        try:
            data = json.loads(manifest.body)
        except ValueError:
            found.append(
                Finding("bad-manifest", repo, tag, manifest.digest, "not JSON", "manifest")
            )
            return
        if depth > 8 or not isinstance(data, dict):
            return
        for child in data.get("manifests") or ():
            digest = str(child.get("digest"))
            try:
                stored = await self.store.get_manifest(repo, digest)
            except DigestMismatchError as exc:
                found.append(Finding("digest-mismatch", repo, tag, digest, str(exc), "manifest"))
                continue
            if stored is None:
                found.append(Finding("missing-manifest", repo, tag, digest, "child", "manifest"))
                continue
            self.manifests_checked += 1
            await self._check_tree(repo, tag, stored, found, depth + 1)
        blobs = [data["config"]] if isinstance(data.get("config"), dict) else []
        blobs.extend(data.get("layers") or ())
        for blob in blobs:
            descriptor = Descriptor.from_json(blob)
            fault = await self.check_blob(repo, descriptor)
            if fault is not None:
                found.append(Finding(fault[0], repo, tag, descriptor.digest, fault[1], "blob"))

    async def check_blob(self, repo: str, descriptor: Descriptor) -> tuple[FindingKind, str] | None:
        """A blob's fault (kind, detail), or ``None``; each blob is checked once per run."""
        key = (repo, descriptor.digest)
        task = self._blob_cache.get(key)
        if task is None:
            self.blobs_checked += 1
            task = asyncio.ensure_future(self._blob_fault(repo, descriptor))
            self._blob_cache[key] = task
            self._forget_oldest()
        return await task

    def _forget_oldest(self) -> None:
        """Keep the results of the last :data:`BLOB_RESULTS_KEPT` blobs only (memory stays
        bounded on a mirror of millions; a blob many tags share stays among the recent)."""
        excess = len(self._blob_cache) - BLOB_RESULTS_KEPT
        if excess > 0:
            for key in list(itertools.islice(self._blob_cache, excess)):
                if self._blob_cache[key].done():
                    del self._blob_cache[key]

    async def _blob_fault(
        self, repo: str, descriptor: Descriptor
    ) -> tuple[FindingKind, str] | None:
        """Local stores hash every blob; others are asked for presence and size, or read back."""
        digest, size = descriptor.digest, descriptor.size
        store = self.store
        if isinstance(store, HashesBlobs):
            found = await store.hash_blob(repo, digest)
            if found is None:
                return ("missing-blob", f"blob {digest} is missing")
            return _content_fault(digest, size, *found)
        if self.deep:
            if not await store.has_blob(repo, digest):
                return ("missing-blob", f"blob {digest} is missing")
            return await self._stream_fault(repo, digest, size)
        if isinstance(store, StatsBlobs):
            stat = await store.stat_blob(repo, digest)
            if stat is None:
                return ("missing-blob", f"blob {digest} is missing")
            if stat.size is not None and stat.size != size:
                return ("size-mismatch", f"blob {digest} has {stat.size} bytes, not {size}")
            return None
        if not await store.has_blob(repo, digest):
            return ("missing-blob", f"blob {digest} is missing")
        return None

    async def _stream_fault(
        self, repo: str, digest: str, size: int
    ) -> tuple[FindingKind, str] | None:
        hasher = hashlib.sha256()
        count = 0
        try:
            async for chunk in self.store.open_blob(repo, digest):
                hasher.update(chunk)
                count += len(chunk)
        except DigestMismatchError as exc:
            return ("digest-mismatch", str(exc))
        return _content_fault(digest, size, count, "sha256:" + hasher.hexdigest())


def _content_fault(
    digest: str, size: int, actual_size: int, actual: str
) -> tuple[FindingKind, str] | None:
    """How stored bytes of this size and digest differ from what the descriptor says."""
    if actual_size != size:
        return ("size-mismatch", f"blob {digest} has {actual_size} bytes, not {size}")
    if actual != digest:
        return ("digest-mismatch", f"blob {digest} holds bytes with digest {actual}")
    return None


def _tagged_digest(store: Store, repo: str, tag: str) -> str | None:
    if isinstance(store, KnowsTagDigests):
        return store.tag_digests().get(repo, {}).get(tag)
    return None


def _format1_catalog(body: bytes) -> bool:
    """A catalog manifest written before manifests carried ``dev.oci-pypi.format``."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return (
        isinstance(data, dict)
        and data.get("artifactType") == CATALOG_ARTIFACT
        and A_FORMAT not in (data.get("annotations") or {})
    )


def release_index_problem(
    manifest: StoredManifest, repo: str, tag: str
) -> tuple[str | None, tuple[Descriptor, ...] | None]:
    """Why a tag's manifest is not a version index of format 1 or 2, and its entries.

    Entries are ``None`` when they cannot be read at all. The bytes are
    not judged here (see :func:`release_index_warning`).
    """
    try:
        data = json.loads(manifest.body)
    except ValueError:
        return "not JSON", None
    if not isinstance(data, dict):
        return "not a JSON object", None
    if data.get("mediaType") != OCI_INDEX:
        return f"not an image index (mediaType {data.get('mediaType')!r})", None
    try:
        index = read_release_index(manifest.body)
    except ValueError as exc:
        try:
            entries = tuple(Descriptor.from_json(item) for item in data.get("manifests") or ())
        except (KeyError, TypeError, ValueError):
            return str(exc), None
        return str(exc), entries
    problems = []
    if index.project != repo:
        problems.append(f"{A_PROJECT} {index.project!r} in repository {repo}")
    if tag not in (version_tag(index.version), format1_version_tag(index.version)):
        problems.append(f"version {index.version!r} under tag {tag}")
    if not index.entries:
        problems.append("no entries")
    return ("; ".join(problems) or None), index.entries


def release_index_warning(body: bytes, tag: str) -> tuple[FindingKind, str] | None:
    """What keeps a sound version index from being format 2's canonical bytes, if anything."""
    index = read_release_index(body)
    new_tag = version_tag(index.version)
    if tag != new_tag:
        return "old-format", f"format 1's fallback tag; format 2 tags this version {new_tag}"
    canonical = index.canonical().data
    if canonical == body:
        return None
    if index.format == "1":
        return "old-format", "version index of format 1"
    if release_index_content_equal(body, canonical):
        return "re-encoded", (
            "re-encoded by another tool (key order, escaping or a dropped artifactType), "
            "content intact"
        )
    return "re-encoded", "not in format 2's canonical form (entries or annotations rearranged)"


def _entry_problems(entry: Descriptor, layers: Sequence[Descriptor]) -> list[str]:
    """Where an index entry disagrees with the manifest it points at."""
    title = entry_filename(entry)
    layer = layers[0]
    problems = []
    if entry.annotations.get(A_SHA256) != layer.digest.removeprefix("sha256:"):
        problems.append(f"{title}: {A_SHA256} is not the file layer's digest {layer.digest}")
    if title != layer.annotations.get(TITLE):
        problems.append(
            f"entry title {title!r} is not the layer's {layer.annotations.get(TITLE)!r}"
        )
    if entry.annotations.get(A_SIZE) != str(layer.size):
        problems.append(f"{title}: {A_SIZE} is not the file layer's size {layer.size}")
    metadata = layers[1].digest.removeprefix("sha256:") if len(layers) > 1 else None
    if entry.annotations.get(A_METADATA_SHA256) != metadata:
        problems.append(f"{title}: {A_METADATA_SHA256} does not match the metadata layer")
    return problems


async def verify(
    store: Store,
    *,
    repositories: Sequence[str] | None = None,
    deep: bool = False,
    jobs: int = 8,
    sample: float | None = None,
    seed: int = 0,
    retry: RetryPolicy | None = None,
) -> VerifyReport:
    """Check every tag of ``repositories`` (default: every repository of the mirror).

    Layouts and tars are hashed blob by blob; registries answer a ``HEAD``
    per blob (presence and size), or with ``deep`` every blob is read back
    and hashed. The repositories come from the mirror's catalog (see
    :func:`~oci_pypi_sync.ops.walk.mirror_repositories`); tag lists and tags
    are read ``jobs`` at a time, and only findings are kept.

    With ``sample`` (0 < fraction <= 1) each tag is checked with that
    probability, deeply: a spot check of a mirror too large to read back
    whole. Which tags is decided by ``seed`` and the tag's name, so the same
    seed checks the same tags again (after a repair, say).
    """
    policy = retry or RetryPolicy()
    deep = deep or sample is not None  # a sampled tag is checked deeply
    verifier = _Verifier(store, deep)
    names = (
        sorted(set(repositories)) if repositories is not None else await mirror_repositories(store)
    )
    workers = max(1, jobs)
    pending: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(maxsize=workers * 4)
    findings: list[Finding] = []
    counts = {"listed": 0, "skipped": 0, "unsampled": 0}

    async def listed(item: Listed) -> None:
        if item.error is not None:
            raise item.error
        for tag in item.tags:
            counts["listed"] += 1
            # In a project's repository versions are ours, and the referrers fallback
            # tags (checked for structure only: provenance, or another tool's
            # signatures); other tags (a user's aliases) belong to other tools.
            repo = item.repository
            ours = not is_project_repository(repo) or is_release_tag(tag) or is_referrers_tag(tag)
            if not ours:
                counts["skipped"] += 1
                continue
            if sample is not None and not sampled(seed, repo, tag, sample):
                counts["unsampled"] += 1
                continue
            await pending.put((repo, tag))

    async def produce() -> None:
        await each_tag_list(
            store,
            names,
            listed,
            jobs=workers,
            step=lambda what, call: with_retries(policy, what, call),
        )
        for _ in range(workers):
            await pending.put(None)  # on failure the task group stops the checkers instead

    async def check() -> None:
        while (item := await pending.get()) is not None:
            findings.extend(await verifier.check_tag(*item))

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce())
            for _ in range(workers):
                group.create_task(check())
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
    wanted = set(names)
    refs = [
        Finding(
            "old-format",
            repo,
            tag,
            None,
            f"layout ref name {name} of format 1; format 2 names it {layout_ref_name(repo, tag)}",
            "ref",
        )
        for name, (repo, tag) in _format1_refs(store)
        if repo in wanted
    ]
    return VerifyReport(
        target=store.display_name,
        tags_checked=counts["listed"] - counts["skipped"] - counts["unsampled"],
        manifests_checked=verifier.manifests_checked,
        blobs_checked=verifier.blobs_checked,
        findings=tuple(sorted(findings, key=lambda f: (f.repository, f.tag))) + tuple(refs),
        deep=deep,
        tags_skipped=counts["skipped"],
        tags_listed=counts["listed"],
        sample=sample,
    )


def sampled(seed: int, repo: str, tag: str, fraction: float) -> bool:
    """Whether ``repo:tag`` is in the sample of ``fraction`` that ``seed`` draws.

    A hash of the seed and the name, not the order tags arrive in: the same
    seed draws the same tags, however the lists were read.
    """
    drawn = hashlib.sha256(f"{seed}\0{repo}\0{tag}".encode()).digest()
    return int.from_bytes(drawn[:8], "big") < fraction * 2**64


def _format1_refs(store: Store) -> list[tuple[str, tuple[str, str]]]:
    """A layout's ref names still in format 1's form, with the tag each names."""
    if not isinstance(store, KnowsTagDigests):
        return []
    return list(store.format1_refs().items())


# --- repair -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepairAction:
    """Something written back (or, with ``reason``, something that could not be)."""

    repository: str
    tag: str
    what: Literal["blob", "manifest", "index"]
    digest: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What was mended, and what could not be, with the reason."""

    target: str
    repaired: tuple[RepairAction, ...] = ()
    unrepaired: tuple[RepairAction, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.unrepaired


class _UnrepairableError(Exception):
    """This tag cannot be mended from the index; the message says why."""


@dataclass
class _Repairer:
    """Mends tags through a :class:`~oci_pypi_sync.engine.writer.Writer`, bytes from the index."""

    writer: Writer
    index: IndexClient
    metadata: MetadataSource
    retry: RetryPolicy
    repaired: list[RepairAction] = field(default_factory=list)
    # (project, tag) -> (tag, digest) of each version index migrated
    moved: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _pages: dict[str, dict[str, DistributionFile]] = field(default_factory=dict)

    @property
    def store(self) -> Store:
        return self.writer.store

    async def files(self, repo: str) -> dict[str, DistributionFile]:
        if repo not in self._pages:
            page = await with_retries(
                self.retry, f"{repo}: project page", lambda: self.index.get_project_page(repo)
            )
            self._pages[repo] = {f.filename: f for f in page.files}
        return self._pages[repo]

    async def file(self, repo: str, title: str) -> DistributionFile:
        file = (await self.files(repo)).get(title)
        if file is None:
            raise _UnrepairableError(f"the index no longer lists {title}")
        return file

    async def repair_tag(self, repo: str, tag: str, findings: Sequence[Finding]) -> None:
        bad = frozenset(
            f.digest for f in findings if f.digest is not None and f.kind != "bad-index"
        )
        rebuild = any(
            f.role == "index" or f.kind in ("bad-index", "annotation-mismatch", "bad-manifest")
            for f in findings
        )
        if rebuild:
            await self.rebuild_release(repo, tag, bad)
            return
        current = await self.store.get_manifest(repo, tag)
        if current is None:
            raise _UnrepairableError("the tag is gone")
        _, entries = release_index_problem(current, repo, tag)
        if entries is None:
            raise _UnrepairableError("the tag's index cannot be read")
        titles = {f.title for f in findings if f.title}
        done: set[str] = set()
        for entry in entries:
            damaged = entry.digest in bad or entry_filename(entry) in titles
            if damaged and entry.digest not in done:
                done.add(entry.digest)
                await self.restore_entry(repo, tag, entry, bad)

    async def restore_entry(
        self, repo: str, tag: str, entry: Descriptor, bad: frozenset[str]
    ) -> None:
        """Write back what one file's manifest needs, and the manifest itself if it is gone."""
        title = entry_filename(entry) or ""
        stored: StoredManifest | None = None
        if entry.digest not in bad:
            stored = await self.store.get_manifest(repo, entry.digest)
        if stored is not None:
            data = json.loads(stored.body)
            config = Descriptor.from_json(data["config"])
            layers = tuple(Descriptor.from_json(layer) for layer in data["layers"])
            await self.write(repo, tag, title, stored.body, config, layers, bad, restored=False)
            return
        file = await self.file(repo, title)
        size_text = entry.annotations.get(A_SIZE, "")
        size = int(size_text) if size_text.isdigit() else await self.index.get_file_size(file)
        metadata = None
        if entry.annotations.get(A_METADATA_SHA256):
            metadata = await self.metadata_bytes(
                file, "sha256:" + entry.annotations[A_METADATA_SHA256]
            )
        artifact = build_file_artifact(file, repo, size, metadata)
        if artifact.manifest.descriptor.digest != entry.digest:
            raise _UnrepairableError(
                f"the manifest of {title} rebuilt from the index has digest "
                f"{artifact.manifest.descriptor.digest}, not {entry.digest}"
            )
        config = empty_config().descriptor
        await self.write(
            repo, tag, title, artifact.manifest.data, config, artifact.layers, bad, restored=True
        )

    async def write(
        self,
        repo: str,
        tag: str,
        title: str,
        body: bytes,
        config: Descriptor,
        layers: Sequence[Descriptor],
        bad: frozenset[str],
        *,
        restored: bool,
    ) -> None:
        """A file's manifest and its blobs, children first, each from the index if missing."""
        empty = empty_config()
        if config.digest != empty.descriptor.digest:
            raise _UnrepairableError(f"{title}: config {config.digest} is not the empty config")
        roles: list[tuple[Child, str]] = [
            (Child(config.digest, config.size, data=empty.data), "config"),
            (
                Child(
                    layers[0].digest,
                    layers[0].size,
                    source=self.file_source(repo, title, layers[0]),
                ),
                "file",
            ),
        ]
        roles += [
            (
                Child(layer.digest, layer.size, source=self.metadata_source(repo, title, layer)),
                "metadata",
            )
            for layer in layers[1:]
        ]
        written = await self.writer.manifest(
            repo, OCI_MANIFEST, body, [child for child, _ in roles], replace=bad
        )
        for child, role in roles:
            outcome = written.children.get(child.digest)
            if child.digest in bad or (outcome is not None and outcome.outcome != "present"):
                self.repaired.append(
                    RepairAction(repo, tag, "blob", child.digest, f"{title} ({role})")
                )
        if restored or written.digest in bad:
            self.repaired.append(RepairAction(repo, tag, "manifest", written.digest, title))

    def file_source(self, repo: str, title: str, layer: Descriptor) -> BlobSource:
        """The file's bytes from the index, if the store turns out to need them."""

        async def chunks() -> AsyncIterator[bytes]:
            file = await self.file(repo, title)
            if f"sha256:{file.sha256}" != layer.digest:
                raise _UnrepairableError(
                    f"the index now gives {title} the sha256 {file.sha256}, not {layer.digest}"
                )
            async with self.index.stream_file(file) as stream:
                async for chunk in stream:
                    yield chunk

        return chunks

    def metadata_source(self, repo: str, title: str, layer: Descriptor) -> BlobSource:
        """The file's core metadata from the index, if the store turns out to need it."""

        async def chunks() -> AsyncIterator[bytes]:
            file = await self.file(repo, title)
            yield await self.metadata_bytes(file, layer.digest)

        return chunks

    async def metadata_bytes(self, file: DistributionFile, digest: str) -> bytes:
        """The core metadata the mirror recorded: the index's, if it still has these bytes."""
        found = await with_retries(
            self.retry,
            f"{file.filename}: core metadata",
            lambda: self.index.get_core_metadata(file, probe=True),
        )
        if found is None:
            raise _UnrepairableError(f"the index no longer serves {file.filename}.metadata")
        if sha256_digest(found.raw) != digest:
            raise _UnrepairableError(f"{file.filename}.metadata no longer has the digest {digest}")
        return found.raw

    async def rebuild_release(self, repo: str, tag: str, bad: frozenset[str]) -> None:
        """A new index for the version from the files of the index whose manifests are stored.

        When none is stored (the version's files are all gone), every file of
        the version is synced again. The tag is replaced when it still holds
        the index verify found faulty, else (another writer moved it since)
        merged with what it holds now.
        """
        examined = await self.examined_digest(repo, tag)
        candidates: list[tuple[DistributionFile, FileName]] = []
        for file in (await self.files(repo)).values():
            try:
                name = parse_filename(file.filename, repo)
            except UnsupportedFileError:
                continue
            if file.sha256 and tag in (
                version_tag(name.version),
                format1_version_tag(name.version),
            ):
                candidates.append((file, name))
        if not candidates:
            raise _UnrepairableError(f"the index lists no file of the version tagged {tag}")
        built: list[FileArtifact] = []
        for file, name in sorted(candidates, key=lambda c: c[0].filename):
            size = await self.index.get_file_size(file)
            choice = await self.metadata.for_file(
                file, name.project, name.version, is_wheel=name.is_wheel
            )
            built.append(build_file_artifact(file, repo, size, choice.raw))
        present = {
            artifact.manifest.descriptor.digest
            for artifact in built
            if artifact.manifest.descriptor.digest not in bad
            and await self.store.has_manifest(repo, artifact.manifest.descriptor.digest)
        }
        chosen = [a for a in built if a.manifest.descriptor.digest in present] or built
        config = empty_config().descriptor
        for artifact in chosen:
            await self.write(
                repo,
                tag,
                artifact.filename,
                artifact.manifest.data,
                config,
                artifact.layers,
                bad,
                restored=artifact.manifest.descriptor.digest not in present,
            )
        version = candidates[0][1].version
        fresh = tuple(entry for artifact in chosen for entry in artifact.entries)
        release = build_release_index(repo, version, fresh)
        upstream = {file.filename: (file, name) for file, name in candidates}
        merged = release_merge(repo, version, fresh, upstream, prune=False)

        def merge(current: StoredManifest | None) -> bytes | None:
            if current is None or current.digest == examined:
                return release.data
            return merged(current)

        digest = await self.writer.tag(
            repo, tag, OCI_INDEX, merge, replace=bad & {release.descriptor.digest, examined or ""}
        )
        files = ", ".join(artifact.filename for artifact in chosen)
        self.repaired.append(RepairAction(repo, tag, "index", digest, f"rebuilt from {files}"))

    async def migrate_tag(self, repo: str, tag: str) -> None:
        """Rewrite a tag's content in format 2's canonical bytes, from what the mirror holds.

        A version index of format 1, or one another tool re-encoded, is
        written again from its own entries (sdist manifests whose media type
        format 2 renamed first); a format-1 fallback tag moves to format 2's
        tag, and the old tag is removed where the store can (a layout). The
        package index is not needed: no file, manifest or blob is fetched.
        """
        if repo == CATALOG_REPOSITORY:
            return  # rewritten last, with the moves of the versions (migrate_catalog)
        current = await self.store.get_manifest(repo, tag)
        if current is None:
            raise _UnrepairableError("the tag is gone")
        index = read_release_index(current.body)
        entries = [await self.format2_manifest(repo, tag, entry) for entry in index.entries]
        release = build_release_index(index.project, index.version, entries)
        new_tag = version_tag(index.version)
        target = current if new_tag == tag else await self.store.get_manifest(repo, new_tag)
        if new_tag != tag or release.data != current.body:
            self.moved[(repo, tag)] = (new_tag, release.descriptor.digest)
        if target is None or target.body != release.data:
            # The same content in other bytes: whatever the tag holds now is
            # kept unless it is what was examined (or absent).
            examined = target.digest if target is not None else None

            def migrated(now: StoredManifest | None) -> bytes | None:
                if now is None or now.digest == examined:
                    return release.data
                return None

            digest = await self.writer.tag(repo, new_tag, OCI_INDEX, migrated)
            detail = (
                "version index of format 1 rewritten in format 2"
                if index.format == "1"
                else "canonical bytes restored (re-encoded by another tool, content intact)"
            )
            self.repaired.append(RepairAction(repo, new_tag, "index", digest, detail))
        if new_tag == tag:
            return
        store = self.store
        if not isinstance(store, EditsLayoutRefs):
            raise _UnrepairableError(
                f"format 1's fallback tag stays beside {new_tag} (readers skip it): "
                "delete it with the registry's own tools"
            )
        await store.untag(repo, tag)
        detail = f"format 1's fallback tag removed; the version is tagged {new_tag}"
        self.repaired.append(RepairAction(repo, tag, "index", current.digest, detail))

    async def migrate_catalog(self) -> None:
        """The catalog in its current version, with the versions migrated above under their
        new tags and digests."""
        stored = await self.store.get_manifest(CATALOG_REPOSITORY, LATEST_TAG)
        catalog = await read_catalog(self.store, exact=True)
        if stored is None or catalog is None:
            return
        moved = catalog.retagged(self.moved)
        if moved != catalog or is_first_version(stored):
            digest = await write_catalog(self.writer, moved)
            detail = "catalog in parts, with the versions' new digests"
            self.repaired.append(
                RepairAction(CATALOG_REPOSITORY, LATEST_TAG, "index", digest, detail)
            )

    async def format2_manifest(self, repo: str, tag: str, entry: Descriptor) -> Descriptor:
        """The entry, pointing at a format-2 manifest where format 2 renamed the media type."""
        filename = entry_filename(entry) or ""
        if not has_renamed_media_type(filename):
            return entry
        stored = await self.store.get_manifest(repo, entry.digest)
        rewritten = format2_file_manifest(stored.body) if stored is not None else None
        if rewritten is None:
            return entry
        digest = sha256_digest(rewritten)
        if not await self.store.has_manifest(repo, digest):
            await self.writer.manifest(repo, OCI_MANIFEST, rewritten)
            detail = f"{filename}: manifest with format 2's media type"
            self.repaired.append(RepairAction(repo, tag, "manifest", digest, detail))
        return replace(entry, digest=digest, size=len(rewritten))

    async def examined_digest(self, repo: str, tag: str) -> str | None:
        """The digest the tag points at now (the one verify found faulty, unless moved since)."""
        try:
            current = await self.store.get_manifest(repo, tag)
        except DigestMismatchError as exc:
            return exc.expected
        return current.digest if current is not None else _tagged_digest(self.store, repo, tag)


async def repair(
    store: Store,
    report: VerifyReport,
    index: IndexClient,
    *,
    retry: RetryPolicy | None = None,
) -> RepairReport:
    """Mend the tags ``report`` found faulty from ``index``, children first, tag last.

    Everything is written through the same
    :class:`~oci_pypi_sync.engine.writer.Writer` as a sync. Files come back
    streamed and checked against the sha256 the mirror records; metadata
    against its layer digest; a missing manifest is rebuilt and written only
    when its digest comes out the same. A tag whose index is not a valid
    index of this format (or whose entries disagree with their manifests)
    gets an index rebuilt from the version's files the mirror still holds,
    or the whole version synced again when it holds none. Content that is
    only old (format 1) or re-encoded is migrated from what the mirror
    holds. Every tag that cannot be mended is listed with the reason.
    """
    policy = retry or RetryPolicy()
    writer = Writer(store, policy)
    repairer = _Repairer(writer, index, MetadataSource(index, probe=True, retry=policy), policy)
    by_tag: dict[tuple[str, str], list[Finding]] = {}
    for finding in report.findings:
        if finding.role != "ref":
            by_tag.setdefault((finding.repository, finding.tag), []).append(finding)
    unrepaired: list[RepairAction] = []
    try:
        for (repo, tag), findings in sorted(by_tag.items()):
            faults = [finding for finding in findings if not finding.warning]
            if faults and not is_project_repository(repo):
                unrepaired.append(
                    RepairAction(
                        repo, tag, "index", None, "not a project: the index cannot give it back"
                    )
                )
                continue
            if is_referrers_tag(tag):
                unrepaired.append(
                    RepairAction(
                        repo,
                        tag,
                        "index",
                        None,
                        "a file's referrers (provenance): `oci-pypi sync --recheck` of the "
                        "project writes back what is missing",
                    )
                )
                continue
            try:
                if faults:
                    await repairer.repair_tag(repo, tag, faults)
                if len(faults) < len(findings):
                    await repairer.migrate_tag(repo, tag)
            except FATAL_ERRORS:
                raise
            except (_UnrepairableError, OciPypiError, ValueError) as exc:
                log.warning("%s:%s cannot be repaired: %s", repo, tag, exc)
                digest = findings[0].digest
                unrepaired.append(RepairAction(repo, tag, "index", digest, str(exc)))
        catalog_warned = any(
            f.warning and f.repository == CATALOG_REPOSITORY for f in report.findings
        )
        if repairer.moved or catalog_warned:
            try:
                await repairer.migrate_catalog()
            except FATAL_ERRORS:
                raise
            except (OciPypiError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s cannot be migrated: %s", CATALOG_REPOSITORY, exc)
                unrepaired.append(RepairAction(CATALOG_REPOSITORY, "", "index", None, str(exc)))
        await writer.settle()
        await writer.close()
    finally:
        writer.abandon()
    old_refs = [f for f in report.findings if f.role == "ref"]
    if isinstance(store, EditsLayoutRefs) and isinstance(store, KnowsTagDigests) and old_refs:
        await store.rename_format1_refs()
        now = store.tag_digests()
        for finding in old_refs:
            if finding.tag in now.get(finding.repository, {}):
                name = layout_ref_name(finding.repository, finding.tag)
                detail = f"layout ref name {finding.repository}:{finding.tag} renamed {name}"
                repairer.repaired.append(
                    RepairAction(finding.repository, finding.tag, "index", None, detail)
                )
    writer.commit()
    return RepairReport(store.display_name, tuple(repairer.repaired), tuple(unrepaired))
