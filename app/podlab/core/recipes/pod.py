"""The containers of one recipe pod, planned without side effects.

`plan_pod` is the one place that turns a recipe, its images and its model(s) into
`ContainerSpec`s: the runner creates exactly these containers, and every exporter writes them
out, so what a user tested is what an export deploys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from podlab.core.recipes.catalog import RecipeEntry
from podlab.core.recipes.spec import ContainerRole, RecipeContainer
from podlab.core.serving.container_spec import (
    API_KEY_SECRET,
    ContainerSpec,
    PassthroughLike,
    ServiceOptions,
    model_server_spec,
    slug,
)
from podlab.core.serving.gpu.passthrough import Passthrough
from podlab.core.serving.planning import ResolvedModel
from podlab.core.settings import Settings

LABEL_RUN_CONTAINER = "podlab.recipe.container"
APP_KEY_ENV = "MODEL_ENDPOINT_BEARER"
"""Where a recipe app reads the model services' key."""


@dataclass(frozen=True)
class PodContainer:
    """One container of the pod: the recipe's entry, the spec to create, and the model it
    serves (None for apps and databases)."""

    recipe: RecipeContainer
    spec: ContainerSpec
    model: ResolvedModel | None = None


@dataclass(frozen=True)
class PodPlan:
    """Everything a recipe pod is made of, in the recipe's container order."""

    pod: str
    containers: tuple[PodContainer, ...]
    wiring: dict[str, str]
    """The app's environment: where each service answers inside the pod."""


def plan_pod(
    entry: RecipeEntry,
    images: Mapping[str, str],
    model: ResolvedModel,
    embedding: ResolvedModel | None,
    passthrough: PassthroughLike,
    settings: Settings,
    *,
    run_id: str,
    pod: str,
    host_ports: Mapping[str, int],
    labels: Mapping[str, str],
) -> PodPlan:
    """The pod's containers. images: container name -> image; host_ports: container name ->
    host port of its first port (0 where none is published); labels: on every container.

    The key is only named (`secret_env`); its value is given when the containers are created.
    """
    containers = entry.spec.containers
    wiring = pod_wiring(containers, model, embedding, settings.default_context_size)
    planned: list[PodContainer] = []
    for container in containers:
        served: ResolvedModel | None = None
        if container.role is ContainerRole.MODEL_SERVICE:
            served = model
            spec = _model_spec(container, images, model, passthrough, settings, run_id, host_ports)
        elif container.role is ContainerRole.EMBEDDING_SERVICE:
            if embedding is None:
                raise ValueError(f"recipe {entry.id} needs an embedding model")
            served = embedding
            # The small embedding model stays on the CPU and leaves the GPU to the chat model.
            spec = _model_spec(
                container, images, embedding, Passthrough(), settings, run_id, host_ports,
                embedding=True,
            )  # fmt: skip
        else:
            env = dict(wiring) if container.role is ContainerRole.APP else {}
            spec = ContainerSpec(image=images[container.name], env=env)
        spec.name = f"{pod}-{slug(container.name)}"
        spec.pod = pod
        spec.ports = []
        spec.labels = {**labels, LABEL_RUN_CONTAINER: container.name}
        if container.role is ContainerRole.APP:
            spec.secret_env[APP_KEY_ENV] = API_KEY_SECRET
        planned.append(PodContainer(container, spec, served))
    return PodPlan(pod, tuple(planned), wiring)


def _model_spec(
    container: RecipeContainer,
    images: Mapping[str, str],
    model: ResolvedModel,
    passthrough: PassthroughLike,
    settings: Settings,
    run_id: str,
    host_ports: Mapping[str, int],
    embedding: bool = False,
) -> ContainerSpec:
    """The model service through the same spec builder as "serve" (env contract, model
    read-only, GPU passthrough), listening on the recipe's port inside the pod."""
    options = ServiceOptions(
        ctx_size=settings.default_context_size,
        image=images[container.name],
        extra_args=["--embedding", "true"] if embedding else [],
    )
    spec = model_server_spec(
        str(model.path),
        "llama-cpp-python",
        passthrough,
        options,
        service_id=run_id,
        model_ref=model.ref,
        host_port=host_ports.get(container.name, 0),
    )
    if container.ports:
        spec.env["PORT"] = str(container.ports[0])
    return spec


def pod_wiring(
    containers: tuple[RecipeContainer, ...],
    model: ResolvedModel,
    embedding: ResolvedModel | None,
    context_size: int,
) -> dict[str, str]:
    """The app's environment: where each service answers inside the pod."""
    env: dict[str, str] = {}
    for container in containers:
        if not container.ports:
            continue
        url = f"http://localhost:{container.ports[0]}"
        if container.role is ContainerRole.MODEL_SERVICE:
            env["MODEL_ENDPOINT"] = url
            env["MODEL_NAME"] = model.ref
            # llama-cpp-python does not report its context; apps that chunk need it.
            env["CONTEXT_SIZE"] = str(context_size)
        elif container.role is ContainerRole.EMBEDDING_SERVICE:
            env["EMBEDDING_ENDPOINT"] = url
            env["EMBEDDING_MODEL"] = embedding.ref if embedding is not None else ""
        elif container.role is ContainerRole.VECTORDB:
            env["VECTORDB_HOST"] = "localhost"
            env["VECTORDB_PORT"] = str(container.ports[0])
            env["VECTORDB_NAME"] = "podlab-rag"
    return env
