"""Selection of a project page's files: versions, targets, latest, allow/deny, hashes."""

from __future__ import annotations

import hashlib

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name

from oci_pypi_sync.errors import UsageError
from oci_pypi_sync.index.records import DistributionFile, ProjectPage
from oci_pypi_sync.plan.environments import TargetEnvironment, environments
from oci_pypi_sync.plan.select import (
    ProjectSelection,
    SelectionOptions,
    project_allowed,
    select_files,
)


def _file(
    filename: str, requires_python: str | None = None, yanked: bool = False
) -> DistributionFile:
    digest = hashlib.sha256(filename.encode()).hexdigest()
    return DistributionFile(
        filename=filename,
        url=f"https://files.index.test/{filename}",
        hashes=(("sha256", digest),),
        requires_python=requires_python,
        yanked=yanked,
    )


def sha(filename: str) -> str:
    return hashlib.sha256(filename.encode()).hexdigest()


_PLATFORMS = (
    "manylinux_2_17_x86_64.manylinux2014_x86_64",
    "manylinux_2_17_aarch64.manylinux2014_aarch64",
    "musllinux_1_1_x86_64",
    "macosx_11_0_arm64",
    "macosx_10_9_x86_64",
    "win_amd64",
)


def _numpy_like() -> ProjectPage:
    files = []
    # 1.26.4: cp311 and cp312 binaries everywhere, plus an sdist.
    for py in ("cp311", "cp312"):
        for plat in _PLATFORMS:
            files.append(_file(f"numpy-1.26.4-{py}-{py}-{plat}.whl", ">=3.9"))
    files.append(_file("numpy-1.26.4.tar.gz", ">=3.9"))
    # 2.1.0: cp312 only (cp311 wheels missing), linux x86_64 and windows.
    for plat in (_PLATFORMS[0], "win_amd64"):
        files.append(_file(f"numpy-2.1.0-cp312-cp312-{plat}.whl", ">=3.10"))
    files.append(_file("numpy-2.1.0.tar.gz", ">=3.10"))
    # 2.2.0: requires-python >=3.12, so nothing for a 3.11 target, not even the sdist.
    files.append(_file(f"numpy-2.2.0-cp312-cp312-{_PLATFORMS[0]}.whl", ">=3.12"))
    files.append(_file("numpy-2.2.0.tar.gz", ">=3.12"))
    # 1.0: an abi3 wheel, a pure wheel with a broken requires-python, a py2-only pure wheel.
    files.append(_file("numpy-1.0-cp38-abi3-manylinux_2_28_x86_64.whl", ">=3.8"))
    files.append(_file("numpy-1.0-py3-none-any.whl", ">=3.8,,bogus"))
    files.append(_file("numpy-1.0-py2-none-any.whl"))
    # 3.0rc1: a pre-release.
    files.append(_file(f"numpy-3.0rc1-cp312-cp312-{_PLATFORMS[0]}.whl", ">=3.11"))
    return ProjectPage(name="numpy", files=tuple(files), url="https://files.index.test/numpy/")


def _select(options: SelectionOptions, req: str = "numpy") -> ProjectSelection:
    return select_files(_numpy_like(), [Requirement(req)], options)


def _names(selection: ProjectSelection) -> set[str]:
    return {f.file.filename for f in selection.files}


def test_no_environment_keeps_every_file_of_the_chosen_versions() -> None:
    selection = _select(SelectionOptions())
    assert [v for v, _ in selection.releases] == ["1.0", "1.26.4", "2.1.0", "2.2.0"]
    assert len(selection.files) == 3 + 13 + 3 + 2
    assert selection.rejected == ()


def test_linux_x86_64_cp311() -> None:
    env = TargetEnvironment((3, 11), "manylinux_2_28_x86_64")
    selection = _select(SelectionOptions(environments=(env,)))
    assert _names(selection) == {
        "numpy-1.0-cp38-abi3-manylinux_2_28_x86_64.whl",
        "numpy-1.0-py3-none-any.whl",  # invalid requires-python is ignored, not a crash
        "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-1.26.4.tar.gz",
        "numpy-2.1.0.tar.gz",  # no cp311 wheel, but the sdist builds on 3.11
    }
    # 2.2.0 needs Python 3.12: the newest chosen version has nothing, which is worth a line.
    assert [(r.filename, r.reason) for r in selection.rejected] == [
        ("numpy==2.2.0", "no file fits any target environment")
    ]


