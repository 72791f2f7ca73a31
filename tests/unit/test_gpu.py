"""GPU detection and passthrough on fake host trees and recorded command output."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from podlab.core.errors import PodlabError
from podlab.core.serving.gpu.cdi import (
    ACTION_GENERATE_CDI,
    generate_cdi_spec,
    read_cdi_specs,
    validate_cdi_spec,
    write_cdi_spec,
)
from podlab.core.serving.gpu.detect import detect_gpus, gfx_name, parse_nvidia_smi
from podlab.core.serving.gpu.host import CommandResult, GpuInfo, HostProbe
from podlab.core.serving.gpu.passthrough import GPU_LAYERS_ALL, Mount, Passthrough, plan_passthrough
from podlab.core.serving.offload import parse_offload

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parents[1] / "data" / "gpu"
GIB = 1024**3
NO_CDI = "NVIDIA GPU found but no CDI spec in /etc/cdi or /var/run/cdi; Podman cannot pass it"


class FakeHost:
    """A fake root file system plus recorded command answers, seen through a HostProbe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.commands: dict[str, CommandResult] = {}
        self.calls: list[list[str]] = []
        self.env: dict[str, str] = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
        self.system = "Linux"
        self.machine = "x86_64"

    def file(self, host_path: str, text: str = "") -> Path:
        path = self.root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def executable(self, host_path: str) -> Path:
        path = self.file(host_path, "#!/bin/sh\n")
        path.chmod(0o755)
        return path

    def symlink(self, host_path: str, target: str) -> None:
        path = self.root / host_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def answer(self, command: str, stdout: str = "", returncode: int = 0, stderr: str = "") -> None:
        self.commands[command] = CommandResult(returncode, stdout, stderr)

    def run(self, argv: Any) -> CommandResult:
        self.calls.append(list(argv))
        name = Path(argv[0]).name
        return self.commands.get(name, CommandResult(127, "", f"{name}: command not found"))

    def probe(self) -> HostProbe:
        return HostProbe(
            root=self.root, run=self.run, env=self.env, system=self.system, machine=self.machine
        )

    def materialize(self, spec: dict[str, Any]) -> None:
        """Create every host file a CDI spec names, so that it is not stale."""
        edit_sets = [spec.get("containerEdits") or {}]
        edit_sets += [d.get("containerEdits") or {} for d in spec["devices"]]
        for edits in edit_sets:
            for node in edits.get("deviceNodes", []):
                self.file(node["path"])
            for mount in edits.get("mounts", []):
                self.file(mount["hostPath"])
            for hook in edits.get("hooks", []):
                self.executable(hook["path"])


@pytest.fixture
def host(tmp_path: Path) -> FakeHost:
    return FakeHost(tmp_path / "root")


def nvidia_host(host: FakeHost, smi: str = "h100.csv", count: int = 1) -> FakeHost:
    """Device nodes, driver libraries and nvidia-smi of a host with the NVIDIA driver."""
    for number in range(count):
        host.file(f"/dev/nvidia{number}")
    for node in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        host.file(f"/dev/{node}")
    lib = "/usr/lib/x86_64-linux-gnu"
    for name in ("libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler"):
        host.file(f"{lib}/{name}.so.580.82.07", "ELF")
        host.symlink(f"{lib}/{name}.so.1", f"{name}.so.580.82.07")
    host.file(f"{lib}/libc.so.6", "not a driver library")
    host.executable("/usr/bin/nvidia-smi")
    host.answer("nvidia-smi", (DATA / "nvidia-smi" / smi).read_text())
    return host


def install_cdi(host: FakeHost, name: str, folder: str = "/etc/cdi") -> dict[str, Any]:
    text = (DATA / "cdi" / name).read_text()
    host.file(f"{folder}/{name}", text)
    spec = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    assert isinstance(spec, dict)
    return spec


def amd_node(
    host: FakeHost,
    node: int,
    gfx: int,
    memory: int,
    render_minor: int = 128,
    unique_id: int = 0,
    product: str | None = None,
) -> None:
    base = f"/sys/devices/virtual/kfd/kfd/topology/nodes/{node}"
    props = [
        "cpu_cores_count 0",
        "simd_count 192",
        "mem_banks_count 1",
        f"gfx_target_version {gfx}",
        f"drm_render_minor {render_minor}",
        f"unique_id {unique_id}",
    ]
    host.file(f"{base}/properties", "\n".join(props) + "\n")
    host.file(f"{base}/mem_banks/0/properties", f"heap_type 1\nsize_in_bytes {memory}\n")
    if product:
        host.file(f"/sys/class/drm/renderD{render_minor}/device/product_name", product + "\n")


