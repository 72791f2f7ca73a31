"""Planning a service: what the user asks for (`ServeRequest`) becomes what will be created
(`PreparedService`), with no side effect, so `podlab serve --dry-run` shows it exactly.

The `Planner` resolves the model (a file, a store model or a catalog model), picks the engine
("auto": Podman when it answers, else the local engine), plans the GPU, chooses a free host port
and builds the container spec (Podman) or the command line (local engine).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shlex
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx

from podlab.core.errors import PodlabError
from podlab.core.serving.container_spec import (
    LOOPBACK,
    PODLAB_SERVER_IMAGE,
    SERVER_KINDS,
    ContainerSpec,
    ServiceOptions,
    model_server_spec,
    slug,
)
from podlab.core.serving.engine import Engine
from podlab.core.serving.gpu.detect import GpuReport
from podlab.core.serving.gpu.host import Diagnosis
from podlab.core.serving.gpu.passthrough import (
    GPU_LAYERS_ALL,
    Passthrough,
    PassthroughPlan,
    plan_passthrough,
)
from podlab.core.serving.inference import EngineName
from podlab.core.serving.keys import new_key
from podlab.core.serving.local_server import LocalEngine
from podlab.core.settings import Settings

ENGINE_CHOICES = ("auto", "podman", "local")
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
"""What Podman accepts as a container name (and a local service's name shares it)."""
DEFAULT_PORT_BASE = 35000
"""Podlab looks for free host ports upward from here (AI Lab does the same from its own base)."""


@dataclass(frozen=True)
class ServeRequest:
    """What the user asks for when serving a model: the one argument of `prepare`, `create`
    and `serve`, built by the CLI, the GUI and tests alike."""

    model: str | Path
    """A GGUF file or folder path, a downloaded model id, or a catalog model/variant id."""
    engine: str = "auto"
    """"auto", "podman" or "local"."""
    gpu: str = "auto"
    """"auto", "none" or a vendor (see `gpu.passthrough.WANTS`)."""
    options: ServiceOptions | None = None
    """Context size, port, image, GPU layers, threads, parallel slots, extra server arguments;
    None: the settings' defaults."""
    server_kind: str | None = None
    """None: from the image (its `podlab.server-kind` label)."""
    plan: PassthroughPlan | None = None
    """A GPU plan made already (e.g. shown to the user); None: planned from the host's GPUs."""
    allow_cpu: bool = False
    """The user agreed to run on the CPU when the GPU cannot be passed."""
    name: str | None = None
    """The service's name as the user gave it (letters, digits, '.', '_', '-'); None: Podlab
    names it after the model."""


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
    name: str
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
    api_key: str | None = field(default=None, repr=False)
    """The bearer key the server will require (None when the setting require_api_key is off)."""


ROOT_USERS = ("", "0", "root", "0:0", "root:root")


async def require_model_readable(engine: Engine, image: str, model: Path) -> None:
    """Refuse, with the fix, a model that the image's server could not read.

    The model is bind-mounted with its host mode. An image that runs as a non-root user (as
    Podlab's own does) cannot read a file that only its owner may read, under rootful and
    rootless Podman alike, and the server would exit with a bare error code. An image that runs
    as root, or one not pulled yet (its user is unknown), is not checked.
    """
    user = await engine.image_user(image)
    if user is None or user in ROOT_USERS:
        return
    files = await asyncio.to_thread(_files_of, model)
    for file in files:
        mode = file.stat().st_mode
        if not mode & stat.S_IROTH:
            raise PodlabError(
                f"{file} can be read by its owner only (mode {stat.S_IMODE(mode):04o}), and "
                f"the model server in the container runs as another user ({user})",
                hint=f"make it readable: chmod a+r {shlex.quote(str(file))}"
                " (or serve it with the local engine)",
            )


def _files_of(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def resolve_model(ref: str | Path, settings: Settings | None = None) -> ResolvedModel:
    """A plain file or folder path, else a model of the store, else a catalog model/variant."""
    # Imported here: the catalog and the store are not needed to plan from a file path.
    from podlab.core.models.catalog import load_catalog
    from podlab.core.models.store import ModelStore, require_gguf

    settings = settings or Settings()
    path = Path(ref).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_file():
            require_gguf(path, "serve a GGUF model (llama.cpp format); convert other formats first")
        if path.is_file() or path.is_dir():
            name = path.name.removesuffix(".gguf") if path.is_file() else path.name
            return ResolvedModel(ref=name, path=path)
    text = str(ref)
    store = ModelStore.from_settings(settings)
    entry = store.get(text)
    catalog = load_catalog().catalog
    if entry is not None:
        properties: dict[str, str] = {}
        catalog_id: str | None = None
        if entry.catalog_id:
            model = catalog.model(entry.catalog_id)
            if model is not None:
                properties = dict(model.properties)
                catalog_id = model.id
        return ResolvedModel(entry.id, store.path_of(entry.id), properties, catalog_id)
    found = catalog.find_variant(text)
    if found is not None:
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
    suggestions = catalog.suggest(text)
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


PortsInUse = Callable[[], Awaitable[set[int]]]
"""The host ports Podlab's services of the chosen engine hold (asked only when a port is
chosen)."""


class Planner:
    """Turns a `ServeRequest` into a `PreparedService`; creates nothing."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        local: LocalEngine,
        gpu_report: Callable[[], Awaitable[GpuReport]],
        port_base: int = DEFAULT_PORT_BASE,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.local = local
        self.gpu_report = gpu_report
        self.port_base = port_base

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

    async def prepare(
        self,
        request: ServeRequest,
        engine: EngineName,
        ports_in_use: PortsInUse,
    ) -> PreparedService:
        """Resolve, plan and build the spec (or command) for `engine`.

        A GPU that is present but cannot be passed to a container (e.g. NVIDIA without a CDI
        spec) raises PodlabError with the fix, unless request.allow_cpu.
        """
        options = request.options
        if options is None:
            options = ServiceOptions(ctx_size=self.settings.default_context_size)
        if options.bind_address == LOOPBACK and self.settings.bind_address:
            options = replace(options, bind_address=self.settings.bind_address)
        resolved = await asyncio.to_thread(resolve_model, request.model, self.settings)
        if resolved.properties:
            options = replace(options, properties={**resolved.properties, **options.properties})
        if request.name is not None and not SERVICE_NAME.fullmatch(request.name):
            raise PodlabError(
                f"{request.name!r} cannot name a service",
                hint="use letters, digits, '.', '_' and '-', starting with a letter or digit",
            )
        service_id = secrets.token_hex(4)
        if engine == "local":
            prepared = await self._prepare_local(
                service_id, resolved, request, options, ports_in_use
            )
        else:
            prepared = await self._prepare_container(
                service_id, resolved, request, options, ports_in_use
            )
        prepared.api_key = new_key() if self.settings.require_api_key else None
        return prepared

    async def _prepare_container(
        self,
        service_id: str,
        resolved: ResolvedModel,
        request: ServeRequest,
        options: ServiceOptions,
        ports_in_use: PortsInUse,
    ) -> PreparedService:
        plan = request.plan
        if plan is None:
            plan = plan_passthrough(await self.gpu_report(), request.gpu)
        if plan.diagnosis.level == "error" and not request.allow_cpu:
            fix = plan.diagnosis.fix or ""
            raise PodlabError(
                plan.diagnosis.message,
                hint=(fix + "; " if fix else "") + "or run on the CPU: --gpu none",
            )
        if not self.engine.status.available:
            await self.engine.connect()
        kind = request.server_kind or await self._server_kind_for(options.image)
        if kind not in SERVER_KINDS:
            raise PodlabError(
                f"unknown server kind {kind!r}", hint=f"use one of {', '.join(SERVER_KINDS)}"
            )
        reserved = await ports_in_use()
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
            name=request.name,
            require_api_key=self.settings.require_api_key,
        )
        await require_model_readable(self.engine, spec.image, resolved.path)
        return PreparedService(
            service_id=service_id,
            name=spec.name or service_id,
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
        request: ServeRequest,
        options: ServiceOptions,
        ports_in_use: PortsInUse,
    ) -> PreparedService:
        if request.server_kind not in (None, "llama-cpp-python"):
            raise PodlabError("the local engine runs llama-cpp-python only")
        usable, why = self.local.available()
        if not usable:
            raise PodlabError("the local engine is not available", hint=why)
        if not resolved.path.is_file():
            raise PodlabError(f"the local engine serves GGUF files; {resolved.path} is not one")
        # No container: llama-cpp-python uses a GPU when it was built for one; the CDI and
        # device questions of Podman do not arise.
        report = await self.gpu_report()
        gpu = request.gpu
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
        reserved = await ports_in_use()
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
            name=request.name or f"podlab-{slug(resolved.ref)}-{service_id}",
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
