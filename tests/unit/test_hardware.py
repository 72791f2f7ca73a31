"""Host facts and the memory fit estimate."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from podlab.core.models.hardware import (
    BITS_PER_WEIGHT,
    OVERHEAD_FIXED,
    HostFacts,
    MemoryEstimate,
    bits_per_weight,
    estimate_memory,
    fit,
    fit_variant,
    read_host_facts,
)
from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.serving.gpu.host import CommandResult, GpuInfo, HostProbe

pytestmark = pytest.mark.unit

GIB = 1024**3
GB = 1000**3

MEMINFO = """\
MemTotal:       16303428 kB
MemFree:         1204764 kB
MemAvailable:    9876544 kB
Buffers:          523412 kB
Cached:          8123456 kB
"""
CPUINFO = "".join(
    f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Core(TM) i7-1165G7 "
    "@ 2.80GHz\ncpu cores\t: 4\n\n"
    for n in range(8)
)


def facts(
    ram_gib: float,
    gpus: list[GpuInfo] | None = None,
    available_gib: float | None = None,
    unified: bool = False,
) -> HostFacts:
    return HostFacts(
        cpu_name="test CPU",
        cpu_cores=8,
        ram_total=int(ram_gib * GIB),
        ram_available=int((available_gib if available_gib is not None else ram_gib) * GIB),
        gpus=gpus or [],
        unified_memory=unified,
    )


def nvidia(memory_gib: float, index: int = 0, name: str = "NVIDIA GeForce RTX 4060") -> GpuInfo:
    return GpuInfo("nvidia", index, name, memory_bytes=int(memory_gib * GIB))


# --------------------------------------------------------------------------- host facts


def write(root: Path, host_path: str, text: str) -> None:
    path = root / host_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_read_host_facts_from_proc(tmp_path: Path) -> None:
    write(tmp_path, "/proc/meminfo", MEMINFO)
    write(tmp_path, "/proc/cpuinfo", CPUINFO)
    probe = HostProbe(root=tmp_path, run=lambda argv: CommandResult(127), env={}, system="Linux")
    host = read_host_facts(probe)
    assert host.cpu_name == "Intel(R) Core(TM) i7-1165G7 @ 2.80GHz"
    assert host.cpu_cores == 8
    assert host.ram_total == 16303428 * 1024
    assert host.ram_available == 9876544 * 1024
    assert host.gpus == [] and not host.unified_memory


def test_read_host_facts_reuses_gpus_and_marks_unified_memory(tmp_path: Path) -> None:
    write(tmp_path, "/proc/meminfo", MEMINFO)
    apple = GpuInfo("apple", 0, "Apple GPU (Asahi Linux)")
    probe = HostProbe(root=tmp_path, run=lambda argv: CommandResult(127), env={}, system="Linux")
    host = read_host_facts(probe, gpus=[apple])
    assert host.gpus == [apple] and host.unified_memory
    assert host.cpu_cores >= 1


def test_read_host_facts_on_macos_uses_sysctl(tmp_path: Path) -> None:
    answers = {
        "machdep.cpu.brand_string": "Apple M2 Pro",
        "hw.memsize": str(32 * GIB),
    }

    def run(argv: Sequence[str]) -> CommandResult:
        args = list(argv)
        if args[0] == "sysctl":
            return CommandResult(0, answers[args[-1]] + "\n")
        return CommandResult(127)

    probe = HostProbe(root=tmp_path, run=run, env={}, system="Darwin", machine="arm64")
    host = read_host_facts(probe, gpus=[])
    assert host.cpu_name == "Apple M2 Pro"
    assert host.ram_total == 32 * GIB


def test_read_host_facts_of_this_machine() -> None:
    host = read_host_facts()
    assert host.ram_total > 0
    assert 0 < host.ram_available <= host.ram_total
    assert host.cpu_cores >= 1
    assert host.cpu_name


# --------------------------------------------------------------------------- estimate


def test_bits_per_weight_table() -> None:
    assert bits_per_weight("Q4_K_M") == 4.9
    assert bits_per_weight("q8_0") == 8.5
    assert bits_per_weight("SmolLM2-135M-Instruct.Q4_1.gguf") == 5.0
    assert bits_per_weight("gemma-3-270m-it-IQ4_XS") == 4.25
    assert bits_per_weight("mxfp4") == 4.25
    assert bits_per_weight("BF16") == 16.0
    assert bits_per_weight("AWQ") is None
    assert bits_per_weight(None) is None
    for name in ("Q2_K", "Q3_K_M", "Q4_0", "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16", "MXFP4"):
        assert name in BITS_PER_WEIGHT


def test_estimate_with_known_architecture_is_exact_for_kv() -> None:
    # Llama 3 8B: 32 layers, 8 KV heads of 128, f16 cache = 128 KiB per token
    estimate = estimate_memory(
        int(4.92 * GB), 8_030_000_000, 131072, 8192, n_layers=32, n_kv_heads=8, head_dim=128
    )
    assert estimate.weights == int(4.92 * GB)
    assert estimate.kv_cache == 2 * 32 * 8192 * 8 * 128 * 2 == GIB
    assert estimate.overhead == OVERHEAD_FIXED + int(0.05 * estimate.weights)
    assert estimate.total == estimate.weights + estimate.kv_cache + estimate.overhead
    assert not estimate.kv_estimated and not estimate.weights_estimated
    assert estimate.ctx == 8192
    q8 = estimate_memory(
        int(4.92 * GB), None, None, 8192, n_layers=32, n_kv_heads=8, head_dim=128, kv_bytes=1
    )
    assert q8.kv_cache == estimate.kv_cache // 2


def test_estimate_without_architecture_and_without_size() -> None:
    estimate = estimate_memory(None, 8_000_000_000, None, 4096, quantization="Q4_K_M")
    assert estimate.weights == int(8_000_000_000 * 4.9 / 8)
    assert estimate.weights_estimated and estimate.kv_estimated
    # heuristic: ~56 KiB x sqrt(8) per token, between 100 and 200 KiB per token
    assert 100 * 1024 * 4096 < estimate.kv_cache < 200 * 1024 * 4096
    unknown_quant = estimate_memory(None, 1_000_000_000, None, 4096, quantization="exl2")
    assert unknown_quant.weights == 2_000_000_000  # counted as 16 bits


def test_estimate_caps_ctx_at_the_model_context_and_grows_with_ctx() -> None:
    capped = estimate_memory(100 * 1024**2, 135_000_000, 2048, 32768)
    assert capped.ctx == 2048
    small = estimate_memory(GIB, 1_000_000_000, None, 2048)
    big = estimate_memory(GIB, 1_000_000_000, None, 32768)
    assert big.kv_cache == 16 * small.kv_cache
    assert big.weights == small.weights and big.overhead == small.overhead


def test_estimate_rejects_what_it_cannot_estimate() -> None:
    with pytest.raises(ValueError, match="file size or the parameter count"):
        estimate_memory(None, None, None, 4096)
    with pytest.raises(ValueError, match="ctx"):
        estimate_memory(GIB, None, None, 0)


# --------------------------------------------------------------------------- fit


def test_small_model_fits_green_on_8gb_ram() -> None:
    estimate = estimate_memory(int(0.1 * GB), 135_000_000, 8192, 4096, quantization="Q4_1")
    result = fit(estimate, facts(8))
    assert (result.level, result.where) == ("green", "cpu")
    assert result.estimate == estimate
    assert "GiB" in result.reason


def test_40gb_model_is_red_on_16gb_without_gpu() -> None:
    result = fit(estimate_memory(40 * GB, 70_000_000_000, None, 4096), facts(16))
    assert (result.level, result.where) == ("red", "cpu")
    assert "Too big" in result.reason


def test_5gb_model_fits_green_in_8gb_vram() -> None:
    estimate = estimate_memory(
        5 * GB, 8_000_000_000, 131072, 4096, n_layers=32, n_kv_heads=8, head_dim=128
    )
    result = fit(estimate, facts(16, [nvidia(8)]))
    assert (result.level, result.where) == ("green", "gpu")
    assert result.gpu_fraction == 1.0
    assert "NVIDIA GeForce RTX 4060" in result.reason


def test_longer_context_flips_green_to_yellow() -> None:
    host = facts(32, [nvidia(8)])
    arch = {"n_layers": 32, "n_kv_heads": 8, "head_dim": 128}
    short = fit(estimate_memory(5 * GB, 8_000_000_000, 131072, 4096, **arch), host)
    long = fit(estimate_memory(5 * GB, 8_000_000_000, 131072, 32768, **arch), host)
    assert short.level == "green"
    assert (long.level, long.where) == ("yellow", "gpu+cpu")
    assert 0.5 < long.gpu_fraction < 1.0
    assert "CPU RAM" in long.reason


def test_ram_thresholds_without_gpu() -> None:
    def level(size_gib: float, ram: float, available: float | None = None) -> str:
        estimate = MemoryEstimate(int(size_gib * GIB), 0, 0, int(size_gib * GIB), 4096)
        return fit(estimate, facts(ram, available_gib=available)).level

    assert level(5.9, 10) == "green"  # up to 60 % of RAM
    assert level(6.1, 10) == "yellow"  # 60-90 %: tight
    assert level(8.9, 10) == "yellow"
    assert level(9.1, 10) == "red"
    assert level(4, 10, available=3) == "yellow"  # fits, but not in what is free now


def test_two_gpus_of_one_vendor_add_up() -> None:
    gpus = [nvidia(24, 0, "NVIDIA GeForce RTX 4090"), nvidia(12, 1, "NVIDIA GeForce RTX 3060")]
    estimate = MemoryEstimate(30 * GIB, 0, 0, 30 * GIB, 4096)
    result = fit(estimate, facts(64, gpus))
    assert (result.level, result.where) == ("green", "gpu")
    assert "2 GPUs" in result.reason
    too_big = MemoryEstimate(120 * GIB, 0, 0, 120 * GIB, 4096)
    assert fit(too_big, facts(64, gpus)).level == "red"


def test_unified_memory_and_shared_gpus() -> None:
    estimate = MemoryEstimate(10 * GIB, 0, 0, 10 * GIB, 4096)
    mac = facts(32, [GpuInfo("apple", 0, "Apple GPU (Asahi Linux)")], unified=True)
    assert (fit(estimate, mac).level, fit(estimate, mac).where) == ("green", "gpu")
    small_vm = GpuInfo("apple", 0, "Apple GPU (Podman machine)", memory_bytes=8 * GIB)
    result = fit(estimate, facts(32, [small_vm], unified=True))
    assert result.level == "red" and "Podman machine" in result.reason
    intel = facts(32, [GpuInfo("intel", 0, "Intel Arc Graphics (Meteor Lake)")])
    assert (fit(estimate, intel).level, fit(estimate, intel).where) == ("green", "gpu")


def test_gpu_with_unknown_memory_is_not_called_green() -> None:
    estimate = MemoryEstimate(2 * GIB, 0, 0, 2 * GIB, 4096)
    result = fit(estimate, facts(32, [GpuInfo("nvidia", 0, "NVIDIA GPU")]))
    assert result.level == "yellow" and "unknown" in result.reason


# --------------------------------------------------------------------------- catalog entries

SMOLLM2 = ModelInfo(
    id="smollm2-135m",
    name="SmolLM2 135M Instruct",
    parameters=134_515_008,
    context_length=8192,
    variants=(
        ModelVariant(
            id="smollm2-135m:Q4_1",
            url="hf://example/SmolLM2/SmolLM2-135M-Instruct.Q4_1.gguf",
            file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            quantization="Q4_1",
            size=98_000_000,
        ),
        ModelVariant(
            id="smollm2-135m:F16",
            url="hf://example/SmolLM2/SmolLM2-135M-Instruct.F16.gguf",
            file_name="SmolLM2-135M-Instruct.F16.gguf",
            quantization="F16",
        ),
    ),
)


def test_fit_variant_uses_catalog_facts() -> None:
    result = fit_variant(SMOLLM2, None, None, facts(8))
    assert result.level == "green"
    assert result.estimate is not None
    assert result.estimate.weights == 98_000_000 and result.estimate.ctx == 4096

    by_quant = fit_variant(SMOLLM2, "F16", 2048, facts(8))
    assert by_quant.estimate is not None
    assert by_quant.estimate.weights == int(134_515_008 * 16 / 8)
    assert by_quant.estimate.weights_estimated

    capped = fit_variant(SMOLLM2, SMOLLM2.variants[0], 16384, facts(8)).estimate
    assert capped is not None and capped.ctx == 8192  # the model's own context length

    with pytest.raises(ValueError, match="no variant"):
        fit_variant(SMOLLM2, "Q9_Z", None, facts(8))


def test_fit_variant_without_any_size_says_so() -> None:
    bare = ModelInfo(id="mystery", name="Mystery")
    result = fit_variant(bare, None, None, facts(8))
    assert result.level == "yellow" and "unknown" in result.reason
    assert result.estimate is None
    published = ModelInfo(
        id="m",
        name="M",
        variants=(ModelVariant(id="m:x", url="https://x/m", file_name="m.gguf", memory=2 * GIB),),
    )
    estimate = fit_variant(published, None, None, facts(8)).estimate
    assert estimate is not None and estimate.weights == 2 * GIB
