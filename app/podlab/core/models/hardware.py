"""Hardware facts of the host and a "will this model fit?" estimate.

The estimate is deliberately simple and says so: weights + KV cache + a fixed overhead, compared
with the largest GPU's memory (or unified memory on Apple) and with the RAM. It is meant to
colour a catalog entry green / yellow / red before a download, not to predict llama.cpp's
allocation to the megabyte.

Thresholds (also in the constants below):

* green: the whole model fits in the GPU's memory with 10 % to spare (several GPUs of one vendor
  add up, as llama.cpp splits layers across them), or, without a usable GPU, the model takes at
  most 60 % of the total RAM (and fits in the RAM free right now);
* yellow: it only fits with part of the layers in CPU RAM (GPU + CPU, slower), or on the CPU it
  takes 60-90 % of the RAM (tight: other programs may be pushed to swap), or it fits in the RAM
  but not in what is free now, or the GPU's memory size is unknown;
* red: it needs more than 90 % of GPU + RAM together (or of the RAM without a GPU).
"""

from __future__ import annotations

import functools
import math
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.serving.gpu.detect import detect_gpus
from podlab.core.serving.gpu.host import GIB, GpuInfo, HostProbe

FitLevel = Literal["green", "yellow", "red"]
FitWhere = Literal["gpu", "cpu", "gpu+cpu"]

DEFAULT_CTX = 4096
"""Context length used when the caller does not choose one (capped by the model's own)."""
GPU_HEADROOM = 0.10
"""Share of GPU memory kept free (driver, display, fragmentation)."""
RAM_GREEN = 0.60
RAM_YELLOW = 0.90
OVERHEAD_FIXED = int(0.3 * GIB)
"""llama.cpp's compute buffers, CUDA/ROCm context and the server itself: about 0.3 GiB ..."""
OVERHEAD_FRACTION = 0.05
"""... plus 5 % of the weights (output buffers and scratch grow with the model)."""
KV_PER_TOKEN_PER_SQRT_BPARAM = 56 * 1024
"""Heuristic KV bytes per token (f16) per sqrt(billions of parameters), see estimate_memory."""
KV_PER_TOKEN_MIN = 16 * 1024

BITS_PER_WEIGHT: dict[str, float] = {
    "IQ1_S": 1.56,
    "IQ1_M": 1.75,
    "IQ2_XXS": 2.06,
    "IQ2_XS": 2.31,
    "IQ2_S": 2.5,
    "IQ2_M": 2.7,
    "Q2_K": 3.0,
    "Q2_K_S": 2.9,
    "IQ3_XXS": 3.06,
    "IQ3_XS": 3.3,
    "IQ3_S": 3.44,
    "IQ3_M": 3.66,
    "Q3_K_S": 3.5,
    "Q3_K_M": 3.9,
    "Q3_K": 3.9,
    "Q3_K_L": 4.3,
    "IQ4_XS": 4.25,
    "IQ4_NL": 4.5,
    "Q4_0": 4.55,
    "Q4_1": 5.0,
    "Q4_K_S": 4.6,
    "Q4_K_M": 4.9,
    "Q4_K": 4.9,
    "MXFP4": 4.25,
    "Q5_0": 5.5,
    "Q5_1": 6.0,
    "Q5_K_S": 5.5,
    "Q5_K_M": 5.7,
    "Q5_K": 5.7,
    "Q6_K": 6.6,
    "Q8_0": 8.5,
    "F16": 16.0,
    "BF16": 16.0,
    "F32": 32.0,
}
"""Approximate bits per weight of a whole GGUF file for each quantization.

The block formats store scales next to the weights (Q4_0: 4.5 bits, Q8_0: 8.5 bits, MXFP4: 4.25)
and the K-quant "mixes" (_S/_M/_L) keep some tensors (embeddings, attention V, output) at a
higher precision, so a Q4_K_M file averages about 4.9 bits. Used only when the file size is
unknown; a real file size always wins. Unknown names count as 16 bits (unquantized)."""

UNKNOWN_BITS = 16.0


