"""Start-up benchmark: process start to the first page painted, and peak memory.

Podlab's real start path (`podlab.launcher.main([])`) against a bare PySide6 QMainWindow,
measured in the same run, alternating, offscreen. Each sample is a fresh process; the time runs
from just before the parent spawns it to the first paint event of what the user looks at: the
bare window itself, and Podlab's first page (not the window frame, which Podlab shows before it
builds the page). The time until the window is shown is printed too.

    python bench/startup.py [--runs 7] [--json PATH]

Targets (issue 2): first page painted in at most 1.5x the bare window's time and at most +60 MB
of peak memory. Exits 1 when either is missed; the figures also go to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from results_file import add_json_option, write_results

TIME_TARGET = 1.5
MEMORY_TARGET_MB = 60.0

# Both children create the QApplication first, then hand over to the code under test. An
# application-wide event filter sees every paint event: the first one that reaches the page on
# screen (the bare window, or Podlab's current page once it replaced its placeholder) records
# the time and quits.
CHILD_PRELUDE = """
import json, os, resource, sys, time
from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtWidgets import QApplication, QMainWindow, QWidget
app = QApplication(sys.argv[:1])
t0 = float(os.environ["BENCH_T0"])
result = {}
def page_on_screen():
    shown = [w for w in app.topLevelWidgets() if isinstance(w, QMainWindow) and w.isVisible()]
    if not shown:
        return None
    result.setdefault("shown_s", time.time() - t0)
    stack = getattr(shown[0], "stack", None)
    page = stack.currentWidget() if stack is not None else shown[0]
    if page is None or page.objectName().startswith("holder-"):
        return None
    return page
class PaintWatch(QObject):
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Paint and isinstance(watched, QWidget):
            page = page_on_screen()
            if page is not None and (watched is page or page.isAncestorOf(watched)):
                result.setdefault("painted_s", time.time() - t0)
                QTimer.singleShot(0, app.quit)
        return False
watch = PaintWatch()
app.installEventFilter(watch)
QTimer.singleShot(60_000, app.quit)  # never painted: the parent reports it
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


def sample(code: str, python: list[str] | None = None) -> dict[str, float]:
    """One fresh process running `code` under `python` (default: this interpreter)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", BENCH_T0=repr(time.time()))
    proc = subprocess.run(
        [*(python or [sys.executable]), "-c", code + EPILOGUE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            result = dict(json.loads(line[6:]))
            if "painted_s" in result:
                return result
    raise RuntimeError(f"child painted no page ({proc.returncode}):\n{proc.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    add_json_option(parser)
    args = parser.parse_args()
    sample(BARE)  # warm the file cache for both, so neither pays for the first read of Qt
    sample(PODLAB)
    bare: list[dict[str, float]] = []
    podlab: list[dict[str, float]] = []
    for index in range(args.runs):  # alternating which goes first
        order = [(BARE, bare), (PODLAB, podlab)]
        for code, rows in order if index % 2 == 0 else reversed(order):
            rows.append(sample(code))

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    bare_s, podlab_s = median(bare, "painted_s"), median(podlab, "painted_s")
    shown_s = median(podlab, "shown_s")
    bare_mb, podlab_mb = median(bare, "peak_rss_mb"), median(podlab, "peak_rss_mb")
    ratio = podlab_s / bare_s
    extra = podlab_mb - bare_mb
    time_ok, memory_ok = ratio <= TIME_TARGET, extra <= MEMORY_TARGET_MB
    print(f"runs: {args.runs} each, alternating, median")
    print(f"bare QMainWindow  : painted in {bare_s * 1000:7.1f} ms, peak RSS {bare_mb:6.1f} MB")
    print(f"podlab first page : painted in {podlab_s * 1000:7.1f} ms, peak RSS {podlab_mb:6.1f} MB")
    print(f"podlab window     : shown in   {shown_s * 1000:7.1f} ms")
    print(
        f"time ratio        : {ratio:.2f}x  (target <= {TIME_TARGET}x)"
        f"  {'OK' if time_ok else 'MISS'}"
    )
    print(
        f"extra memory      : {extra:+.1f} MB (target <= +{MEMORY_TARGET_MB:.0f} MB)"
        f" {'OK' if memory_ok else 'MISS'}"
    )
    figures = {
        "runs": args.runs,
        "bare": bare,
        "podlab": podlab,
        "median_bare_painted_s": bare_s,
        "median_podlab_painted_s": podlab_s,
        "median_podlab_shown_s": shown_s,
        "time_ratio": ratio,
        "extra_memory_mb": extra,
    }
    write_results("startup", args.json, figures, time_ok and memory_ok)
    return 0 if time_ok and memory_ok else 1


if __name__ == "__main__":
    sys.exit(main())
