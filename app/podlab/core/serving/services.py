"""Inference services: one model served over an OpenAI-compatible API, in Podman or locally.

`ServiceManager` is what the GUI's Services page and `podlab serve` / `podlab services` use:

* `prepare()` resolves the model, plans the GPU and builds the `ContainerSpec` (no side effect:
  `--dry-run` prints it); `create()` creates the container (or the local record) and `start()`
  starts it and waits until it answers (`GET /health` 200, else `GET /v1/models` 200), failing
  with the server's log tail when it exits or times out. `serve()` is both.
* `stop()`, `restart()`, `delete()`, `list()`, `get()`, `logs()` (an async iterator, `follow`
  included) and `stats()` work the same for both engines.
* Every change is an event: `subscribe(listener)` gets a `ServiceEvent` (added, changed,
  removed) with the service; listeners are plain callables, the Qt layer turns them into
  signals.

Podman containers carry `podlab.*` labels; `list()` finds them again after a restart by those
labels only, so a container without them is never listed, stopped or removed. Local servers
are found again through their JSON records (see `local_server`).

After a start, the server's log says where the layers went (`offload.parse_offload`): the service
reports the device actually in use ("GPU", "GPU+CPU", "CPU"), and a GPU that was asked for but
not used becomes a warning diagnosis instead of a silent CPU fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import re
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from podlab.core.errors import PodlabError
from podlab.core.http import ssl_context_for
from podlab.core.paths import Locations
from podlab.core.resources import recipe_file
from podlab.core.serving.container_spec import (
    CONTAINER_PORT,
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
    SERVER_KINDS,
    ContainerSpec,
    ServiceOptions,
    endpoint_host,
    model_server_spec,
    slug,
)
from podlab.core.serving.engine import HOST_CA_BUNDLE, Engine, PullPolicy
from podlab.core.serving.gpu.detect import GpuReport, detect_gpus
from podlab.core.serving.gpu.host import Diagnosis, HostProbe
from podlab.core.serving.gpu.passthrough import (
    GPU_LAYERS_ALL,
    Passthrough,
    PassthroughPlan,
    plan_passthrough,
)
from podlab.core.serving.local_server import LocalEngine, LocalRecord
from podlab.core.serving.offload import OffloadInfo, device_of, parse_offload
from podlab.core.settings import Settings

EngineName = Literal["podman", "local"]
ENGINE_CHOICES = ("auto", "podman", "local")
DEFAULT_PORT_BASE = 35000
"""Podlab looks for free host ports upward from here (AI Lab does the same from its own base)."""
READY_TIMEOUT = 180.0
LOG_TAIL_LINES = 25
PROBE_TIMEOUT = 2.0
"""Seconds a readiness check of `list_services()` waits for an answer."""
READY_MISSES = 3
"""Consecutive unanswered readiness checks before a READY service whose container or process
still runs reads as STARTING again (one slow answer under load is not a state change)."""


class ServiceState(enum.Enum):
    CREATING = "creating"
    """The container (or local record) is being made: image pull, create."""
    STARTING = "starting"
    """Running, not answering yet (loading the model)."""
    READY = "ready"
    FAILED = "failed"
    """Podlab's start failed: the server exited or never answered (see `error`)."""
    STOPPED = "stopped"
    """Not running: created and never started, or stopped by Podlab."""
    EXITED = "exited"
    """Ended on its own (crash, killed outside Podlab)."""

    @property
    def running(self) -> bool:
        return self in (ServiceState.STARTING, ServiceState.READY)


@dataclass
class InferenceService:
    """One served model. Plain data: the manager updates it and emits events."""

    id: str
    name: str
    engine: EngineName
    model_ref: str
    """What the API calls the model ("model" in requests), and what the user asked for."""
    model_file: str
    server_kind: str
    host: str
    port: int
    state: ServiceState
    options: ServiceOptions = field(default_factory=ServiceOptions)
    gpu_vendor: str = "none"
    """The GPU passed to the server ("none" on the CPU)."""
    device: str = "unknown"
    """What the server really uses, read from its log: "GPU", "GPU+CPU", "CPU" or "unknown"."""
    offload: OffloadInfo | None = None
    diagnosis: Diagnosis | None = None
    error: str = ""
    image: str | None = None
    container_id: str | None = None
    spec: ContainerSpec | None = None
    pid: int | None = None
    log_path: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.endpoint}/v1"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "engine": self.engine,
            "model": self.model_ref,
            "model_file": self.model_file,
            "server_kind": self.server_kind,
            "state": self.state.value,
            "endpoint": self.endpoint,
            "api_url": self.api_url,
            "port": self.port,
            "gpu": self.gpu_vendor,
            "device": self.device,
            "offload": None
            if self.offload is None
            else {
                "offloaded_layers": self.offload.offloaded_layers,
                "total_layers": self.offload.total_layers,
                "device_name": self.offload.device_name,
                "backend": self.offload.backend,
            },
            "diagnosis": None
            if self.diagnosis is None
            else {
                "level": self.diagnosis.level,
                "message": self.diagnosis.message,
                "fix": self.diagnosis.fix,
            },
            "error": self.error,
            "image": self.image,
            "container_id": self.container_id,
            "pid": self.pid,
            "log_path": self.log_path,
            "options": self.options.to_dict(),
            "created": self.created,
        }