def amd_host(host: FakeHost) -> FakeHost:
    """A CPU node, a big gfx1100 card, a tiny gfx1036 iGPU and an old gfx803 card."""
    host.file(
        "/sys/devices/virtual/kfd/kfd/topology/nodes/0/properties",
        "cpu_cores_count 16\nsimd_count 0\ngfx_target_version 0\n",
    )
    amd_node(host, 1, 110000, 24 * GIB, 128, 0x2B2A5C7D3F4E6A1B, "AMD Radeon RX 7900 XTX")
    amd_node(host, 2, 100306, 512 * 1024**2, 129)
    amd_node(host, 3, 80003, 8 * GIB, 130, product="Radeon RX 580")
    host.file("/dev/kfd")
    host.file("/dev/dri/renderD128")
    host.file("/dev/dri/card0")
    return host


def intel_device(host: FakeHost, driver: str, address: str, device_id: str) -> None:
    base = f"/sys/bus/pci/drivers/{driver}/{address}"
    host.file(f"{base}/vendor", "0x8086\n")
    host.file(f"{base}/device", device_id + "\n")
    host.file(f"/sys/bus/pci/drivers/{driver}/bind")
    host.file(f"/sys/bus/pci/drivers/{driver}/uevent")


# --------------------------------------------------------------------------- nvidia-smi


def test_parse_recorded_nvidia_smi() -> None:
    [h100] = parse_nvidia_smi((DATA / "nvidia-smi" / "h100.csv").read_text())
    assert h100 == GpuInfo(
        vendor="nvidia",
        index=0,
        name="NVIDIA H100 80GB HBM3",
        memory_bytes=81559 * 1024**2,
        driver="580.82.07",
        uuid="GPU-5f3c2a1b-8d7e-4c6f-9a0b-1e2d3c4b5a69",
    )
    two = parse_nvidia_smi((DATA / "nvidia-smi" / "rtx4090-rtx3060.csv").read_text())
    assert [(g.index, g.name, g.memory_bytes) for g in two] == [
        (0, "NVIDIA GeForce RTX 4090", 24564 * 1024**2),
        (1, "NVIDIA GeForce RTX 3060", 12288 * 1024**2),
    ]
    assert parse_nvidia_smi("0, GPU-x, Tesla T4, [N/A], [N/A]\n")[0].memory_bytes is None
    assert parse_nvidia_smi("No devices were found\n") == []


# --------------------------------------------------------------------------- NVIDIA + CDI


def test_nvidia_with_cdi_spec_passes_all(host: FakeHost) -> None:
    nvidia_host(host)
    host.materialize(install_cdi(host, "nvidia-ctk.yaml"))
    report = detect_gpus(host.probe())

    assert [gpu.name for gpu in report.gpus] == ["NVIDIA H100 80GB HBM3"]
    assert host.calls[0][0] == "/usr/bin/nvidia-smi"
    assert "--query-gpu=index,uuid,name,memory.total,driver_version" in host.calls[0]
    assert {d.qualified_name for d in report.cdi_devices} == {
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=GPU-5f3c2a1b-8d7e-4c6f-9a0b-1e2d3c4b5a69",
        "nvidia.com/gpu=all",
    }
    assert report.diagnoses == []

    passthrough, diagnosis = plan_passthrough(report, "auto")
    assert diagnosis.level == "ok"
    assert "NVIDIA H100 80GB HBM3" in diagnosis.message
    assert passthrough.devices == ["nvidia.com/gpu=all"]
    assert passthrough.image_variant == "cuda"
    assert passthrough.gpu_layers == GPU_LAYERS_ALL
    assert passthrough.podman_args() == ["--device", "nvidia.com/gpu=all"]
    assert plan_passthrough(report, "nvidia").passthrough == passthrough


def test_nvidia_without_cdi_is_an_error_with_podlab_spec_offer(host: FakeHost) -> None:
    nvidia_host(host)
    report = detect_gpus(host.probe())
    passthrough, diagnosis = plan_passthrough(report)

    assert diagnosis.level == "error"
    assert diagnosis.message == NO_CDI
    assert diagnosis.fix_command is None
    assert diagnosis.action == ACTION_GENERATE_CDI
    assert diagnosis.fix is not None and "/etc/cdi/podlab-nvidia.yaml" in diagnosis.fix
    # never a silent CPU run: the CPU passthrough comes with the error
    assert not passthrough.uses_gpu and passthrough.gpu_layers == 0


def test_nvidia_without_cdi_offers_nvidia_ctk_when_installed(host: FakeHost) -> None:
    nvidia_host(host)
    host.executable("/usr/bin/nvidia-ctk")
    report = detect_gpus(host.probe())
    assert report.nvidia_ctk == "/usr/bin/nvidia-ctk"

    _, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "error"
    assert diagnosis.message == NO_CDI
    assert diagnosis.fix_command == [
        "nvidia-ctk",
        "cdi",
        "generate",
        "--output=/etc/cdi/nvidia.yaml",
    ]
    assert diagnosis.fix is not None
    assert "nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml" in diagnosis.fix


