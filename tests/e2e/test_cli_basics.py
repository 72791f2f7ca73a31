"""The `podlab` command's conventions: version, help, one-line errors without tracebacks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from podlab import __version__

pytestmark = pytest.mark.e2e


def podlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "podlab", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    result = podlab("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"podlab {__version__}"


def test_console_script_is_installed() -> None:
    exe = shutil.which("podlab", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"podlab {__version__}"


def test_unknown_command_is_a_usage_error_without_traceback() -> None:
    result = podlab("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


def test_log_level_is_a_global_option_and_doctor_names_the_log(
    isolated_user_dirs: dict[str, Path],
) -> None:
    result = podlab("--log-level", "debug", "doctor", "--json")
    expected = isolated_user_dirs["state"] / "podlab" / "podlab.log"
    assert json.loads(result.stdout)["log_file"] == str(expected)
    assert "DEBUG" in expected.read_text()  # debug records were written at --log-level debug
    text = podlab("doctor")
    assert f"file     {expected}" in text.stdout
    assert podlab("--log-level", "loud", "doctor").returncode == 2
