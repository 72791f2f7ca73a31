"""GPU detection and Podman passthrough, in one place, with every path and command injectable.

Three questions, three functions:

* `detect_gpus(probe)`: which GPUs does this host have, and which CDI devices can Podman use?
  It returns every GPU it finds (NVIDIA, AMD, Intel, Apple through a libkrun Podman machine,
  WSL's shared GPU), all CDI spec files merged, and a `Diagnosis` for everything odd it saw.
* `plan_passthrough(report, want)`: which `podman run` flags give a container that GPU? It
  never falls back to the CPU in silence: when a GPU is there but cannot be passed (the classic
  "NVIDIA without a CDI spec"), the plan is the CPU one *with an error diagnosis and a fix*, and
  the caller must show it and ask before running on the CPU.
* `parse_offload(log)`: did llama.cpp really put the layers on the GPU? (read from its log)

`generate_cdi_spec` / `write_cdi_spec` derive a CDI spec from the driver's own files for hosts
without `nvidia-ctk`; writing to /etc/cdi needs root and the user's consent (the UI asks).

Everything reads the host through a `HostProbe`: a root folder that every absolute path is
taken under (so tests build fake /sys, /dev, /proc and /etc/cdi trees in a temporary folder), a
function that runs commands (so tests feed recorded `nvidia-smi` output), the environment and
the platform. Detection is ordered like RamaLama's (NVIDIA, AMD, Intel, Apple, WSL) but keeps
every GPU it finds instead of stopping at the first.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

import yaml

from podlab.core.errors import PodlabError

Vendor = Literal["nvidia", "amd", "intel", "apple", "wsl"]
PassthroughVendor = Literal["none", "nvidia", "amd", "intel", "apple", "wsl"]
Want = Literal["auto", "none", "nvidia", "amd", "intel"]
Level = Literal["ok", "warning", "error"]
ImageVariant = Literal["cpu", "cuda", "rocm", "intel", "vulkan"]

WANTS: tuple[str, ...] = ("auto", "none", "nvidia", "amd", "intel")
GIB = 1024**3
MIB = 1024**2

GPU_LAYERS_ALL = 999
"""llama.cpp's `--n-gpu-layers` value that means "every layer on the GPU"."""

CDI_DIRS: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
"""Where Podman reads CDI specs; on a name clash the later folder wins (as in the CDI spec)."""
NVIDIA_CDI_KIND = "nvidia.com/gpu"
NVIDIA_CTK_SPEC_PATH = "/etc/cdi/nvidia.yaml"
PODLAB_CDI_SPEC_PATH = "/etc/cdi/podlab-nvidia.yaml"
ACTION_GENERATE_CDI = "generate-cdi-spec"
"""`Diagnosis.action` for "let Podlab write its own CDI spec" (generate_cdi_spec + write)."""

NVIDIA_SMI_QUERY: tuple[str, ...] = (
    "--query-gpu=index,uuid,name,memory.total,driver_version",
    "--format=csv,noheader,nounits",
)
NVIDIA_SMI_PLACES: tuple[str, ...] = (
    "/usr/local/nvidia/bin/nvidia-smi",
    "/usr/lib/wsl/lib/nvidia-smi",
)
"""Where nvidia-smi lives when it is not on PATH (driver containers, WSL)."""

KFD_NODES = "/sys/devices/virtual/kfd/kfd/topology/nodes"
MIN_GFX_TARGET = 90000
"""ROCm needs gfx9 (Vega) or newer; KFD writes gfx9.0.0 as 90000."""
MIN_VRAM_BYTES = GIB
"""AMD GPUs with less local memory (small APU carve-outs) are ignored, as RamaLama does."""
_KFD_HEAP_FRAMEBUFFER = (1, 2)  # HEAP_TYPE_FB_PUBLIC, HEAP_TYPE_FB_PRIVATE (linux/kfd_sysfs.h)

INTEL_DRIVERS: tuple[str, ...] = ("i915", "xe")
INTEL_NAMES: dict[str, str] = {
    "0x56a0": "Intel Arc A770",
    "0x56a1": "Intel Arc A750",
    "0x56a5": "Intel Arc A380",
    "0x56a6": "Intel Arc A310",
    "0xe20b": "Intel Arc B580",
    "0xe20c": "Intel Arc B570",
    "0x7d55": "Intel Arc Graphics (Meteor Lake)",
    "0x7dd5": "Intel Graphics (Meteor Lake)",
    "0x7d51": "Intel Arc Graphics (Arrow Lake)",
    "0x64a0": "Intel Arc 140V (Lunar Lake)",
    "0x46a6": "Intel Iris Xe Graphics (Alder Lake)",
    "0x9a49": "Intel Iris Xe Graphics (Tiger Lake)",
}
"""Friendly names for a few common device ids; others show as "Intel GPU 0x....". """

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
NVIDIA_LIB_PATTERNS: tuple[str, ...] = (
    "libcuda.so*",
    "libcudadebugger.so*",
    "libnvidia-ml.so*",
    "libnvidia-ptxjitcompiler.so*",
    "libnvidia-nvvm.so*",
    "libnvidia-gpucomp.so*",
    "libnvidia-opencl.so*",
    "libnvidia-cfg.so*",
    "libnvidia-allocator.so*",
)
"""The driver's user-space libraries a CUDA program (llama.cpp, PyTorch) loads."""
NVIDIA_BINARIES: tuple[str, ...] = ("nvidia-smi", "nvidia-debugdump", "nvidia-cuda-mps-control")
NVIDIA_BIN_DIRS: tuple[str, ...] = ("/usr/bin", "/usr/local/bin", "/usr/local/nvidia/bin")
NVIDIA_CONTROL_NODES: tuple[str, ...] = (
    "/dev/nvidiactl",
    "/dev/nvidia-uvm",
    "/dev/nvidia-uvm-tools",
    "/dev/nvidia-modeset",
)
CONTAINER_LIB_DIR = "/usr/local/nvidia/lib64"
"""Where a generated spec mounts the driver libraries: the folder CUDA base images already
list in LD_LIBRARY_PATH."""
DEFAULT_LD_LIBRARY_PATH = "/usr/local/nvidia/lib64:/usr/local/nvidia/lib"

