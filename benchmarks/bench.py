"""End-to-end benchmark of ``oci-pypi sync`` against baselines measured in the same run.

Everything runs on 127.0.0.1: a generated corpus (real wheels and sdists
with PEP 658 metadata) served as a static PEP 691 index by nginx, and a
fresh Distribution registry (``docker-registry``) per case, its storage on
tmpfs when there is one. Contenders, each a process of its own on the same
corpus at the same concurrency:

* ``limit``: HEAD, POST, streamed PUT per file, nothing else, over raw
  aiohttp (``limit-httpx``: the same over httpx, the limit of earlier runs);
* ``naive``: download to a temp file, push with oras-py;
* ``oras``: download to a temp file, push with the ORAS CLI;
  ``oras-layout``: the ORAS CLI copying a ready OCI layout, file by file;
* ``download-only``: the GETs alone;
* ``bandersnatch``: a PEP 381 mirror of the same projects to disk;
* ``oci-pypi``: ``cold`` (empty registry, no state), ``noop`` (re-run with
  its state file), ``changed-1pct`` (1% of the projects get a release);
  with ``--against REV`` the same three cases of the tool as it was at
  commit REV (built into ``.bench/against/``), run in the same rounds, so
  a change is measured against the code before it side by side.

Then the project-list parse check (927,088 names as HTML through nginx)
and a warm project-page latency of ``oci-pypi``'s simple-repository server
for a 2,500-file project. ``--profile DIR`` also runs the small-file case
under py-spy. ``benchmarks/http_stack.py`` measures the client CPU per
registry request of raw aiohttp and of oci-pypi's registry store side by
side. Exit status is 0 unless a contender failed::

    python benchmarks/bench.py [--quick] [--runs 3] [--jobs 8] [--json PATH] [--profile DIR]
    python benchmarks/bench.py --against 16c29f3   # and the tool at that commit, side by side
    nox -s bench -- --quick
"""

from __future__ import annotations

import argparse
import collections
import compileall
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import corpus as corpus_mod  # noqa: E402
from registry_server import running_registry  # noqa: E402
from servers import (  # noqa: E402
    Nginx,
    free_port,
    registry_request_kinds,
    registry_requests,
    running_nginx,
)

MB = 1_000_000
PREFIX = "bench"
RSS_LIMIT_MB = 100.0
SAMPLE_SECONDS = 0.05
TOOLS = (
    "oci-pypi",
    "limit",
    "limit-httpx",
    "naive",
    "oras",
    "oras-layout",
    "download-only",
    "bandersnatch",
)
#: oci-pypi's cold sync against the limit, and its client CPU per registry request
#: against raw aiohttp's
LIMIT_RATIO = 1.15
CPU_PER_REQUEST_RATIO = 1.10
#: with --against: how much slower than the earlier commit still counts as "no slower"
#: (contenders' medians move by about this much between runs on a shared machine)
AGAINST_NOISE = 0.05


# --- measuring a process -----------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(entry.name))
    return children


def _tree_memory_kib(root: int, hwm: dict[int, int]) -> int:
    """Sum of VmRSS over ``root`` and its descendants; updates each one's VmHWM in ``hwm``.

    VmHWM, not ``wait4``'s ``ru_maxrss``: Linux carries the parent's high-water
    mark into a forked child across ``exec``, so ``ru_maxrss`` of a child of a
    big parent reports the parent.
    """
    children = _children_map()
    total = 0
    stack = [root]
    seen: set[int] = set()
    while stack and len(seen) < 10_000:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/status", "rb") as status:
                for line in status:
                    if line.startswith(b"VmHWM:"):
                        hwm[pid] = max(hwm.get(pid, 0), int(line.split()[1]))
                    elif line.startswith(b"VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


@dataclass
class Run:
    """One process run: wall time, peak RSS of its tree, exit code, output tail."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float = 0.0  # of the process and its waited-for children


def run_measured(argv: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> Run:
    """Run ``argv``; its wall and CPU time, and peak RSS: the larger of the
    highest VmHWM of a process of its tree and the highest sampled sum of
    the tree's VmRSS (children count too), sampled every 50 ms."""
    peak_tree = 0
    hwm: dict[int, int] = {}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env, stdin=subprocess.DEVNULL)
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            peak_tree = max(peak_tree, _tree_memory_kib(process.pid, hwm))
            time.sleep(SAMPLE_SECONDS)
        wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    peak = max(peak_tree, *hwm.values(), 0) / 1024  # KiB -> MiB
    cpu = usage.ru_utime + usage.ru_stime
    return Run(wall, peak, process.returncode, stdout, stderr[-4000:], cpu)


# --- records -------------------------------------------------------------------------


