"""What a no-op rerun costs with ``--with-deps`` and without it, on a real dependency tree.

The recorded ``jupyterlab`` tree (``tests/resolution/jupyterlab.json.gz``:
the real pages of every project of its closure and the recorded core
metadata) is written out as a static PEP 691 index, each file's bytes
replaced by a few generated ones (and the pages' digests and sizes with
them), and served by nginx on 127.0.0.1, which answers conditional GETs
as any static server does (``ETag``, ``Last-Modified``, 304).

Two targets (OCI layouts, so only the index is measured), each synced cold
and then again with nothing changed:

* ``with-deps``: ``sync jupyterlab --with-deps --target 3.12/manylinux_2_28_x86_64``;
* ``pinned``: ``sync`` of the releases the first run pinned, ``name==version``
  each, for the same target, without ``--with-deps``.

Between them, ``with-deps 1 new``: the rerun after one page is served anew
(its ``ETag`` and ``Last-Modified`` change, its content does not).

Each run is a process of its own; its CPU (user + system) comes from
``wait4`` on that process, its requests from nginx's access log. Prints
one row per run::

    .venv/bin/python benchmarks/rerun.py [--runs 3] [--code DIR]

``--code DIR`` runs the tool from another checkout (``PYTHONPATH=DIR``),
to compare with an earlier version.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from replay_index import load_recording, metadata_bytes  # noqa: E402
from servers import free_port, running_nginx  # noqa: E402

TARGET = "3.12/manylinux_2_28_x86_64"


@dataclass(frozen=True)
class Run:
    case: str
    cpu_s: float
    wall_s: float
    requests: collections.Counter[str]
    report: dict[str, Any]


def write_index(root: Path) -> None:
    """The recorded tree as static files: ``simple/<project>/index.json`` and ``files/``."""
    data = load_recording("jupyterlab")
    blobs = {digest: metadata_bytes(text) for digest, text in data["blobs"].items()}
    metadata = {name: blobs[digest] for name, digest in data["metadata"].items()}
    files_dir = root / "files"
    files_dir.mkdir(parents=True)
    for project, files in data["pages"].items():
        entries = []
        for f in files:
            body = hashlib.sha256(f["filename"].encode()).digest() * 32
            (files_dir / f["filename"]).write_bytes(body)
            entry: dict[str, Any] = {
                "filename": f["filename"],
                "url": f"../../files/{f['filename']}",
                "hashes": {"sha256": hashlib.sha256(body).hexdigest()},
                "size": len(body),
                "yanked": f.get("yanked", False),
            }
            if f.get("requires-python") is not None:
                entry["requires-python"] = f["requires-python"]
            if f.get("upload-time") is not None:
                entry["upload-time"] = f["upload-time"]
            served = metadata.get(f["filename"])
            if served is not None:
                (files_dir / f"{f['filename']}.metadata").write_bytes(served)
                entry["core-metadata"] = {"sha256": hashlib.sha256(served).hexdigest()}
            entries.append(entry)
        page = {"meta": {"api-version": "1.1"}, "name": project, "files": entries}
        page_dir = root / "simple" / project
        page_dir.mkdir(parents=True)
        (page_dir / "index.json").write_text(json.dumps(page))


def run_cli(case: str, args: list[str], home: Path, nginx: Any, code: Path | None) -> Run:
    """One sync as a process of its own: its CPU from ``wait4``, its requests from nginx."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OCI_PYPI_", "PIP_"))}
    env.update(HOME=str(home), XDG_STATE_HOME=str(home / "state"), NO_PROXY="127.0.0.1")
    if code is not None:
        env["PYTHONPATH"] = str(code)
    offset = nginx.log_size()
    start = time.monotonic()
    with (home / "out.json").open("wb") as out, (home / "err.txt").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "oci_pypi_sync", "sync", *args, "--json", "-q"],
            env=env,
            cwd=home,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.monotonic() - start
    code_ = process.returncode = os.waitstatus_to_exitcode(status)
    if code_ != 0:
        raise RuntimeError(f"{case}: exit {code_}: {(home / 'err.txt').read_text()[-2000:]}")
    return Run(
        case,
        usage.ru_utime + usage.ru_stime,
        wall,
        nginx.requests_since(offset),
        json.loads((home / "out.json").read_text()),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="no-op reruns per case")
    parser.add_argument("--code", type=Path, help="run the tool from this checkout")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="oci-pypi-rerun-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)  # nginx's workers read the index as another user
        write_index(work / "root")
        with running_nginx(work / "root", work / "nginx", free_port()) as nginx:
            index = ["-i", f"{nginx.url}/simple/", "--target", TARGET]
            deps = ["jupyterlab", "--with-deps", *index, "--to", f"oci:{work / 'a'}"]
            rows = [run_cli("with-deps cold", deps, work, nginx, options.code)]
            rows += [
                run_cli("with-deps no-op", deps, work, nginx, options.code)
                for _ in range(options.runs)
            ]
            # A page the index serves anew (its validators change, its content not):
            # every other page is revalidated, the closure resolved again from them.
            page = work / "root" / "simple" / "jupyterlab" / "index.json"
            os.utime(page, (time.time() + 60, time.time() + 60))
            rows.append(run_cli("with-deps 1 new", deps, work, nginx, options.code))
            pins = sorted({f"{r['project']}=={r['version']}" for r in rows[0].report["releases"]})
            pinned = [*pins, *index, "--to", f"oci:{work / 'b'}"]
            rows.append(run_cli("pinned cold", pinned, work, nginx, options.code))
            rows += [
                run_cli("pinned no-op", pinned, work, nginx, options.code)
                for _ in range(options.runs)
            ]
    print(f"{len(pins)} releases pinned for {TARGET}")
    print(f"{'case':<18} {'cpu s':>7} {'wall s':>7} {'pushed':>7} {'unchanged':>9}  requests")
    for row in rows:
        totals = row.report["totals"]
        requests = ", ".join(f"{k} x{v}" for k, v in sorted(row.requests.items()))
        print(
            f"{row.case:<18} {row.cpu_s:>7.2f} {row.wall_s:>7.2f} {totals['pushed']:>7} "
            f"{totals['projects_unchanged']:>9}  {requests}"
        )
    for case in ("with-deps no-op", "pinned no-op"):
        cpu = [r.cpu_s for r in rows if r.case == case]
        print(f"{case}: median CPU {statistics.median(cpu):.2f} s over {len(cpu)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
