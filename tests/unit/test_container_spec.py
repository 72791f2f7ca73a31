"""ContainerSpec -> podman-py kwargs: security defaults, loopback, read-only model, labels, GPUs.

The kwargs are also fed through podman-py's own payload renderer (the code that turns them into
the Podman API body), so a misspelled keyword or one podman-py silently drops fails here.
"""

from __future__ import annotations

import ast
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from podman.domain.containers_create import CreateMixin

from podlab.core.errors import PodlabError
from podlab.core.serving.container_spec import (
    CONTAINER_PORT,
    LABEL_API_URL,
    LABEL_ENGINE,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_SERVICE_ID,
    RAMALAMA_CPU,
    RAMALAMA_CUDA,
    RAMALAMA_INTEL,
    RAMALAMA_ROCM,
    VLLM_IMAGE,
    ContainerSpec,
    MountSpec,
    PortMapping,
    ServiceOptions,
    model_server_spec,
    property_env_name,
)
from podlab.core.serving.engine import _demux_lines, _make_tar, install_hint, parse_version
from podlab.core.serving.gpu.cdi import CdiDevice
from podlab.core.serving.gpu.detect import GpuReport
from podlab.core.serving.gpu.host import GpuInfo
from podlab.core.serving.gpu.passthrough import Passthrough, plan_passthrough
from podlab.core.serving.planning import choose_port
from podlab.core.serving.snippets import SNIPPET_LANGUAGES, snippet, snippets

pytestmark = pytest.mark.unit

MODEL = "/home/user/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def spec_for(passthrough: Passthrough | None = None, **options: Any) -> ContainerSpec:
    return model_server_spec(
        MODEL,
        options.pop("server_kind", "llama-cpp"),
        passthrough or Passthrough(),
        ServiceOptions(**options),
        service_id="abcd1234",
        model_ref="smollm2",
        host_port=35001,
    )