def test_nvidia_without_cdi_does_not_fall_back_to_another_gpu(host: FakeHost) -> None:
    amd_host(nvidia_host(host))
    report = detect_gpus(host.probe())
    assert {gpu.vendor for gpu in report.gpus} == {"nvidia", "amd"}
    passthrough, diagnosis = plan_passthrough(report, "auto")
    assert diagnosis.level == "error" and diagnosis.message == NO_CDI
    assert passthrough.devices == []
    # the user may still pick the AMD card on purpose
    assert plan_passthrough(report, "amd").diagnosis.level == "ok"


def test_stale_cdi_spec_after_driver_update(host: FakeHost) -> None:
    nvidia_host(host)
    spec = install_cdi(host, "nvidia-ctk.yaml")
    host.materialize(spec)
    (host.root / "usr/lib/x86_64-linux-gnu/libcuda.so.580.82.07").unlink()
    host.executable("/usr/bin/nvidia-ctk")
    report = detect_gpus(host.probe())
    [stale] = report.cdi_files
    assert stale.missing_paths == ("/usr/lib/x86_64-linux-gnu/libcuda.so.580.82.07",)

    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "error"
    assert "/etc/cdi/nvidia-ctk.yaml" in diagnosis.message
    assert "libcuda.so.580.82.07" in diagnosis.message
    assert diagnosis.fix_command == [
        "nvidia-ctk",
        "cdi",
        "generate",
        "--output=/etc/cdi/nvidia-ctk.yaml",
    ]
    assert not passthrough.uses_gpu


def test_nvidia_smi_missing_reads_proc_driver(host: FakeHost) -> None:
    host.file("/dev/nvidia0")
    host.file(
        "/proc/driver/nvidia/gpus/0000:01:00.0/information",
        (DATA / "proc" / "nvidia-information-rtx4090.txt").read_text(),
    )
    host.file("/proc/driver/nvidia/version", (DATA / "proc" / "nvidia-version.txt").read_text())
    report = detect_gpus(host.probe())

    [gpu] = report.gpus
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.uuid == "GPU-0b6f2d4e-1c3a-4e5f-8a7b-9c0d1e2f3a4b"
    assert gpu.driver == "550.54.14"
    assert gpu.memory_bytes is None
    [warning] = report.diagnoses
    assert warning.level == "warning" and "nvidia-smi is not installed" in warning.message


def test_nvidia_smi_driver_mismatch_is_reported(host: FakeHost) -> None:
    host.file("/dev/nvidia0")
    host.file("/dev/nvidia1")
    mismatch = (DATA / "nvidia-smi" / "nvml-mismatch.txt").read_text()
    host.answer("nvidia-smi", mismatch, returncode=18)
    report = detect_gpus(host.probe())

    assert [(gpu.index, gpu.name) for gpu in report.gpus] == [(0, "NVIDIA GPU"), (1, "NVIDIA GPU")]
    [warning] = report.diagnoses
    assert "Driver/library version mismatch" in warning.message
    assert warning.fix is not None and "reboot" in warning.fix


# --------------------------------------------------------------------------- merged CDI specs


def test_cdi_specs_of_two_vendors_and_folders_are_merged_broken_one_reported(
    host: FakeHost,
) -> None:
    nvidia_host(host)
    host.materialize(install_cdi(host, "nvidia-ctk.yaml"))
    host.materialize(install_cdi(host, "amd.json", "/var/run/cdi"))
    host.file("/etc/cdi/broken.yaml", (DATA / "cdi" / "broken.yaml").read_text())
    install_cdi(host, "no-kind.yaml", "/var/run/cdi")
    host.file("/etc/cdi/old.yml", "cdiVersion: 0.5.0\n")
    host.file("/etc/cdi/README", "not a spec")

    report = detect_gpus(host.probe())
    assert [spec.path for spec in report.cdi_files] == [
        "/etc/cdi/nvidia-ctk.yaml",
        "/var/run/cdi/amd.json",
    ]
    names = {device.qualified_name for device in report.cdi_devices}
    assert {"nvidia.com/gpu=all", "amd.com/gpu=0", "amd.com/gpu=all"} <= names
    assert "nvidia.com/gpu=1" not in names  # only in the broken file

    messages = [d.message for d in report.diagnoses]
    assert any("/etc/cdi/broken.yaml is broken" in m and "(line 8)" in m for m in messages)
    assert any("/var/run/cdi/no-kind.yaml is broken" in m and "kind" in m for m in messages)
    assert any("/etc/cdi/old.yml is ignored" in m for m in messages)
    assert all(d.level == "warning" for d in report.diagnoses)

    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "ok"
    assert passthrough.devices == ["nvidia.com/gpu=all"]