VISIBLE_DEVICE_VARS: dict[str, tuple[str, ...]] = {
    "nvidia": ("CUDA_VISIBLE_DEVICES",),
    "amd": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"),
    "intel": ("ZE_AFFINITY_MASK",),
}
"""Preset variables that restrict which GPUs of a vendor Podlab uses (and that are passed on)."""
_PASSED_ENV = ("HSA_OVERRIDE_GFX_VERSION",)
"""Tuning variables the user set for AMD that are handed to the container as they are."""


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


@dataclass(frozen=True)
class CdiDevice:
    kind: str
    name: str
    source: str
    """Host path of the spec file that defines it."""

    @property
    def qualified_name(self) -> str:
        """What `podman run --device` takes, e.g. "nvidia.com/gpu=all"."""
        return f"{self.kind}={self.name}"


@dataclass(frozen=True)
class CdiSpecFile:
    path: str
    kind: str
    cdi_version: str
    devices: tuple[str, ...]
    missing_paths: tuple[str, ...] = ()
    """Host files the spec names (device nodes, mounts, hooks) that do not exist any more."""


@dataclass
class GpuReport:
    gpus: list[GpuInfo] = field(default_factory=list)
    """GPUs Podlab may use (after *_VISIBLE_DEVICES and the ignore rules)."""
    cdi_devices: list[CdiDevice] = field(default_factory=list)
    """All CDI devices of all spec files, merged."""
    cdi_files: list[CdiSpecFile] = field(default_factory=list)
    diagnoses: list[Diagnosis] = field(default_factory=list)
    ignored: list[GpuInfo] = field(default_factory=list)
    """Present but unusable (AMD older than gfx9 or under 1 GiB); a diagnosis says why."""
    hidden: list[GpuInfo] = field(default_factory=list)
    """Present but excluded by a preset *_VISIBLE_DEVICES / ZE_AFFINITY_MASK."""
    visible_env: dict[str, str] = field(default_factory=dict)
    """The preset visibility variables found in the environment."""
    selection_errors: dict[str, Diagnosis] = field(default_factory=dict)
    """Per vendor: a preset visibility variable that names GPUs which do not exist."""
    passed_env: dict[str, str] = field(default_factory=dict)
    nvidia_ctk: str | None = None
    """Host path of nvidia-ctk when installed."""
    wsl: bool = False
    system: str = "Linux"
    machine: str = "x86_64"
    kfd_present: bool = False
    render_nodes: list[str] = field(default_factory=list)

    def by_vendor(self, vendor: str) -> list[GpuInfo]:
        return [gpu for gpu in self.gpus if gpu.vendor == vendor]

    def cdi_names(self, kind: str) -> set[str]:
        return {device.name for device in self.cdi_devices if device.kind == kind}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = True

    def volume_arg(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass
class Passthrough:
    """What a container needs to see the GPU; the CPU one has no devices and 0 GPU layers."""

    vendor: PassthroughVendor = "none"
    devices: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    group_add: list[str] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    image_variant: ImageVariant = "cpu"
    gpu_layers: int = 0
    gpus: list[GpuInfo] = field(default_factory=list)
    """The GPUs this passthrough gives the container (for display)."""

    @property
    def uses_gpu(self) -> bool:
        return self.vendor != "none"

    def podman_args(self) -> list[str]:
        """The `podman run` options, e.g. ["--device", "nvidia.com/gpu=all"]."""
        args: list[str] = []
        for device in self.devices:
            args += ["--device", device]
        for group in self.group_add:
            args += ["--group-add", group]
        for key, value in sorted(self.env.items()):
            args += ["--env", f"{key}={value}"]
        for mount in self.mounts:
            args += ["--volume", mount.volume_arg()]
        return args


class PassthroughPlan(NamedTuple):
    """`passthrough, diagnosis = plan_passthrough(...)`; never start a GPU-less plan whose
    diagnosis is an error without the user's explicit "run on the CPU"."""

    passthrough: Passthrough
    diagnosis: Diagnosis


# --------------------------------------------------------------------------- CDI specs

_CDI_KIND_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?/[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$"
)
_CDI_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$")
_CDI_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")


def _edit_problems(edits: object, where: str) -> list[str]:
    if not isinstance(edits, dict):
        return [f"{where}: containerEdits must be a mapping"]
    problems: list[str] = []
    env = edits.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) and "=" in e for e in env):
        problems.append(f"{where}: env must be a list of KEY=VALUE strings")
    nodes = edits.get("deviceNodes", [])
    if not isinstance(nodes, list) or not all(
        isinstance(n, dict) and isinstance(n.get("path"), str) and n["path"].startswith("/")
        for n in nodes
    ):
        problems.append(f"{where}: every deviceNodes entry needs an absolute path")
    mounts = edits.get("mounts", [])
    if not isinstance(mounts, list) or not all(
        isinstance(m, dict)
        and isinstance(m.get("hostPath"), str)
        and isinstance(m.get("containerPath"), str)
        for m in mounts
    ):
        problems.append(f"{where}: every mounts entry needs hostPath and containerPath")
    hooks = edits.get("hooks", [])
    if not isinstance(hooks, list) or not all(
        isinstance(h, dict)
        and isinstance(h.get("hookName"), str)
        and isinstance(h.get("path"), str)
        for h in hooks
    ):
        problems.append(f"{where}: every hooks entry needs hookName and path")
    return problems