@dataclass
class Record:
    """All runs of one (case, tool); the table and the JSON use the medians."""

    case: str
    tool: str
    walls: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    registry_cpu: list[float] = field(default_factory=list)
    index_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    registry_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_moved: int = 0
    files: int = 0
    failures: list[str] = field(default_factory=list)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        return statistics.median(self.walls) if self.walls else float("nan")

    @property
    def peak_rss_mb(self) -> float:
        return max(self.rss) if self.rss else float("nan")

    @property
    def requests(self) -> int:
        return sum(self.index_requests.values()) + sum(self.registry_requests.values())

    def add(
        self, run: Run, index: collections.Counter[str], registry: collections.Counter[str]
    ) -> None:
        self.walls.append(run.wall_s)
        self.rss.append(run.peak_rss_mb)
        self.cpu.append(run.cpu_s)
        # the counts of the last run: every run of a case does the same requests
        self.index_requests = index
        self.registry_requests = registry
        if run.returncode != 0:
            self.failures.append(f"exit {run.returncode}: {run.stderr[-1500:]}")

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "tool": self.tool,
            "wall_s": round(self.wall_s, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "requests": self.requests,
            "index_requests": dict(self.index_requests),
            "registry_requests": dict(self.registry_requests),
            "runs": [round(w, 4) for w in self.walls],
            "cpu_s": round(statistics.median(self.cpu), 3) if self.cpu else None,
            "registry_cpu_s": (
                round(statistics.median(self.registry_cpu), 3) if self.registry_cpu else None
            ),
            "files": self.files,
            "bytes": self.bytes_moved,
            "mb_per_s": round(self.bytes_moved / MB / self.wall_s, 1) if self.walls else None,
            "failed": bool(self.failures),
            "note": self.note,
            **self.extra,
        }


# --- the benchmark -----------------------------------------------------------------