@dataclass(frozen=True)
class ServiceEvent:
    kind: Literal["added", "changed", "removed"]
    service: InferenceService
    """The live object (the manager keeps updating it)."""
    state: ServiceState
    """The service's state when the event was emitted."""
    detail: str = ""
    """One line for a status bar: "pulling image", "waiting for the server", ..."""


ServiceListener = Callable[[ServiceEvent], None]


@dataclass
class ResolvedModel:
    ref: str
    path: Path
    properties: dict[str, str] = field(default_factory=dict)
    catalog_id: str | None = None


@dataclass
class PreparedService:
    """Everything decided before anything is created (what `--dry-run` shows)."""

    service_id: str
    engine: EngineName
    model: ResolvedModel
    server_kind: str
    plan: PassthroughPlan
    options: ServiceOptions
    host_port: int
    spec: ContainerSpec | None
    """The container for Podman; None for the local engine."""
    command: list[str] | None = None
    """The command line for the local engine."""


# --------------------------------------------------------------------------- helpers


def resolve_model(ref: str | Path, settings: Settings | None = None) -> ResolvedModel:
    """A plain file or folder path, else a model of the store, else a catalog model/variant."""
    settings = settings or Settings()
    path = Path(ref).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file() or path.is_dir():
            name = path.name.removesuffix(".gguf") if path.is_file() else path.name
            return ResolvedModel(ref=name, path=path)
    text = str(ref)
    try:
        from podlab.core.models.store import ModelStore

        store = ModelStore.from_settings(settings)
        entry = store.get(text)
    except ImportError:  # pragma: no cover - the store ships with Podlab
        store, entry = None, None
    properties: dict[str, str] = {}
    catalog_id: str | None = None
    try:
        from podlab.core.models.catalog import load_catalog

        catalog = load_catalog().catalog
    except ImportError:  # pragma: no cover
        catalog = None
    if entry is not None and store is not None:
        if catalog is not None and entry.catalog_id:
            model = catalog.model(entry.catalog_id)
            if model is not None:
                properties = dict(model.properties)
                catalog_id = model.id
        return ResolvedModel(entry.id, store.path_of(entry.id), properties, catalog_id)
    found = catalog.find_variant(text) if catalog is not None else None
    if found is not None and store is not None:
        model, variant = found
        for candidate in store.list_models():
            if candidate.variant_id == variant.id or (
                candidate.catalog_id == model.id and candidate.variant_id in (None, variant.id)
            ):
                return ResolvedModel(
                    candidate.id, store.path_of(candidate.id), dict(model.properties), model.id
                )
        raise PodlabError(
            f"model {text!r} is in the catalog but not downloaded",
            hint=f"download it first: podlab models pull {text}",
        )
    suggestions = catalog.suggest(text) if catalog is not None else []
    hint = "give a GGUF file path, a downloaded model id, or a catalog model id"
    if suggestions:
        hint = f"did you mean {', '.join(suggestions)}? ({hint})"
    raise PodlabError(f"no model file or model named {text!r}", hint=hint)


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(
    bind_address: str,
    requested: int | None,
    reserved: set[int],
    base: int = DEFAULT_PORT_BASE,
) -> int:
    """The requested port when free (else PodlabError), or the first free one from `base`
    that no other Podlab service holds (a stopped service keeps its port for its restart)."""
    host = bind_address or LOOPBACK
    if requested is not None:
        if not 0 < requested < 65536:
            raise PodlabError(f"port {requested} is not a valid TCP port (1-65535)")
        if requested in reserved or not port_is_free(host, requested):
            raise PodlabError(
                f"port {requested} on {host} is already in use",
                hint="choose another --port, or leave it out and Podlab picks a free one",
            )
        return requested
    for port in range(base, 65536):
        if port not in reserved and port_is_free(host, port):
            return port
    raise PodlabError(f"no free port on {host} from {base} up")