def validate_cdi_spec(spec: object) -> list[str]:
    """The problems of a CDI spec (empty when Podman can use it); checks what Podman checks."""
    if not isinstance(spec, dict):
        return ["the spec is not a mapping"]
    problems: list[str] = []
    version = spec.get("cdiVersion")
    if not isinstance(version, str) or not _CDI_VERSION_RE.match(version):
        problems.append("cdiVersion is missing or not a version like 0.5.0")
    kind = spec.get("kind")
    if not isinstance(kind, str) or not _CDI_KIND_RE.match(kind):
        problems.append("kind is missing or not vendor/class like nvidia.com/gpu")
    devices = spec.get("devices")
    if not isinstance(devices, list) or not devices:
        problems.append("devices is missing or empty")
        devices = []
    seen: set[str] = set()
    for number, device in enumerate(devices):
        if not isinstance(device, dict):
            problems.append(f"devices[{number}] is not a mapping")
            continue
        name = device.get("name")
        if not isinstance(name, str) or not _CDI_NAME_RE.match(name):
            problems.append(f"devices[{number}] has no valid name")
            continue
        if name in seen:
            problems.append(f"device {name!r} is defined twice")
        seen.add(name)
        edits = device.get("containerEdits")
        if not edits:
            problems.append(f"device {name!r} has no containerEdits")
        else:
            problems += _edit_problems(edits, f"device {name!r}")
    if "containerEdits" in spec:
        problems += _edit_problems(spec["containerEdits"], "containerEdits")
    return problems


def _spec_paths(spec: dict[str, Any]) -> list[str]:
    """Every host path a (valid) spec refers to."""
    edit_sets = [spec.get("containerEdits") or {}]
    edit_sets += [d.get("containerEdits") or {} for d in spec.get("devices", [])]
    paths: list[str] = []
    for edits in edit_sets:
        paths += [n.get("hostPath") or n["path"] for n in edits.get("deviceNodes", [])]
        paths += [m["hostPath"] for m in edits.get("mounts", [])]
        paths += [h["path"] for h in edits.get("hooks", [])]
    return list(dict.fromkeys(paths))


def _parse_error(exc: Exception) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"{exc.problem} (line {exc.problem_mark.line + 1})"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_cdi_specs(probe: HostProbe) -> tuple[list[CdiSpecFile], list[CdiDevice], list[Diagnosis]]:
    """Parse and merge every *.yaml and *.json spec in the CDI folders.

    A broken file is reported and skipped, the others are used. A device defined in two files
    of the same folder is a conflict Podman refuses; the later folder overrides the earlier.
    """
    files: list[CdiSpecFile] = []
    diagnoses: list[Diagnosis] = []
    merged: dict[str, CdiDevice] = {}
    for cdi_dir in probe.cdi_dirs:
        in_dir: dict[str, CdiDevice] = {}
        for path in probe.glob(cdi_dir, "*"):
            host = probe.host_path(path)
            if path.suffix == ".yml":
                diagnoses.append(
                    Diagnosis(
                        "warning",
                        f"CDI spec {host} is ignored by Podman: only .yaml and .json files count",
                        fix=f"Rename it to {host[:-4]}.yaml",
                    )
                )
                continue
            if path.suffix not in (".yaml", ".json") or not path.is_file():
                continue
            try:
                text = path.read_text(encoding="utf-8")
                data: object = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
                problems = [f"cannot be parsed: {_parse_error(exc)}"]
            else:
                problems = validate_cdi_spec(data)
            if problems:
                diagnoses.append(
                    Diagnosis(
                        "warning",
                        f"CDI spec {host} is broken and was skipped: {'; '.join(problems)}",
                        fix=f"Fix or remove {host} (the other CDI specs are still used)",
                    )
                )
                continue
            spec = cast(dict[str, Any], data)
            kind = str(spec["kind"])
            names = tuple(str(d["name"]) for d in spec["devices"])
            missing = tuple(p for p in _spec_paths(spec) if not probe.exists(p))
            files.append(CdiSpecFile(host, kind, str(spec["cdiVersion"]), names, missing))
            for name in names:
                device = CdiDevice(kind, name, host)
                earlier = in_dir.get(device.qualified_name)
                if earlier is not None:
                    diagnoses.append(
                        Diagnosis(
                            "error",
                            f"CDI device {device.qualified_name} is defined in both "
                            f"{earlier.source} and {host}; Podman refuses conflicting devices",
                            fix=f"Remove one of the two files (keep {earlier.source})",
                        )
                    )
                    continue
                in_dir[device.qualified_name] = device
        merged.update(in_dir)
    return files, list(merged.values()), diagnoses


# --------------------------------------------------------------------------- NVIDIA


def parse_nvidia_smi(text: str) -> list[GpuInfo]:
    """Rows of `nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version
    --format=csv,noheader,nounits` (memory in MiB)."""
    gpus: list[GpuInfo] = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 5 or not parts[0].isdigit():
            continue
        memory_text = parts[-2].removesuffix("MiB").strip()
        try:
            memory: int | None = int(float(memory_text) * MIB)
        except ValueError:
            memory = None
        driver = parts[-1] if parts[-1] and not parts[-1].startswith("[") else None
        gpus.append(
            GpuInfo(
                vendor="nvidia",
                index=int(parts[0]),
                uuid=parts[1] or None,
                name=", ".join(parts[2:-2]),
                memory_bytes=memory,
                driver=driver,
            )
        )
    return gpus


_NVRM_RE = re.compile(r"Kernel Module(?:\s+for\s+\S+)?\s+([0-9]+(?:\.[0-9]+)+)")


def _nvidia_proc(probe: HostProbe) -> list[GpuInfo]:
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


def _nvidia_nodes(probe: HostProbe) -> list[int]:
    numbers = [p.name.removeprefix("nvidia") for p in probe.glob("/dev", "nvidia*")]
    return sorted(int(n) for n in numbers if n.isdigit())


def _detect_nvidia(probe: HostProbe, diagnoses: list[Diagnosis]) -> list[GpuInfo]:
    smi = probe.which("nvidia-smi")
    if smi is None:
        smi = next((p for p in NVIDIA_SMI_PLACES if probe.exists(p)), "nvidia-smi")
    result = probe.run([smi, *NVIDIA_SMI_QUERY])
    if result.returncode == 0:
        gpus = parse_nvidia_smi(result.stdout)
        if gpus:
            return gpus
    gpus = _nvidia_proc(probe)
    if not gpus:
        gpus = [
            GpuInfo(vendor="nvidia", index=number, name="NVIDIA GPU")
            for number in _nvidia_nodes(probe)
        ]
    if gpus and result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        reason = said[0] if said else f"exit status {result.returncode}"
        if result.returncode == 127:
            message = "nvidia-smi is not installed, so the GPU memory size is unknown"
        else:
            message = f"nvidia-smi failed: {reason}"
        fix = "Run nvidia-smi in a terminal; after a driver update, reboot"
        if "mismatch" in reason.lower():
            fix = "The driver was updated but the old kernel module is still loaded: reboot"
        diagnoses.append(Diagnosis("warning", message, fix=fix))
    return gpus