@dataclass(frozen=True)
class Registry:
    host: str
    log: Path
    pid: int


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Bench:
    work: Path
    corpus: corpus_mod.Corpus
    nginx: Nginx
    jobs: int
    runs: int
    timeout: float
    #: the tool at an earlier commit: (its label, the python that runs it)
    against: tuple[str, str] | None = None
    records: dict[tuple[str, str], Record] = field(default_factory=dict)

    def record(self, case: str, tool: str) -> Record:
        return self.records.setdefault((case, tool), Record(case, tool))

    @contextlib.contextmanager
    def registry(self, name: str) -> Iterator[Registry]:
        """A fresh registry; removes its storage afterwards."""
        root = self.work / "registries" / name
        try:
            with running_registry(root) as server:
                yield Registry(server.host, server.log, server.process.pid)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def measure(self, record: Record, argv: Sequence[str], reg: Registry | None = None) -> Run:
        nginx_offset = self.nginx.log_size()
        registry_offset = reg.log.stat().st_size if reg is not None else 0
        registry_cpu = _cpu_seconds(reg.pid) if reg is not None else 0.0
        run = run_measured(argv, timeout=self.timeout)
        time.sleep(0.1)  # let both servers flush their access logs
        registry = collections.Counter[str]()
        if reg is not None:
            record.registry_cpu.append(_cpu_seconds(reg.pid) - registry_cpu)
            with reg.log.open("rb") as text:
                text.seek(registry_offset)
                logged = text.read()
            registry = registry_requests(logged)
            if record.tool == "oci-pypi":
                digests = {f.sha256 for f in self.corpus.all_files}
                record.extra["request_kinds"] = dict(registry_request_kinds(logged, digests))
        record.add(run, self.nginx.requests_since(nginx_offset), registry)
        print(
            f"  {record.case:<13} {record.tool:<16} run {len(record.walls)}: "
            f"{run.wall_s:7.2f} s  {run.peak_rss_mb:7.1f} MB"
            + ("" if run.returncode == 0 else f"  FAILED (exit {run.returncode})"),
            flush=True,
        )
        if run.returncode != 0:
            print(run.stderr[-1500:], file=sys.stderr, flush=True)
        return run

    def plan(self) -> Path:
        path = self.work / "plan.json"
        entries = [
            {
                "url": self.corpus.file_url(f),
                "sha256": f.sha256,
                "size": f.size,
                "project": f.project,
                "version": f.version,
                "filename": f.filename,
            }
            for f in self.corpus.all_files
        ]
        path.write_text(json.dumps(entries))
        return path

    def contender(self, mode: str, plan: Path, host: str = "") -> list[str]:
        layout = ["--layout", str(self.work / "oras-layout"), "--root", str(self.corpus.root)]
        return [
            sys.executable,
            str(HERE / "contenders.py"),
            mode,
            "--plan",
            str(plan),
            "--registry",
            host,
            "--prefix",
            PREFIX,
            "--jobs",
            str(self.jobs),
            "--tmp",
            str(self.work / "naive-tmp"),
            *layout,
        ]

    def oci_pypi(self, host: str, state: Path, python: str = sys.executable) -> list[str]:
        return [
            python,
            "-P",  # not the working directory's package: the one ``python`` has installed
            "-m",
            "oci_pypi_sync",
            "sync",
            "--all",
            "--to",
            f"{host}/{PREFIX}",
            "--index-url",
            self.corpus.index_url,
            "--jobs",
            str(self.jobs),
            "--state",
            str(state),
            "--no-progress",
            "--json",
        ]

    def run_rounds(self, naive_runs: int, skip: set[str]) -> None:
        """Every contender once per round, round after round.

        Interleaved, so a slow spell of the machine falls on every contender
        alike instead of on one (between two runs the limit's median moved
        from 10.6 s to 12.3 s).
        """
        oras = oras_cli()
        if oras is None:
            print("  oras, oras-layout: no ORAS CLI (set ORAS=PATH), skipped", flush=True)
            skip |= {"oras", "oras-layout"}
        else:
            os.environ["ORAS"] = oras
        order = (
            "download-only",
            "limit",
            "limit-httpx",
            "naive",
            "oras",
            "oras-layout",
            "bandersnatch",
            "oci-pypi",
        )
        for tool in order:
            if tool not in skip:  # the table's order
                self.record("cold", tool)
        if self.against is not None:
            self.record("cold", self.against[0])
        if "oci-pypi" not in skip:
            for case, tool in (
                ("noop", "oci-pypi"),
                *([("noop", self.against[0])] if self.against else []),
                ("noop", "limit"),
                ("changed-1pct", "oci-pypi"),
                *([("changed-1pct", self.against[0])] if self.against else []),
            ):
                self.record(case, tool)
        plan = self.plan()
        (self.work / "naive-tmp").mkdir(exist_ok=True)
        if "oras-layout" not in skip:
            print("  making the OCI layout oras-layout copies from (untimed)...", flush=True)
            made = run_measured(self.contender("oras-layout-make", plan), timeout=self.timeout)
            if made.returncode != 0:
                print(made.stderr[-1500:], file=sys.stderr, flush=True)
                skip.add("oras-layout")
                self.records.pop(("cold", "oras-layout"), None)
        tools = ("download-only", "limit", "limit-httpx", "oci-pypi")
        tools += ("oras", "oras-layout", "naive")
        for i in range(self.runs):
            for tool in tools:
                if tool in skip or (tool == "naive" and i >= naive_runs):
                    continue
                if tool == "oci-pypi":
                    self.run_oci_pypi(i)
                    if self.against is not None:
                        self.run_oci_pypi(i, *self.against)
                else:
                    self.run_baseline(tool, i, plan)
            if "bandersnatch" not in skip:
                self.run_bandersnatch(i)
        notes = {
            "limit": "raw aiohttp",
            "limit-httpx": "the limit of earlier runs (httpx)",
            "naive": "threads, one oras-py client each",
            "oras": "download, then `oras push`",
            "oras-layout": "`oras cp --from-oci-layout` per file",
        }
        for tool, note in notes.items():
            if ("cold", tool) in self.records:
                self.records[("cold", tool)].note = note

    def run_baseline(self, tool: str, i: int, plan: Path) -> None:
        record = self.record("cold", tool)
        record.files, record.bytes_moved = len(self.corpus.all_files), self.corpus.total_bytes
        if tool == "download-only":
            self.measure(record, self.contender(tool, plan))
            return
        with self.registry(f"{tool}-{i}") as reg:
            self.measure(record, self.contender(tool, plan, reg.host), reg)

    def run_bandersnatch(self, i: int) -> None:
        record = self.record("cold", "bandersnatch")
        record.files, record.bytes_moved = len(self.corpus.all_files), self.corpus.total_bytes
        binary = Path(sys.executable).parent / "bandersnatch"
        if not binary.exists():
            found = shutil.which("bandersnatch")
            if found is None:
                record.note = "not installed (pip install bandersnatch)"
                print("  bandersnatch: not installed, skipped", flush=True)
                return
            binary = Path(found)
        workers = min(self.jobs, 10)  # bandersnatch refuses more than 10 workers
        record.note = f"{workers} workers, simple API, files + pages, no .metadata"
        mirror = self.work / f"bandersnatch-{i}"
        config = self.work / f"bandersnatch-{i}.conf"
        config.write_text(
            "[mirror]\n"
            f"directory = {mirror}\n"
            f"master = {self.nginx.url}\n"
            "allow-non-https = true\n"
            "api-method = simple\n"
            "json = false\n"
            "release-files = true\n"
            "hash-index = false\n"
            "simple-format = ALL\n"
            "compare-method = stat\n"
            f"workers = {workers}\n"
            "timeout = 60\n"
            "global-timeout = 3600\n"
            "stop-on-error = true\n"
            "storage-backend = filesystem\n"
            "verifiers = 3\n"
            "keep-index-versions = 0\n"
            "cleanup = false\n"
            "core-metadata = true\n"
        )
        run = self.measure(record, [str(binary), "-c", str(config), "mirror"])
        if run.returncode == 0:
            mirrored = list((mirror / "web" / "packages").rglob("*.*"))
            record.extra["files_on_disk"] = len(
                [p for p in mirrored if not p.name.endswith(".metadata")]
            )
            record.extra["metadata_on_disk"] = len(
                [p for p in mirrored if p.name.endswith(".metadata")]
            )
        shutil.rmtree(mirror, ignore_errors=True)

    def run_oci_pypi(self, i: int, tool: str = "oci-pypi", python: str = sys.executable) -> None:
        """``cold``, ``noop`` and ``changed-1pct`` of ``tool`` (run by ``python``), in order."""
        cold = self.record("cold", tool)
        noop = self.record("noop", tool)
        changed = self.record("changed-1pct", tool)
        state = self.work / f"state-{tool}-{i}.sqlite"
        with self.registry(f"{tool}-{i}") as reg:
            cold.files, cold.bytes_moved = len(self.corpus.all_files), self.corpus.total_bytes
            run = self.measure(cold, self.oci_pypi(reg.host, state, python), reg)
            cold.extra["totals"] = _totals(run.stdout)
            run = self.measure(noop, self.oci_pypi(reg.host, state, python), reg)
            noop.extra["totals"] = _totals(run.stdout)
            if tool == "oci-pypi":
                limit_noop = self.record("noop", "limit")
                limit_noop.note = "HEAD per blob, nothing to push"
                self.measure(limit_noop, self.contender("limit", self.plan(), reg.host), reg)
            added = corpus_mod.add_releases(self.corpus, 0.01, i + 1)
            changed.files = len(added)
            changed.bytes_moved = sum(f.size for f in added)
            changed.extra["projects_changed"] = len({f.project for f in added})
            run = self.measure(changed, self.oci_pypi(reg.host, state, python), reg)
            changed.extra["totals"] = _totals(run.stdout)
            corpus_mod.remove_releases(self.corpus, added)
        state.unlink(missing_ok=True)