def test_cdi_conflict_in_one_folder_and_override_across_folders(host: FakeHost) -> None:
    nvidia_host(host)
    spec = install_cdi(host, "nvidia-ctk.yaml")
    host.materialize(spec)
    host.file("/etc/cdi/zz-copy.yaml", yaml.safe_dump(spec))
    host.file("/var/run/cdi/nvidia.yaml", yaml.safe_dump(spec))
    files, devices, diagnoses = read_cdi_specs(host.probe())

    assert len(files) == 3
    conflicts = [d for d in diagnoses if d.level == "error"]
    assert len(conflicts) == 3  # "0", the UUID and "all" clash inside /etc/cdi
    assert "/etc/cdi/nvidia-ctk.yaml" in conflicts[0].message
    assert "/etc/cdi/zz-copy.yaml" in conflicts[0].message
    # /var/run/cdi overrides /etc/cdi without a conflict
    assert {d.source for d in devices} == {"/var/run/cdi/nvidia.yaml"}


def test_validate_cdi_spec() -> None:
    good = yaml.safe_load((DATA / "cdi" / "nvidia-ctk.yaml").read_text())
    assert validate_cdi_spec(good) == []
    assert validate_cdi_spec([]) == ["the spec is not a mapping"]
    bad = {
        "cdiVersion": "latest",
        "kind": "gpu",
        "devices": [{"name": "all"}, {"name": "0", "containerEdits": {"env": ["NOEQUALS"]}}],
    }
    problems = validate_cdi_spec(bad)
    assert any("cdiVersion" in p for p in problems)
    assert any("kind" in p for p in problems)
    assert any("'all' has no containerEdits" in p for p in problems)
    assert any("KEY=VALUE" in p for p in problems)


# --------------------------------------------------------------------------- AMD


def test_amd_kfd_topology(host: FakeHost) -> None:
    amd_host(host)
    report = detect_gpus(host.probe())

    [gpu] = report.gpus
    assert gpu == GpuInfo(
        vendor="amd",
        index=0,
        name="AMD Radeon RX 7900 XTX",
        memory_bytes=24 * GIB,
        driver="amdgpu",
        uuid="GPU-2b2a5c7d3f4e6a1b",
        gfx_version="gfx1100",
    )
    assert [(g.index, g.gfx_version) for g in report.ignored] == [(1, "gfx1036"), (2, "gfx803")]
    too_small = next(d for d in report.diagnoses if "gfx1036" in d.message)
    assert too_small.level == "ok" and "512 MiB" in too_small.message
    too_old = next(d for d in report.diagnoses if "gfx803" in d.message)
    assert too_old.level == "warning" and "Radeon RX 580" in too_old.message

    passthrough, diagnosis = plan_passthrough(report, "auto")
    assert diagnosis.level == "ok" and "ROCm" in diagnosis.message
    assert passthrough.vendor == "amd"
    assert passthrough.devices == ["/dev/kfd", "/dev/dri"]
    assert passthrough.group_add == ["keep-groups"]
    assert passthrough.env == {"HIP_VISIBLE_DEVICES": "0"}
    assert passthrough.image_variant == "rocm"
    assert passthrough.gpu_layers == GPU_LAYERS_ALL
    assert passthrough.podman_args() == [
        "--device",
        "/dev/kfd",
        "--device",
        "/dev/dri",
        "--group-add",
        "keep-groups",
        "--env",
        "HIP_VISIBLE_DEVICES=0",
    ]


def test_amd_without_dev_kfd_is_an_error(host: FakeHost) -> None:
    amd_host(host)
    (host.root / "dev/kfd").unlink()
    passthrough, diagnosis = plan_passthrough(detect_gpus(host.probe()))
    assert diagnosis.level == "error" and "/dev/kfd" in diagnosis.message
    assert not passthrough.uses_gpu


def test_amd_on_arm_uses_vulkan(host: FakeHost) -> None:
    amd_host(host)
    host.machine = "aarch64"
    passthrough, _ = plan_passthrough(detect_gpus(host.probe()))
    assert passthrough.image_variant == "vulkan"
    assert passthrough.devices == ["/dev/dri"]


def test_amd_name_from_drm_card_and_preset_env(host: FakeHost) -> None:
    amd_node(host, 1, 90010, 64 * GIB, render_minor=200)
    host.file("/sys/class/drm/card1/device/vendor", "0x1002\n")
    host.file("/sys/class/drm/card1/device/product_name", "AMD Instinct MI210\n")
    host.file("/sys/class/drm/card1-DP-1/status", "disconnected\n")
    host.file("/dev/kfd")
    host.env.update({"HIP_VISIBLE_DEVICES": "0", "HSA_OVERRIDE_GFX_VERSION": "9.0.10"})
    report = detect_gpus(host.probe())
    [gpu] = report.gpus
    assert (gpu.name, gpu.gfx_version) == ("AMD Instinct MI210", "gfx90a")
    passthrough, _ = plan_passthrough(report, "amd")
    assert passthrough.env == {"HIP_VISIBLE_DEVICES": "0", "HSA_OVERRIDE_GFX_VERSION": "9.0.10"}


