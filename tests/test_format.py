"""The OCI format mapping: tags, platforms, manifests and indexes (pure, no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace

import pytest

from oci_pypi_sync import format as fmt
from oci_pypi_sync.format import Platform
from oci_pypi_sync.index.records import DistributionFile


def _file(filename: str, data: bytes = b"data", **kwargs: object) -> DistributionFile:
    return DistributionFile(
        filename=filename,
        url=f"https://files.index.test/{filename}",
        hashes=(("sha256", hashlib.sha256(data).hexdigest()),),
        **kwargs,  # type: ignore[arg-type]
    )


# --- tags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("1.17.0", "1.17.0"),
        ("1.0RC1", "1.0rc1"),
        ("2.1.0+cu118", "2.1.0-cu118"),
        ("1!2.0", "1_2.0"),
        ("1!2.0.post1.dev3+local.7", "1_2.0.post1.dev3-local.7"),
        ("v1.0", "1.0"),
    ],
)
def test_version_tag_maps_reversibly(version: str, tag: str) -> None:
    assert fmt.version_tag(version) == tag
    assert fmt.is_valid_tag(tag)
    assert fmt.tag_version(tag) == fmt.normalize_version(version)


def test_legacy_version_gets_a_fallback_tag_that_is_valid_and_distinct() -> None:
    tag = fmt.version_tag("0.1dev-r1234 beta")
    assert tag == "legacy-0.1dev.r1234.beta-9807b6d60e2c501f"
    assert fmt.is_valid_tag(tag)
    assert fmt.is_release_tag(tag)
    assert fmt.tag_version(tag) is None
    assert fmt.version_tag("0.1dev-r1234 Beta") != tag
    assert fmt.version_tag("0.1dev-r1234 beta") == tag


# The image-spec grammar of org.opencontainers.image.ref.name (annotations.md).
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"{_REF_COMPONENT}(?:/{_REF_COMPONENT})*")


@pytest.mark.parametrize(
    ("version", "tag"),
    [
        ("0.1dev-r1234", "legacy-0.1dev.r1234-092a02054fcead48"),
        ("1.0.0-SNAPSHOT", "legacy-1.0.0.SNAPSHOT-c9b7a7463b71794b"),
        ("1.0 beta", "legacy-1.0.beta-85987e011f15d1c3"),
        ("-1.0", "legacy-1.0-f006c4915bce75dd"),
        ("---", "legacy-cb3f91d54eee30e5"),
        ("x" * 300, "legacy-" + "x" * 100 + "-" + hashlib.sha256(b"x" * 300).hexdigest()[:16]),
    ],
)
def test_fallback_tags_are_valid_tags_and_ref_name_components(version: str, tag: str) -> None:
    assert fmt.version_tag(version) == tag
    assert fmt.is_valid_tag(tag)
    assert len(tag) <= fmt.MAX_TAG_LENGTH
    assert _REF_NAME.fullmatch(fmt.layout_ref_name("six", tag))
    assert fmt.parse_layout_ref_name(fmt.layout_ref_name("six", tag)) == ("six", tag)
    # format 1 wrote another fallback; the digest part is the same
    old = fmt.format1_version_tag(version)
    assert old.startswith("_")
    assert old.endswith(tag[-16:])
    assert not _REF_NAME.fullmatch(f"six/{old}")  # why format 2 changed it


def test_overlong_version_falls_back_below_128_characters() -> None:
    version = "1.0+" + ".".join(["abcdefgh"] * 20)
    tag = fmt.version_tag(version)
    assert len(tag) <= fmt.MAX_TAG_LENGTH
    assert tag.startswith(fmt.LEGACY_TAG_PREFIX)
    assert fmt.is_valid_tag(tag)
    assert tag.endswith(
        hashlib.sha256(str(fmt.normalize_version(version)).encode()).hexdigest()[:16]
    )


@pytest.mark.parametrize(
    ("tag", "release", "referrer"),
    [
        ("1.17.0", True, False),
        ("1_2.0-cu118", True, False),
        ("legacy-1.0.beta-85987e011f15d1c3", True, False),
        ("_0.1dev-r1234.092a02054fcead48", True, False),  # format 1
        ("latest", False, False),
        ("fragment-all", False, False),
        ("sha256-" + "ab" * 32, False, True),
        ("sha256-" + "ab" * 32 + ".sig", False, False),  # cosign's own tag: not a version
        ("1-" + "ab" * 32, True, False),  # a local version, not a referrers tag
    ],
)
def test_tag_kinds(tag: str, release: bool, referrer: bool) -> None:
    assert fmt.is_release_tag(tag) is release
    assert fmt.is_referrers_tag(tag) is referrer


def test_superseded_format1_tag_is_recognised_only_beside_its_format2_tag() -> None:
    old, new = fmt.format1_version_tag("0.1dev-r1"), fmt.version_tag("0.1dev-r1")
    assert fmt.is_superseded_tag(old, "0.1dev-r1", {old, new})
    assert not fmt.is_superseded_tag(old, "0.1dev-r1", {old})
    assert not fmt.is_superseded_tag(new, "0.1dev-r1", {old, new})
    assert not fmt.is_superseded_tag("1.0", "1.0", {"1.0"})


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("six/1.17.0", ("six", "1.17.0")),
        ("six:1.17.0", ("six", "1.17.0")),  # format 1
        ("oci-pypi.catalog/latest", ("oci-pypi.catalog", "latest")),
        ("example.com/a/b:v1", ("example.com/a/b", "v1")),
        ("latest", None),  # skopeo's default ref: not a repository's tag
        ("six/", None),
        (":1.0", None),
        ("six/_bad tag", None),
    ],
)
def test_layout_ref_names(name: str, parsed: tuple[str, str] | None) -> None:
    assert fmt.parse_layout_ref_name(name) == parsed


def test_layout_ref_name_is_addressable_by_every_client() -> None:
    name = fmt.layout_ref_name("six", "1.17.0")
    assert name == "six/1.17.0"
    assert ":" not in name  # oras splits LAYOUT:REF at the last colon, skopeo at the first
    assert fmt.is_format1_ref_name("six:1.17.0")
    assert not fmt.is_format1_ref_name(name)
    assert not fmt.is_format1_ref_name("example.com/a:v1")


def test_non_version_tags_never_read_as_versions() -> None:
    assert fmt.tag_version("catalog") is None
    assert fmt.tag_version("latest") is None


# --- filenames ----------------------------------------------------------------


def test_parse_wheel_filename_collects_tags() -> None:
    name = fmt.parse_filename(
        "numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "numpy"
    )
    assert name.is_wheel
    assert name.version == "2.1.0"
    assert name.python_tags == ("cp312",)
    assert name.platform_tags == ("manylinux2014_x86_64", "manylinux_2_17_x86_64")


def test_parse_legacy_sdist_filename_uses_the_project_name() -> None:
    name = fmt.parse_filename("Foo.Bar-1.0-beta.tar.gz", "foo-bar")
    assert name.packagetype == "sdist"
    assert name.version == "1.0b0"  # valid PEP 440 once the name is known, normalised
    assert fmt.parse_filename("foo-0.1dev-r1234.tar.gz", "foo").version == "0.1dev-r1234"
    assert fmt.parse_filename("foo-0.3.tar.bz2", "foo").version == "0.3"


@pytest.mark.parametrize("filename", ["foo-1.0-py2.7.egg", "foo-1.0.win32.exe", "foo.rpm"])
def test_unsupported_files_are_refused_by_name(filename: str) -> None:
    with pytest.raises(fmt.UnsupportedFileError, match="foo"):
        fmt.parse_filename(filename, "foo")


# --- platforms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("manylinux_2_17_x86_64", [Platform("linux", "amd64")]),
        ("manylinux2014_aarch64", [Platform("linux", "arm64")]),
        ("musllinux_1_2_armv7l", [Platform("linux", "arm", "v7")]),
        ("manylinux1_i686", [Platform("linux", "386")]),
        ("linux_ppc64le", [Platform("linux", "ppc64le")]),
        ("manylinux_2_17_s390x", [Platform("linux", "s390x")]),
        ("musllinux_1_1_riscv64", [Platform("linux", "riscv64")]),
        ("win32", [Platform("windows", "386")]),
        ("win_amd64", [Platform("windows", "amd64")]),
        ("win_arm64", [Platform("windows", "arm64")]),
        ("macosx_14_0_arm64", [Platform("darwin", "arm64", None, "14.0")]),
        ("macosx_10_9_x86_64", [Platform("darwin", "amd64", None, "10.9")]),
        (
            "macosx_10_13_universal2",
            [
                Platform("darwin", "amd64", None, "10.13"),
                Platform("darwin", "arm64", None, "10.13"),
            ],
        ),
        ("macosx_10_6_intel", []),
        ("macosx_10_4_fat", []),
        ("android_21_arm64_v8a", []),
        ("ios_13_0_arm64_iphoneos", []),
        ("any", []),
        ("linux_sparc64", []),
    ],
)
def test_tag_platforms(tag: str, expected: list[Platform]) -> None:
    assert list(fmt.tag_platforms(tag)) == expected


def test_wheel_platforms_dedupes_and_keeps_lowest_macos_version() -> None:
    platforms = fmt.wheel_platforms(
        ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "macosx_11_0_arm64", "macosx_12_0_arm64"]
    )
    assert platforms == (
        Platform("darwin", "arm64", None, "11.0"),
        Platform("linux", "amd64"),
    )


# --- artifacts ----------------------------------------------------------------


def test_file_manifest_has_the_file_as_layer_zero_and_metadata_as_layer_one() -> None:
    wheel = _file(
        "six-1.17.0-py2.py3-none-any.whl",
        b"wheel bytes",
        requires_python=">=2.7",
        upload_time="2024-12-04T17:35:26.475151Z",
    )
    artifact = fmt.build_file_artifact(wheel, "six", 11, b"Metadata-Version: 2.1\n")
    manifest = json.loads(artifact.manifest.data)
    assert manifest["mediaType"] == fmt.OCI_MANIFEST
    assert manifest["artifactType"] == fmt.DISTRIBUTION_ARTIFACT
    assert manifest["config"] == {
        "mediaType": fmt.OCI_EMPTY,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    layer, metadata = manifest["layers"]
    assert layer["digest"] == "sha256:" + hashlib.sha256(b"wheel bytes").hexdigest()
    assert layer["size"] == 11
    assert layer["mediaType"] == fmt.WHEEL_LAYER
    assert layer["annotations"] == {fmt.TITLE: "six-1.17.0-py2.py3-none-any.whl"}
    assert metadata["digest"] == fmt.sha256_digest(b"Metadata-Version: 2.1\n")
    assert metadata["annotations"][fmt.TITLE] == "six-1.17.0-py2.py3-none-any.whl.metadata"
    (entry,) = artifact.entries
    assert entry.platform is None
    assert entry.digest == fmt.sha256_digest(artifact.manifest.data)
    assert entry.annotations[fmt.A_REQUIRES_PYTHON] == ">=2.7"
    assert entry.annotations[fmt.A_UPLOAD_TIME] == "2024-12-04T17:35:26.475151Z"
    assert entry.annotations[fmt.A_PYTHON_TAGS] == "py2.py3"
    assert entry.annotations[fmt.A_SIZE] == "11"


def test_universal2_wheel_is_listed_once_per_architecture_with_one_manifest() -> None:
    wheel = _file("numpy-2.1.0-cp312-cp312-macosx_10_13_universal2.whl")
    artifact = fmt.build_file_artifact(wheel, "numpy", 4)
    assert [str(e.platform) for e in artifact.entries] == ["darwin/amd64", "darwin/arm64"]
    assert len({e.digest for e in artifact.entries}) == 1


def test_yank_lives_on_the_index_entry_not_the_manifest() -> None:
    plain = fmt.build_file_artifact(_file("foo-1.0.tar.gz"), "foo", 4)
    yanked = fmt.build_file_artifact(
        _file("foo-1.0.tar.gz", yanked=True, yanked_reason="broken <build>"), "foo", 4
    )
    assert plain.manifest.data == yanked.manifest.data
    assert yanked.entries[0].annotations[fmt.A_YANKED] == "true"
    assert yanked.entries[0].annotations[fmt.A_YANKED_REASON] == "broken <build>"
    assert fmt.A_YANKED not in plain.entries[0].annotations


def test_release_index_is_deterministic_whatever_the_input_order() -> None:
    a = fmt.build_file_artifact(_file("foo-1.0-py3-none-any.whl", b"a"), "foo", 1)
    b = fmt.build_file_artifact(_file("foo-1.0.tar.gz", b"b"), "foo", 1)
    first = fmt.build_release_index("Foo", "1.0", [*a.entries, *b.entries])
    second = fmt.build_release_index("foo", "1.0", [*b.entries, *a.entries, *a.entries])
    assert first.data == second.data
    index = json.loads(first.data)
    assert index["artifactType"] == fmt.RELEASE_ARTIFACT
    assert index["annotations"][fmt.OCI_VERSION] == "1.0"
    assert [m["annotations"][fmt.A_FILENAME] for m in index["manifests"]] == [
        "foo-1.0-py3-none-any.whl",
        "foo-1.0.tar.gz",
    ]
    # no title on entries: a file-store client (oras pull) names files by the layers' titles
    assert all(fmt.TITLE not in m["annotations"] for m in index["manifests"])
    assert index["annotations"][fmt.A_FORMAT] == "2"
    assert b" " not in first.data  # canonical: no insignificant whitespace


def test_merge_keeps_old_files_and_replaces_changed_ones() -> None:
    old_wheel = fmt.build_file_artifact(_file("foo-1.0-py3-none-any.whl", b"a"), "foo", 1)
    old_sdist = fmt.build_file_artifact(_file("foo-1.0.tar.gz", b"b"), "foo", 1)
    yanked_sdist = fmt.build_file_artifact(_file("foo-1.0.tar.gz", b"b", yanked=True), "foo", 1)
    merged = fmt.merge_entries([*old_wheel.entries, *old_sdist.entries], yanked_sdist.entries)
    titles = sorted(fmt.entry_filename(e) or "" for e in merged)
    assert titles == ["foo-1.0-py3-none-any.whl", "foo-1.0.tar.gz"]
    sdist_entry = next(e for e in merged if fmt.entry_filename(e) == "foo-1.0.tar.gz")
    assert sdist_entry.annotations[fmt.A_YANKED] == "true"


def test_parse_release_index_round_trips() -> None:
    artifact = fmt.build_file_artifact(_file("foo-1.0-cp312-cp312-win_amd64.whl", b"a"), "foo", 1)
    index = fmt.build_release_index("foo", "1.0", artifact.entries)
    _, entries = fmt.parse_release_index(index.data)
    assert entries == artifact.entries
    rebuilt = fmt.build_release_index("foo", "1.0", entries)
    assert rebuilt.data == index.data


# --- referrers: provenance and Sigstore bundles -------------------------------------


def _subject() -> fmt.Descriptor:
    artifact = fmt.build_file_artifact(_file("demo-1.0.tar.gz"), "demo", 4)
    return artifact.manifest.descriptor


def test_the_provenance_referrer_points_at_the_file_manifest_and_holds_the_bytes() -> None:
    subject = _subject()
    provenance = b'{"attestation_bundles":[],"version":1}'
    referrer = fmt.provenance_referrer(subject, "demo-1.0.tar.gz", provenance)
    manifest = json.loads(referrer.manifest.data)
    assert manifest == {
        "schemaVersion": 2,
        "mediaType": fmt.OCI_MANIFEST,
        "artifactType": "application/vnd.oci-pypi.provenance.v1",
        "config": fmt.empty_config().descriptor.to_json(),
        "layers": [
            {
                "mediaType": "application/vnd.pypi.integrity.v1+json",
                "digest": "sha256:" + hashlib.sha256(provenance).hexdigest(),
                "size": len(provenance),
                "annotations": {fmt.TITLE: "demo-1.0.tar.gz.provenance"},
            }
        ],
        "subject": {
            "mediaType": fmt.OCI_MANIFEST,
            "digest": subject.digest,
            "size": subject.size,
        },
        "annotations": {fmt.A_FORMAT: fmt.FORMAT_VERSION},
    }
    assert referrer.manifest.data == fmt.canonical_json(manifest)
    assert referrer.layer.data == provenance
    assert fmt.provenance_annotations(referrer) == {
        fmt.A_PROVENANCE: referrer.manifest.descriptor.digest,
        fmt.A_PROVENANCE_SHA256: hashlib.sha256(provenance).hexdigest(),
    }
    parsed = fmt.parse_referrer(referrer.manifest.data)
    assert parsed.subject.digest == subject.digest
    assert parsed.artifact_type == fmt.PROVENANCE_ARTIFACT
    # deterministic: the same inputs, the same digest
    again = fmt.provenance_referrer(subject, "demo-1.0.tar.gz", provenance)
    assert again.manifest.descriptor.digest == referrer.manifest.descriptor.digest


def test_a_bundle_referrer_follows_the_cosign_conventions() -> None:
    referrer = fmt.bundle_referrer(_subject(), "demo-1.0.tar.gz", b"{}", "https://slsa.dev/p/v1")
    manifest = json.loads(referrer.manifest.data)
    assert manifest["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert manifest["layers"][0]["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert manifest["annotations"] == {
        "dev.sigstore.bundle.content": "dsse-envelope",
        "dev.sigstore.bundle.predicateType": "https://slsa.dev/p/v1",
    }
    entry = referrer.descriptor.to_json()
    assert entry["artifactType"] == fmt.SIGSTORE_BUNDLE
    assert entry["annotations"] == manifest["annotations"]


def test_referrers_tags_name_the_subject_digest_and_never_a_version() -> None:
    digest = "sha256:" + "ab" * 32
    tag = fmt.referrers_tag(digest)
    assert tag == "sha256-" + "ab" * 32
    assert fmt.is_valid_tag(tag)
    assert fmt.is_referrers_tag(tag)
    assert not fmt.is_referrers_tag("sha256-abc")
    assert not fmt.is_referrers_tag("1.0")
    assert fmt.tag_version(tag) is None


def test_referrers_merge_as_a_set_keeps_foreign_entries_and_drops_replaced_ones() -> None:
    subject = _subject()
    old = fmt.provenance_referrer(subject, "demo-1.0.tar.gz", b"{}")
    new = fmt.provenance_referrer(subject, "demo-1.0.tar.gz", b"{ }")
    bundle = fmt.bundle_referrer(subject, "demo-1.0.tar.gz", b"{}", "p")
    foreign = {
        "mediaType": fmt.OCI_MANIFEST,
        "digest": "sha256:" + "0" * 64,
        "size": 9,
        "artifactType": "application/vnd.example+json",
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    }
    first = fmt.merge_referrers([foreign], [old.descriptor.to_json(), bundle.descriptor.to_json()])
    second = fmt.merge_referrers(
        first, [new.descriptor.to_json()], replaces=[old.manifest.descriptor.digest]
    )
    digests = [e["digest"] for e in second]
    assert old.manifest.descriptor.digest not in digests
    assert set(digests) == {
        foreign["digest"],
        new.manifest.descriptor.digest,
        bundle.manifest.descriptor.digest,
    }
    assert foreign in second
    # the order is the set's, not the history's
    reordered = fmt.merge_referrers(
        [], [bundle.descriptor.to_json(), new.descriptor.to_json(), foreign]
    )
    assert fmt.build_referrers_index(second).data == fmt.build_referrers_index(reordered).data
    index = json.loads(fmt.build_referrers_index(second).data)
    assert index["mediaType"] == fmt.OCI_INDEX
    assert fmt.parse_referrers_index(fmt.build_referrers_index(second).data) == second
    assert fmt.merge_referrers(second, [new.descriptor.to_json()]) == second


def test_a_refreshed_entry_keeps_its_provenance_annotations() -> None:
    from oci_pypi_sync.format.reconcile import refresh_entry

    file = _file("demo-1.0.tar.gz")
    artifact = fmt.build_file_artifact(file, "demo", 4)
    notes = {**artifact.entries[0].annotations, fmt.A_PROVENANCE: "sha256:" + "1" * 64}
    entry = fmt.Descriptor.from_json({**artifact.entries[0].to_json(), "annotations": notes})
    yanked = _file("demo-1.0.tar.gz", yanked=True)
    refreshed = refresh_entry(entry, yanked, fmt.parse_filename("demo-1.0.tar.gz", "demo"))
    assert refreshed.annotations[fmt.A_YANKED] == "true"
    assert refreshed.annotations[fmt.A_PROVENANCE] == "sha256:" + "1" * 64


# --- formats 1 and 2 ---------------------------------------------------------------


def _format1_entry(entry: fmt.Descriptor) -> fmt.Descriptor:
    notes = dict(entry.annotations)
    notes[fmt.TITLE] = notes.pop(fmt.A_FILENAME)
    return replace(entry, annotations=notes)


def _go_encoded(body: bytes) -> bytes:
    """An index as skopeo 1.9 writes it: Go struct order, HTML escaping, no artifactType."""
    data = json.loads(body)

    def entry(item: dict[str, object]) -> dict[str, object]:
        keys = ("mediaType", "digest", "size", "annotations", "platform")
        return {key: item[key] for key in keys if key in item}

    document = {
        "schemaVersion": data["schemaVersion"],
        "mediaType": data["mediaType"],
        "manifests": [entry(item) for item in data["manifests"]],
        "annotations": data["annotations"],
    }
    text = json.dumps(document, separators=(",", ":"))
    return text.replace(">", "\\u003e").replace("<", "\\u003c").replace("&", "\\u0026").encode()


def _release() -> fmt.Blob:
    wheel = fmt.build_file_artifact(
        _file("foo-1.0-cp312-cp312-macosx_11_0_universal2.whl", b"a", requires_python=">=3.8"),
        "foo",
        1,
    )
    sdist = fmt.build_file_artifact(
        _file("foo-1.0.tar.gz", b"b", requires_python=">=3.8"), "foo", 1
    )
    return fmt.build_release_index("foo", "1.0", [*wheel.entries, *sdist.entries])


def test_an_index_re_encoded_by_another_tool_keeps_its_content_and_gets_its_bytes_back() -> None:
    release = _release()
    encoded = _go_encoded(release.data)
    assert encoded != release.data
    assert b"\\u003e=3.8" in encoded
    assert b"artifactType" not in encoded
    assert fmt.release_index_content_equal(encoded, release.data)
    index = fmt.read_release_index(encoded)
    assert (index.format, index.project, index.version) == ("2", "foo", "1.0")
    assert index.canonical().data == release.data


def test_content_differs_when_an_entry_changes() -> None:
    release = _release()
    data = json.loads(release.data)
    data["manifests"][0]["annotations"][fmt.A_YANKED] = "true"
    assert not fmt.release_index_content_equal(fmt.canonical_json(data), release.data)
    assert not fmt.release_index_content_equal(b"not json", release.data)


def test_a_format1_index_is_read_and_rewritten_in_format2() -> None:
    release = _release()
    _, entries = fmt.parse_release_index(release.data)
    old = json.loads(release.data)
    old["annotations"][fmt.A_FORMAT] = "1"
    old["manifests"] = [_format1_entry(e).to_json() for e in entries]
    body = fmt.canonical_json(old)
    index = fmt.read_release_index(body)
    assert index.format == "1"
    assert [fmt.entry_filename(e) for e in index.entries] == [
        fmt.entry_filename(e) for e in entries
    ]
    assert index.canonical().data == release.data


@pytest.mark.parametrize(
    "annotations",
    [{fmt.A_FORMAT: "3", fmt.A_PROJECT: "foo", fmt.OCI_VERSION: "1.0"}, {fmt.A_FORMAT: "2"}],
)
def test_an_index_of_an_unknown_format_is_refused(annotations: dict[str, str]) -> None:
    data = json.loads(_release().data)
    data["annotations"] = annotations
    with pytest.raises(ValueError):
        fmt.read_release_index(fmt.canonical_json(data))


def test_file_manifests_keep_format1_bytes_except_renamed_media_types() -> None:
    wheel = json.loads(
        fmt.build_file_artifact(_file("foo-1.0-py3-none-any.whl"), "foo", 4).manifest.data
    )
    assert wheel["annotations"][fmt.A_FORMAT] == "1"
    bz2 = json.loads(fmt.build_file_artifact(_file("foo-1.0.tar.bz2"), "foo", 4).manifest.data)
    assert bz2["layers"][0]["mediaType"] == "application/vnd.oci-pypi.sdist.v1.tar.bzip2"
    assert bz2["annotations"][fmt.A_FORMAT] == "2"
    xz = fmt.build_file_artifact(_file("foo-1.0.tar.xz"), "foo", 4)
    assert json.loads(xz.manifest.data)["layers"][0]["mediaType"] == (
        "application/vnd.oci-pypi.sdist.v1.tar.xz"
    )


def test_a_format1_bzip2_manifest_is_rewritten_with_its_layers_kept() -> None:
    new = fmt.build_file_artifact(_file("foo-1.0.tar.bz2"), "foo", 4).manifest.data
    old = json.loads(new)
    old["layers"][0]["mediaType"] = "application/vnd.oci-pypi.sdist.v1.tar+bzip2"
    old["annotations"][fmt.A_FORMAT] = "1"
    assert fmt.format2_file_manifest(fmt.canonical_json(old)) == new
    assert fmt.format2_file_manifest(new) is None
    entry = fmt.build_file_artifact(_file("foo-1.0.tar.bz2"), "foo", 4).entries[0]
    assert fmt.is_format1_entry_of_renamed_type(_format1_entry(entry))
    assert not fmt.is_format1_entry_of_renamed_type(entry)
