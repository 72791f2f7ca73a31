"""GPU detection: which GPUs does this host have, and which CDI devices can Podman use?

`detect_gpus(probe)` returns every GPU it finds (NVIDIA, AMD, Intel, Apple through a libkrun
Podman machine, WSL's shared GPU), all CDI spec files merged, and a `Diagnosis` for everything
odd it saw. Detection is ordered like RamaLama's (NVIDIA, AMD, Intel, Apple, WSL) but keeps
every GPU it finds instead of stopping at the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from podlab.core.serving.gpu.cdi import (
    ACTION_GENERATE_CDI,
    NVIDIA_CDI_KIND,
    CdiDevice,
    CdiSpecFile,
    ctk_command,
    read_cdi_specs,
)
from podlab.core.serving.gpu.host import (
    GIB,
    MIB,
    Diagnosis,
    GpuInfo,
    HostProbe,
    nvidia_device_numbers,
    nvidia_driver_gpus,
)

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

VISIBLE_DEVICE_VARS: dict[str, tuple[str, ...]] = {
    "nvidia": ("CUDA_VISIBLE_DEVICES",),
    "amd": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"),
    "intel": ("ZE_AFFINITY_MASK",),
}
"""Preset variables that restrict which GPUs of a vendor Podlab uses (and that are passed on)."""
_PASSED_ENV = ("HSA_OVERRIDE_GFX_VERSION",)
"""Tuning variables the user set for AMD that are handed to the container as they are."""


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


def _detect_nvidia(probe: HostProbe, diagnoses: list[Diagnosis]) -> list[GpuInfo]:
    smi = probe.which("nvidia-smi")
    if smi is None:
        smi = next((p for p in NVIDIA_SMI_PLACES if probe.exists(p)), "nvidia-smi")
    result = probe.run([smi, *NVIDIA_SMI_QUERY])
    if result.returncode == 0:
        gpus = parse_nvidia_smi(result.stdout)
        if gpus:
            return gpus
    gpus = nvidia_driver_gpus(probe)
    if not gpus:
        gpus = [
            GpuInfo(vendor="nvidia", index=number, name="NVIDIA GPU")
            for number in nvidia_device_numbers(probe)
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
            report.diagnoses.append(stale_spec_diagnosis(report, spec))
    return report


def stale_spec_diagnosis(report: GpuReport, spec: CdiSpecFile) -> Diagnosis:
    """A spec naming files that are gone: an error when it is the one NVIDIA GPUs need."""
    in_use = spec.kind == NVIDIA_CDI_KIND and bool(report.by_vendor("nvidia"))
    return Diagnosis(
        "error" if in_use else "warning",
        f"CDI spec {spec.path} names files that no longer exist "
        f"({', '.join(spec.missing_paths[:3])}); was the driver updated? "
        "Podman will refuse its devices",
        fix="Generate the spec again",
        fix_command=ctk_command(spec.path) if report.nvidia_ctk else None,
        action=None if report.nvidia_ctk else ACTION_GENERATE_CDI,
    )