def test_gfx_name() -> None:
    assert gfx_name(110000) == "gfx1100"
    assert gfx_name(90010) == "gfx90a"
    assert gfx_name(90402) == "gfx942"
    assert gfx_name(100300) == "gfx1030"


# --------------------------------------------------------------------------- Intel


def test_intel_i915_and_xe(host: FakeHost) -> None:
    intel_device(host, "i915", "0000:00:02.0", "0x46a6")
    intel_device(host, "xe", "0000:03:00.0", "0xe20b")
    host.file("/dev/dri/renderD128")
    host.file("/dev/dri/renderD129")
    report = detect_gpus(host.probe())

    assert [(g.index, g.name, g.driver) for g in report.gpus] == [
        (0, "Intel Iris Xe Graphics (Alder Lake)", "i915"),
        (1, "Intel Arc B580", "xe"),
    ]
    passthrough, diagnosis = plan_passthrough(report, "intel")
    assert diagnosis.level == "ok"
    assert passthrough.devices == ["/dev/dri"]
    assert passthrough.image_variant == "intel"
    assert passthrough.group_add == ["keep-groups"]
    assert passthrough.gpu_layers == GPU_LAYERS_ALL


def test_intel_affinity_mask_and_missing_render_node(host: FakeHost) -> None:
    intel_device(host, "i915", "0000:00:02.0", "0x9a49")
    intel_device(host, "xe", "0000:03:00.0", "0x56a0")
    host.env["ZE_AFFINITY_MASK"] = "1.0"
    report = detect_gpus(host.probe())
    assert [g.name for g in report.gpus] == ["Intel Arc A770"]
    assert [g.name for g in report.hidden] == ["Intel Iris Xe Graphics (Tiger Lake)"]
    _, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "error" and "render node" in diagnosis.message
    host.file("/dev/dri/renderD128")
    passthrough, diagnosis = plan_passthrough(detect_gpus(host.probe()))
    assert diagnosis.level == "ok"
    assert passthrough.env == {"ZE_AFFINITY_MASK": "1.0"}


# --------------------------------------------------------------------- none, wanted, WSL, Apple


def test_no_gpu_is_stated_plainly(host: FakeHost) -> None:
    host.file("/proc/cpuinfo", "processor : 0\n")
    report = detect_gpus(host.probe())
    assert report.gpus == [] and report.diagnoses == []
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "ok"
    assert diagnosis.message == "No GPU found; running on the CPU."
    assert passthrough == Passthrough()
    assert passthrough.image_variant == "cpu" and passthrough.gpu_layers == 0
    assert passthrough.podman_args() == []


def test_want_nvidia_on_a_host_without_nvidia(host: FakeHost) -> None:
    amd_host(host)
    report = detect_gpus(host.probe())
    passthrough, diagnosis = plan_passthrough(report, "nvidia")
    assert diagnosis.level == "error"
    assert diagnosis.message.startswith("NVIDIA GPU requested but none was found")
    assert "AMD Radeon RX 7900 XTX" in diagnosis.message
    assert not passthrough.uses_gpu


def test_want_none_and_unknown_choice(host: FakeHost) -> None:
    nvidia_host(host)
    report = detect_gpus(host.probe())
    passthrough, diagnosis = plan_passthrough(report, "none")
    assert diagnosis.level == "ok" and "CPU" in diagnosis.message
    assert not passthrough.uses_gpu
    with pytest.raises(ValueError, match="unknown GPU choice"):
        plan_passthrough(report, "tpu")


def test_wsl_shared_gpu(host: FakeHost) -> None:
    host.file("/dev/dxg")
    host.file("/usr/lib/wsl/lib/libdxcore.so")
    report = detect_gpus(host.probe())
    assert report.wsl
    assert [gpu.vendor for gpu in report.gpus] == ["wsl"]
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "ok" and "WSL" in diagnosis.message
    assert passthrough.devices == ["/dev/dxg"]
    assert passthrough.mounts == [Mount("/usr/lib/wsl", "/usr/lib/wsl", read_only=True)]
    assert "--volume" in passthrough.podman_args()
    assert "/usr/lib/wsl:/usr/lib/wsl:ro" in passthrough.podman_args()


def test_wsl_nvidia_without_cdi_uses_dxg(host: FakeHost) -> None:
    host.file("/dev/dxg")
    host.executable("/usr/lib/wsl/lib/nvidia-smi")
    host.answer("nvidia-smi", (DATA / "nvidia-smi" / "rtx4090-rtx3060.csv").read_text())
    report = detect_gpus(host.probe())
    assert host.calls[0][0] == "/usr/lib/wsl/lib/nvidia-smi"  # not on PATH there
    assert [gpu.vendor for gpu in report.gpus] == ["nvidia", "nvidia"]
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "ok"
    assert passthrough.devices == ["/dev/dxg"]
    assert passthrough.image_variant == "cuda"
    assert passthrough.env == {"LD_LIBRARY_PATH": "/usr/lib/wsl/lib"}