@functools.cache
def llama_cpp_offloads_to_gpu(python: str) -> bool:
    """Whether the llama-cpp-python of `python` (the local engine's) was built with GPU
    support; a CPU build ignores every GPU choice. Asked once per interpreter (~0.5 s)."""
    check = "import sys, llama_cpp; sys.exit(0 if llama_cpp.llama_supports_gpu_offload() else 3)"
    try:
        done = subprocess.run([python, "-c", check], capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def bits_per_weight(quantization: str | None) -> float | None:
    """Bits per weight of a quantization name ("q4_k_m", "Q4_K_M", "gguf Q8_0"), or None."""
    if not quantization:
        return None
    name = quantization.strip().upper().replace("-", "_")
    if name in BITS_PER_WEIGHT:
        return BITS_PER_WEIGHT[name]
    for key in sorted(BITS_PER_WEIGHT, key=len, reverse=True):
        if re.search(rf"(?<![A-Z0-9]){re.escape(key)}(?![A-Z0-9])", name):
            return BITS_PER_WEIGHT[key]
    return None


# --------------------------------------------------------------------------- host facts


@dataclass
class HostFacts:
    cpu_name: str
    cpu_cores: int
    """Logical CPUs this process may use."""
    ram_total: int
    ram_available: int
    gpus: list[GpuInfo] = field(default_factory=list)
    unified_memory: bool = False
    """GPU and CPU share one memory (Apple): the GPU's budget is the RAM."""


def _meminfo(probe: HostProbe) -> tuple[int, int] | None:
    text = probe.read_text("/proc/meminfo")
    if not text:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+)\s*kB", line)
        if match:
            values[match.group(1)] = int(match.group(2)) * 1024
    if "MemTotal" not in values:
        return None
    available = values.get("MemAvailable", values.get("MemFree", values["MemTotal"]))
    return values["MemTotal"], available


def _cpuinfo(probe: HostProbe) -> tuple[str | None, int]:
    text = probe.read_text("/proc/cpuinfo") or ""
    name: str | None = None
    count = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep:
            continue
        if key == "processor":
            count += 1
        elif key in ("model name", "Model", "Hardware", "cpu model") and not name:
            name = value.strip() or None
    return name, count


def read_host_facts(probe: HostProbe | None = None, gpus: list[GpuInfo] | None = None) -> HostFacts:
    """CPU, RAM and GPUs of the host. RAM from /proc/meminfo (under the probe's root), else
    psutil for this host, else `sysctl hw.memsize` on macOS. Pass `gpus` to reuse a report."""
    probe = probe or HostProbe()
    root = probe.root.resolve()
    real_host = root == Path(root.anchor)
    name, count = _cpuinfo(probe)
    if probe.system == "Darwin" and not name:
        result = probe.run(["sysctl", "-n", "machdep.cpu.brand_string"])
        if result.returncode == 0:
            name = result.stdout.strip() or None
    if real_host and hasattr(os, "sched_getaffinity"):
        count = len(os.sched_getaffinity(0))
    if count <= 0:
        count = os.cpu_count() or 1

    memory = _meminfo(probe)
    if memory is None:
        if real_host:
            import psutil  # only where /proc/meminfo is missing (macOS, Windows)

            virtual = psutil.virtual_memory()
            memory = (int(virtual.total), int(virtual.available))
        elif probe.system == "Darwin":
            result = probe.run(["sysctl", "-n", "hw.memsize"])
            total = int(result.stdout.strip()) if result.stdout.strip().isdigit() else 0
            memory = (total, total)
        else:
            memory = (0, 0)

    if gpus is None:
        gpus = detect_gpus(probe).gpus
    return HostFacts(
        cpu_name=name or probe.machine or "unknown CPU",
        cpu_cores=count,
        ram_total=memory[0],
        ram_available=memory[1],
        gpus=list(gpus),
        unified_memory=any(gpu.vendor == "apple" for gpu in gpus),
    )