def build_revision(rev: str) -> tuple[str, str]:
    """The tool at commit ``rev``, installed into a virtualenv of its own.

    Built once per commit under ``.bench/against/<commit>/`` (from ``git
    archive``, so the working tree is untouched) and kept for later runs.
    Returns the record's label (``oci-pypi@<short commit>``) and the python
    that runs that build.
    """
    repo = HERE.parent
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    home = repo / ".bench" / "against" / commit
    python = home / "venv" / "bin" / "python"
    if not (home / "built").exists():
        shutil.rmtree(home, ignore_errors=True)
        (home / "src").mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(repo), "archive", commit], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(home / "src")], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
        print(f"  building oci-pypi at {commit[:12]} into {home}...", flush=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(home / "src")], check=True)
        (home / "built").write_text(commit + "\n")
    return f"oci-pypi@{commit[:7]}", str(python)


def _totals(stdout: str) -> dict[str, Any]:
    try:
        totals = json.loads(stdout).get("totals", {})
    except json.JSONDecodeError:
        return {}
    return dict(totals) if isinstance(totals, dict) else {}


# --- extra checks ----------------------------------------------------------------------


def project_list_check(work: Path, runs: int) -> dict[str, Any]:
    """927,088 names as a ~40 MB HTML list behind nginx; ``oci-pypi projects`` reads it."""
    from project_list import PROJECTS, generated_list, median_parse_seconds

    root = work / "list-root"
    page = root / "list" / "simple" / "index.html"
    page.parent.mkdir(parents=True)
    body = generated_list()
    page.write_bytes(body)
    parse_s, count = median_parse_seconds(body, runs)
    port = free_port()
    walls: list[float] = []
    rss: list[float] = []
    lines = 0
    with running_nginx(root, work / "list-nginx", port):
        url = f"http://127.0.0.1:{port}/list/simple/"
        for _ in range(runs):
            run = run_measured(
                [sys.executable, "-m", "oci_pypi_sync", "projects", "--index-url", url], timeout=300
            )
            if run.returncode != 0:
                raise RuntimeError(f"oci-pypi projects failed: {run.stderr[-1500:]}")
            walls.append(run.wall_s)
            rss.append(run.peak_rss_mb)
            lines = run.stdout.count("\n")
    return {
        "case": "project-list",
        "tool": "oci-pypi",
        "names": count,
        "expected": PROJECTS,
        "listed": lines,
        "html_mb": round(len(body) / MB, 1),
        "parse_s": round(parse_s, 3),
        "wall_s": round(statistics.median(walls), 3),
        "peak_rss_mb": round(max(rss), 1),
    }


SERVE_SCRIPT = """
import asyncio, sys
from oci_pypi_sync.serve.server import serve
from oci_pypi_sync.stores.targets import open_store, parse_target

async def main():
    store = open_store(parse_target(sys.argv[1]), create=False)
    try:
        await serve(store, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    finally:
        await store.aclose()

asyncio.run(main())
"""


