"""`podlab` with no arguments opens its window on a real X server (Xvfb) and quits cleanly on a
signal, with no pending-task warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from podlab.ui.app import DEFAULT_SIZE
from tests import harness

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_the_app_shows_its_window_and_quits_cleanly(how: signal.Signals) -> None:
    with harness.xvfb_display() as display:
        env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb", PYTHONASYNCIODEBUG="1")
        proc = subprocess.Popen(
            [sys.executable, "-X", "dev", "-m", "podlab"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            shown = None
            while shown is None and time.monotonic() < deadline and proc.poll() is None:
                shown = harness.viewable_window(display, "Podlab")
                time.sleep(0.2)
            assert proc.poll() is None, proc.communicate()[1]
            assert shown == DEFAULT_SIZE, f"no Podlab window mapped on {display}: {shown}"
            time.sleep(2)  # the first page built and the engine check under way
            proc.send_signal(how)
            _out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    for bad in ("Traceback", "was destroyed but it is pending", "never awaited", "QThread"):
        assert bad not in err, err
