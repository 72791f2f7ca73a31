"""What the benches that race Podlab against the same Podman work done by hand share: the
summary of both sides' times, and a command line that runs on the test Podman service (or the
one CONTAINER_HOST names) and writes the figures."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from results_file import add_json_option, write_results

ROOT = Path(__file__).resolve().parent.parent


def summary(
    title: str, sides: tuple[str, str], podlab: list[float], baseline: list[float], target: float
) -> dict[str, Any]:
    """Print the medians and bests of both sides and their ratio; the figures for the JSON."""
    p, b = statistics.median(podlab), statistics.median(baseline)
    width = max(len(side) for side in (*sides, "ratio podlab / baseline"))
    print(f"{title}, {len(podlab)} rounds (median / best):")
    print(f"  {sides[0]:<{width}}: {p:.3f} s / {min(podlab):.3f} s")
    print(f"  {sides[1]:<{width}}: {b:.3f} s / {min(baseline):.3f} s")
    print(
        f"  {'ratio podlab / baseline':<{width}}: {p / b:.2f} / {min(podlab) / min(baseline):.2f}"
        f" (target <= {target}, on the medians)"
    )
    return {"podlab_s": podlab, "baseline_s": baseline, "median_ratio": p / b, "target": target}


def main(
    bench: str,
    description: str,
    run: Callable[[int, str], Awaitable[dict[str, Any]]],
    target: float,
) -> int:
    """Parse --rounds and --json, run on Podman, write the figures; 1 when the target is missed."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    add_json_option(parser)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests import harness

    with tempfile.TemporaryDirectory(prefix="podlab-bench-") as tmp:
        if os.environ.get("CONTAINER_HOST"):
            figures = asyncio.run(run(args.rounds, os.environ["CONTAINER_HOST"]))
        else:
            with harness.podman_service(Path(tmp)) as service:
                os.environ["CONTAINERS_CONF"] = str(service.containers_conf)
                harness.ensure_base_image(service.containers_conf)
                figures = asyncio.run(run(args.rounds, service.url))
    passed = figures["median_ratio"] <= target
    write_results(bench, args.json, {"rounds": args.rounds, **figures}, passed)
    return 0 if passed else 1
