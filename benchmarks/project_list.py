"""Micro-benchmark: parsing a full project list of the real index's size.

Generates an HTML list of 927,088 projects shaped like the real one (~40 MB)
and prints the median time of :func:`parse_project_list` over several runs::

    .venv/bin/python benchmarks/project_list.py [--runs 7] [--file LIST.html]

``--file`` times a saved copy of a real list instead.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time
from pathlib import Path

from oci_pypi_sync.index.projects import parse_project_list

PROJECTS = 927_088
_NAME_CHARS = string.ascii_lowercase + string.digits + "-_."


def generated_list(count: int = PROJECTS, seed: int = 503) -> bytes:
    """An HTML project list like the real index's, with ``count`` random names."""
    rng = random.Random(seed)
    lines = [
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.4">\n'
        "    <title>Simple index</title>\n  </head>\n  <body>\n"
    ]
    for _ in range(count):
        name = rng.choice(string.ascii_letters) + "".join(
            rng.choices(_NAME_CHARS, k=rng.randint(2, 14))
        )
        lines.append(f'    <a href="/simple/{name.lower()}/">{name}</a>\n')
    lines.append("  </body>\n</html>\n")
    return "".join(lines).encode()


def median_parse_seconds(body: bytes, runs: int) -> tuple[float, int]:
    times = []
    count = 0
    for _ in range(runs):
        started = time.perf_counter()
        count = len(parse_project_list(body, "text/html"))
        times.append(time.perf_counter() - started)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--file", type=Path, help="time this saved list instead")
    args = parser.parse_args()
    body = args.file.read_bytes() if args.file else generated_list()
    seconds, count = median_parse_seconds(body, args.runs)
    print(
        f"{count:,} projects, {len(body) / 1e6:.1f} MB: "
        f"median {seconds:.3f} s over {args.runs} runs"
    )


if __name__ == "__main__":
    main()
