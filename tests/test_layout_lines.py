"""The line shape of ``index.json``: plain JSON, sorted, searched in place, merged by copying."""

from __future__ import annotations

import io
import json
import random
from typing import Any

from oci_pypi_sync.format import OCI_INDEX, OCI_MANIFEST, REF_NAME
from oci_pypi_sync.stores.layout_lines import (
    Change,
    LineIndex,
    empty_index,
    entry_key,
    entry_line,
    line_key,
)


def tagged(ref: str, n: int = 0) -> dict[str, Any]:
    return {
        "annotations": {REF_NAME: ref},
        "digest": "sha256:" + f"{n:064x}",
        "mediaType": OCI_INDEX,
        "size": 100 + n,
    }


def untagged(n: int, **annotations: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"digest": "sha256:" + f"{n:064x}", "mediaType": OCI_MANIFEST}
    entry["size"] = n
    if annotations:
        entry["annotations"] = annotations
    return entry


def written(index: LineIndex, changes: list[Change]) -> bytes:
    out = io.BytesIO()
    index.write_merged(out, changes)
    return out.getvalue()


def parsed(data: bytes) -> LineIndex:
    index = LineIndex.parse(data)
    assert index is not None, data[:200]
    return index


def test_merges_copy_the_untouched_lines_and_the_file_stays_plain_json() -> None:
    rng = random.Random(5)
    refs = sorted({f"p{rng.randrange(10_000):05d}/{rng.randrange(30)}.0" for _ in range(3000)})
    data = written(parsed(empty_index()), [Change(r, tagged(r, i)) for i, r in enumerate(refs)])
    document = json.loads(data)
    assert document["schemaVersion"] == 2
    assert document["mediaType"] == OCI_INDEX
    assert [e["annotations"][REF_NAME] for e in document["manifests"]] == refs
    assert data.count(b"\n") == len(refs) + 2  # the head, one line per entry, the tail

    index = parsed(data)
    assert len(index) == len(refs)
    for i in rng.sample(range(len(refs)), 300):
        assert index.find(refs[i]) == tagged(refs[i], i)
    assert index.find("p99999/1.0") is None
    assert index.find("") is None
    assert index.find(refs[0][:-1]) is None  # a prefix of a ref is not the ref
    project = refs[1500].split("/")[0]
    assert list(index.refs_with_prefix(project + "/")) == [
        r for r in refs if r.startswith(project + "/")
    ]

    # Some updated, some removed, some new: the merge has exactly the expected entries.
    expected = {r: tagged(r, i) for i, r in enumerate(refs)}
    changes = []
    for r in rng.sample(refs, 300):
        changes.append(Change(r, tagged(r, 9_999_999)))
        expected[r] = tagged(r, 9_999_999)
    for r in rng.sample(sorted(expected), 100):
        changes.append(Change(r, None))
        expected.pop(r)
    for k in range(200):
        new = f"q{k:03d}/1.0" if k % 2 else f"a{k:03d}/1.0"
        changes.append(Change(new, tagged(new, k)))
        expected[new] = tagged(new, k)
    changes.append(Change("zz/absent", None))  # removing what is not there changes nothing
    merged = written(index, changes)
    manifests = json.loads(merged)["manifests"]
    assert manifests == [expected[r] for r in sorted(expected)]
    again = parsed(merged)
    assert all(again.find(r) == e for r, e in expected.items())
    # A merge without changes writes the same bytes.
    assert written(again, []) == merged


def test_the_last_change_to_a_tag_wins_and_untagged_entries_are_listed_once() -> None:
    index = parsed(written(parsed(empty_index()), [Change("", untagged(7))]))
    assert index.has_untagged("sha256:" + f"{7:064x}")
    assert not index.has_untagged("sha256:" + f"{8:064x}")
    changes = [
        Change("six/1.0", tagged("six/1.0", 1)),
        Change("six/1.0", tagged("six/1.0", 2)),
        Change("", untagged(7)),  # listed already: not again
        Change("", untagged(8)),
        Change("", untagged(8)),
    ]
    manifests = json.loads(written(index, changes))["manifests"]
    assert manifests == [untagged(7), untagged(8), tagged("six/1.0", 2)]


def test_keys_are_read_off_the_line_as_a_parse_would_give_them() -> None:
    entries = [
        tagged("six/1.0"),
        untagged(3),
        untagged(4, **{"org.opencontainers.image.title": "x"}),  # ORAS: untagged, annotated
        {"annotations": {"a.first": "1", REF_NAME: "beta/2.0"}, "digest": "sha256:" + "1" * 64},
        {"annotations": {REF_NAME: 'we"ird/1.0'}, "digest": "sha256:" + "2" * 64},
        {"annotations": {REF_NAME: "caf\u00e9/1.0"}, "digest": "sha256:" + "3" * 64},
    ]
    for entry in entries:
        assert line_key(entry_line(entry)) == entry_key(entry), entry


def test_another_tools_file_is_sorted_in_memory_and_rewritten_in_the_line_shape() -> None:
    # skopeo or oras write index.json their own way: indented, in their order.
    oras_child = untagged(9, **{"org.opencontainers.image.title": "a.whl"})
    document = {
        "schemaVersion": 2,
        "manifests": [tagged("b/1.0", 2), oras_child, tagged("a:1.0", 1), tagged("latest", 5)],
        "annotations": {"org.example": "kept"},
    }
    foreign = json.dumps(document, indent=2).encode()
    assert LineIndex.parse(foreign) is None
    index = LineIndex.of_document(json.loads(foreign))
    assert index.find("b/1.0") == tagged("b/1.0", 2)
    assert index.find("a:1.0") == tagged("a:1.0", 1)  # read as it is
    assert index.has_untagged(oras_child["digest"])

    # Rewritten: sorted, the untagged and foreign entries and the other members kept,
    # the format-1 name renamed.
    renamed = LineIndex.of_document(json.loads(foreign), rename=True)
    data = written(renamed, [Change("c/1.0", tagged("c/1.0", 3))])
    index = parsed(data)
    document_after = json.loads(data)
    assert document_after["annotations"] == {"org.example": "kept"}
    assert document_after["mediaType"] == OCI_INDEX
    assert [e.get("annotations", {}).get(REF_NAME) for e in document_after["manifests"]] == [
        None,
        "a/1.0",
        "b/1.0",
        "c/1.0",
        "latest",
    ]
    assert index.find("a/1.0") == {**tagged("a:1.0", 1), "annotations": {REF_NAME: "a/1.0"}}


def test_where_both_formats_name_a_tag_the_format2_entry_stays() -> None:
    document = {"manifests": [tagged("six:1.0", 1), tagged("six/1.0", 2), tagged("six:_0.1", 3)]}
    index = LineIndex.of_document(document, rename=True)
    assert json.loads(written(index, []))["manifests"] == [
        tagged("six/1.0", 2),
        tagged("six:_0.1", 3),  # a format-1 fallback tag keeps its name
    ]


def test_an_empty_index_is_the_line_shape_and_valid_json() -> None:
    data = empty_index()
    assert json.loads(data) == {"manifests": [], "mediaType": OCI_INDEX, "schemaVersion": 2}
    index = parsed(data)
    assert len(index) == 0
    assert index.find("six/1.0") is None
    assert list(index.refs_with_prefix("six/")) == []
    assert written(index, [Change("six/1.0", None)]) == data
    assert LineIndex.parse(b"") is None
    assert LineIndex.parse(b'{"manifests":[\n') is None  # cut short
