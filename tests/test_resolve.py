"""The dependency closure: per-target choices on a handwritten index, and pip's own
answers on recorded real trees (offline: the replay index serves recorded data)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from pathlib import Path

import pytest
from fixture_index import make_sdist, make_wheel
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from replay_index import (
    ReplayFile,
    ReplayIndex,
    load_recording,
    pip_resolution,
    pip_verdict,
    recorded_index,
    recording_path,
    serving,
)

from oci_pypi_sync.index.client import IndexClient
from oci_pypi_sync.plan.environments import TargetEnvironment
from oci_pypi_sync.plan.resolve import Closure, Pin, Resolution, Unresolved, resolve_closure

LINUX_312 = TargetEnvironment((3, 12), "manylinux_2_28_x86_64")
WINDOWS_311 = TargetEnvironment((3, 11), "win_amd64")
MAC_310 = TargetEnvironment((3, 10), "macosx_14_0_arm64")
MUSL_313 = TargetEnvironment((3, 13), "musllinux_1_2_aarch64")
ENVIRONMENTS = (LINUX_312, WINDOWS_311, MAC_310, MUSL_313)

NATIVE = canonicalize_name("native")

#: Recorded trees: what is asked for in each.
TREES: dict[str, list[str]] = {"requests": ["requests"], "jupyterlab": ["jupyterlab"]}
#: Recorded conflicts (for LINUX_312): what is asked for in each.
CONFLICTS: dict[str, list[str]] = {
    "django-conflict": ["django==2.2.28", "djangorestframework==3.15.0"],
}


class PipMarkers(TargetEnvironment):
    """A target as pip sees it: the target's tags and Python, but the host's markers."""

    @classmethod
    def of(cls, env: TargetEnvironment) -> PipMarkers:
        return cls(env.python, env.platform)

    @cached_property
    def markers(self) -> dict[str, str]:
        return {key: str(value) for key, value in default_environment().items()}


def versions(resolution: Resolution) -> dict[str, str]:
    return {pin.project: pin.version for pin in resolution.pins}


def by_env(closure: Closure) -> dict[str, dict[str, str]]:
    return {str(r.environment): versions(r) for r in closure.resolutions}


# --- a handwritten index ---------------------------------------------------------------


def wheel(name: str, version: str, *requires: str, tag: str = "py3-none-any") -> ReplayFile:
    made = make_wheel(name, version, requires, tag=tag)
    return ReplayFile.of(made.filename, made.data, made.metadata)


def fixture_projects() -> ReplayIndex:
    index = ReplayIndex()
    index.add(
        "app",
        wheel(
            "app",
            "1.0",
            'winonly; sys_platform == "win32"',
            'oldpy; python_version < "3.11"',
            "lib[fast]>=1",
            "plain>=1",
        ),
    )
    index.add(
        "lib",
        wheel("lib", "1.0", 'speedup; extra == "fast"', 'docs-only; extra == "docs"'),
    )
    index.add("strict", wheel("strict", "1.0", "plain==1.0"))
    index.add("needs-ghost", wheel("needs-ghost", "1.0", "ghost>=1"))
    for name in ("winonly", "oldpy", "speedup", "docs-only"):
        index.add(name, wheel(name, "1.0"))
    yanked = wheel("plain", "2.0")
    yanked.yanked = "broken"
    index.add("plain", wheel("plain", "1.0"), yanked, wheel("plain", "3.0rc1"))
    modern = wheel("modern", "2.0")
    modern.requires_python = ">=3.12"
    index.add("modern", wheel("modern", "1.0"), modern)
    sdist = make_sdist("sdistonly", "1.0")
    index.add("sdistonly", ReplayFile.of(sdist.filename, sdist.data))
    native_sdist = make_sdist("native", "1.0")
    index.add(
        "native",
        wheel("native", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64"),
        wheel("native", "1.0", tag="cp312-cp312-manylinux_2_28_x86_64"),
        wheel("native", "1.0", tag="cp311-cp311-win_amd64"),
        wheel("native", "1.0", tag="cp311-abi3-win_amd64"),
        ReplayFile.of(native_sdist.filename, native_sdist.data),
    )
    return index


@pytest.fixture
def fixture() -> Iterator[ReplayIndex]:
    with serving(fixture_projects()) as index:
        yield index


async def resolve(
    index: ReplayIndex,
    requirements: list[str],
    envs: list[TargetEnvironment],
    *,
    pre: bool = False,
    only_binary: bool = False,
) -> Closure:
    reqs = [Requirement(r) for r in requirements]
    async with IndexClient(f"{index.url}simple/") as client:
        return await resolve_closure(reqs, client, envs, pre=pre, only_binary=only_binary)


async def test_markers_and_extras_are_evaluated_for_each_target(fixture: ReplayIndex) -> None:
    closure = await resolve(fixture, ["app"], [LINUX_312, WINDOWS_311, MAC_310])
    common = {"app": "1.0", "lib": "1.0", "speedup": "1.0", "plain": "1.0"}
    assert by_env(closure) == {
        "cp312-manylinux_2_28_x86_64": common,
        "cp311-win_amd64": {**common, "winonly": "1.0"},
        "cp310-macosx_14_0_arm64": {**common, "oldpy": "1.0"},
    }
    assert closure.unresolved == ()
    assert [str(r) for r in closure.requirements()] == [
        "app==1.0",
        "lib==1.0",
        "oldpy==1.0",
        "plain==1.0",
        "speedup==1.0",
        "winonly==1.0",
    ]


async def test_each_page_and_metadata_is_fetched_once_per_run(fixture: ReplayIndex) -> None:
    await resolve(fixture, ["app"], [LINUX_312, WINDOWS_311, MAC_310, MUSL_313])
    counts = Counter(fixture.paths())
    assert counts["/simple/app/"] == 1
    assert counts["/simple/plain/"] == 1
    assert counts["/files/app-1.0-py3-none-any.whl.metadata"] == 1
    assert max(counts.values()) == 1
    assert not any(p.endswith(".whl") for p in counts)  # advertised metadata: no wheel read


async def test_unadvertised_metadata_is_read_from_the_wheel_itself(
    fixture: ReplayIndex,
) -> None:
    # The index serves .metadata files without advertising them: nothing vouches
    # for those bytes, so the dependencies come from the wheel's own METADATA.
    fixture.advertise_metadata = False
    closure = await resolve(fixture, ["app"], [WINDOWS_311])
    assert versions(closure.resolutions[0])["winonly"] == "1.0"
    assert not any(p.endswith(".metadata") for p in fixture.paths())
    assert any(r[2] == "bytes=-16384" for r in fixture.requests)


@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "download"])
async def test_wheel_metadata_read_from_the_wheel_without_metadata_file(
    fixture: ReplayIndex, ranges: bool
) -> None:
    for files in fixture.projects.values():
        for f in files:
            f.metadata = None
    fixture.ranges = ranges
    closure = await resolve(fixture, ["app"], [MAC_310])
    assert versions(closure.resolutions[0])["oldpy"] == "1.0"
    wheel_gets = [r for r in fixture.requests if r[1] == "/files/app-1.0-py3-none-any.whl"]
    assert wheel_gets
    assert wheel_gets[0][2] == "bytes=-16384"


async def test_yanked_only_when_pinned_and_prereleases_only_when_asked(
    fixture: ReplayIndex,
) -> None:
    closure = await resolve(fixture, ["plain", "modern"], [LINUX_312])
    assert versions(closure.resolutions[0]) == {"plain": "1.0", "modern": "2.0"}
    closure = await resolve(fixture, ["plain==2.0"], [LINUX_312])
    assert versions(closure.resolutions[0]) == {"plain": "2.0"}
    closure = await resolve(fixture, ["plain>=3.0rc1"], [LINUX_312])
    assert versions(closure.resolutions[0]) == {"plain": "3.0rc1"}
    closure = await resolve(fixture, ["plain"], [LINUX_312], pre=True)
    assert versions(closure.resolutions[0]) == {"plain": "3.0rc1"}


async def test_requires_python_of_the_target(fixture: ReplayIndex) -> None:
    closure = await resolve(fixture, ["modern"], [LINUX_312, WINDOWS_311])
    assert by_env(closure) == {
        "cp312-manylinux_2_28_x86_64": {"modern": "2.0"},
        "cp311-win_amd64": {"modern": "1.0"},
    }


async def test_best_file_per_target_and_sdist_without_metadata_reported(
    fixture: ReplayIndex,
) -> None:
    closure = await resolve(fixture, ["native"], [LINUX_312, WINDOWS_311, MAC_310])
    pins = {str(r.environment): r.pins for r in closure.resolutions}
    assert pins["cp312-manylinux_2_28_x86_64"] == (
        Pin(NATIVE, "1.0", "native-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"),
    )
    assert pins["cp311-win_amd64"] == (Pin(NATIVE, "1.0", "native-1.0-cp311-cp311-win_amd64.whl"),)
    assert pins["cp310-macosx_14_0_arm64"] == (Pin(NATIVE, "1.0", "native-1.0.tar.gz"),)
    assert closure.unresolved == (
        Unresolved(
            "native==1.0",
            "its dependencies are unknown: native-1.0.tar.gz is an sdist without static core "
            "metadata (its dependencies are known only by building it)",
            "cp310-macosx_14_0_arm64",
        ),
    )
    binary = await resolve(fixture, ["native"], [MAC_310], only_binary=True)
    (failure,) = binary.resolutions[0].unresolved
    assert binary.resolutions[0].pins == ()
    assert failure == Unresolved(
        "native",
        "no version of native that installs on cp310-macosx_14_0_arm64 satisfies: requested native",
        str(MAC_310),
    )


async def test_conflicts_and_missing_projects_are_reported_not_raised(
    fixture: ReplayIndex,
) -> None:
    closure = await resolve(fixture, ["strict", "plain==2.0"], [LINUX_312])
    (resolution,) = closure.resolutions
    assert resolution.pins == ()
    # Once per conflict, with the chain of requirements that led to each side.
    reason = (
        "no version of plain that installs on cp312-manylinux_2_28_x86_64 satisfies all of: "
        "requested plain==2.0; requested strict -> strict 1.0 requires plain==1.0"
    )
    assert resolution.unresolved == (Unresolved("plain", reason, str(LINUX_312)),)

    closure = await resolve(fixture, ["needs-ghost"], [LINUX_312])
    assert closure.resolutions[0].unresolved == (
        Unresolved(
            "ghost>=1",
            "ghost is not on the index: requested needs-ghost -> needs-ghost 1.0 requires ghost>=1",
            str(LINUX_312),
        ),
    )

    closure = await resolve(fixture, ["plain", "no-such-project"], [LINUX_312])
    (resolution,) = closure.resolutions
    assert versions(resolution) == {"plain": "1.0"}
    assert resolution.unresolved == (
        Unresolved("no-such-project", "no-such-project is not on the index", str(LINUX_312)),
    )


async def test_a_conflict_on_the_target_python_names_the_chain() -> None:
    index = ReplayIndex()
    index.add("app", wheel("app", "1.0", "lib"))
    # Requires-Python in the metadata only (the page says nothing about it).
    metadata = b"Metadata-Version: 2.1\nName: lib\nVersion: 1.0\nRequires-Python: >=3.12\n"
    lib = make_wheel("lib", "1.0")
    index.add("lib", ReplayFile.of(lib.filename, lib.data, metadata))
    with serving(index):
        closure = await resolve(index, ["app"], [MAC_310])
    assert closure.unresolved == (
        Unresolved(
            "Python",
            "the target's Python 3.10 is excluded: "
            "requested app -> app 1.0 requires lib -> lib 1.0 requires Python>=3.12",
            str(MAC_310),
        ),
    )
    # The target's Python is no project: never asked for as one.
    assert sorted(p for p in index.paths() if p.startswith("/simple/")) == [
        "/simple/app/",
        "/simple/lib/",
    ]


async def test_a_round_or_time_budget_ends_the_resolution_with_a_reason(
    fixture: ReplayIndex,
) -> None:
    reqs = [Requirement("strict"), Requirement("plain==2.0")]
    async with IndexClient(f"{fixture.url}simple/") as client:
        by_rounds = await resolve_closure([Requirement("app")], client, [LINUX_312], max_rounds=1)
        by_time = await resolve_closure(reqs, client, [LINUX_312], max_seconds=0)
    ((unresolved,),) = [r.unresolved for r in by_rounds.resolutions]
    assert unresolved.requirement == "app"
    assert unresolved.reason == "the resolver gave up after 1 rounds (its limit: 1 rounds)"
    assert by_rounds.resolutions[0].pins == ()
    ((unresolved,),) = [r.unresolved for r in by_time.resolutions]
    assert unresolved.requirement == "strict, plain==2.0"
    assert unresolved.reason == "the resolver gave up after 0 rounds (its limit: 0 s)"


async def test_the_recorded_django_conflict_is_found_and_explained_once(tmp_path: Path) -> None:
    """The conflict that once spun for minutes (a target Python candidate the
    resolver kept taking back) is found, explained with both chains, once;
    pip, on the same replay, finds the conflict too. The target's Python is
    never asked for as a project of the index."""
    (tree,) = CONFLICTS
    recorded = load_recording(tree)
    requirements = [Requirement(r) for r in recorded["requirements"]]
    with serving(recorded_index(tree)) as index:
        async with IndexClient(f"{index.url}simple/") as client:
            closure = await resolve_closure(requirements, client, [LINUX_312])
        paths = index.paths()
        assert (
            pip_verdict(f"{index.url}simple/", recorded["requirements"], tmp_path, LINUX_312)
            == recorded["pip"][str(LINUX_312)]
            == "ResolutionImpossible"
        )
    assert closure.unresolved == (
        Unresolved(
            "django",
            "no version of django that installs on cp312-manylinux_2_28_x86_64 satisfies "
            "all of: requested django==2.2.28; requested djangorestframework==3.15.0 -> "
            "djangorestframework 3.15.0 requires django>=3.0",
            str(LINUX_312),
        ),
    )
    # Pages of the projects met (and prefetched), each once; no other name asked for.
    pages = sorted(p for p in paths if p.startswith("/simple/"))
    assert pages == [f"/simple/{name}/" for name in sorted(recorded["pages"])]


async def test_host_when_no_environment_is_given(fixture: ReplayIndex) -> None:
    closure = await resolve(fixture, ["app", "modern"], [])
    (resolution,) = closure.resolutions
    assert str(resolution.environment) == "host"
    assert versions(resolution)["modern"] == "1.0"  # the host runs Python 3.11
    assert "oldpy" not in versions(resolution)


# --- pip's answers on recorded trees ---------------------------------------------------


def _pip_on_replay(
    index: ReplayIndex, requirements: list[str], tmp_path: Path
) -> dict[str, dict[str, str]]:
    def run(env: TargetEnvironment) -> dict[str, str]:
        workdir = tmp_path / str(env)
        workdir.mkdir()
        # The default timeout only stops a hang: pip under a loaded CI machine is slow.
        return pip_resolution(
            f"{index.url}simple/", requirements, env.python, env.platform_tags, workdir, timeout=600
        )

    with ThreadPoolExecutor(len(ENVIRONMENTS)) as pool:
        answers = list(pool.map(run, ENVIRONMENTS))
    return {str(env): answer for env, answer in zip(ENVIRONMENTS, answers, strict=True)}


@pytest.mark.parametrize("tree", list(TREES))
async def test_same_versions_as_pip_for_each_target(tree: str, tmp_path: Path) -> None:
    """For each target, the closure equals what pip installs (``--dry-run --report``
    with ``--python-version`` and ``--platform``), by project and version.

    pip evaluates environment markers against the host (Python 3.11 on Linux
    here), never the target, so the comparison resolves the target's tags and
    Python with the host's markers, exactly pip's question. pip runs offline
    against the replay index, which advertises the recorded core metadata, and
    must also give the answer it gave against the real index when recorded.
    """
    if not recording_path(tree).is_file():
        pytest.fail(f"no recording for {tree}: run tests/record_resolution.py {tree}")
    recorded = load_recording(tree)
    requirements = [Requirement(r) for r in recorded["requirements"]]
    with serving(recorded_index(tree)) as index:
        async with IndexClient(f"{index.url}simple/") as client:
            closure = await resolve_closure(
                requirements, client, [PipMarkers.of(e) for e in ENVIRONMENTS], only_binary=True
            )
        pip = _pip_on_replay(index, recorded["requirements"], tmp_path)
    assert pip == recorded["pip"]
    assert by_env(closure) == pip
    assert closure.unresolved == ()


async def test_target_markers_differ_from_pip_only_where_pip_reads_the_host(
    tmp_path: Path,
) -> None:
    """With the target's own markers, the jupyterlab closure differs from pip's answer
    exactly by the dependencies whose markers pip evaluated on the host (CPython 3.11
    on Linux): pip's answer is wrong for these targets, ours is right."""
    recorded = load_recording("jupyterlab")
    with serving(recorded_index("jupyterlab")) as index:
        async with IndexClient(f"{index.url}simple/") as client:
            closure = await resolve_closure(
                [Requirement("jupyterlab")], client, ENVIRONMENTS, only_binary=True
            )
    differences = {}
    for env, ours in by_env(closure).items():
        pip = recorded["pip"][env]
        assert {p: v for p, v in ours.items() if p in pip} == {
            p: v for p, v in pip.items() if p in ours
        }
        differences[env] = (sorted(set(ours) - set(pip)), sorted(set(pip) - set(ours)))
    assert differences == {
        # overrides; python_version < "3.12" (jupyter-server)
        str(LINUX_312): ([], ["overrides"]),
        str(MUSL_313): ([], ["overrides"]),
        # colorama and pywinpty for Windows; pexpect; sys_platform != "win32" (ipython)
        str(WINDOWS_311): (["colorama", "pywinpty"], ["pexpect", "ptyprocess"]),
        # appnope on Darwin; exceptiongroup and tomli; python_version < "3.11"
        str(MAC_310): (["appnope", "exceptiongroup", "tomli"], []),
    }
    assert closure.unresolved == ()