def test_only_binary_per_target() -> None:
    env = TargetEnvironment((3, 11), "manylinux_2_28_x86_64")
    selection = _select(SelectionOptions(environments=(env,), only_binary=True))
    assert [v for v, _ in selection.releases] == ["1.0", "1.26.4"]
    assert not any(f.file.filename.endswith(".tar.gz") for f in selection.files)


def test_older_glibc_target_does_not_get_newer_manylinux() -> None:
    env = TargetEnvironment((3, 11), "manylinux_2_17_x86_64")
    selection = _select(SelectionOptions(environments=(env,), only_binary=True))
    assert "numpy-1.0-cp38-abi3-manylinux_2_28_x86_64.whl" not in _names(selection)
    assert "numpy-1.0-py3-none-any.whl" in _names(selection)


def test_abi3_wheel_serves_a_newer_python() -> None:
    env = TargetEnvironment((3, 13), "manylinux_2_28_x86_64")
    selection = _select(SelectionOptions(environments=(env,), only_binary=True))
    assert _names(selection) == {
        "numpy-1.0-cp38-abi3-manylinux_2_28_x86_64.whl",
        "numpy-1.0-py3-none-any.whl",
    }


@pytest.mark.parametrize(
    ("platform", "expected"),
    [
        ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64.manylinux2014_aarch64"),
        ("musllinux_1_2_x86_64", "musllinux_1_1_x86_64"),
        ("macosx_14_0_arm64", "macosx_11_0_arm64"),
        ("macosx_10_15_x86_64", "macosx_10_9_x86_64"),
        ("win_amd64", "win_amd64"),
    ],
)
def test_one_wheel_per_platform(platform: str, expected: str) -> None:
    env = TargetEnvironment((3, 12), platform)
    selection = _select(SelectionOptions(environments=(env,), only_binary=True), "numpy==1.26.4")
    assert _names(selection) == {f"numpy-1.26.4-cp312-cp312-{expected}.whl"}


