"""Start-up benchmark: process start to main window shown, and peak memory.

Podlab's real start path (`podlab.launcher.main([])`) against a bare PySide6 QMainWindow,
measured in the same run, alternating, offscreen. Each sample is a fresh process; the time runs
from just before the parent spawns it to the first event-loop turn after the window is shown.
Podlab shows its window before building the first page; the time until that page is in place
is printed too, so the figure cannot hide it.

    python bench/startup.py [--runs 7]

Targets (issue 2): at most 1.5x the bare window's time and at most +60 MB of peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

# Both children create the QApplication first, then hand over to the code under test; a zero
# timer fires on the first loop turn after the window is shown, records, and quits.
CHILD_PRELUDE = """
import json, os, resource, sys, time
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMainWindow
app = QApplication(sys.argv[:1])
t0 = float(os.environ["BENCH_T0"])
result = {}
def probe():
    shown = [w for w in app.topLevelWidgets() if isinstance(w, QMainWindow) and w.isVisible()]
    if not shown:
        QTimer.singleShot(1, probe)
        return
    result.setdefault("shown_s", time.time() - t0)
    stack = getattr(shown[0], "stack", None)
    current = stack.currentWidget() if stack is not None else shown[0]
    if current is None or current.objectName().startswith("holder-"):
        QTimer.singleShot(1, probe)
        return
    result["page_s"] = time.time() - t0
    app.quit()
QTimer.singleShot(0, probe)
"""

BARE = (
    CHILD_PRELUDE
    + """
window = QMainWindow()
window.resize(1280, 800)
window.show()
app.exec()
"""
)

PODLAB = (
    CHILD_PRELUDE
    + """
from podlab.launcher import main
main([])
"""
)

EPILOGUE = """
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("BENCH " + json.dumps(result))
"""


def sample(code: str) -> dict[str, float]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", BENCH_T0=repr(time.time()))
    proc = subprocess.run(
        [sys.executable, "-c", code + EPILOGUE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            return dict(json.loads(line[6:]))
    raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    sample(BARE)  # warm the file cache for both, so neither pays for the first read of Qt
    sample(PODLAB)
    bare: list[dict[str, float]] = []
    podlab: list[dict[str, float]] = []
    for _ in range(args.runs):
        bare.append(sample(BARE))
        podlab.append(sample(PODLAB))

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    bare_s, podlab_s = median(bare, "shown_s"), median(podlab, "shown_s")
    page_s = median(podlab, "page_s")
    bare_mb, podlab_mb = median(bare, "peak_rss_mb"), median(podlab, "peak_rss_mb")
    print(f"runs: {args.runs} each, alternating, median")
    print(f"bare QMainWindow : shown in {bare_s * 1000:7.1f} ms, peak RSS {bare_mb:6.1f} MB")
    print(f"podlab           : shown in {podlab_s * 1000:7.1f} ms, peak RSS {podlab_mb:6.1f} MB")
    print(f"podlab first page: filled in {page_s * 1000:6.1f} ms ({page_s / bare_s:.2f}x bare)")
    ratio = podlab_s / bare_s
    extra = podlab_mb - bare_mb
    print(f"time ratio       : {ratio:.2f}x  (target <= 1.5x)  {'OK' if ratio <= 1.5 else 'MISS'}")
    print(
        f"extra memory     : {extra:+.1f} MB (target <= +60 MB) {'OK' if extra <= 60 else 'MISS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