def serve_check(work: Path, jobs: int, requests: int) -> dict[str, Any] | None:
    """Warm latency of the served JSON page of a 2,500-file project (median of many GETs)."""
    try:
        import oci_pypi_sync.serve.server  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    wide = corpus_mod.generate_wide_project(work / "wide-root", f"http://127.0.0.1:{port}")
    layout = work / "wide-layout"
    with running_nginx(wide.root, work / "wide-nginx", port):
        sync = run_measured(
            [
                sys.executable,
                "-m",
                "oci_pypi_sync",
                "sync",
                "bench-wide",
                "--to",
                f"oci:{layout}",
                "--index-url",
                wide.index_url,
                "--jobs",
                str(jobs),
                "--no-state",
                "--no-progress",
            ],
            timeout=600,
        )
    if sync.returncode != 0:
        raise RuntimeError(f"sync of the 2,500-file project failed: {sync.stderr[-1500:]}")
    serve_port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, f"oci:{layout}", str(serve_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{serve_port}/simple/bench-wide/"
    try:
        latencies: dict[str, list[float]] = {}
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.get(f"http://127.0.0.1:{serve_port}/simple/")
                    break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.1)
            files = 0
            for kind, accept in (
                ("json", "application/vnd.pypi.simple.v1+json"),
                ("html", "text/html"),
            ):
                for _ in range(5):  # warm: the first reads fill its caches
                    client.get(url, headers={"Accept": accept}).raise_for_status()
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    response = client.get(url, headers={"Accept": accept})
                    times.append(time.perf_counter() - started)
                    response.raise_for_status()
                if kind == "json":
                    files = len(response.json()["files"])
                latencies[kind] = times
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    json_ms = sorted(t * 1000 for t in latencies["json"])
    html_ms = sorted(t * 1000 for t in latencies["html"])
    return {
        "case": "serve-warm-page",
        "tool": "oci-pypi",
        "files_on_page": files,
        "requests": requests,
        "json_median_ms": round(statistics.median(json_ms), 2),
        "json_p95_ms": round(json_ms[int(len(json_ms) * 0.95) - 1], 2),
        "html_median_ms": round(statistics.median(html_ms), 2),
        "sync_wall_s": round(sync.wall_s, 2),
    }


def profile_small_files(
    work: Path, shape: corpus_mod.Shape, jobs: int, out: Path
) -> dict[str, Any]:
    """oci-pypi cold under py-spy on small files only, and the limit on the same files.

    Writes a flame graph and collapsed stacks to ``out``; returns the
    registry round trips per blob of both and the top frames by own time.
    """
    out.mkdir(parents=True, exist_ok=True)
    small = corpus_mod.Shape(shape.projects, shape.small, shape.small_size, 0, 0, 0, 0)
    port = free_port()
    root = work / "small-root"
    small_corpus = corpus_mod.generate(root, f"http://127.0.0.1:{port}", small, seed=11)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    result: dict[str, Any] = {"files": len(small_corpus.all_files)}
    with running_nginx(root, work / "small-nginx", port) as nginx:
        bench = Bench(work, small_corpus, nginx, jobs, 1, 600)
        plan = bench.plan()
        limit = bench.record("cold-small", "limit")
        with bench.registry("small-limit") as reg:
            bench.measure(limit, bench.contender("limit", plan, reg.host), reg)
        plain = bench.record("cold-small", "oci-pypi")
        with bench.registry("small-plain") as reg:
            bench.measure(plain, bench.oci_pypi(reg.host, work / "small-plain.sqlite"), reg)
        profiled = bench.record("cold-small", "oci-pypi under py-spy")
        with bench.registry("small-profiled") as reg:
            argv = bench.oci_pypi(reg.host, work / "small-profiled.sqlite")
            spy = [pyspy, "record", "--rate", "200", "--subprocesses", "--nonblocking"]
            bench.measure(profiled, [*spy, "-o", str(out / "profile.svg"), "--", *argv], reg)
        with bench.registry("small-raw") as reg:
            argv = bench.oci_pypi(reg.host, work / "small-raw.sqlite")
            raw = [*spy, "--format", "raw", "-o", str(out / "profile.txt"), "--", *argv]
            run_measured(raw, timeout=600)
        for record in (limit, plain):
            blobs = len(small_corpus.all_files)
            result[record.tool] = {
                "wall_s": round(record.wall_s, 3),
                "cpu_s": round(_median(record.cpu), 3),
                "registry_cpu_s": round(_median(record.registry_cpu), 3),
                "registry_requests": dict(record.registry_requests),
                "registry_requests_per_file": round(
                    sum(record.registry_requests.values()) / blobs, 2
                ),
                "index_requests": dict(record.index_requests),
                "index_requests_per_file": round(sum(record.index_requests.values()) / blobs, 2),
            }
        result["profiled_wall_s"] = round(profiled.wall_s, 3)
    if (out / "profile.txt").exists():
        result["frames"] = top_frames(out / "profile.txt")
    return result


def _frame_package(frame: str) -> str:
    """Where a frame's code lives: a package (``httpx``), a product module, or ``import``."""
    location = frame.rpartition(" (")[2].rstrip(")")
    path = location.rpartition(":")[0]
    if path.startswith("<frozen importlib") or "importlib" in path:
        return "import machinery"
    if path.startswith("oci_pypi_sync/"):
        return path.removesuffix(".py").replace("/", ".")
    if path.startswith("<frozen"):
        return path.strip("<>").removeprefix("frozen ")
    return path.split("/", 1)[0].removesuffix(".py") or "?"


