"""One description of a container, used by "serve", recipes and every exporter.

`ContainerSpec` is plain data: image, command, env, ports, mounts, devices, labels and the
security options. `to_podman_kwargs()` turns it into the exact keyword arguments of podman-py's
`containers.create` (checked against podman-py 5.8); exporters (Kube YAML, Quadlet, Compose)
read the same fields, so what is exported is what "serve" runs.

Two podman-py details this module hides (both verified against Podman 4.3.1):
* podman-py maps `security_opt` to Podman's *SELinux* options (`selinux_opts`), so
  "no-new-privileges" given there is silently dropped. It must be the `no_new_privileges=True`
  keyword; `label=...` entries go to `security_opt` without the "label=" prefix.
* A mount's `relabel` ("z" shared, "Z" private) keeps SELinux on, unlike `label=disable`.

`model_server_spec()` builds the spec of an inference server with Podlab's security defaults:
ports on 127.0.0.1 (another interface only when the user opted in), `cap_drop=ALL`,
`no-new-privileges`, an init process, the model mounted read-only with an SELinux relabel,
and labels on everything.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol

from podlab import __version__
from podlab.core.errors import PodlabError

ServerKind = Literal["llama-cpp", "llama-cpp-python", "vllm"]
SERVER_KINDS: tuple[str, ...] = ("llama-cpp", "llama-cpp-python", "vllm")

CONTAINER_PORT = 8000
"""The port every model server listens on inside its container."""
MODELS_DIR = "/models"
LOOPBACK = "127.0.0.1"

# Labels on everything Podlab creates: how it finds its own containers again after a restart
# and never touches anyone else's.
LABEL_MANAGED = "podlab.managed"
LABEL_SERVICE_ID = "podlab.service.id"
LABEL_MODEL = "podlab.model"
LABEL_MODEL_FILE = "podlab.model.file"
LABEL_API_URL = "podlab.api-url"
LABEL_ENGINE = "podlab.engine"
LABEL_SERVER_KIND = "podlab.server-kind"
LABEL_GPU = "podlab.gpu"
LABEL_OPTIONS = "podlab.options"
LABEL_VERSION = "podlab.version"
LABEL_API_KEY = "podlab.api-key"
"""'required' when the server asks for the bearer key Podlab keeps for its endpoint."""
API_KEY_SECRET = "api-key"
"""The secret name of a service's key in `ContainerSpec.secret_env` (and in exports)."""
API_KEY_ENV = {
    "llama-cpp-python": "PODLAB_API_KEY",
    "llama-cpp": "LLAMA_API_KEY",
    "vllm": "VLLM_API_KEY",
}
"""Where each server kind reads its key: Podlab's guarded llama-cpp-python server,
llama.cpp's llama-server, vLLM."""

# Podman AI Lab's digest-pinned llama.cpp server images (RamaLama's `*-llama-server`), from
# containers/podman-desktop-extension-ai-lab packages/backend/src/assets/inference-images.json.
# AI Lab pins no ROCm image: that one is a tag (pin it with settings.server_images["rocm"]).
# RamaLama's ramalama-llama-server image carries llama.cpp with Vulkan, so it serves "vulkan".
RAMALAMA_CPU = (
    "quay.io/ramalama/ramalama-llama-server"
    "@sha256:293f66f2dfea8e21393dc03e898616b2a71f0a72a0f3bc5f936439130ada2648"
)
RAMALAMA_CUDA = (
    "quay.io/ramalama/cuda-llama-server"
    "@sha256:b9ced640539c72edee2f946b69618a6d30b68700ac9342d1b9483831988d40ef"
)
RAMALAMA_INTEL = (
    "quay.io/ramalama/intel-gpu-llama-server"
    "@sha256:ea2aa37c0a4af544de80da9d8aa53a0641c91ccfdca3a329a251685a96210551"
)
RAMALAMA_ROCM = "quay.io/ramalama/rocm-llama-server:latest"
VLLM_IMAGE = "docker.io/vllm/vllm-openai:v0.11.0"
"""vLLM's own image (tag, not digest: pin it with settings.server_images["vllm"])."""
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
PODLAB_SERVER_IMAGE = f"localhost/podlab/llamacpp-python:{LLAMA_CPP_PYTHON_VERSION}"
"""Podlab's own server image, built locally from recipes/model_servers/llamacpp_python."""

