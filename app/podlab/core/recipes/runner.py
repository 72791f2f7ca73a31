"""Recipe runs on Podman: build → pod → wire → health → running.

One run is one Podman pod labelled `podlab.managed=true`, `podlab.recipe-run=<id>` and
`podlab.recipe=<recipe id>`; its containers carry the same labels. Everything a later Podlab
process needs to list a run (recipe, model, app URL, host ports) is in the pod's labels, so runs
are found again after a restart without any file of ours.

Images are reused when their inputs have not changed: a hash of the context files, the
Containerfile and the build arguments is the image's tag, so a second start builds nothing.
Podlab's own model server (recipes/model_servers/llamacpp_python) is the image "serve" uses and
is built the same way as there.

Every container gets the security defaults of services (`ContainerSpec`: all capabilities
dropped, no-new-privileges, an init); the pod publishes each container port on 127.0.0.1 on a
free host port. Readiness is checked over HTTP from Podlab, never with a tool in the image.
A failed or cancelled start removes the pod, its containers and the image (tag and layers) it
was building.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx

from podlab import __version__
from podlab.core.errors import PodlabError
from podlab.core.recipes.catalog import RecipeEntry
from podlab.core.recipes.pod import plan_pod
from podlab.core.recipes.spec import ContainerRole, RecipeContainer
from podlab.core.serving.backends.podman import build_model_server_image, model_server_context
from podlab.core.serving.container_spec import (
    API_KEY_SECRET,
    LABEL_MANAGED,
    LABEL_VERSION,
    LOOPBACK,
    PODLAB_SERVER_IMAGE,
    slug,
)
from podlab.core.serving.engine import HOST_CA_BUNDLE, Engine, PullPolicy
from podlab.core.serving.gpu.detect import detect_gpus
from podlab.core.serving.gpu.host import HostProbe
from podlab.core.serving.gpu.passthrough import PassthroughPlan, plan_passthrough
from podlab.core.serving.planning import (
    ResolvedModel,
    choose_port,
    require_model_readable,
    resolve_model,
)
from podlab.core.settings import Settings

LABEL_RUN = "podlab.recipe-run"
LABEL_RECIPE = "podlab.recipe"
LABEL_RUN_APP_URL = "podlab.recipe.app-url"
LABEL_RUN_PORTS = "podlab.recipe.ports"
LABEL_RUN_MODEL = "podlab.recipe.model"
LABEL_RUN_EMBEDDING = "podlab.recipe.embedding-model"
LABEL_RUN_GPU = "podlab.recipe.gpu"
LABEL_RUN_CREATED = "podlab.recipe.created"
LABEL_INPUTS = "podlab.recipe.inputs"
"""On a built image: the hash of its build inputs (also its tag)."""

HOST_CA_CONTEXT_PATH = "podlab-host-ca/ca-certificates.crt"
"""Where a build finds the host CA bundle in its context (recipes' Containerfiles read it)."""
DEFAULT_RECIPE_PORT_BASE = 36000
MODEL_READY_PATH = "/v1/models"
LOG_TAIL_LINES = 20
READY_POLL_INTERVAL = 0.1
"""Seconds between readiness polls: a local HTTP request, cheap, and a start is seen sooner."""
STATE_CHECK_INTERVAL = 1.0
"""Seconds between checks that a container that does not answer yet still runs."""


class RunState(StrEnum):
    BUILDING = "building"
    STARTING = "starting"
    RUNNING = "running"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class RunEvent:
    """What a run reports while it starts: a state, a build log line, an image built or reused."""

    kind: str
    """"state", "log", "build" (an image is being built), "reuse" (an image is reused)."""
    text: str
    container: str = ""


@dataclass
class RecipeRun:
    """One run of a recipe: its pod, where its app answers, and its state."""

    id: str
    recipe_id: str
    pod: str
    state: RunState
    model: str = ""
    embedding_model: str = ""
    gpu: str = ""
    """The GPU vendor the model service got ("none": the CPU; "": not recorded, an older run)."""
    app_url: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    """Container name -> host port on 127.0.0.1 (its first port)."""
    error: str = ""
    created: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data


@dataclass(frozen=True)
class RunRequest:
    """What a user asks for: a recipe, its model(s) and where the model service runs."""

    recipe: RecipeEntry
    model: str | Path
    embedding_model: str | Path | None = None
    gpu: str = "auto"
    """"auto", "none" or a vendor, as for services."""
    plan: PassthroughPlan | None = None
    """A GPU plan made already; None: planned from the host's GPUs."""


def build_inputs_hash(container: RecipeContainer, build_args: Mapping[str, str]) -> str:
    """A hash of everything a build reads: every context file (path and bytes), the
    Containerfile's path and the build arguments."""
    digest = hashlib.sha256()
    digest.update(container.containerfile.relative_to(container.context_dir).as_posix().encode())
    digest.update(b"\0" + json.dumps(dict(build_args), sort_keys=True).encode() + b"\0")
    for path in sorted(container.context_dir.rglob("*")):
        relative = path.relative_to(container.context_dir)
        if "__pycache__" in relative.parts or not path.is_file():
            continue
        digest.update(relative.as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def image_tag(recipe_id: str, container: RecipeContainer, inputs: str) -> str:
    return f"localhost/podlab/recipe-{slug(recipe_id)}-{slug(container.name)}:{inputs}"


EventSink = Callable[[RunEvent], None]


class RecipeRunner:
    """Starts, lists, stops and removes recipe runs on one Podman (`Engine`)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings | None = None,
        *,
        gpu_probe: HostProbe | None = None,
        wheelhouse: Path | None = None,
        use_host_ca: bool | None = None,
        pull: PullPolicy = "missing",
        port_base: int = DEFAULT_RECIPE_PORT_BASE,
        ready_timeout: float = 180.0,
    ) -> None:
        """wheelhouse: llama-cpp-python wheels for building Podlab's model server without
        compiling; use_host_ca (None: the setting) puts the host CA bundle in app builds."""
        self.engine = engine
        self.settings = settings or engine.settings
        self.gpu_probe = gpu_probe
        self.wheelhouse = wheelhouse
        self.use_host_ca = use_host_ca
        self.pull = pull
        self.port_base = port_base
        self.ready_timeout = ready_timeout
        self._listeners: list[EventSink] = []

    def subscribe(self, listener: EventSink) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, kind: str, text: str, container: str = "") -> None:
        event = RunEvent(kind, text, container)
        for listener in list(self._listeners):
            listener(event)

    async def _require_podman(self) -> None:
        status = self.engine.status
        if not status.available:
            status = await self.engine.connect()
        if not status.available:
            raise PodlabError(
                f"recipes need Podman: {status.problem}", status.hint or "install Podman"
            )

    # ----------------------------------------------------------------- run

    async def run(self, request: RunRequest) -> RecipeRun:
        """Build what changed, start the pod, wait until every container answers.

        On any failure (or cancellation) everything this call created is removed; the error
        carries the failing log's tail.
        """
        await self._require_podman()
        entry = request.recipe
        spec = entry.spec
        model = await asyncio.to_thread(resolve_model, request.model, self.settings)
        embedding = None
        if spec.with_role(ContainerRole.EMBEDDING_SERVICE):
            if request.embedding_model is None:
                raise PodlabError(
                    f"recipe {entry.id} needs an embedding model",
                    hint="give one with --embedding-model (a GGUF embedding model)",
                )
            embedding = await asyncio.to_thread(
                resolve_model, request.embedding_model, self.settings
            )
        plan = request.plan
        if plan is None:
            plan = plan_passthrough(
                await asyncio.to_thread(detect_gpus, self.gpu_probe), request.gpu
            )
        if plan.diagnosis.level == "error":
            raise PodlabError(
                plan.diagnosis.message, hint=(plan.diagnosis.fix or "") + " (or --gpu none)"
            )
        run = RecipeRun(
            id=secrets.token_hex(4),
            recipe_id=entry.id,
            pod="",
            state=RunState.BUILDING,
            model=model.ref,
            embedding_model=embedding.ref if embedding is not None else "",
            gpu=plan.passthrough.vendor,
            created=time.time(),
        )
        run.pod = f"podlab-recipe-{slug(entry.id, 30)}-{run.id}"
        built_tags: list[str] = []
        try:
            self._emit("state", RunState.BUILDING.value)
            images = {
                c.name: await self._image_for(entry.id, c, built_tags) for c in spec.containers
            }
            served = {
                ContainerRole.MODEL_SERVICE: model,
                ContainerRole.EMBEDDING_SERVICE: embedding,
            }
            for container in spec.containers:
                resolved = served.get(container.role)
                if resolved is not None:
                    await require_model_readable(self.engine, images[container.name], resolved.path)
            run.state = RunState.STARTING
            self._emit("state", RunState.STARTING.value)
            await self._start_pod(run, request, images, model, embedding, plan)
            await self._wait_ready(run, request)
        except BaseException as exc:
            run.state = RunState.FAILED
            run.error = exc.message if isinstance(exc, PodlabError) else str(exc)
            self._emit("state", RunState.FAILED.value)
            await asyncio.shield(self._discard(run.id, built_tags))
            raise
        run.state = RunState.RUNNING
        self._emit("state", RunState.RUNNING.value)
        return run

    async def _image_for(self, recipe_id: str, container: RecipeContainer, built: list[str]) -> str:
        """The image of one container: reused when its inputs are unchanged, else built.

        Podlab's own model server (named by its image or its folder) is the image "serve" uses.
        """
        if (
            container.image == PODLAB_SERVER_IMAGE
            or container.context_dir == model_server_context()
        ):
            tag = PODLAB_SERVER_IMAGE
            if await self.engine.image_exists(tag):
                self._emit("reuse", tag, container.name)
                return tag
            self._emit("build", tag, container.name)
            built.append(tag)
            lines = build_model_server_image(
                self.engine,
                wheelhouse=self.wheelhouse,
                use_host_ca=self.use_host_ca,
                pull=self.pull,
            )
            async for line in lines:
                self._emit("log", line, container.name)
            return tag
        build_args: dict[str, str] = {}
        inputs = await asyncio.to_thread(build_inputs_hash, container, build_args)
        tag = image_tag(recipe_id, container, inputs)
        if await self.engine.image_exists(tag):
            self._emit("reuse", tag, container.name)
            return tag
        self._emit("build", tag, container.name)
        built.append(tag)
        use_host_ca = self.use_host_ca
        if use_host_ca is None:
            use_host_ca = self.settings.use_host_ca_certificates
        extra: dict[str, Path | bytes] = {}
        if use_host_ca and await asyncio.to_thread(HOST_CA_BUNDLE.is_file):
            extra[HOST_CA_CONTEXT_PATH] = await asyncio.to_thread(HOST_CA_BUNDLE.read_bytes)
        lines = self.engine.build(
            container.context_dir,
            tag,
            containerfile=container.containerfile.relative_to(container.context_dir).as_posix(),
            pull=self.pull,
            build_args=build_args,
            labels={LABEL_MANAGED: "true", LABEL_INPUTS: inputs, LABEL_VERSION: __version__},
            extra_files=extra,
            host_ca=use_host_ca,
        )
        async for line in lines:
            self._emit("log", line, container.name)
        return tag

    async def _start_pod(
        self,
        run: RecipeRun,
        request: RunRequest,
        images: Mapping[str, str],
        model: ResolvedModel,
        embedding: ResolvedModel | None,
        plan: PassthroughPlan,
    ) -> None:
        spec = request.recipe.spec
        reserved = await self._ports_in_use()
        port_map: dict[int, int] = {}
        for container in spec.containers:
            for port in container.ports:
                host_port = choose_port(LOOPBACK, None, reserved, self.port_base)
                reserved.add(host_port)
                port_map[port] = host_port
        run.ports = {c.name: port_map[c.ports[0]] for c in spec.containers if c.ports}
        apps = spec.with_role(ContainerRole.APP)
        app = apps[0]
        if app.ports:
            run.app_url = f"http://{LOOPBACK}:{port_map[app.ports[0]]}"
        labels = self._labels(run)
        pod_labels = {
            **labels,
            LABEL_RUN_APP_URL: run.app_url,
            LABEL_RUN_PORTS: json.dumps(run.ports, sort_keys=True),
            LABEL_RUN_MODEL: run.model,
            LABEL_RUN_EMBEDDING: run.embedding_model,
            LABEL_RUN_GPU: run.gpu,
            LABEL_RUN_CREATED: f"{run.created:.0f}",
        }
        client = self.engine.client()
        portmappings = [
            {"container_port": inside, "host_port": outside, "host_ip": LOOPBACK, "protocol": "tcp"}
            for inside, outside in port_map.items()
        ]
        await self.engine.call(
            client.pods.create, run.pod, labels=pod_labels, portmappings=portmappings
        )
        api_key = secrets.token_urlsafe(32)
        planned = plan_pod(
            request.recipe,
            images,
            model,
            embedding,
            plan.passthrough,
            self.settings,
            run_id=run.id,
            pod=run.pod,
            host_ports=run.ports,
            labels=labels,
        )
        for planned_container in planned.containers:
            # The model services and the app name the key in their spec; its value goes only
            # into the created containers, never into the spec an export reads.
            kwargs = planned_container.spec.to_podman_kwargs(secrets={API_KEY_SECRET: api_key})
            await self.engine.call(client.containers.create, **kwargs)
        pod = await self.engine.call(client.pods.get, run.pod)
        await self.engine.call(pod.start)

    def _labels(self, run: RecipeRun) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_RUN: run.id,
            LABEL_RECIPE: run.recipe_id,
            LABEL_VERSION: __version__,
        }

    async def _wait_ready(self, run: RecipeRun, request: RunRequest) -> None:
        """Every container answers HTTP on its host port (model services: /v1/models), all
        waited for at once; a container that exits fails the run with its log."""
        deadline = time.monotonic() + self.ready_timeout
        async with httpx.AsyncClient(timeout=5.0) as http:
            waits = [
                asyncio.create_task(self._wait_container(run, container, http, deadline))
                for container in request.recipe.spec.containers
                if container.name in run.ports
            ]
            try:
                await asyncio.gather(*waits)
            finally:
                for wait in waits:
                    wait.cancel()
                await asyncio.gather(*waits, return_exceptions=True)

    async def _wait_container(
        self, run: RecipeRun, container: RecipeContainer, http: httpx.AsyncClient, deadline: float
    ) -> None:
        name = f"{run.pod}-{slug(container.name)}"
        model = container.role in (ContainerRole.MODEL_SERVICE, ContainerRole.EMBEDDING_SERVICE)
        url = f"http://{LOOPBACK}:{run.ports[container.name]}"
        url += MODEL_READY_PATH if model else "/"
        next_state_check = 0.0
        while not await _answers(http, url, model):
            now = time.monotonic()
            if now >= next_state_check:  # an inspection costs more than a local HTTP poll
                next_state_check = now + STATE_CHECK_INTERVAL
                state = await self.engine.container_state(name)
                if state is None or not state.get("Running"):
                    raise PodlabError(
                        f"container {container.name} of recipe {run.recipe_id} stopped "
                        f"(exit code {(state or {}).get('ExitCode')})",
                        hint=await self._log_tail(name),
                    )
            if now > deadline:
                raise PodlabError(
                    f"container {container.name} did not answer at {url} within "
                    f"{self.ready_timeout:.0f} s",
                    hint=await self._log_tail(name),
                )
            await asyncio.sleep(READY_POLL_INTERVAL)
        self._emit("ready", url, container.name)

    async def _log_tail(self, container: str) -> str:
        with contextlib.suppress(PodlabError, httpx.HTTPError):
            return await self.engine.container_log_text(container, tail=LOG_TAIL_LINES)
        return ""

    async def _discard(self, run_id: str, built_tags: list[str]) -> None:
        """Remove a failed run's pod and containers, and the images this attempt built."""
        with contextlib.suppress(PodlabError):
            await self.remove(run_id)
        for tag in built_tags:
            if tag == PODLAB_SERVER_IMAGE:
                continue  # shared with services; a failed build leaves no tag anyway
            with contextlib.suppress(PodlabError):
                await self._remove_build_images(tag.rsplit(":", 1)[1])

    async def _remove_build_images(self, inputs: str) -> None:
        """Remove the tagged image and every layer image of the build of these inputs.

        Buildah puts the build's labels on each intermediate layer too, so the half-built
        layers of a failed or cancelled build are found by the inputs label. A layer cannot go
        while a layer built on it remains, so removal repeats until a pass removes nothing.
        """
        client = self.engine.client()
        label = {"label": f"{LABEL_INPUTS}={inputs}"}
        while images := await self.engine.call(client.images.list, all=True, filters=label):
            removed = 0
            for image in images:
                with contextlib.suppress(PodlabError):
                    await self.engine.call(client.images.remove, image.id, force=True)
                    removed += 1
            if not removed:
                return

    async def _ports_in_use(self) -> set[int]:
        return {port for run in await self.runs() for port in run.ports.values()}

    # ----------------------------------------------------------------- runs

    async def _pods(self, run_id: str | None = None) -> list[Any]:
        client = self.engine.client()
        label = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
        pods = await self.engine.call(client.pods.list, filters={"label": label})
        return [p for p in pods if (p.attrs.get("Labels") or {}).get(LABEL_MANAGED) == "true"]

    async def runs(self) -> list[RecipeRun]:
        """Every recipe run in this Podman, from the pods' labels alone."""
        await self._require_podman()
        return [_run_from_pod(pod.attrs) for pod in await self._pods()]

    async def get(self, run_id: str) -> RecipeRun:
        await self._require_podman()
        pods = await self._pods(run_id)
        if not pods:
            raise PodlabError(f"no recipe run {run_id}", hint="see podlab recipe ps")
        return _run_from_pod(pods[0].attrs)

    async def stop(self, run_id: str) -> RecipeRun:
        await self._require_podman()
        for pod in await self._pods(run_id):
            await self.engine.call(pod.stop, timeout=10)
        return await self.get(run_id)

    async def remove(self, run_id: str) -> None:
        """Remove the run's pod and every container in it (the images stay for reuse)."""
        await self._require_podman()
        client = self.engine.client()
        pods = await self._pods(run_id)
        for pod in pods:
            await self.engine.call(pod.remove, force=True)
        # Containers created before a failure may not have joined a pod we could list.
        containers = await self.engine.call(
            client.containers.list, all=True, filters={"label": f"{LABEL_RUN}={run_id}"}
        )
        for container in containers:
            await self.engine.call(container.remove, force=True, v=True)

    async def logs(
        self, run_id: str, container: str, tail: int | None = None
    ) -> AsyncIterator[str]:
        run = await self.get(run_id)
        lines = self.engine.container_logs(f"{run.pod}-{slug(container)}", tail=tail)
        async for line in lines:
            yield line


async def _answers(http: httpx.AsyncClient, url: str, model: bool) -> bool:
    """Whether a container answers: a model server lists its models (the key is not needed to
    learn that it is up: 401 means it answers), anything else gives any HTTP answer."""
    try:
        response = await http.get(url)
    except httpx.HTTPError:
        return False
    if model:
        return response.status_code in (200, 401)
    return response.status_code < 500


def _run_from_pod(attrs: Mapping[str, Any]) -> RecipeRun:
    labels = attrs.get("Labels") or {}
    status = str(attrs.get("Status", "")).lower()
    state = {
        "running": RunState.RUNNING,
        "degraded": RunState.FAILED,
        "error": RunState.FAILED,
    }.get(status, RunState.STOPPED)
    ports: dict[str, int] = {}
    with contextlib.suppress(ValueError, TypeError):
        ports = {str(k): int(v) for k, v in json.loads(labels.get(LABEL_RUN_PORTS, "{}")).items()}
    return RecipeRun(
        id=labels.get(LABEL_RUN, ""),
        recipe_id=labels.get(LABEL_RECIPE, ""),
        pod=str(attrs.get("Name", "")),
        state=state,
        model=labels.get(LABEL_RUN_MODEL, ""),
        embedding_model=labels.get(LABEL_RUN_EMBEDDING, ""),
        gpu=labels.get(LABEL_RUN_GPU, ""),
        app_url=labels.get(LABEL_RUN_APP_URL, ""),
        ports=ports,
        created=_number(labels.get(LABEL_RUN_CREATED)),
    )


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0
