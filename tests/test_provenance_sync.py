"""Sync with PEP 740 provenance: real files and their real provenance, into a registry and a layout.

A local index replays the files and provenance objects of
``tests/data/provenance`` (PEP 691 and the Integrity API). What the sync
leaves is read back independently: tags and manifests over the
distribution API, ``index.json`` and blobs hashed from disk, and
``oras discover`` when ``../shared/bin/oras`` is there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_helpers import cli_command, cli_env, get_manifest, run_cli, tags
from fixture_index import FixtureFile, FixtureIndex, make_sdist, serve_index
from packaging.requirements import Requirement
from provenance_data import (
    Attested,
    flipped_signature,
    github_sdist,
    gitlab_sdist,
    google_sdist,
    grown_github_provenance,
    sigstore_root,
)
from registry_server import RegistryServer, free_port, running_registry

from oci_pypi_sync import format as fmt
from oci_pypi_sync.engine.run import SyncOptions, sync
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.ops.copy import copy
from oci_pypi_sync.provenance.policy import ProvenanceOptions
from oci_pypi_sync.provenance.publishers import parse_pins
from oci_pypi_sync.stores.layout import LayoutStore
from oci_pypi_sync.stores.protocols import Store
from oci_pypi_sync.stores.tarball import open_tar_store
from oci_pypi_sync.stores.targets import open_store, parse_target

pytestmark = pytest.mark.registry

ORAS = Path(__file__).resolve().parents[1].parent.parent / "shared" / "bin" / "oras"


def tag_refs(store: LayoutStore) -> dict[str, dict[str, Any]]:
    """The layout's tags as ``repo:tag`` -> their ``index.json`` entry."""
    return {f"{repo}:{tag}": entry for (repo, tag), entry in store.tags().items()}


