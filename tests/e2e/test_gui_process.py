"""`podlab` with no arguments opens the window and quits cleanly, with no pending-task warning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_the_app_starts_and_quits_cleanly(how: signal.Signals) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONASYNCIODEBUG="1")
    proc = subprocess.Popen(
        [sys.executable, "-X", "dev", "-m", "podlab"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)  # the window is up, the first page built and the engine check under way
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(how)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    for bad in ("Traceback", "was destroyed but it is pending", "never awaited", "QThread"):
        assert bad not in err, err
