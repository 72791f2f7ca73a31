"""Benchmark: Podlab's downloader against `curl -o` on the same local file, in the same run.

    python bench/download.py                 # 1 GiB
    python bench/download.py --size-mib 64   # a quick run
    python bench/download.py --dir /dev/shm  # keep the disk out of the comparison

A file of random bytes is created once in a temporary folder and served from a threaded HTTP
server on 127.0.0.1 (tests/httpfaults.py). Each round downloads it with curl and with Podlab's
downloader (sha256 on, in a subprocess so that its peak memory, ru_maxrss, is its own), the two
taking turns at going first; the best round of each is kept.

The comparison is fair by construction: both clients fetch the same file from the same server
in the same run. The server sends file bodies with sendfile(2), so it needs little CPU: on a
small machine (2 cores) a Python loop copying the body would take the core the client needs,
and the bench would measure the server. `--limit-mibps` paces the body in Python (64 KiB
writes), like a real link, for both clients alike. The machine may be shared and busy: compare
only numbers from one run, and the CPU seconds as well as the rates (Podlab's include starting
Python and importing httpx).

Two comparisons are printed:
  transfer  curl's time_total vs Podlab until the last byte is written and hashed;
  durable   the same plus making the file durable: curl's output is fsynced afterwards, Podlab
            fsyncs and renames its partial itself (as it always does).
Targets: ratio >= 0.9 of curl, Podlab's peak memory < 100 MB; exits 1 when one is missed. The
figures also go to a JSON file (`--json PATH`, default a new file in bench/results/).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import add_json_option, write_results

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20


def child(url: str, dest: str, sha256: str) -> None:
    """Run one Podlab download and print timings and this process's peak memory as JSON."""
    from podlab.core.models.download import Download, DownloadProgress, DownloadState

    marks: dict[str, float] = {}

    def on_event(event: DownloadProgress) -> None:
        if event.state is DownloadState.VERIFYING and "transfer" not in marks:
            marks["transfer"] = time.perf_counter()

    download = Download(url, dest, sha256=sha256)
    download.add_listener(on_event)
    started = time.perf_counter()
    result = asyncio.run(download.run())
    finished = time.perf_counter()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "transfer_s": marks["transfer"] - started,
                "total_s": finished - started,
                "size": result.size,
                "sha256": result.sha256,
                "peak_rss_bytes": peak_kib * 1024,
            }
        )
    )


