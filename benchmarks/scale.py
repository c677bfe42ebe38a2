"""Costs against the size of the mirror: 1k to 1M projects, tiny files (``nox -s scale``).

Generated indexes (one project = one version = one tiny sdist; every file
has the same bytes, so blobs cost nothing and what is measured is the
per-project work) are served by nginx from ``.bench/scale/`` where they are
generated once and kept. Each component runs in a process of its own, so
its CPU time and peak RSS are its own:

* ``layout tag add``: CPU per tag to tag one more release (and look the tag
  up again, as a sync does) in a layout that holds N tags;
* ``catalog update``: CPU to record one changed project in a catalog of N;
* ``no-op, conditional GETs`` / ``no-op, serials``: a re-run of
  ``sync --all`` after a complete one, against a root list without and with
  ``_last-serial`` (the target is a registry filled once and kept);
* ``serve root cold`` / ``warm``: the first and a later ``GET /simple/`` of
  ``oci-pypi serve`` over a catalog of N projects (latency);
* ``verify``: ``oci-pypi verify`` of the filled registry, whole and a
  ``--sample`` of 1% (every tag list is still read);
* ``--all --dry-run``: peak RSS of planning every project;
* ``root list``: parsing the root list and picking a shard's names.

The table gives each component's value per size and its growth exponent
(the slope of log(cost) over log(N)); the targets follow. CPU seconds are
what to compare: the machine is shared, wall times move with its load
(printed before and after).

    python benchmarks/scale.py [--sizes 1000,10000,100000] [--only a,b] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from bench import machine, run_measured  # noqa: E402
from registry_server import registry_binary, registry_config  # noqa: E402
from servers import Nginx, free_port  # noqa: E402
from servers import running_nginx as servers_nginx  # noqa: E402

CACHE = REPO / ".bench" / "scale"
PEP691 = "application/vnd.pypi.simple.v1+json"
FILE_BYTES = hashlib.sha256(b"oci-pypi scale").digest() * 16  # 512 bytes, shared by every file
FILE_SHA256 = hashlib.sha256(FILE_BYTES).hexdigest()
UPLOAD_TIME = "2024-01-02T03:04:05.123456Z"
FIRST_SERIAL = 1_000_000
REGISTRY_PORT = 5591  # the default: a filled mirror's state file names the port it was filled on
#: The fraction ``verify --sample`` draws in its row.
VERIFY_SAMPLE = 0.01
PREFIX = "scale"
CACHE_VERSION = "1"

COMPONENTS = (
    "layout",
    "catalog",
    "noop",
    "serve",
    "verify",
    "dryrun",
    "rootlist",
)


def project_name(i: int) -> str:
    return f"scale-{i:07d}"


# --- the generated index ------------------------------------------------------------------


def index_dir(size: int) -> Path:
    return CACHE / f"index-{size}"


def project_page(name: str, serial: int) -> bytes:
    filename = f"{name}-1.0.tar.gz"
    page = {
        "meta": {"api-version": "1.1", "_last-serial": serial},
        "name": name,
        "files": [
            {
                "filename": filename,
                "url": f"../../files/{filename}",
                "hashes": {"sha256": FILE_SHA256},
                "size": len(FILE_BYTES),
                "upload-time": UPLOAD_TIME,
                "yanked": False,
            }
        ],
        "versions": ["1.0"],
    }
    return json.dumps(page, separators=(",", ":")).encode()


def generate_index(size: int) -> Path:
    """The index of ``size`` projects under .bench/scale/index-N (made once, then kept)."""
    root = index_dir(size)
    done = root / "complete"
    if done.is_file() and done.read_text() == CACHE_VERSION:
        return root
    shutil.rmtree(root, ignore_errors=True)
    pages = root / "pages"
    pages.mkdir(parents=True)
    started = time.monotonic()
    names = [project_name(i) for i in range(size)]
    serials = {name: FIRST_SERIAL + i for i, name in enumerate(names)}
    for name in names:
        (pages / f"{name}.json").write_bytes(project_page(name, serials[name]))
    (root / "file.bin").write_bytes(FILE_BYTES)
    last = max(serials.values())
    with_serials = {
        "meta": {"api-version": "1.1", "_last-serial": last},
        "projects": [{"name": n, "_last-serial": serials[n]} for n in names],
    }
    plain = {"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]}
    (root / "simple.json").write_bytes(json.dumps(with_serials, separators=(",", ":")).encode())
    (root / "plain.json").write_bytes(json.dumps(plain, separators=(",", ":")).encode())
    done.write_text(CACHE_VERSION)
    log(f"generated the index of {size:,} projects in {time.monotonic() - started:.1f} s")
    return root


def nginx_config(root: Path, work: Path, port: int) -> str:
    """``/simple/`` lists projects with serials, ``/plain/`` without; the pages are shared."""
    temp = work / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    temps = "\n".join(
        f"  {name}_temp_path {temp / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
worker_processes 1;
daemon off;
pid {work / "nginx.pid"};
error_log {work / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  log_format scale '$request_method $uri $status';
  access_log {work / "access.log"} scale;
{temps}
  keepalive_requests 10000000;
  server {{
    listen 127.0.0.1:{port};
    root {root};
    types {{ }}
    default_type {PEP691};
    location = /simple/ {{ try_files /simple.json =404; }}
    location = /plain/ {{ try_files /plain.json =404; }}
    location ~ ^/(simple|plain)/([^/]+)/$ {{ try_files /pages/$2.json =404; }}
    location /files/ {{ default_type application/octet-stream; try_files /file.bin =404; }}
  }}
}}
"""


