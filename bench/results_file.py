"""Every benchmark writes its figures as JSON too, so that runs can be compared later.

By default each run gets its own file, bench/results/<bench>-<UTC time>.json (the folder is
ignored by git); `--json PATH` chooses the file instead.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        type=Path,
        metavar="PATH",
        help="where to write the figures as JSON (default: a new file in bench/results/)",
    )


def write_results(bench: str, path: Path | None, figures: dict[str, Any], passed: bool) -> Path:
    """Write the figures with what the run was measured on; returns the file written."""
    now = datetime.datetime.now(datetime.UTC)
    if path is None:
        path = RESULTS_DIR / f"{bench}-{now:%Y%m%dT%H%M%SZ}.json"
    record = {
        "bench": bench,
        "finished": now.isoformat(timespec="seconds"),
        "passed": passed,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "arch": platform.machine(),
            "python": sys.version.split()[0],
        },
        "figures": figures,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"figures written to {path}")
    return path