# --------------------------------------------------------------------------- AMD


def _read_props(path: Path) -> dict[str, int]:
    """A KFD properties file: one "name value" per line, values are integers."""
    props: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return props
    for line in lines:
        key, _, value = line.strip().partition(" ")
        try:
            props[key] = int(value.strip())
        except ValueError:
            continue
    return props


def gfx_name(target_version: int) -> str:
    """KFD's gfx_target_version as the LLVM target name: 110000 -> gfx1100, 90010 -> gfx90a."""
    major, minor, step = (
        target_version // 10000,
        (target_version // 100) % 100,
        target_version % 100,
    )
    return f"gfx{major}{minor:x}{step:x}"


def _amd_name(probe: HostProbe, props: dict[str, int], amd_cards: list[Path], nth: int) -> str:
    candidates: list[Path] = []
    minor = props.get("drm_render_minor")
    if minor is not None:
        candidates.append(probe.path(f"/sys/class/drm/renderD{minor}/device"))
    if nth < len(amd_cards):
        candidates.append(amd_cards[nth])
    for device in candidates:
        for name_file in ("product_name", "product_number"):
            try:
                text = (device / name_file).read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                continue
            if text:
                return text
    return "AMD GPU"


def _detect_amd(
    probe: HostProbe, diagnoses: list[Diagnosis], ignored: list[GpuInfo]
) -> list[GpuInfo]:
    nodes = [p for p in probe.glob(KFD_NODES, "*") if p.name.isdigit()]
    nodes.sort(key=lambda p: int(p.name))
    amd_cards = [
        card / "device"
        for card in probe.glob("/sys/class/drm", "card*")
        if re.fullmatch(r"card\d+", card.name)
        and (probe.read_text(probe.host_path(card / "device" / "vendor")) or "").strip() == "0x1002"
    ]
    driver_version = (probe.read_text("/sys/module/amdgpu/version") or "").strip()
    driver = f"amdgpu {driver_version}" if driver_version else "amdgpu"
    gpus: list[GpuInfo] = []
    index = 0
    for node in nodes:
        props = _read_props(node / "properties")
        target = props.get("gfx_target_version", 0)
        if target == 0:
            continue  # a CPU node
        memory = 0
        banks = (
            sorted((node / "mem_banks").glob("*/properties"))
            if (node / "mem_banks").is_dir()
            else []
        )
        for bank in banks:
            bank_props = _read_props(bank)
            if bank_props.get("heap_type", 1) in _KFD_HEAP_FRAMEBUFFER:
                memory += bank_props.get("size_in_bytes", 0)
        if not banks:
            memory = props.get("local_mem_size", 0)
        unique = props.get("unique_id", 0)
        gpu = GpuInfo(
            vendor="amd",
            index=index,
            name=_amd_name(probe, props, amd_cards, index),
            memory_bytes=memory or None,
            driver=driver,
            uuid=f"GPU-{unique:016x}" if unique else None,
            gfx_version=gfx_name(target),
        )
        index += 1
        if target < MIN_GFX_TARGET:
            ignored.append(gpu)
            diagnoses.append(
                Diagnosis(
                    "warning",
                    f"{gpu.name} ({gpu.gfx_version}) is too old for ROCm (gfx9 or newer needed); "
                    "it is not used",
                )
            )
        elif memory < MIN_VRAM_BYTES:
            ignored.append(gpu)
            diagnoses.append(
                Diagnosis(
                    "ok",
                    f"{gpu.name} ({gpu.gfx_version}) has only {memory // MIB} MiB of its own "
                    "memory; it is not used",
                )
            )
        else:
            gpus.append(gpu)
    return gpus


# --------------------------------------------------------------------------- Intel, Apple, WSL

_PCI_ADDRESS_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")


def _detect_intel(probe: HostProbe) -> list[GpuInfo]:
    gpus: list[GpuInfo] = []
    for driver in INTEL_DRIVERS:
        for device in probe.glob(f"/sys/bus/pci/drivers/{driver}", "*"):
            if not _PCI_ADDRESS_RE.match(device.name):
                continue
            device_id = (probe.read_text(probe.host_path(device / "device")) or "").strip().lower()
            name = INTEL_NAMES.get(device_id, f"Intel GPU {device_id or device.name}")
            gpus.append(GpuInfo(vendor="intel", index=len(gpus), name=name, driver=driver))
    return gpus


def _parse_memory(value: object) -> int | None:
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number * MIB if number < MIB else number  # `machine list` gives bytes, inspect MiB


def _detect_apple(probe: HostProbe, diagnoses: list[Diagnosis]) -> list[GpuInfo]:
    compatible = probe.path("/proc/device-tree/compatible")
    if probe.system == "Linux" and compatible.is_file():
        try:
            if b"apple,arm-platform" in compatible.read_bytes().split(b"\0"):
                return [GpuInfo(vendor="apple", index=0, name="Apple GPU (Asahi Linux)")]
        except OSError:
            pass
    if probe.system != "Darwin":
        return []
    result = probe.run(["podman", "machine", "list", "--format", "json"])
    try:
        machines = json.loads(result.stdout) if result.returncode == 0 else []
    except ValueError:
        machines = []
    if not isinstance(machines, list):
        return []
    for machine in machines:
        if not isinstance(machine, dict) or not machine.get("Running"):
            continue
        name = str(machine.get("Name", "podman-machine-default")).rstrip("*")
        provider = str(machine.get("VMType", ""))
        if "krun" in provider:
            return [
                GpuInfo(
                    vendor="apple",
                    index=0,
                    name=f"Apple GPU (Podman machine {name}, libkrun)",
                    memory_bytes=_parse_memory(machine.get("Memory")),
                    driver="libkrun (Vulkan through Venus)",
                )
            ]
        diagnoses.append(
            Diagnosis(
                "warning",
                f"Podman machine {name} uses {provider or 'a provider'} which cannot give "
                "containers the Mac's GPU; models run on the CPU",
                fix="Create a Podman machine with the libkrun provider "
                "(podman machine init --provider libkrun) and start it",
            )
        )
    return []


# --------------------------------------------------------------------------- detection


def _select(
    gpus: list[GpuInfo], value: str, sub_devices: bool = False
) -> tuple[list[GpuInfo], list[str]]:
    """GPUs named by a *_VISIBLE_DEVICES value (indices or UUID prefixes), in its order."""
    chosen: list[GpuInfo] = []
    unknown: list[str] = []
    tokens = [t.strip() for t in value.split(",") if t.strip()]
    if tokens in (["-1"], ["none"], ["void"], ["NoDevFiles"]):
        return [], []
    for token in tokens:
        key = token.split(".")[0] if sub_devices else token
        match = [
            gpu
            for gpu in gpus
            if (key.isdigit() and gpu.index == int(key))
            or (not key.isdigit() and gpu.uuid is not None and gpu.uuid.startswith(key))
        ]
        if not match:
            unknown.append(token)
        chosen += [gpu for gpu in match if gpu not in chosen]
    return chosen, unknown


def _apply_visibility(
    vendor: str, gpus: list[GpuInfo], env: Mapping[str, str], report: GpuReport
) -> list[GpuInfo]:
    for var in VISIBLE_DEVICE_VARS.get(vendor, ()):
        if var not in env:
            continue
        value = env[var]
        report.visible_env[var] = value
        if not gpus:
            continue
        chosen, unknown = _select(gpus, value, sub_devices=var == "ZE_AFFINITY_MASK")
        report.hidden += [gpu for gpu in gpus if gpu not in chosen]
        if unknown:
            present = ", ".join(f"{gpu.index}: {gpu.name}" for gpu in gpus)
            report.selection_errors[vendor] = Diagnosis(
                "error",
                f"{var}={value} names GPU {', '.join(unknown)}, which this host does not have "
                f"(it has {present})",
                fix=f"Unset {var} or set it to GPUs that exist",
            )
            report.diagnoses.append(report.selection_errors[vendor])
        elif not chosen:
            report.diagnoses.append(
                Diagnosis("warning", f"{var}={value!r} hides every {vendor.upper()} GPU")
            )
        gpus = chosen
    return gpus


def detect_gpus(probe: HostProbe | None = None) -> GpuReport:
    """Every GPU of the host, every CDI device Podman can use, and what is wrong with them."""
    probe = probe or HostProbe()
    report = GpuReport(system=probe.system, machine=probe.machine, wsl=probe.is_wsl)
    report.cdi_files, report.cdi_devices, cdi_diagnoses = read_cdi_specs(probe)
    report.diagnoses += cdi_diagnoses
    report.nvidia_ctk = probe.which("nvidia-ctk")
    report.kfd_present = probe.exists("/dev/kfd")
    report.render_nodes = [probe.host_path(p) for p in probe.glob("/dev/dri", "renderD*")]
    report.passed_env = {k: probe.env[k] for k in _PASSED_ENV if k in probe.env}

    found: list[tuple[str, list[GpuInfo]]] = [
        ("nvidia", _detect_nvidia(probe, report.diagnoses)),
        ("amd", _detect_amd(probe, report.diagnoses, report.ignored)),
        ("intel", _detect_intel(probe)),
        ("apple", _detect_apple(probe, report.diagnoses)),
    ]
    for vendor, gpus in found:
        report.gpus += _apply_visibility(vendor, gpus, probe.env, report)
    if report.wsl and not report.by_vendor("nvidia"):
        report.gpus.append(GpuInfo(vendor="wsl", index=0, name="GPU shared by Windows (/dev/dxg)"))

    for spec in report.cdi_files:
        if spec.missing_paths:
            report.diagnoses.append(_stale_spec(report, spec))
    return report


# --------------------------------------------------------------------------- passthrough


def _ctk_command(output: str = NVIDIA_CTK_SPEC_PATH) -> list[str]:
    return ["nvidia-ctk", "cdi", "generate", f"--output={output}"]


def _stale_spec(report: GpuReport, spec: CdiSpecFile) -> Diagnosis:
    in_use = spec.kind == NVIDIA_CDI_KIND and bool(report.by_vendor("nvidia"))
    return Diagnosis(
        "error" if in_use else "warning",
        f"CDI spec {spec.path} names files that no longer exist "
        f"({', '.join(spec.missing_paths[:3])}); was the driver updated? "
        "Podman will refuse its devices",
        fix="Generate the spec again",
        fix_command=_ctk_command(spec.path) if report.nvidia_ctk else None,
        action=None if report.nvidia_ctk else ACTION_GENERATE_CDI,
    )


def _missing_cdi(report: GpuReport) -> Diagnosis:
    message = "NVIDIA GPU found but no CDI spec in /etc/cdi or /var/run/cdi; Podman cannot pass it"
    if report.nvidia_ctk:
        return Diagnosis(
            "error",
            message,
            fix="Generate the spec with the NVIDIA Container Toolkit, as root: "
            f"sudo {' '.join(_ctk_command())}",
            fix_command=_ctk_command(),
        )
    return Diagnosis(
        "error",
        message,
        fix="Install the NVIDIA Container Toolkit and run "
        f"`sudo {' '.join(_ctk_command())}`, or let Podlab write a spec made from the "
        f"driver's own files to {PODLAB_CDI_SPEC_PATH} (needs administrator rights)",
        action=ACTION_GENERATE_CDI,
    )


def _gpu_list(gpus: Iterable[GpuInfo]) -> str:
    return ", ".join(gpu.label for gpu in gpus)


def _plan_nvidia(report: GpuReport, gpus: list[GpuInfo]) -> PassthroughPlan:
    cpu = Passthrough()
    names = report.cdi_names(NVIDIA_CDI_KIND)
    sources = {d.source for d in report.cdi_devices if d.kind == NVIDIA_CDI_KIND}
    for spec in report.cdi_files:
        if spec.path in sources and spec.missing_paths:
            return PassthroughPlan(cpu, _stale_spec(report, spec))
    preset = report.visible_env.get("CUDA_VISIBLE_DEVICES")
    base = Passthrough(vendor="nvidia", image_variant="cuda", gpu_layers=GPU_LAYERS_ALL, gpus=gpus)
    if report.system == "Windows":
        base.devices = [f"{NVIDIA_CDI_KIND}=all"]
        return PassthroughPlan(
            base,
            Diagnosis(
                "warning",
                f"Using {_gpu_list(gpus)} through the Podman machine; Podlab cannot check its "
                "CDI spec from Windows",
                fix="If the container sees no GPU: podman machine ssh "
                f"sudo {' '.join(_ctk_command())}",
            ),
        )
    if not names and report.wsl:
        base.vendor = "wsl"
        base.devices = ["/dev/dxg"]
        base.mounts = [Mount("/usr/lib/wsl", "/usr/lib/wsl")]
        base.env = {"LD_LIBRARY_PATH": "/usr/lib/wsl/lib"}
        if preset is not None:
            base.env["CUDA_VISIBLE_DEVICES"] = preset
        return PassthroughPlan(
            base, Diagnosis("ok", f"Using {_gpu_list(gpus)} through WSL (/dev/dxg)")
        )
    if not names:
        return PassthroughPlan(cpu, _missing_cdi(report))

    def cdi_name(gpu: GpuInfo) -> str | None:
        if str(gpu.index) in names:
            return str(gpu.index)
        return gpu.uuid if gpu.uuid in names else None

    per_gpu = [cdi_name(gpu) for gpu in gpus]
    if preset is not None and all(per_gpu):
        base.devices = [f"{NVIDIA_CDI_KIND}={name}" for name in per_gpu]
    elif "all" in names:
        base.devices = [f"{NVIDIA_CDI_KIND}=all"]
        if preset is not None:
            base.env["CUDA_VISIBLE_DEVICES"] = preset
    elif all(per_gpu):
        base.devices = [f"{NVIDIA_CDI_KIND}={name}" for name in per_gpu]
    else:
        lacking = [gpu.label for gpu, name in zip(gpus, per_gpu, strict=True) if name is None]
        return PassthroughPlan(
            cpu,
            Diagnosis(
                "error",
                f"The CDI spec has no device for {', '.join(lacking)} (it has "
                f"{', '.join(sorted(names))}); Podman cannot pass it",
                fix="Generate the CDI spec again so that it lists every GPU",
                fix_command=_ctk_command() if report.nvidia_ctk else None,
                action=None if report.nvidia_ctk else ACTION_GENERATE_CDI,
            ),
        )
    return PassthroughPlan(
        base,
        Diagnosis("ok", f"Using {_gpu_list(gpus)} through CDI ({', '.join(base.devices)})"),
    )


def _plan_amd(report: GpuReport, gpus: list[GpuInfo]) -> PassthroughPlan:
    if not report.kfd_present:
        return PassthroughPlan(
            Passthrough(),
            Diagnosis(
                "error",
                f"AMD GPU found ({_gpu_list(gpus)}) but /dev/kfd is missing; the amdgpu "
                "kernel driver is not ready, so Podman cannot pass the GPU",
                fix="Load the driver (sudo modprobe amdgpu) or install the AMD GPU driver",
                fix_command=["modprobe", "amdgpu"],
            ),
        )
    env = dict(report.passed_env)
    preset = {k: v for k, v in report.visible_env.items() if k in VISIBLE_DEVICE_VARS["amd"]}
    env.update(preset)
    if not preset:
        env["HIP_VISIBLE_DEVICES"] = ",".join(str(gpu.index) for gpu in gpus)
    arm = report.machine.lower() in ("arm64", "aarch64")
    passthrough = Passthrough(
        vendor="amd",
        devices=["/dev/dri"] if arm else ["/dev/kfd", "/dev/dri"],
        env={} if arm else env,
        group_add=["keep-groups"],
        image_variant="vulkan" if arm else "rocm",
        gpu_layers=GPU_LAYERS_ALL,
        gpus=gpus,
    )
    how = "Vulkan (ROCm has no ARM build)" if arm else "ROCm (/dev/kfd, /dev/dri)"
    return PassthroughPlan(passthrough, Diagnosis("ok", f"Using {_gpu_list(gpus)} with {how}"))


def _plan_dri(
    report: GpuReport, gpus: list[GpuInfo], vendor: Literal["intel", "apple"]
) -> PassthroughPlan:
    if vendor == "intel" and not report.render_nodes:
        return PassthroughPlan(
            Passthrough(),
            Diagnosis(
                "error",
                f"Intel GPU found ({_gpu_list(gpus)}) but /dev/dri has no render node; "
                "Podman cannot pass it",
                fix="Check that the i915 or xe kernel driver is loaded (ls /dev/dri)",
            ),
        )
    passthrough = Passthrough(
        vendor=vendor,
        devices=["/dev/dri"],
        image_variant="intel" if vendor == "intel" else "vulkan",
        gpu_layers=GPU_LAYERS_ALL,
        gpus=gpus,
    )
    if vendor == "intel":
        passthrough.group_add = ["keep-groups"]
        mask = report.visible_env.get("ZE_AFFINITY_MASK")
        if mask is not None:
            passthrough.env["ZE_AFFINITY_MASK"] = mask
    return PassthroughPlan(passthrough, Diagnosis("ok", f"Using {_gpu_list(gpus)} (/dev/dri)"))


def _plan_wsl(gpus: list[GpuInfo]) -> PassthroughPlan:
    passthrough = Passthrough(
        vendor="wsl",
        devices=["/dev/dxg"],
        mounts=[Mount("/usr/lib/wsl", "/usr/lib/wsl")],
        env={"LD_LIBRARY_PATH": "/usr/lib/wsl/lib"},
        image_variant="vulkan",
        gpu_layers=GPU_LAYERS_ALL,
        gpus=gpus,
    )
    return PassthroughPlan(
        passthrough, Diagnosis("ok", "Using the GPU shared by Windows (WSL, /dev/dxg)")
    )


_VENDOR_NAMES = {"nvidia": "NVIDIA", "amd": "AMD", "intel": "Intel"}


def plan_passthrough(report: GpuReport, want: str = "auto") -> PassthroughPlan:
    """The Podman options for the GPU the user wants, and one diagnosis saying what happens.

    want: "auto" (NVIDIA, then AMD, Intel, Apple, WSL), "none" (CPU), or a vendor. When a GPU
    is present but cannot be passed, or the wanted vendor is missing, the result is the CPU
    passthrough with an *error* diagnosis: show it, and run on the CPU only when the user says so.
    """
    if want not in WANTS:
        raise ValueError(f"unknown GPU choice {want!r}; expected one of {', '.join(WANTS)}")
    if want == "none":
        return PassthroughPlan(
            Passthrough(), Diagnosis("ok", "GPU turned off in the settings; running on the CPU.")
        )
    vendors = ["nvidia", "amd", "intel", "apple", "wsl"] if want == "auto" else [want]
    for vendor in vendors:
        if vendor in report.selection_errors:
            return PassthroughPlan(Passthrough(), report.selection_errors[vendor])
        gpus = report.by_vendor(vendor)
        if not gpus:
            continue
        if vendor == "nvidia":
            return _plan_nvidia(report, gpus)
        if vendor == "amd":
            return _plan_amd(report, gpus)
        if vendor in ("intel", "apple"):
            return _plan_dri(report, gpus, cast(Literal["intel", "apple"], vendor))
        return _plan_wsl(gpus)
    if want != "auto":
        label = _VENDOR_NAMES.get(want, want)
        hidden_by = [
            f"{var}={report.visible_env[var]!r}"
            for var in VISIBLE_DEVICE_VARS.get(want, ())
            if var in report.visible_env
        ]
        if hidden_by and any(gpu.vendor == want for gpu in report.hidden):
            return PassthroughPlan(
                Passthrough(),
                Diagnosis(
                    "error",
                    f"{label} GPU requested but {', '.join(hidden_by)} hides every one",
                    fix=f"Unset {', '.join(v.split('=')[0] for v in hidden_by)}",
                ),
            )
        others = _gpu_list(report.gpus) or "no GPU at all"
        return PassthroughPlan(
            Passthrough(),
            Diagnosis(
                "error",
                f"{label} GPU requested but none was found (found: {others})",
                fix="Choose Auto or CPU in the settings, or check the GPU driver",
            ),
        )
    if report.hidden:
        names = ", ".join(f"{k}={v!r}" for k, v in report.visible_env.items())
        return PassthroughPlan(
            Passthrough(),
            Diagnosis("warning", f"Every GPU is hidden by {names}; running on the CPU."),
        )
    return PassthroughPlan(Passthrough(), Diagnosis("ok", "No GPU found; running on the CPU."))


# --------------------------------------------------------------------------- CDI generation


def _nvidia_libraries(probe: HostProbe) -> list[str]:
    found: dict[str, str] = {}
    seen_dirs: set[Path] = set()
    for lib_dir in probe.lib_dirs:
        folder = probe.path(lib_dir)
        try:
            real = folder.resolve()
        except OSError:
            continue
        if real in seen_dirs or not folder.is_dir():
            continue
        seen_dirs.add(real)
        for pattern in NVIDIA_LIB_PATTERNS:
            for path in sorted(folder.glob(pattern)):
                if path.name not in found and (path.is_file() or path.is_symlink()):
                    found[path.name] = f"{lib_dir.rstrip('/')}/{path.name}"
    return list(found.values())


def _nvidia_binaries(probe: HostProbe) -> list[str]:
    binaries: list[str] = []
    for name in NVIDIA_BINARIES:
        path = probe.which(name) or next(
            (f"{d}/{name}" for d in NVIDIA_BIN_DIRS if probe.path(f"{d}/{name}").is_file()), None
        )
        if path is not None:
            binaries.append(path)
    return binaries


def generate_cdi_spec(
    probe: HostProbe | None = None, ld_library_path: str | None = DEFAULT_LD_LIBRARY_PATH
) -> dict[str, Any]:
    """A CDI spec (kind nvidia.com/gpu, devices "all" and one per /dev/nvidiaN) made from the
    driver's own files, for hosts without nvidia-ctk. Same shape as `nvidia-ctk cdi generate`,
    minus its hooks: the driver libraries are bind-mounted read-only into
    /usr/local/nvidia/lib64 (the folder CUDA images already search) and LD_LIBRARY_PATH is set
    to it (pass ld_library_path=None to leave the image's own value alone). Devices are named
    by their /dev/nvidiaN number, and also by UUID where /proc/driver/nvidia tells it.

    Raises PodlabError when the host has no NVIDIA device node or no libcuda.
    """
    probe = probe or HostProbe()
    numbers = _nvidia_nodes(probe)
    if not numbers:
        raise PodlabError(
            "No NVIDIA device node (/dev/nvidia0, ...) found; cannot write a CDI spec",
            hint="Is the NVIDIA kernel driver loaded? nvidia-smi should list the GPU",
        )
    libraries = _nvidia_libraries(probe)
    if not any(Path(lib).name.startswith("libcuda.so") for lib in libraries):
        raise PodlabError(
            "The NVIDIA driver library libcuda.so was not found; cannot write a CDI spec",
            hint=f"Looked in {', '.join(probe.lib_dirs)}",
        )
    options = ["ro", "nosuid", "nodev", "bind"]
    uuids = {gpu.index: gpu.uuid for gpu in _nvidia_proc(probe) if gpu.uuid}
    devices: list[dict[str, Any]] = []
    for number in numbers:
        edits = {"deviceNodes": [{"path": f"/dev/nvidia{number}"}]}
        devices.append({"name": str(number), "containerEdits": edits})
        if number in uuids:
            devices.append({"name": uuids[number], "containerEdits": edits})
    devices.append(
        {
            "name": "all",
            "containerEdits": {"deviceNodes": [{"path": f"/dev/nvidia{n}"} for n in numbers]},
        }
    )
    env = ["NVIDIA_VISIBLE_DEVICES=void"]
    if ld_library_path:
        env.append(f"LD_LIBRARY_PATH={ld_library_path}")
    mounts = [
        {
            "hostPath": lib,
            "containerPath": f"{CONTAINER_LIB_DIR}/{Path(lib).name}",
            "options": list(options),
        }
        for lib in libraries
    ]
    mounts += [
        {
            "hostPath": binary,
            "containerPath": f"/usr/bin/{Path(binary).name}",
            "options": list(options),
        }
        for binary in _nvidia_binaries(probe)
    ]
    return {
        "cdiVersion": "0.5.0",
        "kind": NVIDIA_CDI_KIND,
        "devices": devices,
        "containerEdits": {
            "env": env,
            "deviceNodes": [{"path": p} for p in NVIDIA_CONTROL_NODES if probe.exists(p)],
            "mounts": mounts,
        },
    }


def write_cdi_spec(spec: Mapping[str, Any], path: str | Path = PODLAB_CDI_SPEC_PATH) -> Path:
    """Write a CDI spec atomically (YAML, or JSON for a .json path), readable by every user.

    Only call it after the user agreed: /etc/cdi belongs to root. Raises PodlabError when the
    spec is invalid or the folder is not writable.
    """
    problems = validate_cdi_spec(dict(spec))
    if problems:
        raise PodlabError(f"Refusing to write an invalid CDI spec: {'; '.join(problems)}")
    target = Path(path)
    if target.suffix == ".json":
        text = json.dumps(dict(spec), indent=2) + "\n"
    else:
        text = "# Written by Podlab from the NVIDIA driver's files.\n" + yaml.safe_dump(
            dict(spec), sort_keys=False
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except PermissionError as exc:
        raise PodlabError(
            f"Cannot write {target}: permission denied",
            hint="CDI specs live in a folder of root: run the fix as administrator",
        ) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), 0o644)  # rootless Podman must read it
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