def oras_binary() -> str | None:
    for candidate in (os.environ.get("OCI_PYPI_ORAS"), str(ORAS), "/work/shared/bin/oras"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("oras")


def served(attested: Attested, provenance: bytes | None = None) -> FixtureFile:
    return FixtureFile(
        attested.filename,
        attested.data,
        provenance=attested.provenance if provenance is None else provenance,
    )


@pytest.fixture
def index() -> Iterator[FixtureIndex]:
    fixture = FixtureIndex()
    fixture.add("pypi-attestations", served(github_sdist()))
    fixture.add("gcb-attestation-test", served(google_sdist()))
    fixture.add("gitlab-oidc-project", served(gitlab_sdist()))
    fixture.add("plain", make_sdist("plain", "1.0"))
    with serve_index(fixture):
        yield fixture


async def run_sync(index: FixtureIndex, store: Store, *projects: str, **provenance: Any) -> Any:
    options = SyncOptions(provenance=ProvenanceOptions(**provenance))
    async with IndexClient(index.url) as client:
        return await sync([Requirement(p) for p in projects], client, store, options)


def entry_of(index_body: bytes, filename: str) -> dict[str, Any]:
    entries = json.loads(index_body)["manifests"]
    found: dict[str, Any] = next(e for e in entries if e["annotations"][fmt.A_FILENAME] == filename)
    return found


def registry_blob(registry: RegistryServer, name: str, digest: str) -> bytes:
    response = httpx.get(f"{registry.url}/v2/{name}/blobs/{digest}", timeout=10)
    response.raise_for_status()
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == digest
    return response.content


def oras_discover(*args: str) -> dict[str, Any]:
    oras = oras_binary()
    if oras is None:
        pytest.skip("oras is not installed (../shared/bin/oras)")
    result = subprocess.run(
        [oras, "discover", "--format", "json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def discovered_types(document: dict[str, Any]) -> list[str]:
    return sorted(
        r["artifactType"] for r in document.get("referrers") or document.get("manifests") or []
    )


# --- into a registry ---------------------------------------------------------------


async def test_provenance_lands_in_the_registry_as_referrers(
    index: FixtureIndex, registry: RegistryServer
) -> None:
    store = open_store(parse_target(f"{registry.host}/prov-a"))
    try:
        report = await run_sync(
            index, store, "pypi-attestations", "gcb-attestation-test", "gitlab-oidc-project"
        )
    finally:
        await store.aclose()
    assert not report.failed, report
    by_file = {f.filename: f.provenance for f in report.files}
    assert by_file["pypi_attestations-0.0.19.tar.gz"].publishers == (
        "github:trailofbits/pypi-attestations@release.yml",
    )
    assert by_file["gcb_attestation_test-0.0.0.tar.gz"].publishers == (
        "google:919436158236-compute@developer.gserviceaccount.com",
    )
    assert by_file["gitlab_oidc_project-0.0.3.tar.gz"].status == "stored"
    assert index.provenance_requests[0].startswith("application/vnd.pypi.integrity.v1+json")

    attested = github_sdist()
    name = "prov-a/pypi-attestations"
    _, release = get_manifest(registry.url, name, "0.0.19")
    entry = entry_of(release, attested.filename)
    subject = entry["digest"]
    fallback = fmt.referrers_tag(subject)
    assert tags(registry.url, name) == ["0.0.19", fallback]
    _, referrers_body = get_manifest(registry.url, name, fallback)
    referrers = json.loads(referrers_body)["manifests"]
    assert sorted(r["artifactType"] for r in referrers) == [
        fmt.SIGSTORE_BUNDLE,
        fmt.PROVENANCE_ARTIFACT,
    ]
    provenance_entry = next(r for r in referrers if r["artifactType"] == fmt.PROVENANCE_ARTIFACT)
    assert entry["annotations"][fmt.A_PROVENANCE] == provenance_entry["digest"]
    _, manifest_body = get_manifest(registry.url, name, provenance_entry["digest"])
    manifest = json.loads(manifest_body)
    assert manifest["subject"]["digest"] == subject
    stored = registry_blob(registry, name, manifest["layers"][0]["digest"])
    assert stored == attested.provenance  # byte for byte as the index served it
    assert entry["annotations"][fmt.A_PROVENANCE_SHA256] == hashlib.sha256(stored).hexdigest()
    bundle_entry = next(r for r in referrers if r["artifactType"] == fmt.SIGSTORE_BUNDLE)
    assert bundle_entry["annotations"]["dev.sigstore.bundle.predicateType"] == (
        "https://docs.pypi.org/attestations/publish/v1"
    )

    discovered = oras_discover("--plain-http", f"{registry.host}/{name}@{subject}")
    assert discovered_types(discovered) == [fmt.SIGSTORE_BUNDLE, fmt.PROVENANCE_ARTIFACT]


async def test_a_layout_holds_the_same_referrers_and_oras_finds_them(
    index: FixtureIndex, registry: RegistryServer, tmp_path: Path
) -> None:
    layout = LayoutStore(tmp_path / "layout")
    report = await run_sync(index, layout, "pypi-attestations")
    assert not report.failed
    registry_store = open_store(parse_target(f"{registry.host}/prov-b"))
    try:
        registry_report = await run_sync(index, registry_store, "pypi-attestations")
    finally:
        await registry_store.aclose()
    assert [r.digest for r in report.releases] == [r.digest for r in registry_report.releases]

    refs = tag_refs(layout)
    release = layout.blob_path(refs["pypi-attestations:0.0.19"]["digest"]).read_bytes()
    subject = entry_of(release, github_sdist().filename)["digest"]
    fallback = refs[f"pypi-attestations:{fmt.referrers_tag(subject)}"]
    _, registry_fallback = get_manifest(
        registry.url, "prov-b/pypi-attestations", fmt.referrers_tag(subject)
    )
    # the same digests in a layout as in a registry
    assert fallback["digest"] == "sha256:" + hashlib.sha256(registry_fallback).hexdigest()
    for entry in json.loads(layout.blob_path(fallback["digest"]).read_bytes())["manifests"]:
        body = layout.blob_path(entry["digest"]).read_bytes()
        assert hashlib.sha256(body).hexdigest() == entry["digest"].removeprefix("sha256:")
    listed = [e for e in layout.read_index()["manifests"] if e["digest"] == subject]
    assert listed  # the subject, untagged, for ORAS to resolve
    assert not listed[0].get("annotations")

    discovered = oras_discover("--oci-layout", f"{tmp_path / 'layout'}@{subject}")
    assert discovered_types(discovered) == [fmt.SIGSTORE_BUNDLE, fmt.PROVENANCE_ARTIFACT]


async def test_a_file_without_provenance_is_mirrored_under_mirror_but_not_require(
    index: FixtureIndex, tmp_path: Path
) -> None:
    mirror = await run_sync(index, LayoutStore(tmp_path / "m"), "plain")
    assert not mirror.failed
    assert mirror.files[0].provenance is not None
    assert mirror.files[0].provenance.status == "none"

    layout = LayoutStore(tmp_path / "r")
    required = await run_sync(index, layout, "plain", "pypi-attestations", policy="require")
    outcome = {f.filename: f for f in required.files}
    assert outcome["plain-1.0.tar.gz"].action == "failed"
    assert "serves no provenance" in (outcome["plain-1.0.tar.gz"].error or "")
    assert outcome["pypi_attestations-0.0.19.tar.gz"].action == "pushed"
    assert "plain:1.0" not in tag_refs(layout)
    assert "pypi-attestations:0.0.19" in tag_refs(layout)

    asked = len(index.provenance_requests)
    ignored = await run_sync(
        index, LayoutStore(tmp_path / "i"), "pypi-attestations", policy="ignore"
    )
    assert ignored.files[0].provenance is None
    assert len(index.provenance_requests) == asked  # not even fetched


@pytest.mark.parametrize(
    ("variant", "error"),
    [
        ("tampered", "does not verify"),
        ("other-digest", "is about 'gcb_attestation_test-0.0.0.tar.gz'"),
        ("wrong-pin", "not the trusted publisher"),
    ],
)
async def test_a_file_whose_provenance_fails_is_not_mirrored(
    variant: str, error: str, tmp_path: Path
) -> None:
    attested = github_sdist()
    provenance = {
        "tampered": flipped_signature(attested.provenance),
        "other-digest": google_sdist().provenance,
        "wrong-pin": attested.provenance,
    }[variant]
    fixture = FixtureIndex()
    fixture.add("pypi-attestations", served(attested, provenance))
    pins = parse_pins(
        ["pypi-attestations=github:pypa/sampleproject"] if variant == "wrong-pin" else []
    )
    layout = LayoutStore(tmp_path / "layout")
    with serve_index(fixture):
        report = await run_sync(fixture, layout, "pypi-attestations", trusted=pins)
    (result,) = report.files
    assert result.action == "failed"
    assert error in (result.error or "")
    assert tag_refs(layout) == {}  # nothing of it was written
    assert not (tmp_path / "layout" / "blobs" / "sha256" / attested.sha256).exists()


async def test_provenance_that_grows_is_picked_up_and_unchanged_provenance_writes_nothing(
    tmp_path: Path,
) -> None:
    attested = github_sdist()
    fixture = FixtureIndex()
    fixture.add("pypi-attestations", served(attested))
    layout = LayoutStore(tmp_path / "layout")
    with serve_index(fixture):
        first = await run_sync(fixture, layout, "pypi-attestations")
        assert first.files[0].provenance is not None
        assert first.files[0].provenance.attestations == 1
        before = layout.read_index()

        again = await run_sync(fixture, layout, "pypi-attestations")
        assert again.files[0].provenance is not None
        assert again.files[0].provenance.status == "unchanged"
        assert [r.action for r in again.releases] == ["unchanged"]
        assert layout.read_index() == before

        fixture.projects["pypi-attestations"][0].provenance = grown_github_provenance()
        grown = await run_sync(fixture, layout, "pypi-attestations")
    result = grown.files[0]
    assert result.provenance is not None
    assert (result.provenance.status, result.provenance.attestations) == ("stored", 2)
    assert [r.action for r in grown.releases] == ["pushed"]
    refs = tag_refs(layout)
    release = layout.blob_path(refs["pypi-attestations:0.0.19"]["digest"]).read_bytes()
    entry = entry_of(release, attested.filename)
    fallback = refs[f"pypi-attestations:{fmt.referrers_tag(entry['digest'])}"]
    listed = json.loads(layout.blob_path(fallback["digest"]).read_bytes())["manifests"]
    provenance = [e for e in listed if e["artifactType"] == fmt.PROVENANCE_ARTIFACT]
    bundles = [e for e in listed if e["artifactType"] == fmt.SIGSTORE_BUNDLE]
    assert [e["digest"] for e in provenance] == [entry["annotations"][fmt.A_PROVENANCE]]
    assert len(bundles) == 2  # the first attestation's bundle, unchanged, and the new one
    predicates = sorted(b["annotations"]["dev.sigstore.bundle.predicateType"] for b in bundles)
    assert predicates == [
        "https://docs.pypi.org/attestations/publish/v1",
        "https://slsa.dev/provenance/v1",
    ]


async def test_referrers_survive_copy_through_a_tar_into_a_fresh_registry(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = LayoutStore(tmp_path / "layout")
    report = await run_sync(index, layout, "pypi-attestations", "gcb-attestation-test")
    assert not report.failed
    tar_path = tmp_path / "mirror.tar"
    tar = open_tar_store(tar_path, writable=True)
    copied = await copy(layout, tar)
    await tar.aclose()
    assert not copied.failed
    source_tags = {ref: entry["digest"] for ref, entry in tag_refs(layout).items()}

    with running_registry(tmp_path / "fresh") as fresh:
        destination = open_store(parse_target(f"{fresh.host}/air"))
        source = open_tar_store(tar_path, writable=False)
        try:
            result = await copy(source, destination)
        finally:
            await destination.aclose()
        assert not result.failed, result
        for ref, digest in source_tags.items():
            repo, _, tag = ref.rpartition(":")
            assert get_manifest(fresh.url, f"air/{repo}", tag)[0] == digest
        release = layout.blob_path(source_tags["pypi-attestations:0.0.19"]).read_bytes()
        subject = entry_of(release, github_sdist().filename)["digest"]
        _, fallback = get_manifest(fresh.url, "air/pypi-attestations", fmt.referrers_tag(subject))
        for entry in json.loads(fallback)["manifests"]:
            digest, body = get_manifest(fresh.url, "air/pypi-attestations", entry["digest"])
            assert json.loads(body)["subject"]["digest"] == subject
        discovered = oras_discover("--plain-http", f"{fresh.host}/air/pypi-attestations@{subject}")
        assert discovered_types(discovered) == [fmt.SIGSTORE_BUNDLE, fmt.PROVENANCE_ARTIFACT]


async def test_copy_merges_a_fallback_tag_the_destination_already_has(
    index: FixtureIndex, tmp_path: Path
) -> None:
    grown = LayoutStore(tmp_path / "grown")
    fixture = FixtureIndex()
    fixture.add("pypi-attestations", served(github_sdist(), grown_github_provenance()))
    with serve_index(fixture):
        await run_sync(fixture, grown, "pypi-attestations")
    first = LayoutStore(tmp_path / "first")
    await run_sync(index, first, "pypi-attestations")
    # the destination holds the first provenance; the source the grown one
    result = await copy(grown, first)
    assert not result.failed
    (tag,) = [t for t in await first.list_tags("pypi-attestations") if fmt.is_referrers_tag(t)]
    merged = await first.get_manifest("pypi-attestations", tag)
    assert merged is not None
    listed = {e["digest"] for e in json.loads(merged.body)["manifests"]}
    grown_listed = await grown.get_manifest("pypi-attestations", tag)
    assert grown_listed is not None
    assert {e["digest"] for e in json.loads(grown_listed.body)["manifests"]} <= listed


def test_the_cli_reports_provenance_and_refuses_under_require(
    index: FixtureIndex, tmp_path: Path
) -> None:
    env = cli_env(tmp_path / "home")
    layout = tmp_path / "layout"
    result = run_cli(
        [
            "sync",
            "pypi-attestations",
            "plain",
            "--index-url",
            index.url,
            "--to",
            f"oci:{layout}",
            "--provenance",
            "require",
            "--trusted-publisher",
            "pypi-attestations=github:trailofbits/pypi-attestations@release.yml",
            "--json",
        ],
        env,
        timeout=120,
    )
    assert result.returncode == 1, result.describe()
    files = {f["filename"]: f for f in result.json()["files"]}
    assert files["pypi_attestations-0.0.19.tar.gz"]["provenance"] == {
        "status": "stored",
        "publishers": ["github:trailofbits/pypi-attestations@release.yml"],
        "attestations": 1,
    }
    assert files["plain-1.0.tar.gz"]["action"] == "failed"
    assert "error: plain-1.0.tar.gz: the index serves no provenance" in result.stderr

    bad = run_cli(
        [
            "sync",
            "plain",
            "--index-url",
            index.url,
            "--to",
            f"oci:{layout}",
            "--trusted-publisher",
            "plain",
        ],
        env,
    )
    assert bad.returncode == 2
    assert "PROJECT=PUBLISHER" in bad.stderr

    (tmp_path / "root.json").write_text("{}")
    for command in (
        ["sync", "plain", "--index-url", index.url, "--to", f"oci:{layout}"],
        ["verify", f"oci:{layout}", "--provenance"],
    ):
        refused = run_cli([*command, "--trusted-root", str(tmp_path / "root.json")], env)
        assert refused.returncode == 2, refused.describe()
        assert "is not a Sigstore trusted_root.json" in refused.stderr
        assert "Traceback" not in refused.stderr


# --- verify --provenance, offline -------------------------------------------------------


def offline_command() -> list[str] | None:
    """A prefix that runs a command with no network at all (a fresh network namespace)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, check=False, timeout=30)
    return [unshare, "-n"] if probe.returncode == 0 else None


async def test_verify_provenance_passes_offline_and_reports_publishers(
    index: FixtureIndex, tmp_path: Path
) -> None:
    prefix = offline_command()
    if prefix is None:
        pytest.skip("unshare -n is not available here: cannot take the network away")
    layout = tmp_path / "layout"
    report = await run_sync(
        index, LayoutStore(layout), "pypi-attestations", "gcb-attestation-test", "plain"
    )
    assert not report.failed
    env = cli_env(tmp_path / "home")
    command = [*prefix, *cli_command("verify", f"oci:{layout}", "--provenance", "--json")]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    provenance = document["provenance"]
    assert provenance["ok"] is True
    assert provenance["files_verified"] == 2
    assert provenance["attestations_verified"] == 2
    assert provenance["bundles_checked"] == 2
    assert provenance["publishers"] == {
        "gcb-attestation-test": ["google:919436158236-compute@developer.gserviceaccount.com"],
        "pypi-attestations": ["github:trailofbits/pypi-attestations@release.yml"],
    }
    assert [f["filename"] for f in provenance["without_provenance"]] == ["plain-1.0.tar.gz"]
    # and the same with a trusted root brought across the air gap
    root = str(shutil.copy(sigstore_root("production"), tmp_path / "trusted_root.json"))
    pinned = subprocess.run(
        [*prefix, *cli_command("verify", f"oci:{layout}", "--provenance", "--trusted-root", root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pinned.returncode == 0, pinned.stderr
    assert "publishers pypi-attestations: github:trailofbits/pypi-attestations@release.yml" in (
        pinned.stdout
    )


async def test_verify_provenance_fails_for_a_wrong_pin_or_root_and_a_pinned_file_without(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    await run_sync(index, LayoutStore(layout), "pypi-attestations", "plain")
    env = cli_env(tmp_path / "home")
    pinned = run_cli(
        [
            "verify",
            f"oci:{layout}",
            "--provenance",
            "--trusted-publisher",
            "pypi-attestations=github:pypa/sampleproject",
            "--trusted-publisher",
            "plain=github:example/plain",
        ],
        env,
        timeout=120,
    )
    assert pinned.returncode == 1, pinned.describe()
    assert (
        "provenance failed pypi-attestations 0.0.19: pypi_attestations-0.0.19.tar.gz: "
        "the provenance names the publisher github:trailofbits/pypi-attestations@release.yml"
    ) in pinned.stdout
    assert "provenance failed plain 1.0: plain-1.0.tar.gz: no provenance" in pinned.stdout
    staging = run_cli(
        [
            "verify",
            f"oci:{layout}",
            "--provenance",
            "--trusted-root",
            str(sigstore_root("staging")),
        ],
        env,
        timeout=120,
    )
    assert staging.returncode == 1, staging.describe()
    assert "does not verify" in staging.stdout


async def test_verify_provenance_refuses_a_bundle_that_is_not_an_attestation_of_the_file(
    index: FixtureIndex, tmp_path: Path
) -> None:
    layout = LayoutStore(tmp_path / "layout")
    await run_sync(index, layout, "pypi-attestations", "gcb-attestation-test")
    release = layout.blob_path(tag_refs(layout)["pypi-attestations:0.0.19"]["digest"]).read_bytes()
    subject = entry_of(release, github_sdist().filename)["digest"]
    # another file's real bundle, attached to this file's manifest with oras's conventions
    other = tag_refs(layout)["gcb-attestation-test:0.0.0"]["digest"]
    other_subject = json.loads(layout.blob_path(other).read_bytes())["manifests"][0]["digest"]
    listing = await layout.get_manifest("gcb-attestation-test", fmt.referrers_tag(other_subject))
    assert listing is not None
    bundle_entry = next(
        e for e in json.loads(listing.body)["manifests"] if e["artifactType"] == fmt.SIGSTORE_BUNDLE
    )
    bundle_manifest = json.loads(layout.blob_path(bundle_entry["digest"]).read_bytes())
    bundle_layer = fmt.Descriptor.from_json(bundle_manifest["layers"][0])
    bundle = layout.blob_path(bundle_layer.digest).read_bytes()
    subject_descriptor = fmt.Descriptor(fmt.OCI_MANIFEST, subject, 0)
    stray = fmt.bundle_referrer(subject_descriptor, "x", bundle, "https://slsa.dev/provenance/v1")
    from oci_pypi_sync.engine.referrers import attach_referrers
    from oci_pypi_sync.engine.writer import Writer

    await attach_referrers(Writer(layout), "pypi-attestations", subject, [stray])
    from oci_pypi_sync.ops.provenance import verify_provenance

    audit = await verify_provenance(layout)
    assert not audit.ok
    (failure,) = audit.failures
    assert failure.filename == github_sdist().filename
    assert "is not one of the provenance's attestations" in failure.detail


# --- serve: the Integrity API over the mirror -------------------------------------------


async def test_serve_gives_back_the_same_provenance_at_the_integrity_api_path(
    index: FixtureIndex, tmp_path: Path
) -> None:
    from oci_pypi_sync.index.pep691 import parse_json_page
    from oci_pypi_sync.serve.app import create_app

    layout = LayoutStore(tmp_path / "layout")
    await run_sync(index, layout, "pypi-attestations", "plain")
    attested = github_sdist()
    app = create_app(LayoutStore(tmp_path / "layout", create=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://mirror.test") as http:
        json_page = await http.get(
            "/simple/pypi-attestations/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        )
        page = parse_json_page(json_page.content, str(json_page.url))
        assert page.api_version == "1.4"  # provenance is 1.3, project status 1.4
        (file,) = page.files
        expected = (
            "http://mirror.test/integrity/pypi-attestations/0.0.19/"
            "pypi_attestations-0.0.19.tar.gz/provenance"
        )
        assert file.provenance == expected
        html = await http.get("/simple/pypi-attestations/")
        assert f'data-provenance="{expected}"' in html.text

        answer = await http.get(
            expected, headers={"Accept": "application/vnd.pypi.integrity.v1+json"}
        )
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/vnd.pypi.integrity.v1+json"
        assert answer.content == attested.provenance  # the same object, byte for byte
        again = await http.get(expected, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304

        plain = await http.get("/simple/plain/?format=json")
        assert plain.json()["files"][0]["provenance"] is None
        missing = await http.get("/integrity/plain/1.0/plain-1.0.tar.gz/provenance")
        assert missing.status_code == 404
        assert missing.json() == {"message": "No provenance available for plain-1.0.tar.gz"}
        wrong_version = await http.get(expected.replace("/0.0.19/", "/0.0.18/"))
        assert wrong_version.status_code == 404
        refused = await http.get(expected, headers={"Accept": "text/html"})
        assert refused.status_code == 406

    # A mirror of the mirror: its pages and Integrity API are read and verified like the index's.
    from oci_pypi_sync.serve.server import build_server

    port = free_port()
    server = build_server(
        LayoutStore(tmp_path / "layout", create=False), host="127.0.0.1", port=port
    )
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the mirror's server did not start"
            await asyncio.sleep(0.02)
        second = LayoutStore(tmp_path / "second")
        async with IndexClient(f"http://127.0.0.1:{port}/simple/") as client:
            report = await sync([Requirement("pypi-attestations")], client, second)
    finally:
        server.should_exit = True
        await serving
    assert not report.failed
    assert report.files[0].provenance is not None
    assert report.files[0].provenance.status == "stored"

    def project_tags(store: LayoutStore) -> dict[str, Any]:
        return {r: e for r, e in tag_refs(store).items() if r.startswith("pypi-attestations:")}

    # the same version index and the same referrers: the same digests
    assert project_tags(second) == project_tags(layout)


async def test_attested_files_of_other_projects_are_refused_on_a_page(tmp_path: Path) -> None:
    # Two real attested files listed on the page of a third project: whatever their
    # attestations say, their names say they are not that project's files.
    google, github = google_sdist(), github_sdist()
    fixture = FixtureIndex()
    fixture.add("moved", served(google), served(github))
    layout = LayoutStore(tmp_path / "layout")
    with serve_index(fixture):
        report = await run_sync(fixture, layout, "moved")
    assert report.files == ()
    assert [e.error for e in report.project_errors] == [
        "no file matches moved (the index lists no file of moved)"
    ]
    assert fixture.provenance_requests == []
    assert not any(repo == "moved" for repo, _ in layout.tags())


async def test_a_change_of_publisher_between_versions_is_named_by_the_audit(
    index: FixtureIndex, tmp_path: Path
) -> None:
    # Two real attested files with different publishers, each mirrored under its own
    # project; then both put under one name in the layout, as a project that moved
    # (or was taken over) looks: one version from each publisher.
    layout = LayoutStore(tmp_path / "layout")
    with serve_index(index):
        report = await run_sync(index, layout, "gcb-attestation-test", "pypi-attestations")
    assert not report.failed
    assert report.warnings == ()  # each project alone has one publisher
    document = json.loads((tmp_path / "layout" / "index.json").read_bytes())
    moved = []
    for entry in document["manifests"]:
        ref = fmt.parse_layout_ref_name(entry.get("annotations", {}).get(fmt.REF_NAME, ""))
        if ref is not None and ref[0] in ("gcb-attestation-test", "pypi-attestations"):
            name = fmt.layout_ref_name("moved", ref[1])
            moved.append({**entry, "annotations": {fmt.REF_NAME: name}})
    document["manifests"] += moved
    (tmp_path / "layout" / "index.json").write_text(json.dumps(document))
    from oci_pypi_sync.ops.provenance import verify_provenance

    audit = await verify_provenance(LayoutStore(tmp_path / "layout"), repositories=["moved"])
    expected = (
        "moved: the publisher changed from "
        "google:919436158236-compute@developer.gserviceaccount.com (0.0.0) "
        "to github:trailofbits/pypi-attestations@release.yml (0.0.19)"
    )
    assert audit.ok
    assert [str(change) for change in audit.changes] == [expected]
    assert audit.publishers["moved"] == (
        "github:trailofbits/pypi-attestations@release.yml",
        "google:919436158236-compute@developer.gserviceaccount.com",
    )


async def test_a_registry_with_the_referrers_api_gets_no_fallback_tag(
    index: FixtureIndex, registry: RegistryServer
) -> None:
    from fault_proxy import Fault, FaultProxy, Rule

    from oci_pypi_sync.index.records import DistributionFile

    attested = github_sdist()
    file = DistributionFile(
        attested.filename, "https://x.test/f", hashes=(("sha256", attested.sha256),)
    )
    subject = fmt.build_file_artifact(file, "pypi-attestations", len(attested.data))
    subject_digest = subject.manifest.descriptor.digest
    # Distribution has no referrers API; the proxy answers manifest PUTs as one that has
    # it would (OCI-Subject naming the subject), so the sync must not keep a fallback tag.
    says_subject = Rule(
        Fault.add_header("OCI-Subject", subject_digest), "PUT", r"/manifests/sha256:", times=50
    )
    with FaultProxy(registry.url, [says_subject]) as proxy:
        store = open_store(parse_target(f"{proxy.host}/prov-api"))
        try:
            report = await run_sync(index, store, "pypi-attestations")
        finally:
            await store.aclose()
    assert not report.failed
    assert report.files[0].provenance is not None
    assert report.files[0].provenance.status == "stored"
    assert tags(registry.url, "prov-api/pypi-attestations") == ["0.0.19"]
    _, release = get_manifest(registry.url, "prov-api/pypi-attestations", "0.0.19")
    entry = entry_of(release, attested.filename)
    assert entry["digest"] == subject_digest
    _, referrer = get_manifest(
        registry.url, "prov-api/pypi-attestations", entry["annotations"][fmt.A_PROVENANCE]
    )
    assert json.loads(referrer)["subject"]["digest"] == subject_digest


async def test_lost_referrers_are_found_by_verify_and_written_back_by_a_recheck(
    index: FixtureIndex, tmp_path: Path
) -> None:
    from oci_pypi_sync.ops.provenance import verify_provenance
    from oci_pypi_sync.ops.verify import verify

    layout = LayoutStore(tmp_path / "layout")
    await run_sync(index, layout, "pypi-attestations")
    release = layout.blob_path(tag_refs(layout)["pypi-attestations:0.0.19"]["digest"]).read_bytes()
    entry = entry_of(release, github_sdist().filename)
    lost = layout.blob_path(entry["annotations"][fmt.A_PROVENANCE])
    lost.unlink()

    structure = await verify(layout)
    assert [(f.kind, f.tag) for f in structure.findings] == [
        ("missing-manifest", fmt.referrers_tag(entry["digest"]))
    ]
    audit = await verify_provenance(layout)
    assert [f.detail for f in audit.failures] == [
        f"the provenance artifact {entry['annotations'][fmt.A_PROVENANCE]} is missing"
    ]
    again = await run_sync(index, layout, "pypi-attestations")  # unchanged: nothing written
    assert again.files[0].provenance is not None
    assert again.files[0].provenance.status == "unchanged"
    assert not lost.exists()

    options = SyncOptions(recheck=True)
    async with IndexClient(index.url) as client:
        rechecked = await sync([Requirement("pypi-attestations")], client, layout, options)
    assert rechecked.files[0].provenance is not None
    assert rechecked.files[0].provenance.status == "stored"
    assert lost.exists()
    assert (await verify(layout)).ok
    assert (await verify_provenance(layout)).ok