def test_apple_libkrun_machine(host: FakeHost) -> None:
    host.system = "Darwin"
    host.machine = "arm64"
    host.answer("podman", (DATA / "podman-machine" / "list-libkrun.json").read_text())
    report = detect_gpus(host.probe())
    assert host.calls[-1] == ["podman", "machine", "list", "--format", "json"]
    [gpu] = report.gpus
    assert gpu.vendor == "apple" and "podman-machine-default" in gpu.name
    assert gpu.memory_bytes == 8 * GIB
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "ok"
    assert passthrough.devices == ["/dev/dri"]
    assert passthrough.image_variant == "vulkan"


def test_apple_applehv_machine_says_why_cpu(host: FakeHost) -> None:
    host.system = "Darwin"
    host.answer("podman", (DATA / "podman-machine" / "list-applehv.json").read_text())
    report = detect_gpus(host.probe())
    assert report.gpus == []
    [warning] = report.diagnoses
    assert "applehv" in warning.message
    assert warning.fix is not None and "libkrun" in warning.fix


# --------------------------------------------------------------------------- *_VISIBLE_DEVICES


def test_cuda_visible_devices_selects_by_index_with_per_gpu_cdi(host: FakeHost) -> None:
    nvidia_host(host, "rtx4090-rtx3060.csv", count=2)
    spec = generate_cdi_spec(host.probe())
    write_cdi_spec(spec, host.root / "etc/cdi/podlab-nvidia.yaml")
    host.env["CUDA_VISIBLE_DEVICES"] = "1"
    report = detect_gpus(host.probe())

    assert [g.name for g in report.gpus] == ["NVIDIA GeForce RTX 3060"]
    assert [g.name for g in report.hidden] == ["NVIDIA GeForce RTX 4090"]
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "ok"
    assert passthrough.devices == ["nvidia.com/gpu=1"]
    assert passthrough.env == {}  # inside the container the one GPU is number 0


def test_cuda_visible_devices_by_uuid_with_only_all_in_cdi(host: FakeHost) -> None:
    nvidia_host(host, "rtx4090-rtx3060.csv", count=2)
    host.file(
        "/etc/cdi/nvidia.yaml",
        yaml.safe_dump(
            {
                "cdiVersion": "0.5.0",
                "kind": "nvidia.com/gpu",
                "devices": [
                    {
                        "name": "all",
                        "containerEdits": {
                            "deviceNodes": [{"path": "/dev/nvidia0"}, {"path": "/dev/nvidia1"}]
                        },
                    }
                ],
            }
        ),
    )
    host.env["CUDA_VISIBLE_DEVICES"] = "GPU-7a8b9c0d"
    report = detect_gpus(host.probe())
    assert [g.index for g in report.gpus] == [1]
    passthrough, _ = plan_passthrough(report)
    assert passthrough.devices == ["nvidia.com/gpu=all"]
    assert passthrough.env == {"CUDA_VISIBLE_DEVICES": "GPU-7a8b9c0d"}


def test_cuda_visible_devices_naming_a_missing_gpu_is_an_error(host: FakeHost) -> None:
    nvidia_host(host)
    host.materialize(install_cdi(host, "nvidia-ctk.yaml"))
    host.env["CUDA_VISIBLE_DEVICES"] = "3"
    report = detect_gpus(host.probe())
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "error"
    assert "CUDA_VISIBLE_DEVICES=3" in diagnosis.message and "H100" in diagnosis.message
    assert not passthrough.uses_gpu


def test_empty_cuda_visible_devices_hides_nvidia(host: FakeHost) -> None:
    nvidia_host(host)
    host.env["CUDA_VISIBLE_DEVICES"] = ""
    report = detect_gpus(host.probe())
    assert report.gpus == []
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "warning" and "CUDA_VISIBLE_DEVICES" in diagnosis.message
    assert not passthrough.uses_gpu
    _, wanted = plan_passthrough(report, "nvidia")
    assert wanted.level == "error" and "CUDA_VISIBLE_DEVICES='' hides" in wanted.message


# --------------------------------------------------------------------------- CDI generation