# --------------------------------------------------------------------------- llama.cpp logs


@dataclass(frozen=True)
class OffloadInfo:
    """Where llama.cpp put the model, read from its log."""

    offloaded_layers: int | None = None
    total_layers: int | None = None
    device_name: str | None = None
    backend: str | None = None
    """"CUDA", "ROCm", "Vulkan", "Metal", "SYCL" or "MUSA" when a GPU backend spoke."""
    gpu_count: int | None = None

    @property
    def where(self) -> Literal["gpu", "gpu+cpu", "cpu", "unknown"]:
        if self.offloaded_layers is None:
            return "unknown"
        if self.offloaded_layers == 0:
            return "cpu"
        if self.total_layers is not None and self.offloaded_layers < self.total_layers:
            return "gpu+cpu"
        return "gpu"

    @property
    def on_gpu(self) -> bool:
        return self.where in ("gpu", "gpu+cpu")


_OFFLOADED_RE = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_CUDA_FOUND_RE = re.compile(r"ggml_cuda_init: found (\d+) (CUDA|ROCm|MUSA) devices")
_CUDA_DEVICE_RE = re.compile(r"^\s*Device (\d+): ([^,\n]+)", re.MULTILINE)
_USING_DEVICE_RE = re.compile(r"using device ([A-Za-z]+)(\d+) \((.+?)\)(?: -|\s*$)", re.MULTILINE)
_VULKAN_FOUND_RE = re.compile(r"ggml_vulkan: Found (\d+) Vulkan devices")
_VULKAN_DEVICE_RE = re.compile(r"ggml_vulkan: (\d+) = (.+?)(?: \(| \|)", re.MULTILINE)
_METAL_RE = re.compile(r"ggml_metal_\w+: (?:found device|GPU name):\s+(.+)")
_SYCL_FOUND_RE = re.compile(r"ggml_sycl_init: found (\d+) SYCL devices")
_BUFFER_RE = re.compile(r"\b([A-Za-z]+)\d*(?:_Mapped)? model buffer size\s*=\s*([\d.]+) MiB")
_NO_GPU_RE = re.compile(r"no usable GPU found|not compiled with GPU offload support")


