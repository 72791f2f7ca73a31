"""Did llama.cpp really put the layers on the GPU? Read from the server's own log.

`parse_offload(log)` reads llama.cpp, llama-server and llama-cpp-python logs ("offloaded 31/31
layers to GPU", the backend's device lines); `device_of` turns the result into the label a
service shows ("GPU", "GPU+CPU", "CPU").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal


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


def device_of(offload: OffloadInfo) -> str:
    """The device a service shows: "GPU", "GPU+CPU", "CPU" or "unknown"."""
    return {"gpu": "GPU", "gpu+cpu": "GPU+CPU", "cpu": "CPU"}.get(offload.where, "unknown")
