"""The Podman backend: each service is a container labelled `podlab.*`.

Containers are found again after a restart by those labels only, so a container without them
is never listed, stopped or removed. Also here: building Podlab's own llama-cpp-python server
image (`build_model_server_image`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from podlab.core.errors import PodlabError
from podlab.core.resources import recipe_file
from podlab.core.serving.backends.base import Listing, Progress
from podlab.core.serving.container_spec import (
    API_KEY_SECRET,
    LABEL_API_URL,
    LABEL_ENGINE,
    LABEL_GPU,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_MODEL_FILE,
    LABEL_OPTIONS,
    LABEL_SERVER_KIND,
    LABEL_SERVICE_ID,
    LLAMA_CPP_PYTHON_VERSION,
    LOOPBACK,
    PODLAB_SERVER_IMAGE,
    ServiceOptions,
)
from podlab.core.serving.crash import describe_exit
from podlab.core.serving.engine import HOST_CA_BUNDLE, INIT_MISSING_FIX, Engine, PullPolicy
from podlab.core.serving.inference import EngineName, InferenceService, ServiceState
from podlab.core.serving.planning import PreparedService


def _timestamp(value: Any) -> float:
    """Podman's "Created": seconds, or an RFC 3339 string with nanoseconds."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(text).timestamp()
    return time.time()


def model_server_context() -> Path:
    """The folder of Podlab's own model-server image (Containerfile + scripts)."""
    folder = recipe_file("model_servers/llamacpp_python")
    return Path(str(folder))


async def build_model_server_image(
    engine: Engine,
    *,
    tag: str = PODLAB_SERVER_IMAGE,
    wheelhouse: Path | None = None,
    use_host_ca: bool | None = None,
    host_ca_bundle: Path = HOST_CA_BUNDLE,
    pull: PullPolicy = "missing",
) -> AsyncIterator[str]:
    """Build Podlab's llama-cpp-python server image, yielding the build log.

    wheelhouse: a folder of wheels (`pip wheel 'llama-cpp-python[server]==VERSION' -w DIR`)
    installed without compiling or network. use_host_ca: give pip the host's CA bundle (for
    TLS-intercepting proxies); it is mounted for the install step only, never stored in a layer.
    None follows the setting use_host_ca_certificates.
    """
    if use_host_ca is None:
        use_host_ca = engine.settings.use_host_ca_certificates
    extra, version = await asyncio.to_thread(
        _model_server_extras, wheelhouse, use_host_ca, host_ca_bundle
    )
    # The CA bundle travels in the context (RUN --mount), which works on every Podman; the
    # API's build volumes would not (Podman 4.3 ignores them).
    lines = engine.build(
        model_server_context(),
        tag,
        pull=pull,
        extra_files=extra,
        host_ca=False,
        build_args={"LLAMA_CPP_PYTHON_VERSION": version},
    )
    async for line in lines:
        yield line


def _model_server_extras(
    wheelhouse: Path | None, use_host_ca: bool, host_ca_bundle: Path
) -> tuple[dict[str, Path | bytes], str]:
    """The extra context files, and the llama-cpp-python version to install."""
    extra: dict[str, Path | bytes] = {}
    version = LLAMA_CPP_PYTHON_VERSION
    if wheelhouse is not None:
        wheels = sorted(wheelhouse.glob("llama_cpp_python-*.whl"))
        if not wheels:
            raise PodlabError(
                f"the wheelhouse {wheelhouse} has no llama_cpp_python wheel",
                hint="pip wheel 'llama-cpp-python[server]' -w " + str(wheelhouse),
            )
        version = wheels[-1].name.split("-")[1]
        extra["wheels"] = wheelhouse
    if use_host_ca:
        if not host_ca_bundle.is_file():
            raise PodlabError(f"the host CA bundle {host_ca_bundle} does not exist")
        extra["host-ca/ca-certificates.crt"] = host_ca_bundle.read_bytes()
    return extra, version


