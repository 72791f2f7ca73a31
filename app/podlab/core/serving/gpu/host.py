"""How the GPU code reads the host, and the plain facts and findings it reports.

Everything reads the host through a `HostProbe`: a root folder that every absolute path is
taken under (so tests build fake /sys, /dev, /proc and /etc/cdi trees in a temporary folder), a
function that runs commands (so tests feed recorded `nvidia-smi` output), the environment and
the platform. `GpuInfo` (one GPU) and `Diagnosis` (one finding for people, with its fix) are the
facts every part speaks in; with the NVIDIA driver's own device list they sit below detection,
CDI and passthrough, which all use them.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Vendor = Literal["nvidia", "amd", "intel", "apple", "wsl"]
Level = Literal["ok", "warning", "error"]

GIB = 1024**3
MIB = 1024**2

CDI_DIRS: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
"""Where Podman reads CDI specs; on a name clash the later folder wins (as in the CDI spec)."""
NVIDIA_LIB_DIRS: tuple[str, ...] = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
)
"""Where the NVIDIA driver's libraries may live (searched by `cdi.generate_cdi_spec`)."""


# --------------------------------------------------------------------------- the host probe


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str = ""
    stderr: str = ""


CommandRunner = Callable[[Sequence[str]], CommandResult]


def run_command(argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
    """Run a command and never raise: a missing command is 127, a hung one 124."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return CommandResult(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, "", f"{argv[0]} did not answer within {timeout:g} s")
    except OSError as exc:
        return CommandResult(126, "", f"{argv[0]}: {exc}")
    return CommandResult(done.returncode, done.stdout, done.stderr)


def _default_env() -> dict[str, str]:
    return dict(os.environ)


@dataclass(frozen=True)
class HostProbe:
    """How detection sees the host; the defaults are the real machine.

    Every absolute host path ("/sys/...", "/dev/...", "/etc/cdi", "/proc/...", "/usr/lib/wsl")
    is read under `root`, so a test passes `HostProbe(root=tmp_path, run=fake, env={...})`.
    """

    root: Path = Path("/")
    run: CommandRunner = run_command
    env: Mapping[str, str] = field(default_factory=_default_env)
    system: str = field(default_factory=platform.system)
    """"Linux", "Darwin" or "Windows" (platform.system())."""
    machine: str = field(default_factory=platform.machine)
    cdi_dirs: tuple[str, ...] = CDI_DIRS
    lib_dirs: tuple[str, ...] = NVIDIA_LIB_DIRS

    def path(self, host_path: str) -> Path:
        """The file a host path names, under `root`."""
        return self.root / host_path.lstrip("/")

    def host_path(self, path: Path) -> str:
        """The host path (as a container engine would see it) of a file under `root`."""
        rel = path.relative_to(self.root).as_posix()
        return "/" if rel == "." else "/" + rel

    def exists(self, host_path: str) -> bool:
        return self.path(host_path).exists()

    def read_text(self, host_path: str) -> str | None:
        try:
            return self.path(host_path).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None

    def glob(self, host_dir: str, pattern: str) -> list[Path]:
        folder = self.path(host_dir)
        try:
            return sorted(folder.glob(pattern))
        except OSError:
            return []

    def which(self, name: str) -> str | None:
        """The host path of an executable found on PATH (searched under `root`)."""
        for folder in self.env.get("PATH", os.defpath).split(os.pathsep):
            if not folder.startswith("/"):
                continue
            candidate = self.path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return f"{folder.rstrip('/')}/{name}"
        return None

    @property
    def is_wsl(self) -> bool:
        return self.exists("/dev/dxg") and self.exists("/usr/lib/wsl")


# --------------------------------------------------------------------------- plain data


@dataclass(frozen=True)
class GpuInfo:
    vendor: Vendor
    index: int
    """The index the vendor's runtime uses (CUDA / HIP / Level Zero order)."""
    name: str
    memory_bytes: int | None = None
    """Dedicated memory; None when unknown or shared with the CPU (iGPU, WSL)."""
    driver: str | None = None
    uuid: str | None = None
    gfx_version: str | None = None
    """AMD only, e.g. "gfx1100"."""

    @property
    def label(self) -> str:
        if self.memory_bytes:
            return f"{self.name} ({self.memory_bytes / GIB:.1f} GiB)"
        return self.name


@dataclass
class Diagnosis:
    """One finding for people: what is wrong (or fine), how to fix it, and maybe a command."""

    level: Level
    message: str
    fix: str | None = None
    fix_command: list[str] | None = None
    """A command that applies the fix (often needs root: the UI shows it before running)."""
    action: str | None = None
    """A fix Podlab itself can apply after consent, e.g. ACTION_GENERATE_CDI."""


# --------------------------------------------------------------------------- the NVIDIA driver


_NVRM_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+([0-9]+(?:\.[0-9]+)+)")


def nvidia_driver_gpus(probe: HostProbe) -> list[GpuInfo]:
    """GPUs from /proc/driver/nvidia (present whenever the kernel driver is loaded)."""
    version = _NVRM_RE.search(probe.read_text("/proc/driver/nvidia/version") or "")
    driver = version.group(1) if version else None
    gpus: list[GpuInfo] = []
    for info in probe.glob("/proc/driver/nvidia/gpus", "*/information"):
        fields: dict[str, str] = {}
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        minor = fields.get("Device Minor", "")
        gpus.append(
            GpuInfo(
                vendor="nvidia",
                index=int(minor) if minor.isdigit() else len(gpus),
                name=fields.get("Model") or "NVIDIA GPU",
                uuid=fields.get("GPU UUID") or None,
                driver=driver,
            )
        )
    return sorted(gpus, key=lambda gpu: gpu.index)


def nvidia_device_numbers(probe: HostProbe) -> list[int]:
    """The N of every /dev/nvidiaN (one per GPU the kernel driver made a node for)."""
    numbers = [p.name.removeprefix("nvidia") for p in probe.glob("/dev", "nvidia*")]
    return sorted(int(n) for n in numbers if n.isdigit())
