"""Running an installed Podlab (a venv, pipx, the bundle) as a user would: no checkout in sight.

The environment keeps only what a desktop session has (HOME, the XDG folders the test isolates,
a system PATH); PYTHONPATH and the project's venv are gone, and the working folder is elsewhere.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from PySide6.QtGui import QImage

from tests import harness

KEPT = ("HOME", "LANG", "TMPDIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
        "XDG_STATE_HOME", "XDG_RUNTIME_DIR", "CONTAINERS_CONF")  # fmt: skip
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def user_env(**extra: str) -> dict[str, str]:
    """A desktop user's environment: no PYTHONPATH, no venv on PATH, Qt offscreen, no Podman."""
    env = {name: os.environ[name] for name in KEPT if name in os.environ}
    env.update(
        PATH=SYSTEM_PATH,
        QT_QPA_PLATFORM="offscreen",
        CONTAINER_HOST="unix:///nonexistent/podman.sock",  # the local engine is what serves
    )
    env.update(extra)
    return env


def run(
    argv: list[str], cwd: Path, timeout: float = 180, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=user_env(**extra), capture_output=True, text=True, timeout=timeout
    )


def smollm2_imported(podlab: Path, cwd: Path) -> None:
    """Import the SmolLM2 test model (in place) into the user's store, for doctor's self-test."""
    result = run([str(podlab), "models", "import", str(harness.smollm2_path())], cwd)
    assert result.returncode == 0, result.stderr


def distinct_colours(path: Path) -> tuple[tuple[int, int], int]:
    """(size, distinct colours on a 40-pixel grid) of a PNG: a blank image has one colour."""
    image = QImage(str(path))
    assert not image.isNull(), f"{path} is not an image"
    colours = {
        image.pixel(x, y) for x in range(0, image.width(), 40) for y in range(0, image.height(), 40)
    }
    return (image.width(), image.height()), len(colours)


def same_pixels(first: Path, second: Path) -> float:
    """The share of pixels (on a 4-pixel grid) that two screenshots of one size have in common."""
    one, two = QImage(str(first)), QImage(str(second))
    assert one.size() == two.size()
    points = [(x, y) for x in range(0, one.width(), 4) for y in range(0, one.height(), 4)]
    return sum(one.pixel(x, y) == two.pixel(x, y) for x, y in points) / len(points)
