"""A run over the whole index, streamed: a bounded pipeline, records as projects finish.

The project list is held compactly and walked once per run; projects flow
through the engine a bounded number at a time; each finished project's
records go to a sink (``--json-lines``, a plan table printed as it goes)
and are counted, never all kept. Real index servers on 127.0.0.1 and real
layouts; what the target holds is read back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import cli_env, run_cli
from fixture_index import FixtureIndex, make_sdist, make_wheel, serve_index
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from oci_pypi_sync.config import Settings
from oci_pypi_sync.engine import run as run_module
from oci_pypi_sync.engine.job import JobFlags, run_job
from oci_pypi_sync.engine.results import CollectingSink, NullObserver, ReportRecord
from oci_pypi_sync.engine.run import SelectionKeys, Syncer, SyncOptions
from oci_pypi_sync.errors import InvalidPageError
from oci_pypi_sync.format import FORMAT_VERSION, canonical_json
from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.index.projects import parse_project_index
from oci_pypi_sync.index.records import ProjectIndex
from oci_pypi_sync.plan.listed import ListedProject, ListedProjects
from oci_pypi_sync.plan.select import SelectionOptions
from oci_pypi_sync.plan.shard import Shard
from oci_pypi_sync.provenance.policy import ProvenanceOptions
from oci_pypi_sync.stores.layout import LayoutStore

JSON = "application/vnd.pypi.simple.v1+json"

# --- the project list, held compactly ----------------------------------------------------


def test_the_json_list_keeps_each_projects_serial_in_order() -> None:
    body = json.dumps(
        {
            "meta": {"api-version": "1.1", "_last-serial": 9},
            "projects": [
                {"name": "Zope.Interface", "_last-serial": 7},
                {"_last-serial": "3", "name": "six"},  # keys in another order, a string serial
                {"name": "no-serial"},
                {"name": "caf\u00e9", "_last-serial": 9, "status": "archived"},
            ],
        }
    ).encode()
    listed = parse_project_index(body, JSON)
    assert list(listed) == [
        ("Zope.Interface", 7),
        ("six", 3),
        ("no-serial", None),
        ("caf\u00e9", 9),
    ]
    assert len(listed) == 4
    assert listed.last_serial == 9
    assert not listed.gives_serials  # one project without: not every project has one
    assert listed.serials is None


def test_an_object_with_a_name_outside_the_entries_is_read_the_plain_way() -> None:
    # An entry holding an object with a name of its own, and a name in meta: read
    # exactly as a plain JSON parser reads it, nothing taken for a project.
    body = json.dumps(
        {
            "meta": {"api-version": "1.1", "name": "not a project"},
            "projects": [
                {"name": "alpha", "_last-serial": 1, "extra": {"name": "inner"}},
                {"name": "beta", "_last-serial": 2},
            ],
        }
    ).encode()
    listed = parse_project_index(body, JSON)
    assert list(listed) == [("alpha", 1), ("beta", 2)]
    assert listed.serials == {"alpha": 1, "beta": 2}


@pytest.mark.parametrize("serial", ["-1", str(1 << 63), '"x1"'])
def test_a_serial_out_of_range_is_refused_naming_the_list(serial: str) -> None:
    body = f'{{"projects": [{{"name": "a", "_last-serial": {serial}}}]}}'.encode()
    with pytest.raises(InvalidPageError, match=r"index\.test"):
        parse_project_index(body, JSON, "https://index.test/simple/")


def test_a_list_built_from_pairs_gives_them_back() -> None:
    pairs = [("a", 1), ("b\U0001f600", None), ("c", 0)]
    index = ProjectIndex(pairs, 5)
    assert list(index) == pairs
    assert index.names == ("a", "b\U0001f600", "c")
    assert ProjectIndex.of_names(["x", "y"]).names == ("x", "y")


# --- the projects of a run ---------------------------------------------------------------


def test_listed_projects_take_the_shard_the_allowed_and_the_named() -> None:
    names = [f"Project_{i}" for i in range(200)] + ["not a name!", ""]
    index = ProjectIndex((name, i) for i, name in enumerate(names))
    shard = Shard(1, 3)
    expected = [
        f"project-{i}"
        for i in range(200)
        if shard.owns(f"project-{i}") and not str(i).endswith("5")
    ]
    named_listed = expected[3]
    elsewhere = next(n for n in (f"elsewhere-{k}" for k in range(50)) if shard.owns(n))
    not_mine = next(n for n in (f"other-{k}" for k in range(50)) if not shard.owns(n))
    named = [Requirement(f"{named_listed}>=1"), Requirement(elsewhere), Requirement(not_mine)]
    projects = ListedProjects(
        index, named, shard=shard, allowed=lambda name: not name.endswith("5")
    )
    items = list(projects)
    assert len(projects) == len(items)
    assert [item.name for item in items] == [*expected, elsewhere]
    by_name = {item.name: item for item in items}
    first = by_name[expected[0]]
    assert first.serial == int(expected[0].removeprefix("project-"))
    assert first.optional
    assert first.requirement_texts() == [expected[0]]
    both = by_name[named_listed]
    assert [str(r) for r in both.requirements()] == [f"{named_listed}>=1", named_listed]
    assert both.requirement_texts() == [f"{named_listed}>=1", named_listed]
    assert not both.optional
    assert by_name[elsewhere].requirement_texts() == [elsewhere]
    assert not by_name[elsewhere].listed
    assert by_name[elsewhere].serial is None


def test_listed_names_in_normal_form_and_not_are_normalized_alike() -> None:
    spelled = ["six", "Six", "a--b", "a_b", "A.B-c", "zope.interface", "x-1", "-lead", "z"]
    projects = ListedProjects(ProjectIndex((name, i) for i, name in enumerate(spelled)))
    assert [item.name for item in projects] == [
        str(canonicalize_name(name)) for name in spelled if name != "-lead"
    ]


def _reference_key(requirements: list[str], options: SyncOptions) -> str:
    """The selection key as state files record it: a digest of the whole document."""
    document = {
        "format": FORMAT_VERSION,
        "requirements": sorted(requirements),
        **options.selection.key(),
        **options.provenance.key(),
        "probe_metadata": options.probe_metadata,
        "prune": options.prune,
    }
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


@pytest.mark.parametrize(
    "requirements",
    [
        ["six"],
        ["scale-0001234"],
        ["b>1", 'a<2; python_version < "3"'],
        ['quote"d', "back\\slash", "tab\there", "caf\u00e9", "line\u2028sep"],
        [],
    ],
)
def test_selection_keys_are_the_digest_of_the_whole_document(requirements: list[str]) -> None:
    options = SyncOptions(
        selection=SelectionOptions(only_binary=True),
        provenance=ProvenanceOptions(),
        prune=True,
    )
    keys = SelectionKeys(options)
    assert keys.of_texts(requirements) == _reference_key(requirements, options)
    # The same for every run: a state file's keys stay valid across versions.
    assert SelectionKeys(options).of_texts(requirements) == keys.of_texts(requirements)


# --- the pipeline --------------------------------------------------------------------------


class _Counting(NullObserver):
    """Counts projects taken from the source against projects finished."""

    def __init__(self) -> None:
        self.pulled = 0
        self.finished = 0
        self.ahead = 0

    def source(self, items: list[ListedProject]) -> Iterator[ListedProject]:
        for item in items:
            self.ahead = max(self.ahead, self.pulled - self.finished)
            self.pulled += 1
            yield item

    def project_planned(self, project: str) -> None:
        self.finished += 1


class _Items(list[ListedProject]):
    """A sized source that counts what the pipeline pulls from it."""

    def __init__(self, items: list[ListedProject], counting: _Counting) -> None:
        super().__init__(items)
        self._counting = counting

    def __iter__(self) -> Iterator[ListedProject]:
        return self._counting.source(list(super().__iter__()))


async def test_the_pipeline_holds_a_bounded_number_of_projects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_module, "STREAM_WINDOW", 4)
    monkeypatch.setattr(run_module, "STREAM_BATCH", 8)
    index = FixtureIndex()
    names = [f"p{i}" for i in range(60)]
    for name in names:
        index.add(name, make_sdist(name, "1.0", size=64))
    counting = _Counting()
    sink = CollectingSink()
    items = _Items([ListedProject(name) for name in names], counting)
    with serve_index(index):
        async with IndexClient(index.url) as client:
            syncer = Syncer(
                client, LayoutStore(tmp_path / "m"), SyncOptions(jobs=2), observer=counting
            )
            report = await syncer.stream(items, sink)
    assert counting.pulled == counting.finished == 60
    # Never more than a batch being compared plus the window in flight.
    assert counting.ahead <= 8 + 4
    assert not report.failed
    assert report.totals.pushed == 60
    assert report.files == ()  # counted, not kept
    assert sorted(f.project for f in sink.files) == sorted(names)
    tags = LayoutStore(tmp_path / "m").tags()
    assert {(name, "1.0") for name in names} <= set(tags)


def _serial_index() -> FixtureIndex:
    index = FixtureIndex(etags=True, serials={"alpha": 1, "beta": 2, "gamma": 3})
    index.add("alpha", make_wheel("alpha", "1.0"))
    index.add("beta", make_wheel("beta", "1.0"), make_sdist("beta", "1.0"))
    index.add("gamma", make_sdist("gamma", "1.0"))
    return index


def _lines(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_json_lines_give_every_record_then_the_summary(tmp_path: Path) -> None:
    index = _serial_index()
    env = cli_env(tmp_path / "home")
    layout = tmp_path / "mirror"
    with serve_index(index):
        args = ["sync", "--all", "--to", f"oci:{layout}", "-i", index.url, "-q"]
        first = run_cli([*args, "--json-lines"], env)
        assert first.returncode == 0, first.describe()
        records = _lines(first.stdout)
        assert records[-1]["type"] == "summary"
        assert [r["type"] for r in records[:-1]].count("summary") == 0
        files = [r for r in records if r["type"] == "file"]
        assert sorted(str(r["filename"]) for r in files) == sorted(
            f.filename for files in index.projects.values() for f in files
        )
        assert all(r["action"] == "pushed" for r in files)
        releases = [r for r in records if r["type"] == "release"]
        assert sorted((r["project"], r["version"]) for r in releases) == [
            ("alpha", "1.0"),
            ("beta", "1.0"),
            ("gamma", "1.0"),
        ]
        summary = records[-1]
        totals = summary["totals"]
        assert isinstance(totals, dict)
        assert totals["pushed"] == 4
        assert totals["releases_tagged"] == 3
        assert summary["ok"] is True
        tags = LayoutStore(layout).tags()
        assert {("alpha", "1.0"), ("beta", "1.0"), ("gamma", "1.0")} <= set(tags)

        # Nothing moved: the summary alone, every project unchanged by its serial.
        again = run_cli([*args, "--json-lines"], env)
        assert again.returncode == 0, again.describe()
        (only,) = _lines(again.stdout)
        assert only["type"] == "summary"
        totals = only["totals"]
        assert isinstance(totals, dict)
        assert totals["projects_unchanged"] == 3
        assert totals["files"] == 0

        # The same run with --json: one document, every record in it.
        index.add("gamma", make_sdist("gamma", "2.0"))
        assert index.serials is not None
        index.serials["gamma"] = 4
        whole = run_cli([*args, "--json"], env)
        assert whole.returncode == 0, whole.describe()
        document = whole.json()
        assert [f["filename"] for f in document["files"] if f["action"] == "pushed"] == [
            "gamma-2.0.tar.gz"
        ]
        assert document["totals"]["pushed"] == 1
        assert document["totals"]["projects_unchanged"] == 2


def test_json_lines_of_a_run_naming_its_requirements(tmp_path: Path) -> None:
    index = _serial_index()
    env = cli_env(tmp_path / "home")
    with serve_index(index):
        args = ["sync", "beta", "--to", f"oci:{tmp_path / 'm'}", "-i", index.url]
        result = run_cli([*args, "--json-lines", "-q"], env)
    assert result.returncode == 0, result.describe()
    records = _lines(result.stdout)
    assert [r["type"] for r in records] == ["file", "file", "release", "summary"]
    assert {r["filename"] for r in records if r["type"] == "file"} == {
        "beta-1.0-py3-none-any.whl",
        "beta-1.0.tar.gz",
    }


def test_json_and_json_lines_together_are_a_usage_error(tmp_path: Path) -> None:
    result = run_cli(["sync", "six", "--json", "--json-lines"], cli_env(tmp_path))
    assert result.returncode == 2
    assert "--json-lines" in result.stderr


def test_a_dry_run_over_the_index_prints_its_plan_as_it_goes(tmp_path: Path) -> None:
    index = _serial_index()
    env = cli_env(tmp_path / "home")
    with serve_index(index):
        result = run_cli(["sync", "--all", "--dry-run", "-i", index.url, "-q"], env)
    assert result.returncode == 0, result.describe()
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["project", "version", "files", "size"]
    rows = sorted(tuple(line.split()[:3]) for line in lines[2:-2])
    assert rows == [("alpha", "1.0", "1"), ("beta", "1.0", "2"), ("gamma", "1.0", "1")]
    assert lines[-1].split()[:5] == ["3", "projects", "3", "versions", "4"]
    assert not (tmp_path / "home" / "oci-pypi-mirror").exists()


async def test_a_streamed_run_keeps_what_failed_and_counts_the_rest(tmp_path: Path) -> None:
    index = _serial_index()
    index.raw_pages["gamma"] = b"{not json"
    records: list[ReportRecord] = []

    class Keep:
        def record(self, item: ReportRecord) -> None:
            records.append(item)

    with serve_index(index):
        async with IndexClient(index.url) as client:
            report = await run_job(
                Settings(retries=0),
                JobFlags(all_projects=True),
                client,
                LayoutStore(tmp_path / "m"),
                sink=Keep(),
            )
    assert report.failed
    assert [e.project for e in report.project_errors] == ["gamma"]
    assert report.totals.pushed == 3
    assert report.files == ()
    assert report.projects == 3
    assert {type(r).__name__ for r in records} == {"FileResult", "ReleaseResult", "ProjectError"}


def test_a_listed_project_s_key_is_the_key_of_its_requirements() -> None:
    keys = SelectionKeys(SyncOptions(selection=SelectionOptions(only_binary=True)))
    whole = ListedProject("scale-0001234", 7)
    named = ListedProject("six", 1, (Requirement("six>=1"),))
    only_named = ListedProject("six", None, (Requirement("six<2"),), listed=False)
    for item in (whole, named, only_named):
        assert keys.of_listed(item) == keys.of(item.requirements())