async def probe_ready(client: httpx.AsyncClient, endpoint: str, use_health: bool) -> int | None:
    """One readiness probe: 200 means ready; returns the status of the URL tried (None when
    nothing answered)."""
    url = f"{endpoint}/health" if use_health else f"{endpoint}/v1/models"
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return None
    return response.status_code


async def wait_ready(
    endpoint: str,
    *,
    within: float,
    dead: Callable[[], Awaitable[str | None]],
    interval: float = 0.05,
    check_every: float = 0.5,
) -> None:
    """Poll `/health` (then `/v1/models` when /health is 404) until 200.

    `dead()` says why the server is gone (or None); it is asked every `check_every` seconds.
    Raises TimeoutError or RuntimeError(reason).
    """
    deadline = time.monotonic() + within
    next_check = time.monotonic() + check_every
    use_health = True
    limits = httpx.Limits(max_keepalive_connections=0)
    timeouts = httpx.Timeout(5.0, connect=1.0)
    verify = ssl_context_for(endpoint)  # shared; loads no certificates for http://
    async with httpx.AsyncClient(timeout=timeouts, limits=limits, verify=verify) as client:
        while True:
            status = await probe_ready(client, endpoint, use_health)
            if status == 200:
                return
            if use_health and status == 404:
                use_health = False
                status = await probe_ready(client, endpoint, use_health)
                if status == 200:
                    return
            now = time.monotonic()
            if now >= next_check:
                next_check = now + check_every
                reason = await dead()
                if reason is not None:
                    raise RuntimeError(reason)
            if now >= deadline:
                raise TimeoutError(f"no answer within {within:.0f} s")
            await asyncio.sleep(interval)


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


# --------------------------------------------------------------------------- the manager