# --------------------------------------------------------------------------- estimate


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs when served; an estimate (see estimate_memory)."""

    weights: int
    kv_cache: int
    overhead: int
    total: int
    ctx: int
    """The context length the KV cache was sized for."""
    weights_estimated: bool = False
    """True when the weights come from parameters x bits per weight, not a file size."""
    kv_estimated: bool = False
    """True when the KV cache comes from the parameter-count heuristic, not the architecture."""


def estimate_memory(
    size_bytes: int | None,
    parameters: int | None,
    context_length: int | None,
    ctx: int,
    n_layers: int | None = None,
    n_kv_heads: int | None = None,
    head_dim: int | None = None,
    kv_bytes: int = 2,
    quantization: str | None = None,
) -> MemoryEstimate:
    """An ESTIMATE of the memory a llama.cpp server needs for a model.

    weights: the file size (the GGUF is mapped whole); when unknown, parameters x bits per weight
    of the quantization / 8 (BITS_PER_WEIGHT; unknown quantizations count as 16 bits).

    KV cache for `ctx` tokens (capped at the model's context_length): when the architecture is
    known it is exact, 2 (K and V) x n_layers x ctx x n_kv_heads x head_dim x kv_bytes (2 for the
    default f16 cache, 1 for q8_0). Otherwise a rough heuristic fitted on grouped-query-attention
    models (Llama 3, Qwen, Mistral, SmolLM): 56 KiB per token x sqrt(billions of parameters), at
    least 16 KiB per token, scaled by kv_bytes / 2 (8B: about 160 KiB per token, 0.5 GiB at 4096
    tokens). Older models without GQA can need four times more; sliding-window models less.

    overhead: 0.3 GiB of compute buffers and runtime plus 5 % of the weights.
    """
    if ctx <= 0:
        raise ValueError("ctx must be a positive number of tokens")
    if context_length:
        ctx = min(ctx, context_length)
    bits = bits_per_weight(quantization)
    weights_estimated = size_bytes is None
    if size_bytes is not None:
        weights = size_bytes
    elif parameters is not None:
        weights = int(parameters * (bits or UNKNOWN_BITS) / 8)
    else:
        raise ValueError("need the file size or the parameter count to estimate memory")

    if n_layers and n_kv_heads and head_dim:
        kv_cache = 2 * n_layers * ctx * n_kv_heads * head_dim * kv_bytes
        kv_estimated = False
    else:
        params = parameters if parameters else weights * 8 / (bits or UNKNOWN_BITS)
        per_token = max(KV_PER_TOKEN_MIN, KV_PER_TOKEN_PER_SQRT_BPARAM * math.sqrt(params / 1e9))
        kv_cache = int(per_token * ctx * kv_bytes / 2)
        kv_estimated = True

    overhead = OVERHEAD_FIXED + int(OVERHEAD_FRACTION * weights)
    return MemoryEstimate(
        weights=weights,
        kv_cache=kv_cache,
        overhead=overhead,
        total=weights + kv_cache + overhead,
        ctx=ctx,
        weights_estimated=weights_estimated,
        kv_estimated=kv_estimated,
    )


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class Fit:
    level: FitLevel
    where: FitWhere
    reason: str
    estimate: MemoryEstimate | None = None
    gpu_fraction: float = 0.0
    """Share of the model that would sit in GPU memory (1.0 = all of it)."""


def _gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"


def _fit_ram(
    need: int, facts: HostFacts, where: FitWhere, pool_name: str, estimate: MemoryEstimate
) -> Fit:
    """Thresholds for memory shared with the CPU (CPU only, iGPU, unified memory)."""
    total = facts.ram_total
    gpu_fraction = 1.0 if where == "gpu" else 0.0
    if total <= 0:
        return Fit("yellow", where, "The RAM size is unknown; cannot tell", estimate, gpu_fraction)
    share = need / total
    if need <= RAM_GREEN * total:
        if facts.ram_available and need > facts.ram_available:
            return Fit(
                "yellow",
                where,
                f"Needs about {_gib(need)}; fits in {pool_name} ({_gib(total)}) but only "
                f"{_gib(facts.ram_available)} is free now",
                estimate,
                gpu_fraction,
            )
        return Fit(
            "green",
            where,
            f"Needs about {_gib(need)}, {share:.0%} of {pool_name} ({_gib(total)})",
            estimate,
            gpu_fraction,
        )
    if need <= RAM_YELLOW * total:
        return Fit(
            "yellow",
            where,
            f"Tight: needs about {_gib(need)}, {share:.0%} of {pool_name} ({_gib(total)})",
            estimate,
            gpu_fraction,
        )
    return Fit(
        "red",
        where,
        f"Too big: needs about {_gib(need)}, this machine has {_gib(total)} of {pool_name}",
        estimate,
        0.0,
    )


def fit(estimate: MemoryEstimate, facts: HostFacts) -> Fit:
    """Green / yellow / red for a memory estimate on this host (thresholds in the module doc)."""
    need = estimate.total
    if facts.unified_memory:
        apple = [g.memory_bytes for g in facts.gpus if g.vendor == "apple" and g.memory_bytes]
        pool = HostFacts(
            cpu_name=facts.cpu_name,
            cpu_cores=facts.cpu_cores,
            ram_total=apple[0] if apple else facts.ram_total,
            ram_available=0 if apple else facts.ram_available,
            gpus=facts.gpus,
            unified_memory=True,
        )
        name = "the Podman machine's memory" if apple else "unified memory"
        return _fit_ram(need, pool, "gpu", name, estimate)

    sized = [gpu for gpu in facts.gpus if gpu.memory_bytes]
    if sized:
        best = max(sized, key=lambda gpu: gpu.memory_bytes or 0)
        same = [gpu for gpu in sized if gpu.vendor == best.vendor]
        one = (best.memory_bytes or 0) * (1 - GPU_HEADROOM)
        every = sum(gpu.memory_bytes or 0 for gpu in same) * (1 - GPU_HEADROOM)
        if need <= one:
            return Fit(
                "green",
                "gpu",
                f"Fits in {best.name}: about {_gib(need)} of {_gib(best.memory_bytes or 0)}",
                estimate,
                1.0,
            )
        if len(same) > 1 and need <= every:
            return Fit(
                "green",
                "gpu",
                f"Fits split across {len(same)} GPUs: about {_gib(need)} of "
                f"{_gib(every / (1 - GPU_HEADROOM))}",
                estimate,
                1.0,
            )
        ram = RAM_YELLOW * facts.ram_total
        if need <= every + ram:
            fraction = max(0.0, min(1.0, every / need))
            return Fit(
                "yellow",
                "gpu+cpu",
                f"Needs about {_gib(need)}, more than the GPU memory "
                f"({_gib(every / (1 - GPU_HEADROOM))}): about {fraction:.0%} on the GPU, the "
                "rest in CPU RAM (slower)",
                estimate,
                fraction,
            )
        return Fit(
            "red",
            "gpu+cpu",
            f"Too big: needs about {_gib(need)}, GPU ({_gib(every / (1 - GPU_HEADROOM))}) and "
            f"RAM ({_gib(facts.ram_total)}) together are not enough",
            estimate,
            0.0,
        )

    shared = [gpu for gpu in facts.gpus if gpu.vendor in ("intel", "wsl", "apple")]
    if shared:
        return _fit_ram(need, facts, "gpu", "RAM shared with the GPU", estimate)
    unknown = [gpu for gpu in facts.gpus if gpu.vendor in ("nvidia", "amd")]
    result = _fit_ram(need, facts, "cpu", "RAM", estimate)
    if unknown and result.level == "green":
        return Fit(
            "yellow",
            "gpu",
            f"{unknown[0].name}'s memory size is unknown; needs about {_gib(need)} "
            f"(fits in RAM, {_gib(facts.ram_total)})",
            estimate,
            result.gpu_fraction,
        )
    return result


def fit_variant(
    model: ModelInfo,
    variant: ModelVariant | str | None,
    ctx: int | None,
    facts: HostFacts,
    n_layers: int | None = None,
    n_kv_heads: int | None = None,
    head_dim: int | None = None,
    kv_bytes: int = 2,
) -> Fit:
    """Fit of one catalog variant (default: the model's first) at `ctx` tokens (default: 4096
    or the model's context length when shorter). Size comes from the variant's file size, else
    its published memory, else parameters x bits per weight of its quantization."""
    chosen = model.variant(variant) if isinstance(variant, str) else variant
    if chosen is None:
        chosen = model.default_variant if variant is None else None
    if variant is not None and chosen is None:
        raise ValueError(f"model {model.id} has no variant {variant!r}")
    if ctx is None:
        ctx = min(DEFAULT_CTX, model.context_length or DEFAULT_CTX)
    size = chosen.size if chosen is not None else None
    if size is None and chosen is not None:
        size = chosen.memory
    quantization = chosen.quantization if chosen is not None else None
    if size is None and model.parameters is None:
        return Fit("yellow", "cpu", "Size and parameter count unknown; cannot estimate the fit")
    estimate = estimate_memory(
        size,
        model.parameters,
        model.context_length,
        ctx,
        n_layers=n_layers,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        kv_bytes=kv_bytes,
        quantization=quantization,
    )
    return fit(estimate, facts)