class PodmanBackend:
    """Services as Podman containers, through the shared `Engine`."""

    name: EngineName = "podman"

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._containers: dict[str, Any] = {}
        """podman-py Container objects of known services (saves an inspect per action)."""

    async def ensure_reachable(self) -> None:
        await self.engine.ensure()

    async def create(
        self,
        service: InferenceService,
        prepared: PreparedService,
        *,
        pull: bool,
        progress: Progress,
    ) -> None:
        await self.engine.ensure()
        spec = prepared.spec
        assert spec is not None
        if not await self.engine.image_exists(spec.image):
            if not pull:
                raise PodlabError(f"image {spec.image} is not present", hint="podman pull it")
            progress(f"pulling {spec.image}")
            async for line in self.engine.pull(spec.image):
                progress(line)
        if spec.init and self.engine.status.has_init is False:
            # Podman would refuse to start it ("container-init binary not found"): the server
            # runs as PID 1 instead, which still stops on SIGTERM; doctor says how to fix it.
            spec = replace(spec, init=False)
            service.spec = spec
            progress(f"catatonit is missing: starting without an init process ({INIT_MISSING_FIX})")
        client = self.engine.client()
        secrets = {API_KEY_SECRET: prepared.api_key} if prepared.api_key else {}
        kwargs = spec.to_podman_kwargs(secrets=secrets)
        container = await self.engine.call(client.containers.create, **kwargs)
        service.container_id = str(container.id)
        self._containers[service.id] = container

    async def start(self, service: InferenceService) -> None:
        await self.engine.ensure()
        container = await self._container(service)
        try:
            await self.engine.call(container.start)
        except PodlabError as exc:
            if "container-init binary not found" not in exc.message:
                raise
            raise PodlabError(
                "Podman cannot find catatonit, the init process Podlab's containers run with",
                hint=f"install it where Podman runs: {INIT_MISSING_FIX} (Debian and Ubuntu "
                "install it only as a recommendation of podman)",
            ) from exc

    async def stop(self, service: InferenceService, grace: int) -> None:
        container = await self._container(service)
        await self.engine.call(container.stop, timeout=grace)

    async def remove(self, service: InferenceService) -> None:
        container = await self._container(service)
        await self.engine.call(container.remove, force=True, v=True)
        self._containers.pop(service.id, None)

    async def logs(
        self, service: InferenceService, *, follow: bool, tail: int | None
    ) -> AsyncIterator[str]:
        await self.engine.ensure()
        if not service.container_id:
            raise PodlabError(f"service {service.id} has no container")
        lines = self.engine.container_logs(service.container_id, follow=follow, tail=tail)
        async for line in lines:
            yield line

    async def log_text(self, service: InferenceService, tail: int | None) -> str:
        if not service.container_id:
            return ""
        return await self.engine.container_log_text(service.container_id, tail=tail)

    async def stats(self, service: InferenceService) -> dict[str, Any]:
        if not service.container_id or not service.state.running:
            return {"memory_bytes": None, "cpu_percent": None}
        return await self.engine.container_stats(service.container_id)

    async def listing(self) -> Listing:
        status = self.engine.status
        if not status.available:
            status = await self.engine.connect()
        if not status.available:
            return Listing(problem=status.problem)
        try:
            return Listing(await self._services())
        except PodlabError as exc:
            return Listing(problem=exc.message)

    async def ports_in_use(self) -> set[int]:
        if self.engine.status.available:
            with contextlib.suppress(PodlabError):
                return {s.port for s in await self._services()}
        return set()

    async def why_dead(self, service: InferenceService) -> str | None:
        assert service.container_id is not None
        try:
            state = await self.engine.container_state(service.container_id)
        except httpx.HTTPError as exc:
            return f"lost Podman: {exc}"
        if state is None:
            return "the container was removed"
        if state.get("Running"):
            return None
        return "the server " + describe_exit(
            state.get("ExitCode"), from_container=True, oom_killed=bool(state.get("OOMKilled"))
        )

    async def _services(self) -> list[InferenceService]:
        client = self.engine.client()
        containers = await self.engine.call(
            client.containers.list, all=True, filters={"label": f"{LABEL_MANAGED}=true"}
        )
        services: list[InferenceService] = []
        for container in containers:
            service = self._service_from_container(container.attrs)
            if service is not None:
                services.append(service)
        return services

    @staticmethod
    def _service_from_container(attrs: Mapping[str, Any]) -> InferenceService | None:
        labels = attrs.get("Labels") or {}
        if labels.get(LABEL_MANAGED) != "true" or not labels.get(LABEL_SERVICE_ID):
            return None  # not ours: never listed, never touched
        if labels.get(LABEL_ENGINE, "podman") != "podman":
            return None
        api_url = labels.get(LABEL_API_URL, "")
        host, port = LOOPBACK, 0
        with contextlib.suppress(ValueError):
            hostport = api_url.split("://", 1)[1].split("/", 1)[0]
            host, _, port_text = hostport.rpartition(":")
            port = int(port_text)
        options = ServiceOptions()
        with contextlib.suppress(ValueError, TypeError):
            options = ServiceOptions.from_dict(json.loads(labels.get(LABEL_OPTIONS, "{}")))
        options.port = port
        state_text = str(attrs.get("State", "")).lower()
        exit_code = attrs.get("ExitCode")
        if state_text == "running":
            state = ServiceState.STARTING
        elif state_text in ("created", "configured", "initialized"):
            state = ServiceState.STOPPED
        elif state_text in ("exited", "stopped"):
            # Podman stop ends the server with SIGTERM (143) or SIGKILL (137) through the init.
            state = ServiceState.STOPPED if exit_code in (0, 143, 137, 130) else ServiceState.EXITED
        else:
            state = ServiceState.EXITED
        names = attrs.get("Names") or []
        created_ts = _timestamp(attrs.get("Created"))
        return InferenceService(
            id=labels[LABEL_SERVICE_ID],
            name=str(names[0]).lstrip("/") if names else labels[LABEL_SERVICE_ID],
            engine="podman",
            model_ref=labels.get(LABEL_MODEL, ""),
            model_file=labels.get(LABEL_MODEL_FILE, ""),
            server_kind=labels.get(LABEL_SERVER_KIND, "llama-cpp"),
            host=host or LOOPBACK,
            port=port,
            state=state,
            options=options,
            gpu_vendor=labels.get(LABEL_GPU, "none"),
            image=str(attrs.get("Image", "")) or None,
            container_id=str(attrs.get("Id", "")) or None,
            created=created_ts,
            error=describe_exit(exit_code, from_container=True)
            if state == ServiceState.EXITED and isinstance(exit_code, int)
            else "",
        )

    async def _container(self, service: InferenceService) -> Any:
        """The podman-py Container of a service, checked to carry its labels."""
        await self.engine.ensure()
        if not service.container_id:
            raise PodlabError(f"service {service.id} has no container")
        cached = self._containers.get(service.id)
        if cached is not None and cached.id == service.container_id:
            return cached  # created by this manager: known to be ours
        client = self.engine.client()
        container = await self.engine.call(client.containers.get, service.container_id)
        labels = container.attrs.get("Config", {}).get("Labels") or container.attrs.get("Labels")
        if not labels or labels.get(LABEL_SERVICE_ID) != service.id:
            raise PodlabError(f"container {service.container_id} is not Podlab's; not touching it")
        self._containers[service.id] = container
        return container
