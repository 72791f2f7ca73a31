"""Passthrough planning: which `podman run` options give a container the GPU?

`plan_passthrough(report, want)` never falls back to the CPU in silence: when a GPU is there but
cannot be passed (the classic "NVIDIA without a CDI spec"), the plan is the CPU one *with an
error diagnosis and a fix*, and the caller must show it and ask before running on the CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, cast

from podlab.core.serving.gpu.cdi import (
    ACTION_GENERATE_CDI,
    NVIDIA_CDI_KIND,
    PODLAB_CDI_SPEC_PATH,
    ctk_command,
)
from podlab.core.serving.gpu.detect import VISIBLE_DEVICE_VARS, GpuReport, stale_spec_diagnosis
from podlab.core.serving.gpu.host import Diagnosis, GpuInfo

PassthroughVendor = Literal["none", "nvidia", "amd", "intel", "apple", "wsl"]
Want = Literal["auto", "none", "nvidia", "amd", "intel"]
ImageVariant = Literal["cpu", "cuda", "rocm", "intel", "vulkan"]

WANTS: tuple[str, ...] = ("auto", "none", "nvidia", "amd", "intel")

GPU_LAYERS_ALL = 999
"""llama.cpp's `--n-gpu-layers` value that means "every layer on the GPU"."""


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


def _missing_cdi(report: GpuReport) -> Diagnosis:
    message = "NVIDIA GPU found but no CDI spec in /etc/cdi or /var/run/cdi; Podman cannot pass it"
    if report.nvidia_ctk:
        return Diagnosis(
            "error",
            message,
            fix="Generate the spec with the NVIDIA Container Toolkit, as root: "
            f"sudo {' '.join(ctk_command())}",
            fix_command=ctk_command(),
        )
    return Diagnosis(
        "error",
        message,
        fix="Install the NVIDIA Container Toolkit and run "
        f"`sudo {' '.join(ctk_command())}`, or let Podlab write a spec made from the "
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
            return PassthroughPlan(cpu, stale_spec_diagnosis(report, spec))
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
                f"sudo {' '.join(ctk_command())}",
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
                fix_command=ctk_command() if report.nvidia_ctk else None,
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
