"""Bundle benchmark: the PyInstaller bundle's size, and its start time against the venv's.

The start is bench/startup.py's measurement (process start to Podlab's first page painted,
offscreen), run by the bundle's own frozen interpreter (`podlab --as-python -c CODE`) and by the
venv's Python, alternating, each sample a fresh process.

    python bench/bundle.py [--runs 7] [--bundle FOLDER] [--json PATH]

The bundle is built (or taken from its cache) with scripts/build-bundle unless --bundle names
one. Target (issue 12): the bundle's first page in at most 1.3x the venv's time. Exits 1 when
it is missed; the figures also go to a JSON file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from results_file import add_json_option, write_results
from startup import PODLAB, sample

TIME_TARGET = 1.3
REPO = Path(__file__).resolve().parents[1]


def build_bundle() -> Path:
    done = subprocess.run(
        [str(REPO / "scripts" / "build-bundle")],
        env=dict(os.environ, PYTHON=sys.executable),
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip().splitlines()[-1])


def folder_mb(folder: Path) -> float:
    files = (path for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
    return sum(path.stat().st_size for path in files) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--bundle", type=Path, help="a built bundle folder (default: build one)")
    add_json_option(parser)
    args = parser.parse_args()
    bundle = args.bundle or build_bundle()
    frozen = [str(bundle / "podlab"), "--as-python"]
    sample(PODLAB)  # warm the file cache for both
    sample(PODLAB, frozen)
    venv: list[dict[str, float]] = []
    bundled: list[dict[str, float]] = []
    for index in range(args.runs):  # alternating which goes first
        order = [(None, venv), (frozen, bundled)]
        for python, rows in order if index % 2 == 0 else reversed(order):
            rows.append(sample(PODLAB, python))

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    venv_s, bundle_s = median(venv, "painted_s"), median(bundled, "painted_s")
    ratio = bundle_s / venv_s
    size_mb = folder_mb(bundle)
    time_ok = ratio <= TIME_TARGET
    print(f"bundle            : {bundle} ({size_mb:.0f} MB)")
    print(f"runs: {args.runs} each, alternating, median")
    print(f"venv first page   : painted in {venv_s * 1000:7.1f} ms")
    print(f"bundle first page : painted in {bundle_s * 1000:7.1f} ms")
    verdict = "OK" if time_ok else "MISS"
    print(f"time ratio        : {ratio:.2f}x  (target <= {TIME_TARGET}x)  {verdict}")
    figures = {
        "runs": args.runs,
        "bundle": str(bundle),
        "bundle_size_mb": size_mb,
        "venv": venv,
        "bundled": bundled,
        "median_venv_painted_s": venv_s,
        "median_bundle_painted_s": bundle_s,
        "time_ratio": ratio,
    }
    write_results("bundle", args.json, figures, time_ok)
    return 0 if time_ok else 1


if __name__ == "__main__":
    sys.exit(main())