def make_file(path: Path, size_mib: int) -> str:
    digest = hashlib.sha256()
    block = bytearray(os.urandom(MIB))
    with path.open("wb") as handle:
        for index in range(size_mib):
            block[:8] = index.to_bytes(8, "little")  # every MiB different, cheaply
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> float:
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - started


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_curl(curl: str, url: str, out: Path) -> tuple[float, float, float]:
    """(seconds, fsync seconds, CPU seconds) of one curl download."""
    cpu = children_cpu()
    done = subprocess.run(
        [curl, "-s", "-S", "-f", "-o", str(out), "-w", "%{time_total}", url],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = children_cpu() - cpu
    return float(done.stdout.strip()), fsync_file(out), cpu


def run_podlab(url: str, out: Path, sha256: str) -> dict[str, float]:
    cpu = children_cpu()
    done = subprocess.run(
        [sys.executable, __file__, "--child", url, str(out), sha256],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "app")},
    )
    cpu = children_cpu() - cpu
    if done.returncode != 0:
        raise SystemExit(f"podlab download failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["sha256"] != sha256:
        raise SystemExit("podlab download produced a wrong sha256")
    result["cpu_s"] = cpu  # includes starting Python and importing httpx
    return result


def rate(size: int, seconds: float) -> float:
    return size / MIB / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="file size (default 1024)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the best is kept")
    parser.add_argument("--dir", type=Path, help="where to create and download the files")
    parser.add_argument(
        "--limit-mibps",
        type=float,
        default=0.0,
        help="serve at most this many MiB/s, like a real network link (default: no limit)",
    )
    add_json_option(parser)
    parser.add_argument(
        "--child", nargs=3, metavar=("URL", "DEST", "SHA256"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    sys.path.insert(0, str(REPO))
    from tests.httpfaults import FaultServer, slow

    curl = shutil.which("curl")
    work = Path(tempfile.mkdtemp(prefix="podlab-bench-", dir=args.dir))
    try:
        source = work / "model.bin"
        started = time.perf_counter()
        sha256 = make_file(source, args.size_mib)
        size = source.stat().st_size
        print(
            f"file: {args.size_mib} MiB of random bytes in {work} "
            f"(made in {time.perf_counter() - started:.1f} s), sha256 {sha256[:16]}…"
        )
        best: dict[str, float] = {}

        def keep(key: str, value: float) -> None:
            best[key] = min(best.get(key, value), value)

        with FaultServer() as server:
            if args.limit_mibps > 0:
                server.serve("/model.bin", source, [slow(args.limit_mibps * MIB)])
                print(f"server limited to {args.limit_mibps:g} MiB/s")
            else:
                server.serve("/model.bin", source)
            url = server.url("/model.bin")

            def curl_round(round_no: int) -> None:
                assert curl is not None
                out = work / "curl.out"
                curl_s, curl_sync, curl_cpu = run_curl(curl, url, out)
                out.unlink()
                keep("curl", curl_s)
                keep("curl_durable", curl_s + curl_sync)
                keep("curl_cpu", curl_cpu)
                print(
                    f"round {round_no}: curl    {rate(size, curl_s):8.1f} MiB/s "
                    f"({curl_s:.2f} s; +{curl_sync:.2f} s fsync), CPU {curl_cpu:.2f} s"
                )

            def podlab_round(round_no: int) -> None:
                out = work / "podlab.out"
                result = run_podlab(url, out, sha256)
                out.unlink()
                keep("podlab", result["transfer_s"])
                keep("podlab_durable", result["total_s"])
                keep("peak", -result["peak_rss_bytes"])
                keep("podlab_cpu", result["cpu_s"])
                print(
                    f"round {round_no}: podlab  {rate(size, result['transfer_s']):8.1f} MiB/s "
                    f"({result['transfer_s']:.2f} s with sha256; {result['total_s']:.2f} s "
                    f"with fsync and rename), CPU {result['cpu_s']:.2f} s, "
                    f"peak memory {result['peak_rss_bytes'] / 1e6:.1f} MB"
                )

            for round_no in range(1, args.rounds + 1):
                turns = [curl_round, podlab_round] if curl else [podlab_round]
                if round_no % 2 == 0:
                    turns.reverse()  # neither always goes first (page cache, writeback)
                for turn in turns:
                    turn(round_no)

        print()
        print(f"podlab transfer+sha256: {rate(size, best['podlab']):8.1f} MiB/s")
        print(f"podlab durable:         {rate(size, best['podlab_durable']):8.1f} MiB/s")
        if curl:
            print(f"curl transfer:          {rate(size, best['curl']):8.1f} MiB/s")
            print(f"curl durable (+fsync):  {rate(size, best['curl_durable']):8.1f} MiB/s")
            print(f"ratio transfer: {best['curl'] / best['podlab']:.2f} of curl (target >= 0.9)")
            print(
                f"ratio durable:  {best['curl_durable'] / best['podlab_durable']:.2f} of curl "
                "(target >= 0.9)"
            )
        else:
            print("ratio: curl not found, no comparison")
        gib = size / (1 << 30)
        cpu_line = f"CPU per GiB: podlab {best['podlab_cpu'] / gib:.2f} s"
        if curl:
            cpu_line += f", curl {best['curl_cpu'] / gib:.2f} s"
        print(cpu_line + f"; this machine has {os.cpu_count()} CPUs")
        print(f"podlab peak memory: {-best['peak'] / 1e6:.1f} MB (target < 100 MB)")
        passed = -best["peak"] < 100e6 and (
            curl is None
            or min(best["curl"] / best["podlab"], best["curl_durable"] / best["podlab_durable"])
            >= 0.9
        )
        figures = {
            "size_bytes": size,
            "rounds": args.rounds,
            "limit_mibps": args.limit_mibps,
            "best_seconds": {k: v for k, v in best.items() if k != "peak"},
            "podlab_peak_rss_bytes": -best["peak"],
        }
        write_results("download", args.json, figures, passed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