def rendered(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The Podman API body podman-py would send for these kwargs."""
    body = dict(kwargs)
    image, command = body.pop("image"), body.pop("command")
    return CreateMixin._render_payload({"image": image, "command": command, **body})


def nvidia_report() -> GpuReport:
    return GpuReport(
        gpus=[GpuInfo("nvidia", 0, "NVIDIA H100", 80 * 1024**3, "580.0", "GPU-1234")],
        cdi_devices=[CdiDevice("nvidia.com/gpu", "all", "/etc/cdi/nvidia.yaml")],
    )


# --------------------------------------------------------------------------- security


def test_security_defaults_in_kwargs() -> None:
    kwargs = spec_for().to_podman_kwargs()
    assert kwargs["ports"] == {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", 35001)}
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["no_new_privileges"] is True
    assert "security_opt" not in kwargs  # podman-py would send it as SELinux options
    assert kwargs["init"] is True
    assert kwargs["mounts"] == [
        {
            "type": "bind",
            "source": MODEL,
            "target": "/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            "read_only": True,
            "relabel": "z",
        }
    ]
    assert "privileged" not in kwargs and "cap_add" not in kwargs


def test_kwargs_survive_podman_py_payload_rendering() -> None:
    body = rendered(spec_for().to_podman_kwargs())
    assert body["no_new_privileges"] is True
    assert body["cap_drop"] == ["ALL"]
    assert body["init"] is True
    assert body["portmappings"] == [
        {"container_port": 8000, "protocol": "tcp", "host_ip": "127.0.0.1", "host_port": 35001}
    ]
    (mount,) = body["mounts"]
    assert mount["destination"] == "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert mount["options"] == ["ro", "z"]
    assert body["entrypoint"] == ["llama-server"]
    assert body["labels"][LABEL_MANAGED] == "true"
    assert body["selinux_opts"] is None  # SELinux stays on: no label=disable


def test_label_disable_is_refused_and_labels_map_to_selinux_opts() -> None:
    spec = ContainerSpec("img", security_opt=["no-new-privileges", "label=type:container_t"])
    kwargs = spec.to_podman_kwargs()
    assert kwargs["security_opt"] == ["type:container_t"]
    assert kwargs["no_new_privileges"] is True
    with pytest.raises(ValueError, match="label=disable"):
        ContainerSpec("img", security_opt=["label=disable"]).to_podman_kwargs()


def test_bind_address_is_loopback_unless_opted_in() -> None:
    assert spec_for().ports == [PortMapping(8000, 35001, "127.0.0.1")]
    opened = spec_for(bind_address="0.0.0.0")
    assert opened.to_podman_kwargs()["ports"] == {"8000/tcp": ("0.0.0.0", 35001)}
    assert opened.labels[LABEL_API_URL] == "http://127.0.0.1:35001/v1"


def test_labels_on_every_service() -> None:
    labels = spec_for().labels
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_SERVICE_ID] == "abcd1234"
    assert labels[LABEL_MODEL] == "smollm2"
    assert labels[LABEL_API_URL] == "http://127.0.0.1:35001/v1"
    assert labels[LABEL_ENGINE] == "podman"
    assert json.loads(labels["podlab.options"])["ctx_size"] == 4096


# --------------------------------------------------------------------------- env and commands


def test_env_contract_and_catalog_properties() -> None:
    spec = spec_for(
        ctx_size=2048,
        threads=3,
        parallel=2,
        properties={"chatFormat": "chatml", "jinja": "true", "reasoningFormat": "deepseek"},
    )
    env = spec.env
    assert env["MODEL_PATH"] == "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert env["HOST"] == "0.0.0.0"
    assert env["PORT"] == "8000"
    assert env["GPU_LAYERS"] == "0"
    assert env["CTX_SIZE"] == "2048"
    assert env["THREADS"] == "3"
    assert env["PARALLEL"] == "2"
    assert env["MODEL_CHAT_FORMAT"] == "chatml"
    assert env["MODEL_JINJA"] == "true"
    assert env["MODEL_REASONING_FORMAT"] == "deepseek"


def test_property_env_names() -> None:
    assert property_env_name("chatFormat") == "MODEL_CHAT_FORMAT"
    assert property_env_name("jinja") == "MODEL_JINJA"
    assert property_env_name("hf-pretrained model") == "MODEL_HF_PRETRAINED_MODEL"


def test_llama_server_command_line() -> None:
    spec = spec_for(ctx_size=8192, threads=4, parallel=2, gpu_layers=20, chat_format="llama-2")
    assert spec.image == RAMALAMA_CPU
    assert spec.entrypoint == ["llama-server"]
    command = spec.command
    pairs = dict(zip(command[::2], command[1::2], strict=False))
    assert pairs["-m"] == "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert pairs["--host"] == "0.0.0.0"
    assert pairs["--port"] == "8000"
    assert pairs["-ngl"] == "20"
    assert pairs["-c"] == "8192"
    assert pairs["-t"] == "4"
    assert pairs["-np"] == "2"
    assert pairs["--chat-template"] == "llama2"


def test_llama_cpp_python_kind_uses_the_env_contract_only() -> None:
    spec = spec_for(server_kind="llama-cpp-python", image="localhost/podlab/x:1")
    assert spec.image == "localhost/podlab/x:1"
    assert spec.entrypoint is None and spec.command == []
    assert spec.env["MODEL_ALIAS"] == "smollm2"


def test_vllm_command_line() -> None:
    plan = plan_passthrough(nvidia_report(), "auto")
    spec = model_server_spec(
        "/srv/models/Qwen3-4B",
        "vllm",
        plan.passthrough,
        ServiceOptions(ctx_size=16384, gpu_memory_utilization=0.8),
        service_id="v1",
        model_ref="qwen3-4b",
        host_port=35002,
    )
    assert spec.image == VLLM_IMAGE
    assert spec.entrypoint == ["vllm", "serve"]
    assert spec.command[0] == "/models/Qwen3-4B"
    pairs = dict(zip(spec.command[1::2], spec.command[2::2], strict=False))
    assert pairs["--host"] == "0.0.0.0"
    assert pairs["--port"] == "8000"
    assert pairs["--max-model-len"] == "16384"
    assert pairs["--gpu-memory-utilization"] == "0.8"
    assert pairs["--served-model-name"] == "qwen3-4b"
    assert spec.devices == ["nvidia.com/gpu=all"]
    assert spec.env["HF_HUB_OFFLINE"] == "1"
    assert spec.shm_size == "4g"
    assert spec.mounts[0].read_only and spec.mounts[0].target == "/models/Qwen3-4B"
    rendered(spec.to_podman_kwargs())  # accepted by podman-py


def test_vllm_needs_nvidia() -> None:
    with pytest.raises(PodlabError, match="NVIDIA"):
        spec_for(server_kind="vllm")


# --------------------------------------------------------------------------- GPUs


def test_nvidia_passthrough_from_the_gpu_plan() -> None:
    plan = plan_passthrough(nvidia_report(), "auto")
    assert plan.diagnosis.level == "ok"
    spec = spec_for(plan.passthrough)
    kwargs = spec.to_podman_kwargs()
    assert kwargs["devices"] == ["nvidia.com/gpu=all"]
    assert spec.image == RAMALAMA_CUDA
    assert spec.env["GPU_LAYERS"] == "999"
    assert spec.labels["podlab.gpu"] == "nvidia"
    assert rendered(kwargs)["devices"] == [{"path": "nvidia.com/gpu=all"}]


def test_amd_passthrough() -> None:
    report = GpuReport(gpus=[GpuInfo("amd", 0, "Radeon RX 7900 XTX", 24 * 1024**3)])
    report.kfd_present = True
    plan = plan_passthrough(report, "amd")
    spec = spec_for(plan.passthrough)
    kwargs = spec.to_podman_kwargs()
    assert kwargs["devices"] == ["/dev/kfd", "/dev/dri"]
    assert kwargs["group_add"] == ["keep-groups"]
    assert spec.image == RAMALAMA_ROCM
    assert spec.env["HIP_VISIBLE_DEVICES"] == "0"
    assert rendered(kwargs)["groups"] == ["keep-groups"]


def test_intel_passthrough() -> None:
    report = GpuReport(gpus=[GpuInfo("intel", 0, "Intel Arc A770")])
    report.render_nodes = ["/dev/dri/renderD128"]
    plan = plan_passthrough(report, "intel")
    spec = spec_for(plan.passthrough)
    assert spec.to_podman_kwargs()["devices"] == ["/dev/dri"]
    assert spec.image == RAMALAMA_INTEL
    assert spec.env["GPU_LAYERS"] == "999"


def test_wsl_passthrough_mounts_are_added_read_only() -> None:
    report = GpuReport(gpus=[GpuInfo("wsl", 0, "GPU shared by Windows")], wsl=True)
    spec = spec_for(plan_passthrough(report, "auto").passthrough)
    assert spec.devices == ["/dev/dxg"]
    assert MountSpec("/usr/lib/wsl", "/usr/lib/wsl", True, None) in spec.mounts


def test_nvidia_without_cdi_is_an_error_not_a_silent_cpu_fallback() -> None:
    report = GpuReport(gpus=[GpuInfo("nvidia", 0, "NVIDIA H100")])
    plan = plan_passthrough(report, "auto")
    assert plan.diagnosis.level == "error"
    assert plan.passthrough.devices == []


def test_server_images_setting_overrides_defaults() -> None:
    plan = plan_passthrough(nvidia_report(), "auto")
    spec = model_server_spec(
        MODEL,
        "llama-cpp",
        plan.passthrough,
        ServiceOptions(),
        service_id="x",
        model_ref="m",
        host_port=1,
        image_overrides={"cuda": "registry.example/cuda-llama@sha256:" + "a" * 64},
    )
    assert spec.image.startswith("registry.example/cuda-llama@sha256:")


def test_default_images_are_digest_pinned_where_ai_lab_pins_them() -> None:
    for image in (RAMALAMA_CPU, RAMALAMA_CUDA, RAMALAMA_INTEL):
        assert "@sha256:" in image and len(image.split("@sha256:")[1]) == 64


# --------------------------------------------------------------------------- other faces


def test_podman_run_args_match_the_kwargs() -> None:
    args = spec_for().podman_run_args()
    assert args[args.index("--publish") + 1] == "127.0.0.1:35001:8000/tcp"
    assert args[args.index("--cap-drop") + 1] == "all"
    assert args[args.index("--security-opt") + 1] == "no-new-privileges"
    assert "--init" in args
    mount = args[args.index("--mount") + 1]
    assert "readonly=true" in mount and "relabel=shared" in mount
    assert args[args.index("--entrypoint") + 1] == '["llama-server"]'
    assert args[args.index(RAMALAMA_CPU) + 1] == "-m"


def test_spec_round_trips_through_plain_data() -> None:
    spec = spec_for(plan_passthrough(nvidia_report(), "auto").passthrough)
    data = json.loads(json.dumps(spec.to_dict()))
    assert ContainerSpec.from_dict(data) == spec


# --------------------------------------------------------------------------- snippets


def test_snippets_for_every_language() -> None:
    url = "http://127.0.0.1:35001/v1"
    all_snippets = snippets(url, "smollm2")
    assert [s.key for s in all_snippets] == [k for k, _ in SNIPPET_LANGUAGES]
    for item in all_snippets:
        assert "127.0.0.1:35001" in item.code and "smollm2" in item.code
        if item.language == "python":
            ast.parse(item.code)
    curl = snippet("curl", "http://127.0.0.1:35001", "smollm2").code
    assert "http://127.0.0.1:35001/v1/chat/completions" in curl
    body = curl.split("-d '", 1)[1].rsplit("'", 1)[0]
    assert json.loads(body)["stream"] is True
    with pytest.raises(ValueError):
        snippet("cobol", url, "m")


# --------------------------------------------------------------------------- small helpers


def test_choose_port_avoids_taken_and_reserved_ports() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chosen = choose_port("127.0.0.1", None, {port + 1}, base=port)
        assert chosen not in (port, port + 1)
        with pytest.raises(PodlabError, match="already in use"):
            choose_port("127.0.0.1", port, set())


def test_version_parsing_and_install_hint() -> None:
    assert parse_version("4.3.1") == (4, 3, 1)
    assert parse_version("5.0.0-dev") == (5, 0, 0)
    assert parse_version("3.4.4") < (4, 0)
    hint = install_hint("Linux")
    assert "apt install podman" in hint and "dnf install podman" in hint
    assert "podman machine init" in install_hint("Darwin")


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_log_stream_demultiplexing() -> None:
    def frame(stream: int, text: str) -> bytes:
        data = text.encode()
        return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data

    raw = frame(1, "hello\nwor") + frame(2, "ld é\n") + frame(1, "last")
    parts = [raw[i : i + 3] for i in range(0, len(raw), 3)]  # torn anywhere
    lines = [line async for line in _demux_lines(_chunks(parts))]
    assert lines == ["hello", "world é", "last"]
    tty = [line async for line in _demux_lines(_chunks([b"plain te", b"xt\nmore\n"]))]
    assert tty == ["plain text", "more"]


def test_build_context_tar(tmp_path: Path) -> None:
    import io
    import tarfile

    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"x")
    data = _make_tar(tmp_path, {"host-ca/ca.crt": b"PEM"})
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        assert "Containerfile" in names and "host-ca/ca.crt" in names
        assert not any("__pycache__" in n for n in names)
        member = tar.extractfile("host-ca/ca.crt")
        assert member is not None and member.read() == b"PEM"
