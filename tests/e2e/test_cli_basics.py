"""The `podlab` command's conventions: version, help, one-line errors without tracebacks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from podlab import __version__
from podlab.core.serving.local_server import PYTHON_ENV
from tests import harness

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


# -- doctor's self-test of the local engine, and serve's checks ----------------------------------


def podlab_env(*args: str, python: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`podlab ARGS` without Podman (so the local engine is what serves), optionally with the
    local engine run by `python`."""
    env = {**os.environ, "CONTAINER_HOST": "unix:///nonexistent/podman.sock"}
    if python is not None:
        env[PYTHON_ENV] = str(python)
    return subprocess.run(
        [sys.executable, "-m", "podlab", *args],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )  # fmt: skip


def test_doctor_selftest_reports_tokens_per_second(smollm2_model: Path) -> None:
    assert podlab_env("models", "import", str(smollm2_model)).returncode == 0
    text = podlab_env("doctor")
    assert text.returncode == 0, text.stderr
    assert re.search(r"self-test: local engine: ok \(\d+ tok/s\)", text.stdout), text.stdout
    data = json.loads(podlab_env("doctor", "--json").stdout)
    selftest = data["local"]["selftest"]
    assert selftest["status"] == "ok" and selftest["tokens_per_s"] > 0
    assert selftest["model"] == str(smollm2_model.resolve()) and data["can_serve"] is True


def test_doctor_names_a_crashing_engine_by_its_signal(tmp_path: Path, smollm2_model: Path) -> None:
    assert podlab_env("models", "import", str(smollm2_model)).returncode == 0
    broken = harness.crashing_python(tmp_path / "bin", signal.SIGILL)
    text = podlab_env("doctor", python=broken)
    assert "self-test: local engine: crashed (signal 4, SIGILL)" in text.stdout, text.stdout
    assert "test engine that crashes" in text.stdout  # the log tail
    assert "GGML_NATIVE=OFF" in text.stdout and "network" not in text.stdout.lower()
    assert text.returncode == 1  # no Podman and a local engine that crashes: nothing can serve
    data = json.loads(podlab_env("doctor", "--json", python=broken).stdout)
    selftest = data["local"]["selftest"]
    assert (selftest["status"], selftest["signal"], selftest["signal_name"]) == (
        "crashed",
        4,
        "SIGILL",
    )
    assert selftest["exit_code"] == -4 and str(broken) in selftest["fix_command"]
    assert data["can_serve"] is False


def test_doctor_selftest_timeout_is_reported(tmp_path: Path, smollm2_model: Path) -> None:
    assert podlab_env("models", "import", str(smollm2_model)).returncode == 0
    never = harness.gated_python(tmp_path / "bin", tmp_path / "never")
    result = podlab_env("doctor", "--json", "--selftest-timeout", "1", python=never)
    data = json.loads(result.stdout)
    assert data["local"]["selftest"]["status"] == "timeout"
    assert "timed out" in data["local"]["selftest"]["summary"]


def test_doctor_without_a_model_says_so() -> None:
    data = json.loads(podlab_env("doctor", "--json").stdout)
    assert data["local"]["selftest"]["status"] == "no_model"
    assert "no model to test with" in data["local"]["selftest"]["summary"]


def test_serve_refuses_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>not a model</html>")
    result = podlab_env("serve", str(fake), "--engine", "local", "--dry-run")
    assert result.returncode == 1
    assert f"{fake} is not a GGUF file (it does not start with 'GGUF')" in result.stderr
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


def test_serve_takes_a_name(smollm2_model: Path) -> None:
    args = ("serve", str(smollm2_model), "--engine", "local", "--dry-run", "--json")
    result = podlab_env(*args, "--name", "my-smol")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["name"] == "my-smol"
    refused = podlab_env(*args, "--name", "no spaces")
    assert refused.returncode == 1 and "cannot name a service" in refused.stderr


def test_models_import_links_a_catalog_file_by_its_sha256(smollm2_model: Path) -> None:
    """The CLI takes the same step as the Models page: the real SmolLM2 file is byte for byte
    the bundled catalog's variant, so it is known by that entry and its sha256 after import."""
    result = podlab_env("models", "import", str(smollm2_model), "--json")
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["catalog_id"] == "smollm2-135m-instruct"
    assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
    plain = podlab_env("models", "import", str(smollm2_model), "--no-hash", "--id", "raw")
    assert plain.returncode == 0, plain.stderr
    assert "recognised as catalog model" not in plain.stdout
    listed = json.loads(podlab_env("models", "list", "--json").stdout)["models"]
    by_id = {item["id"]: item for item in listed}
    assert by_id["raw"]["sha256"] is None and by_id["raw"]["catalog_id"] is None
