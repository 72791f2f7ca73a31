"""What an export describes: the containers Podlab runs, and how the model travels.

An `ExportPlan` is built from the same `ContainerSpec`s the runner (`plan_pod`) and the services
(`model_server_spec`, or a service record's stored spec) create, so every format writes out what
the user tested: images, env contract, context size and parameters. Only two things change on
the way out: the model file, which travels as a model image ("modelcar": the GGUF under
/models) instead of a bind mount of a host path, and the key, which is only named here and
provided on the target machine (a Kubernetes Secret, a Podman secret or an env file).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from podlab import __version__
from podlab.core.errors import PodlabError
from podlab.core.models.hardware import estimate_memory
from podlab.core.recipes.catalog import RecipeEntry
from podlab.core.recipes.pod import plan_pod
from podlab.core.recipes.runner import build_inputs_hash, image_tag
from podlab.core.recipes.spec import ContainerRole, RecipeContainer
from podlab.core.serving.backends.podman import model_server_context
from podlab.core.serving.container_spec import (
    CONTAINER_PORT,
    LABEL_OPTIONS,
    LABEL_SERVER_KIND,
    MODELS_DIR,
    PODLAB_SERVER_IMAGE,
    ContainerSpec,
    model_server_spec,
    slug,
)
from podlab.core.serving.gpu.passthrough import GPU_LAYERS_ALL, Passthrough
from podlab.core.serving.inference import InferenceService
from podlab.core.serving.planning import ResolvedModel
from podlab.core.settings import Settings

FORMATS: tuple[str, ...] = ("containerfile", "kube", "kserve", "quadlet", "compose")
GPU_TARGETS: tuple[str, ...] = ("none", "nvidia", "amd", "intel")
BASE_IMAGE = "docker.io/library/debian:bookworm-slim"
"""The model image's base: it has the shell, `cp`, `ln` and `sleep` that KServe's modelcar and
the init container need (so not `FROM scratch`)."""
APP_USER = 1001
"""The non-root user every Podlab image runs as (and the restricted profile pins)."""
SECRET_KEY = "api-key"
"""The key's name inside the Kubernetes Secret / the Podman secret of an export."""
MODEL_MOUNT = "/mnt/models"
"""Where an init container writes the model copy (the emptyDir / volume)."""

ANNOTATION_MODEL = "podlab.model"
ANNOTATION_MODEL_SHA256 = "podlab.model.sha256"
ANNOTATION_RECIPE = "podlab.recipe"
ANNOTATION_SAMPLING = "podlab.sampling"
"""The sampling parameters a comparison pane sent (temperature, top_p, ...): clients send them
with each request, so an export records them for the client, not the server."""
ANNOTATION_VERSION = "podlab.version"

_DNS_INVALID = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class ExportedFile:
    """One generated file: its path inside the output folder (relative, POSIX) and its text."""

    path: str
    text: str
    mode: int = 0o644


@dataclass(frozen=True)
class ModelArtifact:
    """A model as it travels: its file on this machine, its digest and its model image."""

    ref: str
    host_path: Path
    file_name: str
    sha256: str
    image: str
    memory_bytes: int
    """The served model's memory estimate (weights, KV cache for the context, overhead)."""


@dataclass(frozen=True)
class Part:
    """One container of an export."""

    name: str
    """A DNS-1123 label: the container's name in every format."""
    spec: ContainerSpec
    ports: tuple[int, ...]
    role: str
    """"model-service", "embedding-service", "vectordb" or "app"."""
    model: ModelArtifact | None = None
    server_kind: str | None = None
    build: RecipeContainer | None = None
    """Where the image is built from (a recipe's context), None for pulled images."""

    @property
    def serves_model(self) -> bool:
        return self.model is not None


@dataclass(frozen=True)
class ExportPlan:
    """Everything the format writers read."""

    name: str
    """A DNS-1123 label (and DNS-1035: starts with a letter) naming the pod, units, project."""
    title: str
    parts: tuple[Part, ...]
    host_ports: dict[int, int]
    """Container port -> host port on 127.0.0.1 (for Podman, Quadlet and Compose)."""
    gpu: str
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def secret_name(self) -> str:
        return dns_label(f"{self.name}-api-key")

    @property
    def models(self) -> list[ModelArtifact]:
        seen: dict[str, ModelArtifact] = {}
        for part in self.parts:
            if part.model is not None:
                seen.setdefault(part.model.image, part.model)
        return list(seen.values())

    @property
    def app(self) -> Part | None:
        return next((p for p in self.parts if p.role == ContainerRole.APP.value), None)


# --------------------------------------------------------------------------- names