@contextlib.contextmanager
def running_nginx(root: Path, work: Path) -> Iterator[Nginx]:
    """nginx on a free port serving the generated index at ``root`` (see :func:`nginx_config`)."""
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    with servers_nginx(root, work, port, config_text=nginx_config(root, work, port)) as nginx:
        yield nginx


@contextlib.contextmanager
def running_registry(storage: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Distribution on a fixed port (the state file of the filled mirror names it)."""
    binary = registry_binary()
    if binary is None:
        raise SystemExit("docker-registry is not installed: apt-get install -y docker-registry")
    storage.mkdir(parents=True, exist_ok=True)
    config = json.loads(registry_config(storage, port))
    config["log"] = {"level": "error", "formatter": "text"}
    config_file = storage / "config.yml"
    config_file.write_text(json.dumps(config))
    with (storage / "registry.log").open("ab") as out:
        process = subprocess.Popen(
            [binary, "serve", str(config_file)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1.0), process, "registry"
        )
        yield process
    finally:
        stop(process)


def keep_state(state: Path, kept: Path) -> None:
    """Copy a state file over ``kept`` (through SQLite's backup, whatever its journal holds)."""
    with (
        contextlib.closing(sqlite3.connect(state)) as source,
        contextlib.closing(sqlite3.connect(kept)) as target,
    ):
        source.backup(target)


def compile_package() -> None:
    """Byte-compile the package once, as installing it does: every run then starts from
    bytecode, also where ``PYTHONDONTWRITEBYTECODE`` would have each one compile it."""
    import compileall

    import oci_pypi_sync

    compileall.compile_dir(Path(oci_pypi_sync.__file__).parent, quiet=1)


def wait_for(probe: Callable[[], object], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            probe()
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer within 60 s") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


# --- measurements -------------------------------------------------------------------------


@dataclass
class Measure:
    """One component at one size: its value (in ``unit``) and what goes with it."""

    component: str
    size: int
    value: float
    unit: str
    extra: dict[str, Any] = field(default_factory=dict)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "oci_pypi_sync", *args]


def probe(name: str, size: int, *args: str, timeout: float = 7200) -> dict[str, Any]:
    """Run ``scale.py --probe NAME`` in a process of its own; its JSON result."""
    run = run_measured(
        [sys.executable, str(Path(__file__)), "--probe", name, "--size", str(size), *args],
        timeout=timeout,
    )
    if run.returncode != 0:
        raise RuntimeError(f"probe {name} at {size} failed: {run.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = round(run.peak_rss_mb, 1)
    return result


def has_option(command: str, option: str) -> bool:
    shown = subprocess.run(cli(command, "--help"), capture_output=True, text=True, check=False)
    return option in shown.stdout


class Scale:
    def __init__(
        self, sizes: Sequence[int], fill_max: int, verify_max: int, port: int = REGISTRY_PORT
    ) -> None:
        self.sizes = sizes
        self.port = port
        self.fill_max = fill_max
        self.verify_max = verify_max
        self.measures: list[Measure] = []

    def add(self, component: str, size: int, value: float, unit: str, **extra: Any) -> None:
        measure = Measure(component, size, value, unit, extra)
        self.measures.append(measure)
        details = " ".join(f"{k}={v}" for k, v in extra.items())
        log(f"{component} at {size:,}: {value:.4g} {unit} {details}")

    # --- components ---------------------------------------------------------------

    def layout(self, size: int) -> None:
        result = probe("layout", size)
        shown = ("tags", "tag_ms_without_fold", "tags_per_fold")
        extra = {k: result[k] for k in shown if k in result}
        self.add("layout tag add", size, result["cpu_ms_per_tag"], "ms CPU/tag", **extra)
        self.add("layout commit (per sync)", size, result["commit_ms"], "ms CPU")

    def catalog(self, size: int) -> None:
        result = probe("catalog", size)
        self.add("catalog update (1 project)", size, result["cpu_ms"], "ms CPU")

    def rootlist(self, size: int) -> None:
        generate_index(size)
        result = probe("rootlist", size)
        self.add("root list parse + shard", size, result["cpu_ms"], "ms CPU")

    def serve(self, size: int) -> None:
        layout = catalog_layout(size)
        port = free_port()
        server = subprocess.Popen(
            cli("serve", "--from", f"oci:{layout}", "--port", str(port), "-q")
            if has_option("serve", "--quiet")
            else cli("serve", "--from", f"oci:{layout}", "--port", str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: httpx.get(url + "/", timeout=1.0), server, "serve")
            cold, cold_cpu = timed_get(url + "/simple/", server.pid)
            warm = []
            warm_json = []
            warm_cpu = 0.0
            for _ in range(10):
                latency, cpu = timed_get(url + "/simple/", server.pid)
                warm.append(latency)
                latency, more = timed_get(url + "/simple/", server.pid, accept=PEP691)
                warm_json.append(latency)
                warm_cpu += cpu + more
            rss = vm_hwm_mb(server.pid)
        finally:
            stop(server)
        self.add("serve root cold", size, cold, "ms", cpu_ms=round(cold_cpu, 1), rss_mb=rss)
        self.add(
            "serve root warm",
            size,
            statistics.median(warm),
            "ms",
            json_ms=round(statistics.median(warm_json), 1),
            cpu_ms_per_request=round(warm_cpu / 20, 2),
        )

    def dryrun(self, size: int, nginx: Nginx) -> None:
        report = "--json-lines" if has_option("sync", "--json-lines") else "--json"
        argv = cli("sync", "--all", "--dry-run", report, "-q", "-i", nginx.url + "/simple/")
        offset = nginx.log_size()
        run = run_measured(argv, timeout=4 * 3600)
        if run.returncode != 0:
            raise RuntimeError(f"--all --dry-run failed: {run.stderr[-2000:]}")
        self.add(
            "--all --dry-run peak RSS",
            size,
            run.peak_rss_mb,
            "MB",
            cpu_s=round(run.cpu_s, 1),
            wall_s=round(run.wall_s, 1),
            requests=sum(nginx.requests_since(offset).values()),
            report=report,
        )

    def filled(self, size: int, nginx: Nginx) -> Path:
        """A registry holding the whole index, and the state file of that sync (made once)."""
        home = CACHE / f"mirror-{size}"
        if (home / "complete").is_file():
            return home
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        with running_registry(home / "registry", self.port):
            argv = cli(
                "sync",
                "--all",
                "-q",
                "--jobs",
                "16",
                "--to",
                f"127.0.0.1:{self.port}/{PREFIX}",
                "--state",
                str(home / "state.sqlite"),
                "-i",
                nginx.url + "/simple/",
            )
            run = run_measured(argv, timeout=12 * 3600)
        if run.returncode != 0:
            raise RuntimeError(f"filling the registry failed: {run.stderr[-2000:]}")
        log(f"filled a registry with {size:,} projects: {run.wall_s:.0f} s, {run.cpu_s:.0f} s CPU")
        (home / "complete").write_text(json.dumps({"wall_s": run.wall_s, "cpu_s": run.cpu_s}))
        return home

    def noop(self, size: int, nginx: Nginx) -> None:
        home = self.filled(size, nginx)
        with (
            running_registry(home / "registry", self.port),
            tempfile.TemporaryDirectory(dir=CACHE) as tmp,
        ):
            state = Path(tmp) / "state.sqlite"
            shutil.copyfile(home / "state.sqlite", state)
            target = f"127.0.0.1:{self.port}/{PREFIX}"
            for label, root in (("conditional GETs", "/plain/"), ("serials", "/simple/")):
                argv = cli(
                    "sync", "--all", "-q", "--to", target, "--state", str(state),
                    "-i", nginx.url + root,
                )  # fmt: skip
                # The first run brings a state written by older code up to date;
                # the state it leaves is kept for the next measurement.
                first = run_measured(argv, timeout=4 * 3600)
                if first.returncode != 0:
                    raise RuntimeError(f"no-op run failed: {first.stderr[-2000:]}")
                keep_state(state, home / "state.sqlite")
                offset = nginx.log_size()
                run = run_measured(argv, timeout=4 * 3600)
                if run.returncode != 0:
                    raise RuntimeError(f"no-op run failed: {run.stderr[-2000:]}")
                self.add(
                    f"no-op, {label}",
                    size,
                    run.cpu_s,
                    "s CPU",
                    wall_s=round(run.wall_s, 2),
                    requests=sum(nginx.requests_since(offset).values()),
                    rss_mb=round(run.peak_rss_mb),
                )

    def verify(self, size: int, nginx: Nginx) -> None:
        home = self.filled(size, nginx)
        target = f"127.0.0.1:{self.port}/{PREFIX}"
        sample = ("--sample", str(VERIFY_SAMPLE), "--seed", "1")
        with running_registry(home / "registry", self.port):
            for label, extra in (("verify", ()), (f"verify --sample {VERIFY_SAMPLE:g}", sample)):
                run = run_measured(cli("verify", target, "--json", *extra), timeout=6 * 3600)
                if run.returncode != 0:
                    raise RuntimeError(f"{label} failed: {run.stderr[-2000:]}")
                report = json.loads(run.stdout)
                self.add(
                    label,
                    size,
                    run.cpu_s,
                    "s CPU",
                    wall_s=round(run.wall_s, 1),
                    rss_mb=round(run.peak_rss_mb),
                    tags=report["tags_checked"],
                    blobs=report["blobs_checked"],
                )

    def run(self, only: Sequence[str]) -> None:
        for size in self.sizes:
            if "rootlist" in only:
                self.rootlist(size)
            if "layout" in only:
                self.layout(size)
            if "catalog" in only:
                self.catalog(size)
            if "serve" in only:
                self.serve(size)
            needs_index = {"noop", "verify", "dryrun"} & set(only)
            if not needs_index:
                continue
            root = generate_index(size)
            with (
                tempfile.TemporaryDirectory(dir=CACHE) as work,
                running_nginx(root, Path(work)) as nginx,
            ):
                if "dryrun" in only:
                    self.dryrun(size, nginx)
                if "noop" in only and size <= self.fill_max:
                    self.noop(size, nginx)
                if "verify" in only and size <= min(self.fill_max, self.verify_max):
                    self.verify(size, nginx)


_CLIENT = httpx.Client(timeout=600)


def timed_get(url: str, pid: int, accept: str | None = None) -> tuple[float, float]:
    """Latency of one GET in ms until its last byte (as sent: a gzipped body is not
    decoded, that is the client's work), on a kept connection; and the server's CPU ms."""
    before = cpu_seconds(pid)
    started = time.perf_counter()
    headers = {"Accept-Encoding": "gzip", **({"Accept": accept} if accept else {})}
    with _CLIENT.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        for _chunk in response.iter_raw():
            pass
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, (cpu_seconds(pid) - before) * 1000


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


# --- probes (each in a process of its own) ------------------------------------------------


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def catalog_dir(size: int) -> Path:
    """Where the catalog of ``size`` projects is kept: one per catalog version."""
    try:
        from oci_pypi_sync.ops import catalog_parts  # noqa: F401
    except ImportError:
        return CACHE / f"catalog-{size}"
    return CACHE / f"catalog-v2-{size}"


def catalog_layout(size: int) -> Path:
    """A layout holding only a catalog of ``size`` projects (made once, then kept)."""
    path = catalog_dir(size)
    if (path / "complete").is_file():
        return path
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run(
        [sys.executable, str(Path(__file__)), "--probe", "build-catalog", "--size", str(size)],
        check=True,
    )
    return path


def writer_of(store: Any) -> Any:
    """What update_catalog takes: the store itself, or the writer over it (newer code)."""
    try:
        from oci_pypi_sync.engine.writer import Writer
    except ImportError:
        return store
    return Writer(store)


def catalog_of(names: Sequence[str]) -> Any:
    """What update_catalog records: a change (newer code) or a catalog of additions."""
    from oci_pypi_sync.ops.catalog import Catalog, CatalogRelease

    digest = "sha256:" + hashlib.sha256(b"release").hexdigest()
    releases = {name: {"1.0": CatalogRelease("1.0", "1.0", digest)} for name in names}
    try:
        from oci_pypi_sync.ops.catalog import CatalogChange
    except ImportError:
        return Catalog(releases)
    return CatalogChange(releases)


async def probe_build_catalog(size: int) -> dict[str, Any]:
    from oci_pypi_sync.ops.catalog import update_catalog
    from oci_pypi_sync.stores.layout import LayoutStore

    path = catalog_dir(size)
    store = LayoutStore(path)
    await update_catalog(writer_of(store), catalog_of([project_name(i) for i in range(size)]))
    (path / "complete").write_text("1")
    return {}


async def probe_catalog(size: int) -> dict[str, Any]:
    """Median CPU of three updates, each of one changed project, on a copy of the catalog."""
    from oci_pypi_sync.ops.catalog import update_catalog
    from oci_pypi_sync.stores.layout import LayoutStore

    source = catalog_layout(size)
    times = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        copy = Path(tmp) / "layout"
        shutil.copytree(source, copy)
        store = LayoutStore(copy)
        for k in range(3):
            started = cpu_now()
            await update_catalog(writer_of(store), catalog_of([f"changed-{k}"]))
            times.append(cpu_now() - started)
    return {"cpu_ms": statistics.median(times) * 1000}


async def layout_with_tags(path: Path, size: int) -> None:
    """A layout of ``size`` tagged release indexes, as N tags through the store leave it.

    Written directly in the shape the store gives ``index.json`` (one entry
    per line, sorted, where the store has a write-ahead log; canonical JSON
    before): tagging one by one cost O(N) per tag in the layout of the
    baseline, and building it that way would take hours.
    """
    from oci_pypi_sync.format import OCI_INDEX, REF_NAME, canonical_json
    from oci_pypi_sync.stores.layout import LayoutStore

    store = LayoutStore(path)
    body, digest = release_index("scale-base")
    await store.put_manifest("scale-base", digest, OCI_INDEX, body)
    await store.aclose()
    entries = [
        {
            "mediaType": OCI_INDEX,
            "digest": digest,
            "size": len(body),
            "annotations": {REF_NAME: f"{project_name(i)}/1.0"},
        }
        for i in range(size)
    ]
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    try:
        from oci_pypi_sync.stores.layout_lines import LineIndex
    except ImportError:  # the layout of the baseline: canonical JSON
        (path / "index.json").write_bytes(canonical_json(index))
        return
    with (path / "index.json").open("wb") as out:
        LineIndex.of_document(index).write_merged(out, [])


def release_index(name: str) -> tuple[bytes, str]:
    from oci_pypi_sync.format import OCI_INDEX, canonical_json

    body = canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [], "annotations": {"n": name}}
    )
    return body, "sha256:" + hashlib.sha256(body).hexdigest()


async def probe_layout(size: int) -> dict[str, Any]:
    """CPU per tag of tagging new releases one after another, each looked up again.

    Where tags go to a write-ahead log folded into ``index.json`` once the
    log reaches a share of its size, the fold's CPU (measured at the close)
    is added to each tag in proportion: the log bytes of one tag over the
    log size that makes a writer fold. The close is the commit a sync pays
    once at its end.
    """
    from oci_pypi_sync.format import OCI_INDEX
    from oci_pypi_sync.stores.layout import LayoutStore

    try:
        from oci_pypi_sync.stores.layout_refs import LOG_FILE, fold_threshold
    except ImportError:  # the baseline: every tag rewrites index.json
        tags = 50 if size <= 10_000 else 10 if size <= 100_000 else 3
        logged = False
    else:
        tags = 200
        logged = True
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        path = Path(tmp) / "layout"
        await layout_with_tags(path, size)
        index_bytes = (path / "index.json").stat().st_size
        store = LayoutStore(path)
        await store.list_tags(project_name(0))  # the index as a sync has it after its first lookup
        bodies = [release_index(f"new-{k}") for k in range(tags)]
        started = cpu_now()
        for k, (body, _digest) in enumerate(bodies):
            await store.put_manifest(f"new-{k}", "1.0", OCI_INDEX, body)
            if await store.get_manifest(f"new-{k}", "1.0") is None:
                raise RuntimeError("a tag just written is not found")
        spent = cpu_now() - started
        log_bytes = (path / LOG_FILE).stat().st_size if logged else 0
        # What a sync pays once at its end for other tools to see its tags.
        started = cpu_now()
        await store.aclose()
        commit = cpu_now() - started
    per_tag = spent / tags
    result: dict[str, Any] = {"tags": tags, "commit_ms": commit * 1000, "index_bytes": index_bytes}
    if logged:
        tags_per_fold = fold_threshold(index_bytes) / (log_bytes / tags)
        result["tag_ms_without_fold"] = round(per_tag * 1000, 3)
        result["tags_per_fold"] = round(tags_per_fold)
        per_tag += commit / tags_per_fold
    result["cpu_ms_per_tag"] = per_tag * 1000
    return result


async def probe_rootlist(size: int) -> dict[str, Any]:
    """CPU to parse the project list and count one shard's projects, as ``sync --all`` does."""
    from oci_pypi_sync.plan.shard import Shard

    body = (index_dir(size) / "simple.json").read_bytes()
    shard = Shard(0, 8)
    try:
        from oci_pypi_sync.index.projects import parse_project_index
        from oci_pypi_sync.plan.listed import ListedProjects
    except ImportError:  # older code: a list of names, each normalized to be sharded
        from oci_pypi_sync.index.projects import parse_project_list

        started = cpu_now()
        names = parse_project_list(body, PEP691)
        count, mine = len(names), len([name for name in names if shard.owns(name)])
    else:
        started = cpu_now()
        listing = parse_project_index(body, PEP691)
        count, mine = len(listing), len(ListedProjects(listing, shard=shard))
    spent = cpu_now() - started
    return {"cpu_ms": spent * 1000, "names": count, "shard": mine}


PROBES = {
    "layout": probe_layout,
    "catalog": probe_catalog,
    "build-catalog": probe_build_catalog,
    "rootlist": probe_rootlist,
}


# --- the table ----------------------------------------------------------------------------


def exponent(points: Sequence[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(value) over log(size)."""
    usable = [(math.log(n), math.log(v)) for n, v in points if v > 0]
    if len(usable) < 2:
        return None
    mean_x = statistics.fmean(x for x, _ in usable)
    mean_y = statistics.fmean(y for _, y in usable)
    spread = sum((x - mean_x) ** 2 for x, _ in usable)
    if spread == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in usable) / spread


def by_component(measures: Sequence[Measure]) -> dict[str, dict[int, Measure]]:
    table: dict[str, dict[int, Measure]] = {}
    for m in measures:
        table.setdefault(m.component, {})[m.size] = m
    return table


def print_table(measures: Sequence[Measure], sizes: Sequence[int]) -> None:
    table = by_component(measures)
    head = f"{'component':<30} {'unit':<12}" + "".join(f"{_size(n):>11}" for n in sizes)
    print(head + f"{'exponent':>10}")
    print("-" * len(head + " " * 10))
    for component, row in table.items():
        unit = next(iter(row.values())).unit
        cells = "".join(f"{_fmt(row[n].value) if n in row else '-':>11}" for n in sizes)
        slope = exponent([(n, m.value) for n, m in sorted(row.items())])
        print(f"{component:<30} {unit:<12}{cells}{_fmt(slope) if slope is not None else '-':>10}")


def targets(measures: Sequence[Measure]) -> list[tuple[str, bool | None, str]]:
    table = by_component(measures)
    out: list[tuple[str, bool | None, str]] = []

    def flat(component: str, label: str) -> None:
        row = table.get(component, {})
        slope = exponent([(n, m.value) for n, m in sorted(row.items())])
        ok = None if slope is None else slope <= 0.2
        out.append((label, ok, f"exponent {_fmt(slope) if slope is not None else 'n/a'}"))

    flat("layout tag add", "layout tag add flat (exponent <= 0.2)")
    flat("catalog update (1 project)", "catalog update flat (exponent <= 0.2)")
    plain = table.get("no-op, conditional GETs", {}).get(100_000)
    serial = table.get("no-op, serials", {}).get(100_000)
    if plain and serial:
        share = serial.value / plain.value
        out.append(("no-op with serials <= 5% of conditional GETs at 100k", share <= 0.05,
                    f"{share:.1%}"))  # fmt: skip
    else:
        out.append(("no-op with serials <= 5% of conditional GETs at 100k", None, "not measured"))
    dry = table.get("--all --dry-run peak RSS", {}).get(1_000_000)
    out.append(
        (
            "--all --dry-run peak RSS <= 300 MB at 1M",
            None if dry is None else dry.value <= 300,
            "not measured" if dry is None else f"{dry.value:.0f} MB",
        )
    )
    warm = table.get("serve root warm", {}).get(1_000_000)
    out.append(
        (
            "serve warm root <= 50 ms at 1M",
            None if warm is None else warm.value <= 50,
            "not measured" if warm is None else f"{warm.value:.1f} ms",
        )
    )
    return out


def _size(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k" if n >= 1000 else str(n)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--only", default=",".join(COMPONENTS), help=",".join(COMPONENTS))
    parser.add_argument("--fill-max", type=int, default=100_000, help="largest registry filled")
    parser.add_argument("--verify-max", type=int, default=100_000)
    parser.add_argument(
        "--registry-port", type=int, default=REGISTRY_PORT, help="where the filled registry listens"
    )
    parser.add_argument("--json", type=Path, help="write the measures here too")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        print(json.dumps(asyncio.run(PROBES[args.probe](args.size))))
        return 0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = set(only) - set(COMPONENTS)
    if unknown:
        parser.error(f"unknown components {sorted(unknown)}; choose from {', '.join(COMPONENTS)}")
    CACHE.mkdir(parents=True, exist_ok=True)
    compile_package()
    start_load = loadavg()
    started = time.monotonic()
    scale = Scale(sizes, args.fill_max, args.verify_max, args.registry_port)
    scale.run(only)
    end_load = loadavg()
    print()
    print(f"machine: {machine()}; loadavg at start {start_load}, at end {end_load}")
    print(f"elapsed: {time.monotonic() - started:.0f} s")
    print()
    print_table(scale.measures, sizes)
    print()
    print("targets:")
    for label, ok, detail in targets(scale.measures):
        verdict = "n/a " if ok is None else "PASS" if ok else "FAIL"
        print(f"  [{verdict}] {label}: {detail}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "loadavg": {"start": start_load, "end": end_load},
                    "measures": [m.__dict__ for m in scale.measures],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
