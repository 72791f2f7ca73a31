"""How a server's end is put in words: one formatter for process exit statuses and containers."""

from __future__ import annotations

import signal

import pytest

from podlab.core.serving.crash import (
    crash_fix,
    describe_exit,
    portable_rebuild_command,
    signal_in_log,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("code", "container", "oom", "expected"),
    [
        (-11, False, False, "crashed (signal 11, SIGSEGV)"),
        (-4, False, False, "crashed (signal 4, SIGILL)"),
        (1, False, False, "exited with code 1"),
        (0, False, False, "exited normally (code 0)"),
        (139, True, False, "crashed (signal 11, SIGSEGV)"),
        (137, True, False, "crashed (signal 9, SIGKILL)"),
        (137, True, True, "killed: out of memory (OOMKilled, signal 9, SIGKILL)"),
        (1, True, False, "exited with code 1"),
        (139, False, False, "exited with code 139"),  # a process status is not 128 + N
    ],
)
def test_describe_exit(code: int, container: bool, oom: bool, expected: str) -> None:
    assert describe_exit(code, from_container=container, oom_killed=oom) == expected


def test_an_unknown_status_is_read_from_the_faulthandler_report() -> None:
    log = "loading\nFatal Python error: Illegal instruction\n\nCurrent thread 0x1 (most recent):\n"
    assert describe_exit(None, log_text=log) == "crashed (signal 4, SIGILL)"
    assert describe_exit(None, log_text="server stopped\n") == "exited (its exit status is unknown)"
    assert signal_in_log("Fatal Python error: Floating point exception\n") == signal.SIGFPE
    assert signal_in_log("Fatal Python error: init failed\n") is None


def test_cpu_faults_get_the_portable_rebuild_command() -> None:
    command = portable_rebuild_command("/opt/py env/bin/python", "0.3.36")
    assert "GGML_NATIVE=OFF" in command
    assert "'/opt/py env/bin/python' -m pip install" in command
    assert command.endswith("llama-cpp-python==0.3.36")
    for number in (signal.SIGILL, signal.SIGSEGV):
        assert command in crash_fix(number, "/opt/py env/bin/python", "0.3.36")
    assert "memory" in crash_fix(signal.SIGKILL, "python", None)
    assert crash_fix(None, "python", None) == ""