def dns_label(text: str, limit: int = 63) -> str:
    """A valid DNS-1123 label that also starts with a letter (what a Service name needs),
    made from any text: lower case, runs of other characters become one '-', and a long name
    keeps a short hash of the whole so two long names stay different."""
    cleaned = _DNS_INVALID.sub("-", text.lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"m-{cleaned}".rstrip("-")
    if len(cleaned) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        cleaned = f"{cleaned[: limit - 9].rstrip('-')}-{digest}"
    return cleaned


# --------------------------------------------------------------------------- models


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def model_sha256(model: ResolvedModel, settings: Settings) -> str:
    """The model's sha256: the store's record when it has one, else the file's own digest."""
    from podlab.core.models.store import ModelStore

    entry = ModelStore.from_settings(settings).get(model.ref)
    if entry is not None and entry.sha256:
        return entry.sha256.removeprefix("sha256:")
    if not model.path.is_file():
        raise PodlabError(
            f"cannot export the model folder {model.path}",
            hint="export a GGUF file (llama.cpp format)",
        )
    return file_sha256(model.path)


def model_image_name(ref: str, sha256: str) -> str:
    """The model image's reference: named after the model, tagged with its digest (a fixed
    tag, never `latest`, as KServe expects of a modelcar)."""
    return f"localhost/podlab/model-{slug(ref)}:{sha256[:12]}"


def model_artifact(model: ResolvedModel, settings: Settings, ctx_size: int) -> ModelArtifact:
    sha = model_sha256(model, settings)
    size = model.path.stat().st_size
    estimate = estimate_memory(size, None, None, ctx_size)
    return ModelArtifact(
        ref=model.ref,
        host_path=model.path,
        file_name=model.path.name,
        sha256=sha,
        image=model_image_name(model.ref, sha),
        memory_bytes=estimate.total,
    )


def memory_quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity in whole MiB (rounded up)."""
    return f"{math.ceil(size / (1 << 20))}Mi"


# --------------------------------------------------------------------------- GPUs


def target_passthrough(gpu: str) -> Passthrough:
    """The GPU passthrough for the machine the export runs on (not this one): what
    `plan_passthrough` would choose there for that vendor."""
    if gpu == "none":
        return Passthrough()
    if gpu == "nvidia":
        return Passthrough(
            vendor="nvidia",
            devices=["nvidia.com/gpu=all"],
            image_variant="cuda",
            gpu_layers=GPU_LAYERS_ALL,
        )
    if gpu == "amd":
        return Passthrough(
            vendor="amd",
            devices=["/dev/kfd", "/dev/dri"],
            group_add=["keep-groups"],
            image_variant="rocm",
            gpu_layers=GPU_LAYERS_ALL,
        )
    if gpu == "intel":
        return Passthrough(
            vendor="intel", devices=["/dev/dri"], image_variant="intel", gpu_layers=GPU_LAYERS_ALL
        )
    raise PodlabError(f"unknown GPU {gpu!r}", hint=f"use one of {', '.join(GPU_TARGETS)}")


# --------------------------------------------------------------------------- plans


def recipe_images(entry: RecipeEntry) -> dict[str, str]:
    """The image of each container, named exactly as the runner names it (its build inputs'
    hash is the tag), so an export refers to the images a run built and reused."""
    images: dict[str, str] = {}
    for container in entry.spec.containers:
        if (
            container.image == PODLAB_SERVER_IMAGE
            or container.context_dir == model_server_context()
        ):
            images[container.name] = PODLAB_SERVER_IMAGE
        else:
            inputs = build_inputs_hash(container, {})
            images[container.name] = image_tag(entry.id, container, inputs)
    return images


def _pinned(image: str, digests: Mapping[str, str] | None) -> str:
    """The image by digest where Podman knows one (images from a registry); a local build
    keeps its tag (its Containerfile is exported beside it)."""
    if digests and image in digests and not image.startswith("localhost/"):
        return digests[image]
    return image


def recipe_plan(
    entry: RecipeEntry,
    model: ResolvedModel,
    *,
    embedding: ResolvedModel | None,
    gpu: str,
    settings: Settings,
    image_digests: Mapping[str, str] | None = None,
    host_ports: Mapping[int, int] | None = None,
) -> ExportPlan:
    """The plan of a recipe: the runner's own pod plan, with the model as an image."""
    if gpu not in GPU_TARGETS:
        raise PodlabError(f"unknown GPU {gpu!r}", hint=f"use one of {', '.join(GPU_TARGETS)}")
    if entry.spec.with_role(ContainerRole.EMBEDDING_SERVICE) and embedding is None:
        raise PodlabError(
            f"recipe {entry.id} needs an embedding model",
            hint="give one with --embedding-model (a GGUF embedding model)",
        )
    name = dns_label(f"podlab-{entry.id}")
    images = {k: _pinned(v, image_digests) for k, v in recipe_images(entry).items()}
    ports = {p: p for c in entry.spec.containers for p in c.ports}
    ports.update(host_ports or {})
    first_ports = {c.name: ports[c.ports[0]] for c in entry.spec.containers if c.ports}
    pod = plan_pod(
        entry,
        images,
        model,
        embedding,
        target_passthrough(gpu),
        settings,
        run_id="export",
        pod=name,
        host_ports=first_ports,
        labels={},
    )
    ctx = settings.default_context_size
    artifacts = {model.ref: model_artifact(model, settings, ctx)}
    if embedding is not None:
        artifacts[embedding.ref] = model_artifact(embedding, settings, ctx)
    parts: list[Part] = []
    for planned in pod.containers:
        container = planned.recipe
        artifact = artifacts[planned.model.ref] if planned.model is not None else None
        builds = container.context_dir.is_dir() and container.containerfile.is_file()
        parts.append(
            Part(
                name=dns_label(container.name),
                spec=planned.spec,
                ports=container.ports,
                role=container.role.value,
                model=artifact,
                server_kind="llama-cpp-python" if artifact is not None else None,
                build=container if builds else None,
            )
        )
    annotations = {
        ANNOTATION_RECIPE: entry.id,
        ANNOTATION_MODEL: model.ref,
        ANNOTATION_MODEL_SHA256: artifacts[model.ref].sha256,
        ANNOTATION_VERSION: __version__,
    }
    if embedding is not None:
        annotations["podlab.embedding-model"] = embedding.ref
        annotations["podlab.embedding-model.sha256"] = artifacts[embedding.ref].sha256
    server = next((p.spec for p in parts if p.role == ContainerRole.MODEL_SERVICE.value), None)
    if server is not None:
        # The runner's containers carry the run's labels, not the service's: the parameters
        # come from the server's environment contract.
        tested = {
            "ctx_size": int(server.env["CTX_SIZE"]),
            "gpu_layers": int(server.env["GPU_LAYERS"]),
        }
        annotations[LABEL_OPTIONS] = json.dumps(tested, sort_keys=True, separators=(",", ":"))
    return ExportPlan(name, entry.name, tuple(parts), dict(ports), gpu, annotations)


def service_plan(
    service: InferenceService,
    *,
    settings: Settings,
    gpu: str | None = None,
    image_digests: Mapping[str, str] | None = None,
    host_port: int | None = None,
    sampling: Mapping[str, object] | None = None,
) -> ExportPlan:
    """The plan of one served model: the service's stored spec (Podman), or the spec Podman
    would run for it (a local-engine service). gpu None: the service's own GPU; sampling: the
    request parameters it was tried with (a comparison pane's), recorded as an annotation."""
    target = gpu or service.gpu_vendor or "none"
    if target not in GPU_TARGETS:
        target = "none"
    spec = service.spec
    server_kind = service.server_kind
    if spec is None or gpu is not None:
        kind = server_kind if server_kind in ("llama-cpp", "vllm") else "llama-cpp-python"
        options = replace(service.options, image=service.options.image or service.image)
        spec = model_server_spec(
            service.model_file,
            kind,
            target_passthrough(target),
            options,
            service_id=service.id,
            model_ref=service.model_ref,
            host_port=service.port,
            image_overrides=settings.server_images,
            # A key the keyring lost still protects the export; an open service stays open
            # only where the setting says so.
            require_api_key=service.api_key is not None or settings.require_api_key,
        )
        server_kind = kind
    spec = ContainerSpec.from_dict(spec.to_dict())
    spec.image = _pinned(spec.image, image_digests)
    model_path = Path(service.model_file)
    resolved = ResolvedModel(ref=service.model_ref, path=model_path)
    artifact = model_artifact(resolved, settings, service.options.ctx_size)
    name = dns_label(service.name)
    port = host_port if host_port is not None else service.port
    server_kind = spec.labels.get(LABEL_SERVER_KIND, server_kind)
    part = Part(
        name=dns_label(f"{service.model_ref}-server"),
        spec=spec,
        ports=(CONTAINER_PORT,),
        role=ContainerRole.MODEL_SERVICE.value,
        model=artifact,
        server_kind=server_kind,
    )
    annotations = {
        ANNOTATION_MODEL: service.model_ref,
        ANNOTATION_MODEL_SHA256: artifact.sha256,
        ANNOTATION_VERSION: __version__,
    }
    if LABEL_OPTIONS in spec.labels:
        annotations[LABEL_OPTIONS] = spec.labels[LABEL_OPTIONS]
    if sampling:
        annotations[ANNOTATION_SAMPLING] = json.dumps(
            dict(sampling), sort_keys=True, separators=(",", ":")
        )
    return ExportPlan(
        name, f"{service.model_ref} ({service.name})", (part,), {CONTAINER_PORT: port},
        target, annotations,
    )  # fmt: skip


def model_path_in_image(part: Part) -> str:
    """Where the server reads its model (MODEL_PATH), the same in every format."""
    assert part.model is not None
    return str(PurePosixPath(MODELS_DIR) / part.model.file_name)


def secret_env(part: Part) -> Sequence[tuple[str, str]]:
    """(variable, secret name) pairs of a container: where it reads the key."""
    return sorted(part.spec.secret_env.items())


def _repository(reference: str) -> str:
    """`quay.io/a/b:tag` -> `quay.io/a/b` (a registry port stays: `host:5000/a:tag`)."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def repo_digest(reference: str, repo_digests: Sequence[str]) -> str | None:
    """The reference by digest among an image's RepoDigests (same repository), if any."""
    repository = _repository(reference)
    for candidate in repo_digests:
        if candidate.split("@", 1)[0] == repository and "@sha256:" in candidate:
            return candidate
    return None
