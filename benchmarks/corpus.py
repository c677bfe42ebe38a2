"""A generated package corpus laid out as a static simple index for nginx.

Every file is a real wheel (zip, stored) or sdist (tar.gz) with a PEP 658
``.metadata`` file served beside it. The payload is seeded pseudo-random
bytes, so blobs do not compress and sizes are what the table says. The
tree under ``root`` is what nginx serves:

* ``simple/index.json``: the PEP 691 project list (with ``_last-serial``
  per project, which a mirror client reads to find what changed);
* ``simple/<project>/index.json``: PEP 691 project pages that advertise
  ``core-metadata`` (PEP 714) and the older ``data-dist-info-metadata``;
* ``pypi/<project>/json``: the JSON API page a PEP 381 mirror client reads;
* ``packages/<xx>/<filename>`` and ``<filename>.metadata``.

Pages are rewritten from the in-memory model, so a run can add releases
(the "1% changed" case) and serve the new state at once.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import tarfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1024 * 1024
KB = 1000
MB = 1000 * 1000
UPLOAD_TIME = "2024-01-02T03:04:05.000000Z"
SERIAL = 1_000
SERIAL_HEADER_VALUE = 10_000_000  # at least every project's serial: pages are never stale


@dataclass(frozen=True)
class Shape:
    """How many files of each size class, across how many projects."""

    projects: int
    small: int
    small_size: int
    medium: int
    medium_size: int
    big: int
    big_size: int

    @property
    def total_bytes(self) -> int:
        return (
            self.small * self.small_size
            + self.medium * self.medium_size
            + (self.big * self.big_size)
        )


FULL = Shape(300, 2000, 20 * KB, 50, 5 * MB, 2, 500 * MB)
# large enough that start-up (~0.2 s) is under 10% of the cold sync
QUICK = Shape(120, 1000, 20 * KB, 10, 5 * MB, 1, 40 * MB)


@dataclass(frozen=True)
class DistFile:
    """One distribution file as the index lists it."""

    project: str
    version: str
    filename: str
    relpath: str  # under the corpus root, also the URL path
    sha256: str
    size: int
    metadata_sha256: str
    size_class: str  # small, medium, big, changed


@dataclass
class Corpus:
    """The model behind the served tree; ``write_pages`` renders it."""

    root: Path
    base_url: str  # http://127.0.0.1:PORT, for the JSON API's absolute file URLs
    files: dict[str, list[DistFile]] = field(default_factory=dict)
    serials: dict[str, int] = field(default_factory=dict)

    @property
    def all_files(self) -> list[DistFile]:
        return [f for files in self.files.values() for f in files]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.all_files)

    @property
    def index_url(self) -> str:
        return f"{self.base_url}/simple/"

    def file_url(self, file: DistFile) -> str:
        return f"{self.base_url}/{file.relpath}"

    def add(self, file: DistFile) -> None:
        self.files.setdefault(file.project, []).append(file)
        self.serials[file.project] = self.serials.get(file.project, SERIAL) + 1

    def write_pages(self, projects: Iterable[str] | None = None) -> None:
        """(Re)write the project pages of ``projects`` (all by default) and the lists."""
        for project in sorted(self.files) if projects is None else projects:
            self._write_project(project)
        listing = {
            "meta": {"api-version": "1.1", "_last-serial": max(self.serials.values())},
            "projects": [
                {"name": name, "_last-serial": self.serials[name]} for name in sorted(self.files)
            ],
        }
        _write_atomic(self.root / "simple" / "index.json", json.dumps(listing).encode())

    def _write_project(self, project: str) -> None:
        files = self.files[project]
        versions = sorted({f.version for f in files}, key=_version_key)
        page = {
            "meta": {"api-version": "1.1", "_last-serial": self.serials[project]},
            "name": project,
            "versions": versions,
            "files": [
                {
                    "filename": f.filename,
                    "url": "/" + f.relpath,
                    "hashes": {"sha256": f.sha256},
                    "size": f.size,
                    "upload-time": UPLOAD_TIME,
                    "requires-python": ">=3.8",
                    "core-metadata": {"sha256": f.metadata_sha256},
                    "data-dist-info-metadata": {"sha256": f.metadata_sha256},
                    "yanked": False,
                }
                for f in files
            ],
        }
        _write_atomic(self.root / "simple" / project / "index.json", json.dumps(page).encode())
        releases: dict[str, list[dict[str, object]]] = {v: [] for v in versions}
        for f in files:
            releases[f.version].append(
                {
                    "filename": f.filename,
                    "url": self.file_url(f),
                    "size": f.size,
                    "digests": {"sha256": f.sha256},
                    "upload_time": UPLOAD_TIME[:19],
                    "upload_time_iso_8601": UPLOAD_TIME,
                    "packagetype": "bdist_wheel" if f.filename.endswith(".whl") else "sdist",
                    "python_version": "py3" if f.filename.endswith(".whl") else "source",
                    "requires_python": ">=3.8",
                    "yanked": False,
                    "yanked_reason": None,
                }
            )
        api = {
            "info": {"name": project, "version": versions[-1], "requires_python": ">=3.8"},
            "last_serial": self.serials[project],
            "releases": releases,
            "urls": releases[versions[-1]],
        }
        _write_atomic(self.root / "pypi" / project / "json", json.dumps(api).encode())


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def core_metadata(project: str, version: str) -> bytes:
    return (
        f"Metadata-Version: 2.2\nName: {project}\nVersion: {version}\n"
        f"Summary: generated benchmark package\nRequires-Python: >=3.8\n\n"
    ).encode()


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK):
            hasher.update(block)
    return hasher.hexdigest()


def write_wheel(
    directory: Path, project: str, version: str, size: int, rng: random.Random, tag: str
) -> tuple[Path, bytes]:
    """A wheel whose payload is ``size`` random bytes, stored (not deflated)."""
    module = project.replace("-", "_")
    filename = f"{module}-{version}-{tag}.whl"
    path = directory / filename
    metadata = core_metadata(project, version)
    dist_info = f"{module}-{version}.dist-info"
    wheel_text = f"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: {tag}\n"
    payload_hash = hashlib.sha256()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        init = f'"""{project}."""\n'.encode()
        archive.writestr(f"{module}/__init__.py", init)
        with archive.open(f"{module}/payload.bin", "w", force_zip64=size > 1 << 31) as out:
            left = size
            while left > 0:
                block = rng.randbytes(min(CHUNK, left))
                payload_hash.update(block)
                out.write(block)
                left -= len(block)
        archive.writestr(f"{dist_info}/METADATA", metadata)
        archive.writestr(f"{dist_info}/WHEEL", wheel_text)
        digest = base64.urlsafe_b64encode(payload_hash.digest()).rstrip(b"=").decode()
        record = (
            f"{module}/__init__.py,{_record_hash(init)},{len(init)}\n"
            f"{module}/payload.bin,sha256={digest},{size}\n"
            f"{dist_info}/METADATA,{_record_hash(metadata)},{len(metadata)}\n"
            f"{dist_info}/WHEEL,{_record_hash(wheel_text.encode())},{len(wheel_text)}\n"
            f"{dist_info}/RECORD,,\n"
        )
        archive.writestr(f"{dist_info}/RECORD", record)
    return path, metadata


def write_sdist(
    directory: Path, project: str, version: str, size: int, rng: random.Random
) -> tuple[Path, bytes]:
    """An sdist (tar.gz) with PKG-INFO and ``size`` random bytes of payload."""
    base = f"{project.replace('-', '_')}-{version}"
    path = directory / f"{base}.tar.gz"
    metadata = core_metadata(project, version)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("PKG-INFO", metadata), ("payload.bin", rng.randbytes(size))):
            info = tarfile.TarInfo(f"{base}/{name}")
            info.size = len(data)
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue(), compresslevel=1, mtime=0))
    return path, metadata


def _place(
    corpus: Corpus, project: str, version: str, made: tuple[Path, bytes], size_class: str
) -> DistFile:
    """Move a written file under ``packages/``, write its ``.metadata``, record it."""
    path, metadata = made
    sha256 = _sha256_file(path)
    relpath = f"packages/{sha256[:2]}/{sha256[2:4]}/{path.name}"
    target = corpus.root / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)
    target.with_name(target.name + ".metadata").write_bytes(metadata)
    file = DistFile(
        project,
        version,
        path.name,
        relpath,
        sha256,
        target.stat().st_size,
        hashlib.sha256(metadata).hexdigest(),
        size_class,
    )
    corpus.add(file)
    return file


def project_name(i: int) -> str:
    return f"bench-pkg-{i:04d}"


def generate(root: Path, base_url: str, shape: Shape, *, seed: int = 0) -> Corpus:
    """Write the corpus for ``shape`` under ``root`` and its pages; return the model.

    Small files come in (wheel, sdist) pairs, one pair per version, spread
    round-robin over the projects; medium wheels are a ``2.0`` release of
    the first projects; big wheels are projects of their own.
    """
    rng = random.Random(seed)
    corpus = Corpus(root, base_url)
    staging = root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    for i in range(shape.small):
        pair, kind = divmod(i, 2)
        project = project_name(pair % shape.projects)
        version = f"1.{pair // shape.projects}"
        size = max(1024, int(shape.small_size * rng.uniform(0.5, 1.5)))
        made = (
            write_wheel(staging, project, version, size, rng, "py3-none-any")
            if kind == 0
            else write_sdist(staging, project, version, size, rng)
        )
        _place(corpus, project, version, made, "small")
    for i in range(shape.medium):
        project = project_name(i % shape.projects)
        made = write_wheel(staging, project, "2.0", shape.medium_size, rng, "py3-none-any")
        _place(corpus, project, "2.0", made, "medium")
    for i in range(shape.big):
        project = f"bench-big-{i}"
        made = write_wheel(staging, project, "1.0", shape.big_size, rng, "py3-none-any")
        _place(corpus, project, "1.0", made, "big")
    staging.rmdir()
    corpus.write_pages()
    return corpus


def add_releases(
    corpus: Corpus, fraction: float, round_no: int, *, seed: int = 1
) -> list[DistFile]:
    """Give ``fraction`` of the projects a new release (wheel + sdist); rewrite their pages."""
    rng = random.Random(seed * 1_000_003 + round_no)
    names = sorted(corpus.files)
    count = max(1, round(len(names) * fraction))
    chosen = rng.sample(names, count)
    staging = corpus.root / "staging"
    staging.mkdir(exist_ok=True)
    added: list[DistFile] = []
    version = f"9.{round_no}"
    for project in chosen:
        added.append(
            _place(
                corpus,
                project,
                version,
                write_wheel(staging, project, version, 20 * KB, rng, "py3-none-any"),
                "changed",
            )
        )
        added.append(
            _place(
                corpus,
                project,
                version,
                write_sdist(staging, project, version, 20 * KB, rng),
                "changed",
            )
        )
    staging.rmdir()
    corpus.write_pages(chosen)
    return added


def remove_releases(corpus: Corpus, added: list[DistFile]) -> None:
    """Undo :func:`add_releases`: the next cold run sees the original corpus."""
    gone = {f.relpath for f in added}
    for file in added:
        path = corpus.root / file.relpath
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".metadata").unlink(missing_ok=True)
    projects = sorted({f.project for f in added})
    for project in projects:
        corpus.files[project] = [f for f in corpus.files[project] if f.relpath not in gone]
        corpus.serials[project] += 1
    corpus.write_pages(projects)


SERVE_PYTHONS = ("cp39", "cp310", "cp311", "cp312", "cp313")
SERVE_PLATFORMS = (
    "manylinux_2_17_x86_64",
    "manylinux_2_17_aarch64",
    "musllinux_1_1_x86_64",
    "win_amd64",
    "macosx_11_0_arm64",
)


def generate_wide_project(
    root: Path, base_url: str, *, versions: int = 100, seed: int = 7
) -> Corpus:
    """One project with ``versions`` x 25 tiny wheels (2,500 files at 100): a page-size test."""
    rng = random.Random(seed)
    corpus = Corpus(root, base_url)
    staging = root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    project = "bench-wide"
    for v in range(versions):
        version = f"1.{v}"
        for python in SERVE_PYTHONS:
            for platform in SERVE_PLATFORMS:
                tag = f"{python}-{python}-{platform}"
                made = write_wheel(staging, project, version, 256, rng, tag)
                _place(corpus, project, version, made, "small")
    staging.rmdir()
    corpus.write_pages()
    return corpus