def parse_offload(log_text: str) -> OffloadInfo:
    """Read llama.cpp / llama-server / llama-cpp-python logs: layers offloaded and the device.

    Uses the last model load in the text. Without an "offloaded N/M layers" line, a log whose
    model buffers are all on the CPU (or that says "no usable GPU") counts as 0 layers on GPU.
    """
    offloaded: int | None = None
    total: int | None = None
    matches = list(_OFFLOADED_RE.finditer(log_text))
    if matches:
        offloaded, total = int(matches[-1].group(1)), int(matches[-1].group(2))

    backend: str | None = None
    device: str | None = None
    count: int | None = None
    if found := list(_CUDA_FOUND_RE.finditer(log_text)):
        count, backend = int(found[-1].group(1)), found[-1].group(2)
        if dev := _CUDA_DEVICE_RE.search(log_text, found[-1].end()):
            device = dev.group(2).strip()
    elif found := list(_VULKAN_FOUND_RE.finditer(log_text)):
        count, backend = int(found[-1].group(1)), "Vulkan"
        if dev := _VULKAN_DEVICE_RE.search(log_text):
            device = dev.group(2).strip()
    elif found := list(_SYCL_FOUND_RE.finditer(log_text)):
        count, backend = int(found[-1].group(1)), "SYCL"
    if using := list(_USING_DEVICE_RE.finditer(log_text)):
        backend = backend or using[-1].group(1)
        device = using[-1].group(3).strip()
    if metal := list(_METAL_RE.finditer(log_text)):
        backend, device = "Metal", metal[-1].group(1).strip()

    if offloaded is None:
        buffers = {m.group(1) for m in _BUFFER_RE.finditer(log_text)}
        if _NO_GPU_RE.search(log_text) or (buffers and buffers <= {"CPU"}):
            offloaded = 0
    if count == 0:
        backend, device = None, None
    return OffloadInfo(offloaded, total, device, backend, count)
