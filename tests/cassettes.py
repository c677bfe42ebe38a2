"""Replaying recorded index responses (vcrpy cassettes) without a network.

The cassettes under ``tests/cassettes/`` were recorded from the real index by
``tests/record_cassettes.py``, with every real host rewritten to a
placeholder under ``.test``: the index is ``index.test`` and its files host
``files.index.test``. Point an :class:`~oci_pypi_sync.index.client.IndexClient`
at :data:`INDEX_URL` inside :func:`replay`::

    from cassettes import INDEX_URL, replay  # tests/ is on sys.path under pytest

    with replay("six"):
        async with IndexClient(INDEX_URL) as client:
            page = await client.get_project_page("six")

A request the cassette does not hold fails (``record_mode="none"``), and
each recorded request can be replayed any number of times.

Cassettes:

``six``
    six's JSON page and the bytes of ``six-1.17.0-py2.py3-none-any.whl`` and
    ``six-1.17.0.tar.gz`` (what a sync of ``six==1.17.0`` fetches; the page
    advertises no core metadata on this index), plus the 404 of the
    sdist's ``.metadata``.
``six_html``
    six's page as the index serves it when HTML is asked for.
``yanked``
    attrs' JSON page (21.1.0 was yanked, with a reason).
``core_metadata``
    packaging's JSON page and the ``.metadata`` of ``packaging-26.3-py3-none-any.whl``.
``numpy``
    numpy's JSON page only (gzip-compressed on disk).
``legacy_versions``
    pytz's JSON page, whose old releases (``2004d``...) are not PEP 440
    versions (gzip-compressed on disk).
``missing``
    the 404 of a project that does not exist.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import vcr
from vcr.persisters.filesystem import CassetteNotFoundError, FilesystemPersister
from vcr.serialize import deserialize, serialize

INDEX_URL = "https://index.test/simple/"
INDEX_HOST = "index.test"
FILES_HOST = "files.index.test"
CASSETTE_DIR = Path(__file__).parent / "cassettes"

#: Project pages large enough to be stored gzip-compressed.
COMPRESSED = frozenset({"numpy", "legacy_versions"})


class GzipAwarePersister:
    """vcrpy's filesystem persister, reading and writing ``*.gz`` paths gzip-compressed."""

    @classmethod
    def load_cassette(cls, cassette_path: str | Path, serializer: Any) -> Any:
        path = Path(cassette_path)
        if path.suffix != ".gz":
            return FilesystemPersister.load_cassette(path, serializer)
        if not path.is_file():
            raise CassetteNotFoundError()
        return deserialize(gzip.decompress(path.read_bytes()).decode("utf-8"), serializer)

    @staticmethod
    def save_cassette(cassette_path: str | Path, cassette_dict: Any, serializer: Any) -> None:
        path = Path(cassette_path)
        if path.suffix != ".gz":
            FilesystemPersister.save_cassette(path, cassette_dict, serializer)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        data = serialize(cassette_dict, serializer).encode("utf-8")
        path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def cassette_path(name: str) -> Path:
    """Where the cassette ``name`` lives (``.yaml``, or ``.yaml.gz`` for large ones)."""
    suffix = ".yaml.gz" if name in COMPRESSED else ".yaml"
    return CASSETTE_DIR / f"{name}{suffix}"


def make_vcr(**options: Any) -> Any:
    """A ``vcr.VCR`` that matches on method and URL and understands gzip cassettes."""
    recorder = vcr.VCR(
        match_on=("method", "scheme", "host", "port", "path", "query"),
        decode_compressed_response=True,
        **options,
    )
    recorder.register_persister(GzipAwarePersister)
    return recorder


@contextmanager
def replay(name: str, *, pass_loopback: bool = False) -> Iterator[Any]:
    """Replay the cassette ``name`` with no network: unknown requests raise.

    With ``pass_loopback``, requests to 127.0.0.1/localhost (the registry the
    tests start) go through for real. Yields the vcrpy cassette
    (``.play_count``, ``.requests``) for tests that check what was fetched.
    """
    path = cassette_path(name)
    if not path.is_file():
        raise FileNotFoundError(f"no cassette {name!r} at {path}")
    with make_vcr(ignore_localhost=pass_loopback).use_cassette(
        str(path), record_mode="none", allow_playback_repeats=True
    ) as cassette:
        yield cassette