DEFAULT_IMAGES: dict[str, dict[str, str]] = {
    "llama-cpp": {
        "cpu": RAMALAMA_CPU,
        "vulkan": RAMALAMA_CPU,
        "cuda": RAMALAMA_CUDA,
        "rocm": RAMALAMA_ROCM,
        "intel": RAMALAMA_INTEL,
    },
    "llama-cpp-python": {"cpu": PODLAB_SERVER_IMAGE},
    "vllm": {"cuda": VLLM_IMAGE},
}


# --------------------------------------------------------------------------- the spec


@dataclass
class PortMapping:
    """A published port. host_port None lets Podman choose (Podlab always chooses itself)."""

    container_port: int
    host_port: int | None = None
    host_ip: str = LOOPBACK
    protocol: str = "tcp"


@dataclass
class MountSpec:
    """A bind mount; read-only unless said otherwise, SELinux relabel kept ("z" = shared)."""

    source: str
    target: str
    read_only: bool = True
    relabel: str | None = "z"
    """"z" (shared label), "Z" (private label) or None (leave the label as it is)."""
    type: str = "bind"


@dataclass
class ContainerSpec:
    """Everything needed to create one container; the same object feeds every exporter."""

    image: str
    command: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    """None keeps the image's entrypoint."""
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    ports: list[PortMapping] = field(default_factory=list)
    mounts: list[MountSpec] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    """Host device paths ("/dev/dri") or CDI names ("nvidia.com/gpu=all")."""
    group_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=lambda: ["ALL"])
    cap_add: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=lambda: ["no-new-privileges"])
    """As `podman run --security-opt`: "no-new-privileges", "label=...", "seccomp=..."."""
    init: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    workdir: str | None = None
    pod: str | None = None
    shm_size: str | None = None
    stop_timeout: int | None = None
    secret_env: dict[str, str] = field(default_factory=dict)
    """Environment variables whose values are secrets, by secret name ({"LLAMA_API_KEY":
    "api-key"}): never part of the spec's own data (a dry run or an export shows the name only);
    the values come in `to_podman_kwargs(secrets=...)`, or a Kubernetes Secret in an export."""

    def to_podman_kwargs(self, secrets: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The keyword arguments of podman-py's `containers.create(**kwargs)`; `secrets` gives
        the values of `secret_env` (left out when absent, as in `--dry-run`)."""
        kwargs: dict[str, Any] = {"image": self.image, "command": list(self.command)}
        if self.entrypoint is not None:
            kwargs["entrypoint"] = list(self.entrypoint)
        if self.name:
            kwargs["name"] = self.name
        environment = dict(self.env)
        for variable, secret in self.secret_env.items():
            if secrets is not None and secret in secrets:
                environment[variable] = secrets[secret]
        if environment:
            kwargs["environment"] = environment
        if self.ports:
            ports: dict[str, Any] = {}
            for port in self.ports:
                key = f"{port.container_port}/{port.protocol}"
                if key in ports:
                    raise ValueError(f"container port {key} is published twice")
                if port.host_port is None:
                    ports[key] = {"ip": port.host_ip}
                else:
                    ports[key] = (port.host_ip, port.host_port)
            kwargs["ports"] = ports
        if self.mounts:
            kwargs["mounts"] = [_mount_kwargs(m) for m in self.mounts]
        if self.devices:
            kwargs["devices"] = list(self.devices)
        if self.group_add:
            kwargs["group_add"] = list(self.group_add)
        if self.cap_drop:
            kwargs["cap_drop"] = list(self.cap_drop)
        if self.cap_add:
            kwargs["cap_add"] = list(self.cap_add)
        nnp, selinux, extra = _split_security_opts(self.security_opt)
        if nnp:
            kwargs["no_new_privileges"] = True
        if selinux:
            kwargs["security_opt"] = selinux
        kwargs.update(extra)
        kwargs["init"] = self.init
        if self.labels:
            kwargs["labels"] = dict(self.labels)
        if self.user is not None:
            kwargs["user"] = self.user
        if self.workdir is not None:
            kwargs["working_dir"] = self.workdir
        if self.pod is not None:
            kwargs["pod"] = self.pod
        if self.shm_size is not None:
            kwargs["shm_size"] = self.shm_size
        if self.stop_timeout is not None:
            kwargs["stop_timeout"] = self.stop_timeout
        return kwargs

    def podman_run_args(self) -> list[str]:
        """The same container as `podman run` arguments (after "podman run"), for people,
        scripts and the benchmark baseline."""
        args = ["--detach"]
        if self.name:
            args += ["--name", self.name]
        for port in self.ports:
            host = f"{port.host_ip}:{port.host_port or ''}"
            args += ["--publish", f"{host}:{port.container_port}/{port.protocol}"]
        for mount in self.mounts:
            opts = [f"type={mount.type}", f"source={mount.source}", f"target={mount.target}"]
            if mount.read_only:
                opts.append("readonly=true")
            if mount.relabel:
                opts.append(f"relabel={'shared' if mount.relabel == 'z' else 'private'}")
            args += ["--mount", ",".join(opts)]
        for device in self.devices:
            args += ["--device", device]
        for group in self.group_add:
            args += ["--group-add", group]
        for cap in self.cap_drop:
            args += ["--cap-drop", cap.lower()]
        for cap in self.cap_add:
            args += ["--cap-add", cap.lower()]
        for opt in self.security_opt:
            args += ["--security-opt", opt]
        if self.init:
            args.append("--init")
        for key, value in sorted(self.env.items()):
            args += ["--env", f"{key}={value}"]
        for key, value in sorted(self.labels.items()):
            args += ["--label", f"{key}={value}"]
        if self.user is not None:
            args += ["--user", self.user]
        if self.workdir is not None:
            args += ["--workdir", self.workdir]
        if self.pod is not None:
            args += ["--pod", self.pod]
        if self.shm_size is not None:
            args += ["--shm-size", self.shm_size]
        if self.entrypoint is not None:
            args += ["--entrypoint", json.dumps(self.entrypoint)]
        args.append(self.image)
        args += self.command
        return args

    def podman_run_command(self) -> str:
        return shlex.join(["podman", "run", *self.podman_run_args()])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the exporters' input and `--json` output)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContainerSpec:
        values = dict(data)
        values["ports"] = [PortMapping(**p) for p in values.get("ports", [])]
        values["mounts"] = [MountSpec(**m) for m in values.get("mounts", [])]
        return cls(**values)


def _is_nnp(opt: str) -> bool:
    return opt in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true")


def _split_security_opts(opts: Sequence[str]) -> tuple[bool, list[str], dict[str, Any]]:
    nnp = False
    selinux: list[str] = []
    extra: dict[str, Any] = {}
    for opt in opts:
        if _is_nnp(opt):
            nnp = True
        elif opt.startswith("label="):
            value = opt.removeprefix("label=")
            if value == "disable":
                raise ValueError("label=disable is refused: keep SELinux on and relabel mounts")
            selinux.append(value)
        elif opt.startswith("seccomp="):
            extra["seccomp_profile_path"] = opt.removeprefix("seccomp=")
        elif opt.startswith("apparmor="):
            extra["apparmor_profile"] = opt.removeprefix("apparmor=")
        elif opt.startswith("no-new-privileges"):
            continue  # no-new-privileges:false: the default of Podman
        else:
            raise ValueError(f"unsupported security option {opt!r}")
    return nnp, selinux, extra


def _mount_kwargs(mount: MountSpec) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": mount.type,
        "source": mount.source,
        "target": mount.target,
        "read_only": mount.read_only,
    }
    if mount.relabel:
        if mount.relabel not in ("z", "Z"):
            raise ValueError(f"relabel must be 'z' or 'Z', not {mount.relabel!r}")
        item["relabel"] = mount.relabel
    return item


# --------------------------------------------------------------------------- model servers


class PassthroughMount(Protocol):
    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def read_only(self) -> bool: ...


class PassthroughLike(Protocol):
    """What `gpu.passthrough.Passthrough` offers (kept structural so specs stay pure data)."""

    @property
    def vendor(self) -> str: ...
    @property
    def devices(self) -> list[str]: ...
    @property
    def env(self) -> dict[str, str]: ...
    @property
    def group_add(self) -> list[str]: ...
    @property
    def mounts(self) -> Sequence[PassthroughMount]: ...
    @property
    def image_variant(self) -> str: ...
    @property
    def gpu_layers(self) -> int: ...


@dataclass
class ServiceOptions:
    """What the user may set for one inference service (all optional)."""

    ctx_size: int = 4096
    gpu_layers: int | None = None
    """None: what the GPU plan says (999 = all layers on a GPU, 0 on the CPU)."""
    threads: int | None = None
    parallel: int | None = None
    """Parallel request slots (llama-server -np); llama-cpp-python serves one at a time."""
    port: int | None = None
    """Host port; None lets Podlab choose a free one."""
    bind_address: str = LOOPBACK
    image: str | None = None
    chat_format: str | None = None
    properties: dict[str, str] = field(default_factory=dict)
    """Catalog properties (chatFormat, jinja, ...) that become MODEL_<UPPER_SNAKE> env vars."""
    gpu_memory_utilization: float = 0.90
    """vLLM only."""
    extra_args: list[str] = field(default_factory=list)
    """Appended to the server's command line."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServiceOptions:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


_SNAKE_RE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def property_env_name(name: str) -> str:
    """chatFormat -> MODEL_CHAT_FORMAT, jinja -> MODEL_JINJA (Podman AI Lab's rule)."""
    snake = _SNAKE_RE.sub("_", name)
    snake = re.sub(r"[^A-Za-z0-9]+", "_", snake).strip("_")
    return f"MODEL_{snake.upper()}"


def slug(text: str, limit: int = 40) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return (cleaned[:limit].strip("-")) or "model"


def endpoint_host(bind_address: str) -> str:
    """The address a client on this machine uses for a port published on bind_address."""
    if bind_address in ("", "0.0.0.0"):
        return LOOPBACK
    if bind_address == "::":
        return "[::1]"
    if ":" in bind_address:
        return f"[{bind_address}]"
    return bind_address


def default_image(
    server_kind: str, variant: str, overrides: Mapping[str, str] | None = None
) -> str:
    """The image for a server kind and GPU variant; settings.server_images wins."""
    overrides = overrides or {}
    if server_kind == "vllm":
        return overrides.get("vllm") or DEFAULT_IMAGES["vllm"]["cuda"]
    if server_kind == "llama-cpp-python":
        return overrides.get("llama-cpp-python") or PODLAB_SERVER_IMAGE
    if variant in overrides:
        return overrides[variant]
    images = DEFAULT_IMAGES["llama-cpp"]
    if variant not in images:
        raise PodlabError(f"no llama.cpp server image for the GPU variant {variant!r}")
    return images[variant]


def model_server_spec(
    model_file: str,
    server_kind: str,
    passthrough: PassthroughLike,
    options: ServiceOptions,
    *,
    service_id: str,
    model_ref: str,
    host_port: int,
    image_overrides: Mapping[str, str] | None = None,
    name: str | None = None,
    require_api_key: bool = True,
) -> ContainerSpec:
    """The container of one inference server; pure (no I/O), so `--dry-run` shows it exactly.

    model_file: a GGUF file (llama.cpp kinds) or a safetensors folder (vLLM), on the host.
    """
    if server_kind not in SERVER_KINDS:
        raise PodlabError(
            f"unknown server kind {server_kind!r}", hint=f"use one of {', '.join(SERVER_KINDS)}"
        )
    if not model_file.startswith("/"):
        raise PodlabError(f"the model path must be absolute, not {model_file!r}")
    if server_kind == "vllm" and passthrough.vendor != "nvidia":
        raise PodlabError(
            "vLLM needs an NVIDIA GPU passed through CDI",
            hint="use the llama.cpp server for GGUF files on the CPU, AMD or Intel GPUs",
        )
    host_ip = options.bind_address or LOOPBACK
    file_name = PurePosixPath(model_file).name
    target = f"{MODELS_DIR}/{file_name}"
    gpu_layers = passthrough.gpu_layers if options.gpu_layers is None else options.gpu_layers
    image = options.image or default_image(server_kind, passthrough.image_variant, image_overrides)
    api_url = f"http://{endpoint_host(host_ip)}:{host_port}/v1"

    env: dict[str, str] = {
        "MODEL_PATH": target,
        "HOST": "0.0.0.0",
        "PORT": str(CONTAINER_PORT),
        "GPU_LAYERS": str(gpu_layers),
        "CTX_SIZE": str(options.ctx_size),
        "MODEL_ALIAS": model_ref,
    }
    for key, value in sorted(options.properties.items()):
        env[property_env_name(key)] = str(value)
    chat_format = options.chat_format or options.properties.get("chatFormat")
    if chat_format:
        env["MODEL_CHAT_FORMAT"] = chat_format
    if options.threads is not None:
        env["THREADS"] = str(options.threads)
    if options.parallel is not None:
        env["PARALLEL"] = str(options.parallel)
    env.update(passthrough.env)
    if server_kind == "llama-cpp":
        # Newer llama-server answers only its own origin with a CORS grant (older ones ignore
        # this variable; the key still guards every route but /health).
        env["LLAMA_ARG_CORS_ORIGINS"] = f"http://{endpoint_host(host_ip)}:{host_port}"
    secret_env = {API_KEY_ENV[server_kind]: API_KEY_SECRET} if require_api_key else {}

    entrypoint: list[str] | None = None
    command: list[str] = []
    shm_size: str | None = None
    if server_kind == "llama-cpp":
        # RamaLama's images start llama-server.sh from a shell-form ENTRYPOINT that ignores
        # any command, so the entrypoint is set to llama-server itself.
        entrypoint = ["llama-server"]
        command = [
            "-m", target,
            "--host", "0.0.0.0",
            "--port", str(CONTAINER_PORT),
            "-ngl", str(gpu_layers),
            "-c", str(options.ctx_size),
            "--alias", model_ref,
        ]  # fmt: skip
        if options.threads is not None:
            command += ["-t", str(options.threads)]
        if options.parallel is not None:
            command += ["-np", str(options.parallel)]
        if chat_format:
            command += ["--chat-template", "llama2" if chat_format == "llama-2" else chat_format]
        if options.properties.get("jinja", "").lower() in ("true", "1", "yes"):
            command.append("--jinja")
    elif server_kind == "vllm":
        entrypoint = ["vllm", "serve"]
        command = [
            target,
            "--host", "0.0.0.0",
            "--port", str(CONTAINER_PORT),
            "--served-model-name", model_ref,
            "--max-model-len", str(options.ctx_size),
            "--gpu-memory-utilization", f"{options.gpu_memory_utilization:g}",
        ]  # fmt: skip
        if options.parallel is not None:
            command += ["--max-num-seqs", str(options.parallel)]
        env.update({"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
        shm_size = "4g"
    # llama-cpp-python: Podlab's own image reads the env contract in its entrypoint.
    command += options.extra_args

    mounts = [MountSpec(source=model_file, target=target, read_only=True, relabel="z")]
    for extra in passthrough.mounts:
        mounts.append(MountSpec(extra.source, extra.target, extra.read_only, relabel=None))

    options_label = {
        k: v
        for k, v in options.to_dict().items()
        if k in ("ctx_size", "gpu_layers", "threads", "parallel", "bind_address", "chat_format")
    }
    labels = {
        LABEL_MANAGED: "true",
        LABEL_SERVICE_ID: service_id,
        LABEL_MODEL: model_ref,
        LABEL_MODEL_FILE: model_file,
        LABEL_API_URL: api_url,
        LABEL_ENGINE: "podman",
        LABEL_SERVER_KIND: server_kind,
        LABEL_GPU: passthrough.vendor,
        LABEL_OPTIONS: json.dumps(options_label, sort_keys=True, separators=(",", ":")),
        LABEL_VERSION: __version__,
        LABEL_API_KEY: "required" if require_api_key else "none",
    }
    return ContainerSpec(
        image=image,
        command=command,
        entrypoint=entrypoint,
        name=name or f"podlab-{slug(model_ref)}-{service_id}",
        env=env,
        ports=[PortMapping(CONTAINER_PORT, host_port, host_ip)],
        mounts=mounts,
        devices=list(passthrough.devices),
        group_add=list(passthrough.group_add),
        labels=labels,
        shm_size=shm_size,
        stop_timeout=10,
        secret_env=secret_env,
    )