def test_generate_cdi_spec_from_driver_files(host: FakeHost) -> None:
    nvidia_host(host, "rtx4090-rtx3060.csv", count=2)
    host.file(
        "/proc/driver/nvidia/gpus/0000:01:00.0/information",
        (DATA / "proc" / "nvidia-information-rtx4090.txt").read_text(),
    )
    host.file("/usr/local/nvidia/lib64/libcuda.so.1", "a second copy is skipped")
    host.file("/usr/local/nvidia/lib64/libnvidia-nvvm.so.4", "ELF")

    spec = generate_cdi_spec(host.probe())
    assert validate_cdi_spec(spec) == []
    assert spec["cdiVersion"] == "0.5.0" and spec["kind"] == "nvidia.com/gpu"
    names = [d["name"] for d in spec["devices"]]
    assert names == ["0", "GPU-0b6f2d4e-1c3a-4e5f-8a7b-9c0d1e2f3a4b", "1", "all"]
    all_nodes = spec["devices"][-1]["containerEdits"]["deviceNodes"]
    assert all_nodes == [{"path": "/dev/nvidia0"}, {"path": "/dev/nvidia1"}]

    edits = spec["containerEdits"]
    assert "LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib" in edits["env"]
    assert [n["path"] for n in edits["deviceNodes"]] == [
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
    ]
    mounts = {m["hostPath"]: m["containerPath"] for m in edits["mounts"]}
    lib = "/usr/lib/x86_64-linux-gnu"
    assert mounts[f"{lib}/libcuda.so.1"] == "/usr/local/nvidia/lib64/libcuda.so.1"
    assert mounts[f"{lib}/libcuda.so.580.82.07"] == "/usr/local/nvidia/lib64/libcuda.so.580.82.07"
    assert f"{lib}/libnvidia-ml.so.1" in mounts
    assert "/usr/local/nvidia/lib64/libnvidia-nvvm.so.4" in mounts
    assert "/usr/local/nvidia/lib64/libcuda.so.1" not in mounts
    assert f"{lib}/libc.so.6" not in mounts
    assert mounts["/usr/bin/nvidia-smi"] == "/usr/bin/nvidia-smi"
    assert all(str(host.root) not in path for path in mounts)  # host paths, not the test's
    assert all(m["options"] == ["ro", "nosuid", "nodev", "bind"] for m in edits["mounts"])

    no_env = generate_cdi_spec(host.probe(), ld_library_path=None)
    assert no_env["containerEdits"]["env"] == ["NVIDIA_VISIBLE_DEVICES=void"]


def test_written_cdi_spec_is_found_and_used(host: FakeHost) -> None:
    nvidia_host(host)
    before = plan_passthrough(detect_gpus(host.probe()))
    assert before.diagnosis.message == NO_CDI and before.diagnosis.action == ACTION_GENERATE_CDI

    target = write_cdi_spec(generate_cdi_spec(host.probe()), host.root / "etc/cdi/podlab.yaml")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert target.read_text().startswith("# Written by Podlab")
    assert "&id" not in target.read_text()  # no YAML anchors
    assert [p.name for p in target.parent.iterdir()] == ["podlab.yaml"]  # no temp file left

    report = detect_gpus(host.probe())
    assert report.diagnoses == []  # every file it names exists
    passthrough, diagnosis = plan_passthrough(report)
    assert diagnosis.level == "ok"
    assert passthrough.devices == ["nvidia.com/gpu=all"]

    as_json = write_cdi_spec(generate_cdi_spec(host.probe()), host.root / "var/run/cdi/p.json")
    assert json.loads(as_json.read_text())["kind"] == "nvidia.com/gpu"


def test_generate_and_write_refuse_what_cannot_work(host: FakeHost, tmp_path: Path) -> None:
    with pytest.raises(PodlabError, match="No NVIDIA device node"):
        generate_cdi_spec(host.probe())
    host.file("/dev/nvidia0")
    with pytest.raises(PodlabError, match=r"libcuda\.so was not found"):
        generate_cdi_spec(host.probe())
    with pytest.raises(PodlabError, match="invalid CDI spec"):
        write_cdi_spec({"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": []}, tmp_path)
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        nvidia_host(host)
        with pytest.raises(PodlabError, match="permission denied"):
            write_cdi_spec(generate_cdi_spec(host.probe()), locked / "cdi" / "x.yaml")


# --------------------------------------------------------------------------- llama.cpp logs

CUDA_LOG = """\
ggml_cuda_init: GGML_CUDA_FORCE_MMQ:    no
ggml_cuda_init: GGML_CUDA_FORCE_CUBLAS: no
ggml_cuda_init: found 1 CUDA devices:
  Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes
build: 6134 (be48528b) with cc (Ubuntu 11.4.0-1ubuntu1~22.04) 11.4.0 for x86_64-linux-gnu
llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H100 80GB HBM3) - 80562 MiB free
llama_model_loader: loaded meta data with 36 key-value pairs and 272 tensors from /mnt/models/m
print_info: n_layer          = 30
load_tensors: loading model tensors, this can take a while... (mmap = true)
load_tensors: offloading 30 repeating layers to GPU
load_tensors: offloading output layer to GPU
load_tensors: offloaded 31/31 layers to GPU
load_tensors:        CUDA0 model buffer size =    93.88 MiB
load_tensors:   CPU_Mapped model buffer size =    14.77 MiB
llama_context: n_ctx         = 4096
"""