class ServiceManager:
    """Creates, starts, finds and removes inference services on both engines."""

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        local: LocalEngine | None = None,
        settings: Settings | None = None,
        locations: Locations | None = None,
        gpu_probe: HostProbe | None = None,
        port_base: int = DEFAULT_PORT_BASE,
        ready_timeout: float = READY_TIMEOUT,
        probe_timeout: float = PROBE_TIMEOUT,
        ready_misses: int = READY_MISSES,
    ) -> None:
        self.settings = settings or Settings()
        self.locations = locations or Locations.default()
        self.engine = engine or Engine(self.settings, locations=self.locations)
        self.local = local or LocalEngine(self.locations)
        self.gpu_probe = gpu_probe
        self.port_base = port_base
        self.ready_timeout = ready_timeout
        self.probe_timeout = probe_timeout
        self.ready_misses = max(1, ready_misses)
        self._services: dict[str, InferenceService] = {}
        self._misses: dict[str, int] = {}
        """Consecutive unanswered readiness checks of READY services that still run."""
        self._listeners: list[ServiceListener] = []
        self._create_lock = asyncio.Lock()
        self._gpu_report: GpuReport | None = None
        self._containers: dict[str, Any] = {}
        """podman-py Container objects of known services (saves an inspect per action)."""
        self.engine_problem: str = ""
        """Why Podman services could not be listed at the last `list_services()` ("" if none)."""

    # ----------------------------------------------------------------- events

    def subscribe(self, listener: ServiceListener) -> Callable[[], None]:
        """Call listener on every change; returns the function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _emit(
        self,
        kind: Literal["added", "changed", "removed"],
        service: InferenceService,
        detail: str = "",
    ) -> None:
        event = ServiceEvent(kind, service, service.state, detail)
        for listener in list(self._listeners):
            listener(event)

    def _set_state(self, service: InferenceService, state: ServiceState, detail: str = "") -> None:
        service.state = state
        self._emit("changed", service, detail or state.value)

    # ----------------------------------------------------------------- planning

    async def gpu_report(self, refresh: bool = False) -> GpuReport:
        if self._gpu_report is None or refresh:
            self._gpu_report = await asyncio.to_thread(detect_gpus, self.gpu_probe)
        return self._gpu_report

    async def resolve_engine(self, engine: str) -> EngineName:
        choice = engine if engine != "auto" else self.settings.engine
        if choice == "podman":
            return "podman"
        if choice == "local":
            return "local"
        status = await self.engine.connect()
        if status.available:
            return "podman"
        usable, _ = self.local.available()
        if usable:
            return "local"
        return "podman"  # the error that follows names what to install

    def _reserved_ports(self) -> set[int]:
        return {s.port for s in self._services.values()}

    async def prepare(
        self,
        model: str | Path,
        *,
        engine: str = "auto",
        gpu: str = "auto",
        options: ServiceOptions | None = None,
        server_kind: str | None = None,
        plan: PassthroughPlan | None = None,
        allow_cpu: bool = False,
        service_id: str | None = None,
    ) -> PreparedService:
        """Resolve, plan and build the spec; creates nothing.

        A GPU that is present but cannot be passed (e.g. NVIDIA without a CDI spec) raises
        PodlabError with the fix, unless allow_cpu (the user said "run on the CPU").
        """
        if options is None:
            options = ServiceOptions(ctx_size=self.settings.default_context_size)
        if options.bind_address == LOOPBACK and self.settings.bind_address:
            options = replace(options, bind_address=self.settings.bind_address)
        engine_name = await self.resolve_engine(engine)
        resolved = await asyncio.to_thread(resolve_model, model, self.settings)
        if resolved.properties:
            options = replace(options, properties={**resolved.properties, **options.properties})
        service_id = service_id or secrets.token_hex(4)
        if engine_name == "local":
            return await self._prepare_local(service_id, resolved, gpu, options, server_kind)
        if plan is None:
            plan = plan_passthrough(await self.gpu_report(), gpu)
        if plan.diagnosis.level == "error" and not allow_cpu:
            fix = plan.diagnosis.fix or ""
            raise PodlabError(
                plan.diagnosis.message,
                hint=(fix + "; " if fix else "") + "or run on the CPU: --gpu none",
            )
        if not self.engine.status.available:
            await self.engine.connect()
        kind = server_kind or await self._server_kind_for(options.image)
        if kind not in SERVER_KINDS:
            raise PodlabError(
                f"unknown server kind {kind!r}", hint=f"use one of {', '.join(SERVER_KINDS)}"
            )
        reserved = self._reserved_ports()
        if self.engine.status.available:
            with contextlib.suppress(PodlabError):
                reserved |= {s.port for s in await self._podman_services(probe=False)}
        port = choose_port(options.bind_address, options.port, reserved, self.port_base)
        spec = model_server_spec(
            str(resolved.path),
            kind,
            plan.passthrough,
            options,
            service_id=service_id,
            model_ref=resolved.ref,
            host_port=port,
            image_overrides=self.settings.server_images,
        )
        return PreparedService(
            service_id=service_id,
            engine="podman",
            model=resolved,
            server_kind=kind,
            plan=plan,
            options=options,
            host_port=port,
            spec=spec,
        )

    async def _prepare_local(
        self,
        service_id: str,
        resolved: ResolvedModel,
        gpu: str,
        options: ServiceOptions,
        server_kind: str | None,
    ) -> PreparedService:
        if server_kind not in (None, "llama-cpp-python"):
            raise PodlabError("the local engine runs llama-cpp-python only")
        usable, why = self.local.available()
        if not usable:
            raise PodlabError("the local engine is not available", hint=why)
        if not resolved.path.is_file():
            raise PodlabError(f"the local engine serves GGUF files; {resolved.path} is not one")
        # No container: llama-cpp-python uses a GPU when it was built for one; the CDI and
        # device questions of Podman do not arise.
        report = await self.gpu_report()
        gpus = [] if gpu == "none" else report.gpus if gpu == "auto" else report.by_vendor(gpu)
        vendor = gpus[0].vendor if gpus else "none"
        passthrough = Passthrough(vendor=vendor, gpu_layers=GPU_LAYERS_ALL if gpus else 0)
        message = (
            f"Local engine: llama.cpp offloads to {gpus[0].label} if it was built with GPU support"
            if gpus
            else "Local engine on the CPU"
        )
        plan = PassthroughPlan(passthrough, Diagnosis("ok", message))
        host = LOOPBACK if options.bind_address in ("", LOOPBACK) else options.bind_address
        reserved = self._reserved_ports() | {r.port for r in self.local.records()}
        port = choose_port(host, options.port, reserved, self.port_base)
        gpu_layers = passthrough.gpu_layers if options.gpu_layers is None else options.gpu_layers
        command = self.local.command(
            str(resolved.path),
            host,
            port,
            ctx_size=options.ctx_size,
            gpu_layers=gpu_layers,
            model_ref=resolved.ref,
            threads=options.threads,
            chat_format=options.chat_format or options.properties.get("chatFormat"),
            extra_args=options.extra_args,
        )
        return PreparedService(
            service_id=service_id,
            engine="local",
            model=resolved,
            server_kind="llama-cpp-python",
            plan=plan,
            options=options,
            host_port=port,
            spec=None,
            command=command,
        )

    async def _server_kind_for(self, image: str | None) -> str:
        """llama-cpp for the default images; an image's `podlab.server-kind` label wins."""
        if image is None:
            return "llama-cpp"
        if image == PODLAB_SERVER_IMAGE:
            return "llama-cpp-python"
        with contextlib.suppress(PodlabError, httpx.HTTPError):
            if self.engine.status.available:
                kind = (await self.engine.image_labels(image)).get("podlab.server-kind")
                if kind in SERVER_KINDS:
                    return kind
        return "llama-cpp"

    # ----------------------------------------------------------------- create / start

    async def create(
        self,
        model: str | Path,
        *,
        engine: str = "auto",
        gpu: str = "auto",
        options: ServiceOptions | None = None,
        server_kind: str | None = None,
        plan: PassthroughPlan | None = None,
        allow_cpu: bool = False,
        pull: bool = True,
    ) -> InferenceService:
        """Create the service without starting it (state STOPPED)."""
        async with self._create_lock:
            prepared = await self.prepare(
                model, engine=engine, gpu=gpu, options=options, server_kind=server_kind,
                plan=plan, allow_cpu=allow_cpu,
            )  # fmt: skip
            if prepared.engine == "podman":
                await self.engine.ensure()
            service = self._service_from_prepared(prepared)
            self._services[service.id] = service
        self._emit("added", service, "creating")
        try:
            if prepared.engine == "local":
                assert prepared.command is not None
                record = LocalRecord(
                    id=service.id,
                    name=service.name,
                    model_ref=service.model_ref,
                    model_file=service.model_file,
                    host=service.host,
                    port=service.port,
                    log_path=str(self.local.new_log_path(service.id)),
                    options=prepared.options.to_dict(),
                    command=prepared.command,
                    gpu_vendor=service.gpu_vendor,
                )
                await asyncio.to_thread(self.local.save, record)
                service.log_path = record.log_path
            else:
                await self._create_container(service, prepared, pull=pull)
        except BaseException as exc:
            self._services.pop(service.id, None)
            self._emit("removed", service, f"create failed: {exc}")
            raise
        self._set_state(service, ServiceState.STOPPED, "created")
        return service

    def _service_from_prepared(self, prepared: PreparedService) -> InferenceService:
        options = prepared.options
        host = endpoint_host(options.bind_address or LOOPBACK)
        if prepared.spec is None:
            name = f"podlab-{slug(prepared.model.ref)}-{prepared.service_id}"
        else:
            name = prepared.spec.name or prepared.service_id
        return InferenceService(
            id=prepared.service_id,
            name=name,
            engine=prepared.engine,
            model_ref=prepared.model.ref,
            model_file=str(prepared.model.path),
            server_kind=prepared.server_kind,
            host=host,
            port=prepared.host_port,
            state=ServiceState.CREATING,
            options=options,
            gpu_vendor=prepared.plan.passthrough.vendor,
            diagnosis=prepared.plan.diagnosis,
            image=prepared.spec.image if prepared.spec else None,
            spec=prepared.spec,
        )

    async def _create_container(
        self, service: InferenceService, prepared: PreparedService, *, pull: bool
    ) -> None:
        await self.engine.ensure()
        spec = prepared.spec
        assert spec is not None
        if not await self.engine.image_exists(spec.image):
            if not pull:
                raise PodlabError(f"image {spec.image} is not present", hint="podman pull it")
            self._emit("changed", service, f"pulling {spec.image}")
            async for line in self.engine.pull(spec.image):
                self._emit("changed", service, line)
        client = self.engine.client()
        container = await self.engine.call(client.containers.create, **spec.to_podman_kwargs())
        service.container_id = str(container.id)
        self._containers[service.id] = container

    async def start(
        self,
        service: InferenceService | str,
        *,
        wait: bool = True,
        ready_timeout: float | None = None,
    ) -> InferenceService:
        """Start and (with wait) return once it answers; PodlabError with the log tail if not."""
        service = await self._resolve(service)
        if service.state.running:
            if not wait or service.state == ServiceState.READY:
                return service
            return await self.wait_until_ready(service, ready_timeout=ready_timeout)
        service.error = ""
        self._set_state(service, ServiceState.STARTING, "starting")
        try:
            if service.engine == "local":
                record = self._record(service)
                if self.local.is_alive(record):
                    await self.local.terminate(record)
                if not await asyncio.to_thread(Path(service.model_file).is_file):
                    raise PodlabError(f"the model file {service.model_file} is gone")
                service.pid = await asyncio.to_thread(self.local.spawn, record)
            else:
                await self.engine.ensure()
                container = await self._container(service)
                await self.engine.call(container.start)
        except PodlabError as exc:
            service.error = exc.message
            self._set_state(service, ServiceState.FAILED, exc.message)
            raise
        if not wait:
            return service
        await self.wait_until_ready(service, ready_timeout=ready_timeout)
        return service

    async def wait_until_ready(
        self, service: InferenceService, *, ready_timeout: float | None = None
    ) -> InferenceService:
        within = self.ready_timeout if ready_timeout is None else ready_timeout
        self._emit("changed", service, "waiting for the server to answer")
        try:
            await wait_ready(service.endpoint, within=within, dead=lambda: self._why_dead(service))
        except (TimeoutError, RuntimeError) as exc:
            tail = await self.log_text(service, tail=LOG_TAIL_LINES)
            reason = str(exc) or type(exc).__name__
            service.error = f"{service.name} did not start: {reason}"
            self._set_state(service, ServiceState.FAILED, service.error)
            hint = f"last lines of the server log:\n{tail}" if tail else "the server wrote no log"
            raise PodlabError(service.error, hint=hint) from exc
        # Which device the server really uses, from its log (~60 ms): known when READY is.
        await self._read_device(service)
        self._set_state(service, ServiceState.READY, f"ready at {service.api_url}")
        return service

    async def read_device(self, service: InferenceService) -> str:
        """The device the server really uses ("GPU", "GPU+CPU", "CPU", "unknown"); read from
        its log when not known yet (e.g. for a service found again after a restart)."""
        if service.device == "unknown" and service.state.running:
            await self._read_device(service)
        return service.device

    async def _why_dead(self, service: InferenceService) -> str | None:
        if service.engine == "local":
            record = self._record(service)
            if self.local.is_alive(record):
                return None
            code = self.local.exit_code(record)
            return "the server exited" + (f" with code {code}" if code is not None else "")
        assert service.container_id is not None
        try:
            state = await self.engine.container_state(service.container_id)
        except httpx.HTTPError as exc:
            return f"lost Podman: {exc}"
        if state is None:
            return "the container was removed"
        if state.get("Running"):
            return None
        return f"the server exited with code {state.get('ExitCode')}"

    async def _read_device(self, service: InferenceService) -> None:
        text = await self.log_text(service, tail=None)
        offload = parse_offload(text)
        service.offload = offload
        service.device = device_of(offload)

        wanted_gpu = service.gpu_vendor not in ("none", "")
        if wanted_gpu and offload.where == "cpu":
            service.diagnosis = Diagnosis(
                "warning",
                f"A {service.gpu_vendor} GPU was passed to the server but it runs on the CPU "
                "(its log shows no layer offloaded)",
                fix="check that the image has the GPU build of llama.cpp (settings: "
                "server_images) and that GPU layers is not 0",
            )

    async def serve(
        self,
        model: str | Path,
        *,
        engine: str = "auto",
        gpu: str = "auto",
        options: ServiceOptions | None = None,
        server_kind: str | None = None,
        plan: PassthroughPlan | None = None,
        allow_cpu: bool = False,
        wait: bool = True,
        ready_timeout: float | None = None,
    ) -> InferenceService:
        """create() then start(): the service keeps running after this returns."""
        service = await self.create(
            model, engine=engine, gpu=gpu, options=options, server_kind=server_kind,
            plan=plan, allow_cpu=allow_cpu,
        )  # fmt: skip
        return await self.start(service, wait=wait, ready_timeout=ready_timeout)

    # ----------------------------------------------------------------- stop / restart / delete

    async def stop(self, service: InferenceService | str, grace: int = 10) -> InferenceService:
        """Stop (SIGTERM, SIGKILL after `grace` seconds); the service can start again."""
        service = await self._resolve(service)
        if service.engine == "local":
            await self.local.terminate(self._record(service), grace=grace)
        else:
            container = await self._container(service)
            await self.engine.call(container.stop, timeout=grace)
        service.pid = None if service.engine == "local" else service.pid
        self._set_state(service, ServiceState.STOPPED, "stopped")
        return service

    async def restart(
        self,
        service: InferenceService | str,
        *,
        wait: bool = True,
        ready_timeout: float | None = None,
    ) -> InferenceService:
        service = await self._resolve(service)
        if service.state.running:
            await self.stop(service)
        return await self.start(service, wait=wait, ready_timeout=ready_timeout)

    async def delete(self, service: InferenceService | str) -> None:
        """Stop and remove the container (with its anonymous volumes) or the local record."""
        service = await self._resolve(service)
        if service.engine == "local":
            record = self._record(service)
            await self.local.terminate(record)
            await asyncio.to_thread(self.local.forget, record)
        else:
            container = await self._container(service)
            await self.engine.call(container.remove, force=True, v=True)
        self._services.pop(service.id, None)
        self._containers.pop(service.id, None)
        self._misses.pop(service.id, None)
        self._emit("removed", service, "removed")

    # ----------------------------------------------------------------- finding services

    async def list_services(self) -> list[InferenceService]:
        """Every Podlab service of both engines, found again from labels and records."""
        found: dict[str, InferenceService] = {}
        self.engine_problem = ""
        status = self.engine.status
        if not status.available:
            status = await self.engine.connect()
        if status.available:
            try:
                for service in await self._podman_services():
                    found[service.id] = service
            except PodlabError as exc:
                self.engine_problem = exc.message
        else:
            self.engine_problem = status.problem
        for service in await self._local_services():
            found[service.id] = service
        for gone in set(self._services) - set(found):
            self._misses.pop(gone, None)
            old = self._services.pop(gone)
            if old.state != ServiceState.CREATING:
                self._emit("removed", old, "gone")
            else:
                self._services[gone] = old
        for sid, service in found.items():
            known = self._services.get(sid)
            if known is None:
                self._services[sid] = service
                if service.state == ServiceState.READY:
                    await self._read_device(service)
                self._emit("added", service, "found")
            else:
                self._merge(known, service)
        return sorted(self._services.values(), key=lambda s: s.created)

    def _merge(self, known: InferenceService, fresh: InferenceService) -> None:
        """Take what a listing found into the known service, emitting "changed" if it did.

        The listing's STARTING means "runs, but did not pass its check within
        `probe_timeout`" (see `_probe`). For a READY service that is not a state change on its
        own (a server under load can miss one): it stays READY until `ready_misses`
        consecutive checks failed. A container or process that no longer runs, or was
        replaced by another process, changes the state at once.
        """
        replaced = known.pid is not None and fresh.pid is not None and known.pid != fresh.pid
        if fresh.state == ServiceState.READY or not fresh.state.running or replaced:
            self._misses.pop(known.id, None)
        elif known.state == ServiceState.READY:
            misses = self._misses.get(known.id, 0) + 1
            self._misses[known.id] = misses
            if misses < self.ready_misses:
                fresh.state = ServiceState.READY
        changed = known.state != fresh.state
        if known.state == ServiceState.FAILED and not fresh.state.running:
            fresh.state = ServiceState.FAILED
            changed = False
        if known.state == ServiceState.STARTING and fresh.state == ServiceState.STARTING:
            changed = False
        known.state = fresh.state
        known.container_id = fresh.container_id or known.container_id
        known.pid = fresh.pid
        if changed:
            detail = known.state.value
            if known.state == ServiceState.STARTING and self._misses.get(known.id):
                detail = f"not answering ({self._misses[known.id]} readiness checks missed)"
            self._emit("changed", known, detail)

    async def get(self, ref: str) -> InferenceService:
        """A service by id, name or unique id prefix (of Podlab's services only)."""
        services = self._services if ref in self._services else None
        if services is None:
            await self.list_services()
            services = self._services
        if ref in services:
            return services[ref]
        matches = [s for s in services.values() if s.name == ref or s.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise PodlabError(f"no Podlab service {ref!r}", hint="see podlab services list")
        raise PodlabError(
            f"{ref!r} matches several services: {', '.join(s.id for s in matches)}",
            hint="give more of the id",
        )

    async def _resolve(self, service: InferenceService | str) -> InferenceService:
        if isinstance(service, InferenceService):
            return service
        return await self.get(service)

    async def _podman_services(self, probe: bool = True) -> list[InferenceService]:
        client = self.engine.client()
        containers = await self.engine.call(
            client.containers.list, all=True, filters={"label": f"{LABEL_MANAGED}=true"}
        )
        services: list[InferenceService] = []
        for container in containers:
            service = self._service_from_container(container.attrs)
            if service is not None:
                services.append(service)
        if probe:
            await self._probe(services)
        return services

    async def _probe(self, services: list[InferenceService]) -> None:
        """Check each running (STARTING) service of a listing, all at once; those that pass
        become READY.

        A service not known to be ready gets the readiness check (`/health`, else
        `/v1/models`, answering 200). One this manager already knows as READY, in the same
        container or process, only has to answer HTTP at all (`GET /health`: 200, or 404 from
        a server without that route): llama-cpp-python answers `/v1/models` only between two
        generations, and by default a request waiting for its model interrupts the answer it
        is streaming, so a refresh must never ask a busy server for it.
        """
        running = [s for s in services if s.state == ServiceState.STARTING]
        if not running:
            return
        limits = httpx.Limits(max_keepalive_connections=0)
        timeout = httpx.Timeout(self.probe_timeout)
        verify = ssl_context_for(running[0].endpoint)  # shared; none built for http://
        async with httpx.AsyncClient(timeout=timeout, limits=limits, verify=verify) as http:
            checks = [
                self._alive(http, s) if self._known_ready(s) else self._answers(http, s)
                for s in running
            ]
            answers = await asyncio.gather(*checks)
        for service, answered in zip(running, answers, strict=True):
            if answered:
                service.state = ServiceState.READY

    def _known_ready(self, fresh: InferenceService) -> bool:
        """This manager saw `fresh` READY, and it still runs in the same container/process."""
        known = self._services.get(fresh.id)
        return (
            known is not None
            and known.state == ServiceState.READY
            and known.engine == fresh.engine
            and (known.pid is None or fresh.pid is None or known.pid == fresh.pid)
            and (
                known.container_id is None
                or fresh.container_id is None
                or known.container_id == fresh.container_id
            )
        )

    @staticmethod
    async def _answers(http: httpx.AsyncClient, service: InferenceService) -> bool:
        for use_health in (True, False):
            if await probe_ready(http, service.endpoint, use_health) == 200:
                return True
        return False

    @staticmethod
    async def _alive(http: httpx.AsyncClient, service: InferenceService) -> bool:
        """The server's HTTP side answers (without touching its model; see `_probe`): 200,
        or a 404 (llama-cpp-python has no /health) or another client error; a 5xx (e.g.
        llama.cpp's 503 while it loads a model) or no answer within `probe_timeout` is not."""
        status = await probe_ready(http, service.endpoint, use_health=True)
        return status is not None and status < 500

    def _service_from_container(self, attrs: Mapping[str, Any]) -> InferenceService | None:
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
        )

    async def _local_services(self) -> list[InferenceService]:
        services: list[InferenceService] = []
        for record in await asyncio.to_thread(self.local.records):
            alive = self.local.is_alive(record)
            if alive:
                state = ServiceState.STARTING
            elif record.stopped:
                state = ServiceState.STOPPED
            else:
                state = ServiceState.EXITED
            service = InferenceService(
                id=record.id,
                name=record.name,
                engine="local",
                model_ref=record.model_ref,
                model_file=record.model_file,
                server_kind="llama-cpp-python",
                host=record.host,
                port=record.port,
                state=state,
                options=ServiceOptions.from_dict(record.options),
                gpu_vendor=record.gpu_vendor,
                pid=record.pid if alive else None,
                log_path=record.log_path,
                created=record.created,
            )
            services.append(service)
        await self._probe(services)
        return services

    def _record(self, service: InferenceService) -> LocalRecord:
        for record in self.local.records():
            if record.id == service.id:
                return record
        raise PodlabError(f"the local service {service.id} has no record any more")

    async def _container(self, service: InferenceService) -> Any:
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

    # ----------------------------------------------------------------- logs and stats

    async def logs(
        self, service: InferenceService | str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """The server's log lines; with follow, new ones until it stops (or the caller stops
        iterating)."""
        service = await self._resolve(service)
        if service.engine == "local":
            record = self._record(service)
            async for line in self.local.follow_log(record, follow=follow, tail=tail):
                yield line
            return
        await self.engine.ensure()
        if not service.container_id:
            raise PodlabError(f"service {service.id} has no container")
        lines = self.engine.container_logs(service.container_id, follow=follow, tail=tail)
        async for line in lines:
            yield line

    async def log_text(self, service: InferenceService, tail: int | None = 200) -> str:
        try:
            if service.engine == "local":
                return await asyncio.to_thread(self.local.log_text, self._record(service), tail)
            if not service.container_id:
                return ""
            return await self.engine.container_log_text(service.container_id, tail=tail)
        except (PodlabError, httpx.HTTPError):
            return ""

    async def stats(self, service: InferenceService | str) -> dict[str, Any]:
        """{"memory_bytes": int|None, "cpu_percent": float|None} of a running service."""
        service = await self._resolve(service)
        if service.engine == "local":
            return await self.local.stats(self._record(service))
        if not service.container_id or not service.state.running:
            return {"memory_bytes": None, "cpu_percent": None}
        return await self.engine.container_stats(service.container_id)

    def known(self) -> list[InferenceService]:
        """The services as last seen, without asking Podman (for views between refreshes)."""
        return sorted(self._services.values(), key=lambda s: s.created)


__all__ = [
    "CONTAINER_PORT",
    "ENGINE_CHOICES",
    "InferenceService",
    "PreparedService",
    "ResolvedModel",
    "ServiceEvent",
    "ServiceListener",
    "ServiceManager",
    "ServiceState",
    "build_model_server_image",
    "choose_port",
    "resolve_model",
    "wait_ready",
]