def top_frames(collapsed: Path, count: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Percent of samples (py-spy counts on-CPU samples only) per function, by own
    time and by total time, and own time per package."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    package: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, weight = line.rpartition(" ")
        if not weight.isdigit():
            continue
        n = int(weight)
        samples += n
        # drop the "process N:..." root frame and the line numbers
        frames = [f.rpartition(":")[0] + ")" for f in stack.split(";")[1:] if ":" in f]
        if not frames:
            continue
        own[frames[-1]] += n
        package[_frame_package(stack.split(";")[-1])] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return {}

    def share(counter: collections.Counter[str], k: int) -> list[tuple[str, float]]:
        return [(f, round(100 * n / samples, 1)) for f, n in counter.most_common(k)]

    return {
        "own": share(own, count),
        "total": share(total, count * 2),
        "package": share(package, count),
    }


# --- report ----------------------------------------------------------------------------


def print_table(bench: Bench) -> None:
    limit = bench.records.get(("cold", "limit"))
    naive = bench.records.get(("cold", "naive"))
    header = (
        f"{'case':<13} {'tool':<16} {'wall_s':>8} {'MB/s':>7} {'x limit':>8} {'naive/x':>8} "
        f"{'rss_MB':>7} {'cpu_s':>6} {'reg_cpu':>7} {'idx req':>8} {'reg req':>8} "
        f"{'req/file':>8}  note"
    )
    print("\n" + header)
    print("-" * len(header))
    for record in bench.records.values():
        rate = record.bytes_moved / MB / record.wall_s if record.walls else 0
        vs_limit = f"{record.wall_s / limit.wall_s:8.2f}" if limit and limit.walls else f"{'':>8}"
        vs_naive = f"{naive.wall_s / record.wall_s:8.2f}" if naive and naive.walls else f"{'':>8}"
        failed = " FAILED" if record.failures else ""
        registry_total = sum(record.registry_requests.values())
        per_file = f"{registry_total / record.files:.2f}" if record.files and registry_total else ""
        print(
            f"{record.case:<13} {record.tool:<16} {record.wall_s:8.2f} {rate:7.1f} {vs_limit} "
            f"{vs_naive} {record.peak_rss_mb:7.1f} {_median(record.cpu):6.2f} "
            f"{_median(record.registry_cpu):7.2f} {sum(record.index_requests.values()):8d} "
            f"{sum(record.registry_requests.values()):8d} {per_file:>8}  {record.note}{failed}"
        )


def print_request_kinds(bench: Bench) -> None:
    """oci-pypi's registry requests per file by what they were for (cold, changed-1pct)."""
    for case in ("cold", "changed-1pct"):
        record = bench.records.get((case, "oci-pypi"))
        kinds = record.extra.get("request_kinds") if record else None
        if not record or not kinds or not record.files:
            continue
        total = sum(kinds.values())
        print(
            f"\noci-pypi {case}: {total} registry requests for {record.files} files "
            f"({total / record.files:.2f} per file)"
        )
        for kind, count in sorted(kinds.items(), key=lambda item: -item[1]):
            print(f"  {count:7d}  {count / record.files:6.3f}/file  {kind}")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def targets(bench: Bench, extras: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(target, held?, the numbers): None when it could not be measured."""
    r = bench.records
    cold, noop, changed = (
        r[("cold", "oci-pypi")],
        r[("noop", "oci-pypi")],
        r[("changed-1pct", "oci-pypi")],
    )
    limit, naive = r.get(("cold", "limit")), r.get(("cold", "naive"))
    bander = r.get(("cold", "bandersnatch"))
    out: list[tuple[str, bool | None, str]] = []
    if limit and limit.walls:
        ratio = cold.wall_s / limit.wall_s
        out.append((f"cold within {LIMIT_RATIO}x of limit", ratio <= LIMIT_RATIO, f"{ratio:.2f}x"))
    oras = r.get(("cold", "oras"))
    if oras and oras.walls and not oras.failures:
        out.append(
            (
                "cold faster than oras per file",
                cold.wall_s < oras.wall_s,
                f"{1000 * cold.wall_s / cold.files:.2f} ms vs {1000 * oras.wall_s / oras.files:.2f}"
                f" ms per file ({oras.wall_s / cold.wall_s:.2f}x)",
            )
        )
    else:
        out.append(("cold faster than oras per file", None, oras.note if oras else "not run"))
    stacks = extras.get("http_stack")
    if stacks:
        rows = stacks["rows"]
        ratio = rows["store"]["us_per_request"] / rows["aiohttp"]["us_per_request"]
        out.append(
            (
                f"client CPU per registry request within {CPU_PER_REQUEST_RATIO}x of raw aiohttp",
                ratio <= CPU_PER_REQUEST_RATIO,
                f"{rows['store']['us_per_request']:.0f} us vs "
                f"{rows['aiohttp']['us_per_request']:.0f} us ({ratio:.2f}x)",
            )
        )
    if naive and naive.walls:
        ratio = naive.wall_s / cold.wall_s
        out.append(("cold >= 3x faster than naive", ratio >= 3, f"{ratio:.2f}x faster"))
    if bander and bander.walls and not bander.failures:
        out.append(
            (
                "cold faster than bandersnatch (download only)",
                cold.wall_s < bander.wall_s,
                f"{cold.wall_s:.2f} s vs {bander.wall_s:.2f} s",
            )
        )
    else:
        out.append(
            (
                "cold faster than bandersnatch (download only)",
                None,
                bander.note if bander else "not run",
            )
        )
    share = noop.wall_s / cold.wall_s
    out.append(("noop <= 3% of cold", share <= 0.03, f"{100 * share:.1f}%"))
    fair = cold.wall_s * changed.files / max(1, cold.files)
    bound = noop.wall_s + 3 * fair + 0.25
    out.append(
        (
            "changed-1pct proportional (<= noop + 3 x cold share of files + 0.25 s)",
            changed.wall_s <= bound,
            f"{changed.wall_s:.2f} s vs bound {bound:.2f} s (cold share {fair:.3f} s)",
        )
    )
    if bench.against is not None:
        label = bench.against[0]
        for case, ours in (("cold", cold), ("noop", noop)):
            theirs = r.get((case, label))
            if theirs and theirs.walls and not theirs.failures:
                ratio = ours.wall_s / theirs.wall_s
                out.append(
                    (
                        f"{case} no slower than {label} (within {AGAINST_NOISE:.0%})",
                        ratio <= 1 + AGAINST_NOISE,
                        f"{ours.wall_s:.2f} s vs {theirs.wall_s:.2f} s ({ratio:.2f}x)",
                    )
                )
    worst = max(rec.peak_rss_mb for rec in (cold, noop, changed))
    out.append(("oci-pypi peak RSS < 100 MB", worst < RSS_LIMIT_MB, f"{worst:.1f} MB"))
    plist = extras.get("project_list")
    if plist:
        out.append(("project list parse < 1 s", plist["parse_s"] < 1, f"{plist['parse_s']:.3f} s"))
    serve = extras.get("serve")
    if serve:
        out.append(
            (
                "serve warm page < 20 ms median",
                serve["json_median_ms"] < 20,
                f"{serve['json_median_ms']:.2f} ms JSON, {serve['html_median_ms']:.2f} ms HTML",
            )
        )
    else:
        out.append(("serve warm page < 20 ms median", None, "no oci_pypi_sync.serve"))
    return out


def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return f"{os.cpu_count()} CPUs ({model}), {mem_kib / 1024 / 1024:.1f} GiB RAM"


LOADS: list[str] = []


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def oras_cli() -> str | None:
    """The ORAS CLI: ``$ORAS``, on ``PATH``, or in a ``shared/bin`` beside the checkout."""
    candidates = [os.environ.get("ORAS"), shutil.which("oras")]
    candidates += [str(up / "shared" / "bin" / "oras") for up in HERE.parents[:3]]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return candidate
    return None


def scratch_dir() -> Path:
    """tmpfs when it has room (registry and mirror writes then cost the same for all)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 8 * 1024**3:
        return shm
    return Path(tempfile.gettempdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced corpus, one run: 5-10 min")
    parser.add_argument("--runs", type=int, default=None, help="runs per case (default 3; quick 1)")
    parser.add_argument(
        "--naive-runs", type=int, default=None, help="runs of naive (default: --runs)"
    )
    parser.add_argument("--jobs", type=int, default=8, help="files at once, for every contender")
    parser.add_argument("--json", type=Path, help="write the records here")
    parser.add_argument("--profile", type=Path, help="profile the small-file case into DIR")
    parser.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    parser.add_argument("--serve-requests", type=int, default=200)
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also run oci-pypi as it was at commit REV, in the same rounds (cold, noop, changed)",
    )
    parser.add_argument(
        "--skip", action="append", default=[], choices=[*TOOLS, "list", "serve", "http-stack"]
    )
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 3)
    shape = corpus_mod.QUICK if args.quick else corpus_mod.FULL
    # Byte-compile the package as a wheel install does: the session installs it
    # editable, and with PYTHONDONTWRITEBYTECODE set every run would compile it.
    import oci_pypi_sync

    compileall.compile_dir(Path(oci_pypi_sync.__file__).parent, quiet=1)

    LOADS.append(_loadavg())
    print(f"machine: {machine()}; scratch on {scratch_dir()}; loadavg {LOADS[0]}", flush=True)
    extras: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="oci-pypi-bench-", dir=scratch_dir()) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # nginx workers run as an unprivileged user
        port = free_port()
        started = time.monotonic()
        corpus = corpus_mod.generate(work / "root", f"http://127.0.0.1:{port}", shape)
        sizes = collections.Counter(f.size_class for f in corpus.all_files)
        print(
            f"corpus: {len(corpus.all_files)} files ({dict(sizes)}), {len(corpus.files)} projects, "
            f"{corpus.total_bytes / MB:.0f} MB, generated in {time.monotonic() - started:.1f} s; "
            f"{runs} run(s) per case, {args.jobs} files at once",
            flush=True,
        )
        with running_nginx(
            work / "root", work / "nginx", port, workers=os.cpu_count() or 2
        ) as nginx:
            against = build_revision(args.against) if args.against else None
            bench = Bench(work, corpus, nginx, args.jobs, runs, args.timeout, against)
            skip = set(args.skip)
            bench.run_rounds(args.naive_runs or runs, skip)
        if "list" not in skip:
            print("project list check...", flush=True)
            extras["project_list"] = project_list_check(work, 1 if args.quick else 3)
        if "serve" not in skip:
            print("serve check...", flush=True)
            served = serve_check(work, args.jobs, args.serve_requests)
            if served:
                extras["serve"] = served
        if "http-stack" not in skip:
            import http_stack

            print("client CPU per registry request, side by side...", flush=True)
            extras["http_stack"] = http_stack.compare(
                ["aiohttp", "store"],
                blobs=1000 if args.quick else 2000,
                size=20_000,
                jobs=args.jobs,
                rounds=runs,
            )
        if args.profile:
            print("profiling the small-file case...", flush=True)
            extras["profile"] = profile_small_files(work, shape, args.jobs, args.profile)

    print_table(bench)
    print_request_kinds(bench)
    stacks = extras.get("http_stack")
    if stacks:
        print()
        import http_stack

        http_stack.print_rows(stacks)
    LOADS.append(_loadavg())
    plist = extras.get("project_list")
    if plist:
        print(
            f"\nproject list: {plist['listed']:,} of {plist['expected']:,} names, "
            f"{plist['html_mb']} MB HTML: parse {plist['parse_s']:.3f} s, "
            f"`oci-pypi projects` end to end {plist['wall_s']:.2f} s, {plist['peak_rss_mb']:.0f} MB"
        )
    serve = extras.get("serve")
    if serve:
        print(
            f"serve: {serve['files_on_page']}-file page, {serve['requests']} warm requests: "
            f"JSON median {serve['json_median_ms']} ms (p95 {serve['json_p95_ms']}), "
            f"HTML median {serve['html_median_ms']} ms"
        )
    profile = extras.get("profile")
    if profile:
        print(f"\nsmall-file case ({profile['files']} files):")
        for tool in ("limit", "oci-pypi"):
            p = profile[tool]
            print(
                f"  {tool:<9} {p['wall_s']:7.2f} s (cpu {p['cpu_s']:.2f} s, "
                f"registry cpu {p['registry_cpu_s']:.2f} s)  "
                f"registry {p['registry_requests_per_file']}/file "
                f"{p['registry_requests']}  index {p['index_requests_per_file']}/file"
            )
        print(f"  under py-spy: {profile['profiled_wall_s']:.2f} s; on-CPU samples by own time:")
        frames = profile.get("frames", {})
        for frame, share in frames.get("package", [])[:10]:
            print(f"    {share:5.1f}%  {frame}")
        print("  top functions by own time:")
        for frame, share in frames.get("own", [])[:10]:
            print(f"    {share:5.1f}%  {frame}")
    print()
    crashed = False
    for name, held, numbers in targets(bench, extras):
        verdict = "n/a " if held is None else ("PASS" if held else "FAIL")
        print(f"{verdict}  {name}: {numbers}")
    if bench.against is not None:
        label = bench.against[0]
        for case in ("cold", "noop", "changed-1pct"):
            ours, theirs = bench.records.get((case, "oci-pypi")), bench.records.get((case, label))
            if ours and theirs and len(ours.walls) == len(theirs.walls) > 0:
                rounds = [a / b for a, b in zip(ours.walls, theirs.walls, strict=True)]
                print(
                    f"info  {case} / {case} of {label} per round: "
                    + ", ".join(f"{r:.2f}" for r in rounds)
                    + f" (median {_median(rounds):.2f}; CPU {_median(ours.cpu):.2f} s"
                    f" vs {_median(theirs.cpu):.2f} s)"
                )
    old_limit = bench.records.get(("cold", "limit-httpx"))
    cold = bench.records.get(("cold", "oci-pypi"))
    limit = bench.records.get(("cold", "limit"))
    if limit and cold and len(limit.walls) == len(cold.walls) > 1:
        # each round ran both: the per-round ratios show the spread the medians hide
        rounds = [ours / theirs for ours, theirs in zip(cold.walls, limit.walls, strict=True)]
        print(
            "info  cold / limit per round: "
            + ", ".join(f"{r:.2f}" for r in rounds)
            + f" (median {_median(rounds):.2f})"
        )
    if old_limit and old_limit.walls and cold and cold.walls:
        ratio = cold.wall_s / old_limit.wall_s
        print(f"info  cold vs limit-httpx (the earlier limit): {ratio:.2f}x")
    print(f"info  loadavg at start and end: {' | '.join(LOADS)} ({os.cpu_count()} CPUs)")
    for record in bench.records.values():
        if record.failures:
            crashed = True
            print(f"CRASH {record.case}/{record.tool}: {record.failures[0][:500]}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps([r.as_json() for r in bench.records.values()], indent=2))
        extra_path = args.json.with_name(args.json.stem + ".extra.json")
        extra_path.write_text(json.dumps({"machine": machine(), **extras}, indent=2))
        print(f"\nwrote {args.json} and {extra_path}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