PARTIAL_LOG = """\
ggml_cuda_init: found 1 CUDA devices:
  Device 0: NVIDIA GeForce RTX 3060, compute capability 8.6, VMM: yes
llm_load_tensors: offloading 20 repeating layers to GPU
llm_load_tensors: offloaded 20/33 layers to GPU
llm_load_tensors:        CPU buffer size =  4165.37 MiB
llm_load_tensors:      CUDA0 buffer size =  2450.12 MiB
"""

CPU_LOG = """\
build: 6134 (be48528b) with cc (Debian 12.2.0-14) 12.2.0 for x86_64-linux-gnu
system info: n_threads = 2, n_threads_batch = 2, total_threads = 2
main: binding port with default address family
llama_model_loader: loaded meta data with 36 key-value pairs and 272 tensors from SmolLM2.gguf
print_info: n_layer          = 30
load_tensors: loading model tensors, this can take a while... (mmap = true)
load_tensors:   CPU_Mapped model buffer size =    93.88 MiB
llama_context: n_ctx         = 2048
"""

CPU_BUILD_WITH_NGL_LOG = """\
warning: no usable GPU found, --gpu-layers option will be ignored
warning: one possible reason is that llama.cpp was compiled without GPU support
load_tensors:   CPU_Mapped model buffer size =    93.88 MiB
"""

CUDA_IMAGE_NO_DEVICE_LOG = """\
ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected
load_tensors: offloading 30 repeating layers to GPU
load_tensors: offloaded 0/31 layers to GPU
load_tensors:   CPU_Mapped model buffer size =    93.88 MiB
"""

ROCM_LOG = """\
ggml_cuda_init: GGML_CUDA_FORCE_MMQ:    no
ggml_cuda_init: found 1 ROCm devices:
  Device 0: AMD Radeon RX 7900 XTX, gfx1100 (0x1100), VMM: no, Wave Size: 32
load_tensors: offloaded 29/29 layers to GPU
load_tensors:        ROCm0 model buffer size =  4403.49 MiB
"""

VULKAN_LOG = """\
ggml_vulkan: Found 1 Vulkan devices:
ggml_vulkan: 0 = AMD Radeon Graphics (RADV GFX1103_R1) (radv) | uma: 1 | fp16: 1 | warp size: 64
load_tensors: offloaded 37/37 layers to GPU
load_tensors:      Vulkan0 model buffer size =  2368.10 MiB
"""

METAL_LOG = """\
ggml_metal_init: found device: Apple M2 Pro
load_tensors: offloaded 31/31 layers to GPU
load_tensors: Metal_Mapped model buffer size =    93.88 MiB
"""


@pytest.mark.parametrize(
    ("log", "where", "layers", "backend", "device"),
    [
        (CUDA_LOG, "gpu", (31, 31), "CUDA", "NVIDIA H100 80GB HBM3"),
        (PARTIAL_LOG, "gpu+cpu", (20, 33), "CUDA", "NVIDIA GeForce RTX 3060"),
        (CPU_LOG, "cpu", (0, None), None, None),
        (CPU_BUILD_WITH_NGL_LOG, "cpu", (0, None), None, None),
        (CUDA_IMAGE_NO_DEVICE_LOG, "cpu", (0, 31), None, None),
        (ROCM_LOG, "gpu", (29, 29), "ROCm", "AMD Radeon RX 7900 XTX"),
        (VULKAN_LOG, "gpu", (37, 37), "Vulkan", "AMD Radeon Graphics"),
        (METAL_LOG, "gpu", (31, 31), "Metal", "Apple M2 Pro"),
        ("", "unknown", (None, None), None, None),
    ],
)
def test_parse_offload(
    log: str,
    where: str,
    layers: tuple[int | None, int | None],
    backend: str | None,
    device: str | None,
) -> None:
    info = parse_offload(log)
    assert info.where == where
    assert (info.offloaded_layers, info.total_layers) == layers
    assert info.backend == backend
    assert info.device_name == device
    assert info.on_gpu == (where in ("gpu", "gpu+cpu"))


def test_parse_offload_uses_the_last_load() -> None:
    info = parse_offload(CPU_LOG + CUDA_LOG.replace("31/31", "12/31"))
    assert (info.offloaded_layers, info.total_layers, info.where) == (12, 31, "gpu+cpu")
    assert info.gpu_count == 1


# --------------------------------------------------------------------------- this machine

_GPU_NODES = ("/dev/nvidia0", "/dev/kfd", "/dev/dxg", "/dev/dri")


def test_this_machine_is_described_as_it_is() -> None:
    """The real detection on the real host, with or without a GPU (never skipped)."""
    report = detect_gpus()
    passthrough, diagnosis = plan_passthrough(report)
    if Path("/dev/nvidia0").exists():
        assert any(gpu.vendor == "nvidia" for gpu in report.gpus), report
    if not any(Path(p).exists() for p in _GPU_NODES):
        assert report.gpus == []
        assert diagnosis.level == "ok"
        assert "CPU" in diagnosis.message
        assert passthrough.image_variant == "cpu" and passthrough.gpu_layers == 0
