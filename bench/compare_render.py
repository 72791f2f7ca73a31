"""Compare page under load: four panes, each streaming 300 tokens/s, through the real page.

The fault-injecting server of tests/faultserver.py runs in its own process (so its work is not
counted as the GUI's) and streams its "synthetic" scenario: N tokens " tok" at 300 tokens/s
to each of 4 panes in parallel mode. The real `ComparePage` (real `Comparison`, real
`ChatClient`, real chat views) shows them, offscreen under qasync.

Checked: every token is shown (each pane's text equals what the server sent, and the rendered
document holds it), and the longest event-loop stall stays small (a 5 ms QTimer heartbeat,
wall clock and GUI-thread CPU time).

    python bench/compare_render.py [--tokens 1500] [--tps 300] [--panes 4] [--json PATH]

Target: longest stall <= 30 ms with 4 x 300 tokens/s. The figures also go to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import add_json_option, write_results

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render import STALL_TARGET_MS, Heartbeat  # noqa: E402


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "faultserver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"the fault server did not start: {url!r}")
    return proc, url


async def run(url: str, tokens: int, tps: int, panes: int, json_path: Path | None) -> int:
    from PySide6.QtWidgets import QLayout, QVBoxLayout, QWidget

    from podlab.core.lab import Lab
    from podlab.ui.pages.compare import ComparePage

    host = QWidget()
    layout = QVBoxLayout(host)
    layout.setSizeConstraint(QLayout.SizeConstraint.SetNoConstraint)
    page = ComparePage(Lab.open())
    layout.addWidget(page)
    host.resize(1600, 900)
    host.show()
    while len(page.panes) < panes:
        page.add_pane()
    page.mode_combo.setCurrentIndex(page.mode_combo.findData("parallel"))
    # A short first round: httpx, anyio and h11 import their backends on the first request
    # (about 150 ms once per process); that is start-up, not streaming.
    for pane in page.panes:
        pane.picker.set_endpoint(url, f"synthetic?tokens=20&tps={tps}")
    page.prompt.setPlainText("Warm up.")
    warm = page.send()
    assert warm is not None
    await warm
    model = f"synthetic?tokens={tokens}&tps={tps}"
    for pane in page.panes:
        pane.clear_history()
        pane.picker.set_endpoint(url, model)
    await asyncio.sleep(0.2)
    gc.freeze()  # as podlab.ui.app does once it has started

    heartbeat = Heartbeat()
    page.prompt.setPlainText("Stream as fast as you are told.")
    heartbeat.start()
    started = time.perf_counter()
    task = page.send()
    assert task is not None
    await task
    for pane in page.panes:  # the last renders of each answer
        answer = pane.answer
        assert answer is not None
        if not answer.view.finished:
            finished = asyncio.Event()
            answer.view.sig_finished.connect(finished.set)
            await finished.wait()
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.05)
    stall, stall_cpu = heartbeat.stop()

    sent = " tok" * tokens
    exact = True
    pane_figures = []
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    for pane in page.panes:
        answer = pane.answer
        assert answer is not None
        source_ok = answer.text() == sent
        shown = answer.view.document().toPlainText().replace("\u200b", "")
        shown_ok = shown == sent.strip()
        exact = exact and source_ok and shown_ok
        stats = answer.view.renderer.stats
        pane_figures.append(
            {
                "text_exact": source_ok,
                "rendered_exact": shown_ok,
                "renders": stats.renders,
                "max_render_ms": stats.max_render_ms,
            }
        )
        print(
            f"pane {pane.number}: {answer.text().count('tok')} of {tokens} tokens received,"
            f" text equal to what was sent: {source_ok}, rendered text equal: {shown_ok},"
            f" {stats.renders} renders (longest {stats.max_render_ms:.1f} ms),"
            f" figures: {answer.figures.text().splitlines()[0]}"
        )
    total = tokens * len(page.panes)
    print(
        f"{len(page.panes)} panes x {tokens} tokens at {tps} tokens/s: {seconds:.2f} s"
        f" ({total / seconds:.0f} tokens/s shown in all)"
    )
    print(
        f"longest event-loop stall: {stall:.1f} ms wall, {stall_cpu:.1f} ms of GUI-thread CPU"
        f" (target <= {STALL_TARGET_MS:.0f} ms)"
    )
    ok = exact and stall <= STALL_TARGET_MS
    print("PASS" if ok else "FAIL")
    figures = {
        "panes": pane_figures,
        "tokens_per_pane": tokens,
        "tokens_per_s_per_pane": tps,
        "seconds": seconds,
        "max_stall_ms": stall,
        "max_stall_cpu_ms": stall_cpu,
    }
    write_results("compare_render", json_path, figures, ok)
    page.shutdown()
    host.close()
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1500)
    parser.add_argument("--tps", type=int, default=300)
    parser.add_argument("--panes", type=int, default=4)
    add_json_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="podlab-bench-") as home:
        for name in ("CONFIG", "DATA", "CACHE", "STATE"):  # never the user's own history
            os.environ[f"XDG_{name}_HOME"] = str(Path(home) / name.lower())
        proc, url = start_server()
        try:
            import qasync
            from PySide6.QtWidgets import QApplication

            app = QApplication.instance() or QApplication(sys.argv[:1])
            app.setStyle("Fusion")
            loop = qasync.QEventLoop(app)
            asyncio.set_event_loop(loop)
            with loop:
                return loop.run_until_complete(
                    run(url, args.tokens, args.tps, args.panes, args.json)
                )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