def test_several_targets_select_the_union() -> None:
    envs = environments(["3.11", "3.12"], ["linux/amd64", "windows/amd64"])
    selection = _select(SelectionOptions(environments=envs, only_binary=True), "numpy>=1.26")
    assert _names(selection) == {
        "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-1.26.4-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-1.26.4-cp311-cp311-win_amd64.whl",
        "numpy-1.26.4-cp312-cp312-win_amd64.whl",
        "numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-2.1.0-cp312-cp312-win_amd64.whl",
        "numpy-2.2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    }
    assert selection.rejected == ()


def test_wheel_and_requires_python_must_fit_the_same_target() -> None:
    # The cp312 wheel of 2.2.0 fits cp312 only; requires-python >=3.12 fits it too.
    # A cp311 target alone gets nothing of 2.2.0 even though another file's tags fit.
    env311 = TargetEnvironment((3, 11), "manylinux_2_28_x86_64")
    selection = _select(SelectionOptions(environments=(env311,)), "numpy==2.2.0")
    assert selection.files == ()
    assert [r.filename for r in selection.rejected] == ["numpy==2.2.0"]


def test_pinned_version_without_a_fitting_file_is_reported() -> None:
    env = TargetEnvironment((3, 11), "win_amd64")
    selection = _select(SelectionOptions(environments=(env,), only_binary=True), "numpy==2.1.0")
    assert selection.files == ()
    assert [(r.filename, r.reason) for r in selection.rejected] == [
        ("numpy==2.1.0", "no file fits any target environment")
    ]


def test_old_versions_without_fitting_files_are_not_reported() -> None:
    env = TargetEnvironment((3, 12), "manylinux_2_28_x86_64")
    selection = _select(SelectionOptions(environments=(env,), only_binary=True))
    # 1.0's py2 wheel fits nothing, but 1.0 has other files; no version is left empty.
    assert selection.rejected == ()
    assert "numpy-1.0-py2-none-any.whl" not in _names(selection)


def test_pre_releases_only_when_asked() -> None:
    env = TargetEnvironment((3, 12), "manylinux_2_28_x86_64")
    without = _select(SelectionOptions(environments=(env,)))
    with_pre = _select(SelectionOptions(environments=(env,), pre=True))
    assert "3.0rc1" not in [v for v, _ in without.releases]
    assert [v for v, _ in with_pre.releases][-1] == "3.0rc1"


def test_latest_keeps_the_newest_versions_with_files() -> None:
    assert [v for v, _ in _select(SelectionOptions(latest=2)).releases] == ["2.1.0", "2.2.0"]
    assert [v for v, _ in _select(SelectionOptions(latest=1, pre=True)).releases] == ["3.0rc1"]
    assert [v for v, _ in _select(SelectionOptions(latest=10)).releases] == [
        "1.0",
        "1.26.4",
        "2.1.0",
        "2.2.0",
    ]
    # For a 3.11 target 2.2.0 has nothing: the newest two that have files are kept.
    env = TargetEnvironment((3, 11), "manylinux_2_28_x86_64")
    selection = _select(SelectionOptions(environments=(env,), latest=2))
    assert [v for v, _ in selection.releases] == ["1.26.4", "2.1.0"]


def test_latest_after_the_specifier_and_legacy_versions_lowest() -> None:
    page = ProjectPage(
        name="legacy",
        files=(
            _file("legacy-1.0.tar.gz"),
            _file("legacy-2.0.tar.gz"),
            _file("legacy-2.1.tar.gz"),
            _file("legacy-3.0.tar.gz", yanked=True),
            _file("legacy-9.9.snapshot.tar.gz"),
        ),
        url="https://files.index.test/legacy/",
    )
    selection = select_files(page, [Requirement("legacy<2.1")], SelectionOptions(latest=1))
    assert [v for v, _ in selection.releases] == ["2.0"]
    selection = select_files(page, [Requirement("legacy")], SelectionOptions(latest=1))
    assert [v for v, _ in selection.releases] == ["2.1"]  # 3.0 is yanked
    selection = select_files(page, [Requirement("legacy")], SelectionOptions(latest=4))
    # A legacy version sorts below every PEP 440 one, so it is the first to go.
    assert [v for v, _ in selection.releases] == ["9.9.snapshot", "1.0", "2.0", "2.1"]
    selection = select_files(page, [Requirement("legacy")], SelectionOptions(latest=3))
    assert [v for v, _ in selection.releases] == ["1.0", "2.0", "2.1"]


def test_latest_must_be_positive() -> None:
    with pytest.raises(UsageError, match="latest must be at least 1, not 0"):
        SelectionOptions(latest=0)


def test_hashes_keep_only_the_named_files() -> None:
    wanted = "numpy-1.26.4-cp312-cp312-win_amd64.whl"
    options = SelectionOptions(hashes={NormalizedName("NumPy"): frozenset({sha(wanted).upper()})})
    assert _names(_select(options)) == {wanted}
    other = SelectionOptions(hashes={canonicalize_name("scipy"): frozenset({"0" * 64})})
    assert len(_select(other).files) == 21


def test_allow_and_deny() -> None:
    none = SelectionOptions()
    assert project_allowed("anything", none)
    allow = SelectionOptions(allow=("Django", "re:django-.*"), deny=("django-evil",))
    assert project_allowed("django", allow)
    assert project_allowed("Django_REST_framework", allow)
    assert not project_allowed("django-evil", allow)  # deny wins
    assert not project_allowed("Django.Evil", allow)  # compared normalized
    assert not project_allowed("flask", allow)
    assert not project_allowed("my-django-app", allow)  # a regex matches the whole name
    deny_only = SelectionOptions(deny=("re:.*-nightly",))
    assert project_allowed("torch", deny_only)
    assert not project_allowed("torch-nightly", deny_only)


def test_bad_allow_pattern_is_named() -> None:
    with pytest.raises(UsageError, match=r"deny entry 're:\(' is not a valid regular expression"):
        SelectionOptions(deny=("re:(",))
    with pytest.raises(UsageError, match="empty allow entry"):
        SelectionOptions(allow=("",))


def test_key_changes_with_what_decides_the_selection() -> None:
    env = TargetEnvironment((3, 12), "win_amd64")
    key = SelectionOptions(
        environments=(env,), latest=3, hashes={NormalizedName("NumPy"): frozenset({"ab"})}
    ).key()
    assert key["environments"] == ["cp312-win_amd64"]
    assert key["latest"] == 3
    assert key["hashes"] == {"numpy": ["ab"]}
    assert SelectionOptions().key() != SelectionOptions(allow=("x",)).key()


# --- files the page cannot vouch for, requirements that select nothing -------------------


def _page(*files: DistributionFile, name: str = "demo") -> ProjectPage:
    return ProjectPage(name=name, files=files, url=f"https://files.index.test/{name}/")


def test_a_filename_listed_twice_with_different_hashes_is_refused_both_times() -> None:
    first = _file("demo-1.0-py3-none-any.whl")
    other = DistributionFile(
        filename=first.filename, url="https://elsewhere.test/x.whl", hashes=(("sha256", "ab" * 32),)
    )
    alike = _file("demo-1.0.tar.gz")
    selection = select_files(
        _page(first, alike, other, alike), [Requirement("demo")], SelectionOptions()
    )
    assert _names(selection) == {"demo-1.0.tar.gz"}  # listed twice alike: one file
    [rejection] = selection.rejected
    assert rejection.filename == first.filename
    assert rejection.kind == "conflicting-hashes"
    assert rejection.reason == (
        f"listed more than once with different sha256 digests ({sha(first.filename)}, "
        f"{'ab' * 32}); neither is mirrored"
    )


def test_a_file_of_another_project_on_the_page_is_refused() -> None:
    selection = select_files(
        _page(
            _file("demo-1.0-py3-none-any.whl"),
            _file("intruder-1.0-py3-none-any.whl"),
            _file("intruder-1.0.tar.gz"),
            _file("Demo-1.0.zip"),  # the same project, spelled otherwise
        ),
        [Requirement("demo")],
        SelectionOptions(),
    )
    assert _names(selection) == {"demo-1.0-py3-none-any.whl", "Demo-1.0.zip"}
    assert [(r.filename, r.kind, r.reason) for r in selection.rejected] == [
        (
            name,
            "other-project",
            "its name says it belongs to the project 'intruder', not 'demo'; "
            "not mirrored under 'demo'",
        )
        for name in ("intruder-1.0-py3-none-any.whl", "intruder-1.0.tar.gz")
    ]


@pytest.mark.parametrize(
    ("requirement", "options", "reason"),
    [
        (
            "numpy==9.9",
            SelectionOptions(),
            "the index has versions 1.0, 1.26.4, 2.1.0, 2.2.0, 3.0rc1",
        ),
        ("numpy>=2.5", SelectionOptions(), "only pre-releases match it: add --pre to take them"),
        (
            "numpy==2.2.0",
            SelectionOptions(environments=(TargetEnvironment((3, 11), "win_amd64"),)),
            "its files are not for the target environments",
        ),
        (
            "numpy==2.1.0",
            SelectionOptions(
                only_binary=True, environments=(TargetEnvironment((3, 11), "win_amd64"),)
            ),
            "its files are an sdist (--only-binary) or not for the target environments",
        ),
        (
            "numpy<1.5",
            SelectionOptions(
                hashes={canonicalize_name("numpy"): frozenset({sha("numpy-2.1.0.tar.gz")})}
            ),
            "its files are not among the hashes given",
        ),
    ],
)
def test_a_requirement_that_selects_nothing_says_why(
    requirement: str, options: SelectionOptions, reason: str
) -> None:
    selection = select_files(
        _numpy_like(), [Requirement(requirement), Requirement("numpy")], options
    )
    assert [(u.requirement, u.reason) for u in selection.unmatched] == [
        (requirement, f"no file matches {requirement} ({reason})")
    ]


def test_yanked_only_and_empty_pages_say_so() -> None:
    yanked = _page(_file("demo-1.0.tar.gz", yanked=True), _file("demo-2.0.tar.gz"))
    selection = select_files(yanked, [Requirement("demo<2")], SelectionOptions())
    assert [u.reason for u in selection.unmatched] == [
        "no file matches demo<2 (its files are yanked; pin the version with == to take them)"
    ]
    assert select_files(yanked, [Requirement("demo==1.0")], SelectionOptions()).unmatched == ()
    empty = select_files(_page(), [Requirement("demo")], SelectionOptions())
    assert [u.reason for u in empty.unmatched] == [
        "no file matches demo (the index lists no file of demo)"
    ]


def test_versions_cut_by_latest_are_no_unmatched_requirement() -> None:
    selection = select_files(
        _numpy_like(),
        [Requirement("numpy<2"), Requirement("numpy>=2")],
        SelectionOptions(latest=1),
    )
    assert [v for v, _ in selection.releases] == ["2.2.0"]
    assert selection.unmatched == ()
