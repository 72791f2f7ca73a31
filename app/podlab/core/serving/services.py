"""Inference services: one model served over an OpenAI-compatible API, in Podman or locally.

`ServiceManager` is what the GUI's Services page and `podlab serve` / `podlab services` use:

* `prepare(request)` resolves the model, plans the GPU and builds the `ContainerSpec` (no side
  effect: `--dry-run` prints it; see `planning`); `create(request)` creates the container (or
  the local record) and `start()` starts it and waits until it answers 200 on the route its server
  kind has (`readiness_path`), failing with the server's log tail when it exits or times out.
  `serve(request)` is both.
* `stop()`, `restart()`, `delete()`, `list_services()`, `get()`, `logs()` (an async iterator,
  `follow` included) and `stats()` work the same for both engines: each engine is a backend
  (`backends.podman`, `backends.local`) and the manager keeps what they share (states, events,
  readiness, the device reading).
* Every change is an event: `subscribe(listener)` gets a `ServiceEvent` (added, changed,
  removed) with the service; listeners are plain callables, the Qt layer turns them into
  signals.

After a start, the server's log says where the layers went (`offload.parse_offload`): the service
reports the device actually in use ("GPU", "GPU+CPU", "CPU"), and a GPU that was asked for but
not used becomes a warning diagnosis instead of a silent CPU fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from podlab.core.errors import PodlabError
from podlab.core.http import ssl_context_for
from podlab.core.paths import Locations
from podlab.core.serving.backends.base import ServiceBackend
from podlab.core.serving.backends.local import LocalBackend
from podlab.core.serving.backends.podman import PodmanBackend
from podlab.core.serving.container_spec import LOOPBACK, endpoint_host
from podlab.core.serving.engine import Engine
from podlab.core.serving.gpu.detect import GpuReport, detect_gpus
from podlab.core.serving.gpu.host import Diagnosis, HostProbe
from podlab.core.serving.inference import EngineName, InferenceService, ServiceState
from podlab.core.serving.keys import ServiceKeys
from podlab.core.serving.local_server import LocalEngine
from podlab.core.serving.offload import device_of, parse_offload
from podlab.core.serving.planning import (
    DEFAULT_PORT_BASE,
    Planner,
    PreparedService,
    ServeRequest,
)
from podlab.core.settings import Settings

READY_TIMEOUT = 180.0
LOG_TAIL_LINES = 25
PROBE_TIMEOUT = 2.0
"""Seconds a readiness check of `list_services()` waits for an answer."""
READY_MISSES = 3
"""Consecutive unanswered readiness checks before a READY service whose container or process
still runs reads as STARTING again (one slow answer under load is not a state change)."""


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


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The header a service's own key goes in (none when it requires none)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def readiness_path(server_kind: str) -> str:
    """The route that answers 200 once the model is loaded. llama-cpp-python has no /health
    (probing it would log a 404 every time); llama-server and vLLM have it."""
    return "/v1/models" if server_kind == "llama-cpp-python" else "/health"


def liveness_path(server_kind: str) -> str:
    """A route that answers without touching the model (see `ServiceManager._probe`):
    llama-cpp-python's /v1/models waits for its model lock, its /docs page does not."""
    return "/docs" if server_kind == "llama-cpp-python" else "/health"


async def probe_ready(
    client: httpx.AsyncClient, endpoint: str, path: str, api_key: str | None = None
) -> int | None:
    """One probe of `path`, with the service's key: returns its status (None when nothing
    answered)."""
    try:
        response = await client.get(f"{endpoint}{path}", headers=auth_headers(api_key))
    except httpx.HTTPError:
        return None
    return response.status_code


async def wait_ready(
    endpoint: str,
    *,
    within: float,
    dead: Callable[[], Awaitable[str | None]],
    server_kind: str = "llama-cpp",
    interval: float = 0.05,
    check_every: float = 0.5,
    api_key: str | None = None,
) -> None:
    """Poll the server kind's `readiness_path` until 200 (an image without /health that
    answers it 404 is asked /v1/models instead).

    `dead()` says why the server is gone (or None); it is asked every `check_every` seconds.
    Raises TimeoutError or RuntimeError(reason).
    """
    deadline = time.monotonic() + within
    next_check = time.monotonic() + check_every
    path = readiness_path(server_kind)
    limits = httpx.Limits(max_keepalive_connections=0)
    timeouts = httpx.Timeout(5.0, connect=1.0)
    verify = ssl_context_for(endpoint)  # shared; loads no certificates for http://
    async with httpx.AsyncClient(timeout=timeouts, limits=limits, verify=verify) as client:
        while True:
            status = await probe_ready(client, endpoint, path, api_key)
            if status == 200:
                return
            if path == "/health" and status == 404:
                path = "/v1/models"
                status = await probe_ready(client, endpoint, path, api_key)
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
        self.ready_timeout = ready_timeout
        self.probe_timeout = probe_timeout
        self.ready_misses = max(1, ready_misses)
        self.keys = ServiceKeys(self.locations)
        self.planner = Planner(self.settings, self.engine, self.local, self.gpu_report, port_base)
        self.backends: dict[EngineName, ServiceBackend] = {
            "podman": PodmanBackend(self.engine),
            "local": LocalBackend(self.local),
        }
        self._services: dict[str, InferenceService] = {}
        self._misses: dict[str, int] = {}
        """Consecutive unanswered readiness checks of READY services that still run."""
        self._listeners: list[ServiceListener] = []
        self._create_lock = asyncio.Lock()
        self._gpu_report: GpuReport | None = None
        self.engine_problem: str = ""
        """Why Podman services could not be listed at the last `list_services()` ("" if none)."""

    @property
    def port_base(self) -> int:
        """Where the search for a free host port starts."""
        return self.planner.port_base

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
        """The engine "auto" means here: Podman when it answers, else the local engine."""
        return await self.planner.resolve_engine(engine)

    async def prepare(self, request: ServeRequest) -> PreparedService:
        """Resolve, plan and build the spec; creates nothing (see `Planner.prepare`)."""
        engine = await self.resolve_engine(request.engine)
        backend = self.backends[engine]

        async def ports_in_use() -> set[int]:
            return {s.port for s in self._services.values()} | await backend.ports_in_use()

        return await self.planner.prepare(request, engine, ports_in_use)

    # ----------------------------------------------------------------- create / start

    async def create(self, request: ServeRequest, *, pull: bool = True) -> InferenceService:
        """Create the service without starting it (state STOPPED)."""
        async with self._create_lock:
            prepared = await self.prepare(request)
            backend = self.backends[prepared.engine]
            await backend.ensure_reachable()
            service = self._service_from_prepared(prepared)
            if prepared.api_key:
                await asyncio.to_thread(self.keys.save, service.endpoint, prepared.api_key)
            self._services[service.id] = service
        self._emit("added", service, "creating")
        try:
            await backend.create(
                service,
                prepared,
                pull=pull,
                progress=lambda line: self._emit("changed", service, line),
            )
        except BaseException as exc:
            self._services.pop(service.id, None)
            self._emit("removed", service, f"create failed: {exc}")
            raise
        self._set_state(service, ServiceState.STOPPED, "created")
        return service

    @staticmethod
    def _service_from_prepared(prepared: PreparedService) -> InferenceService:
        options = prepared.options
        return InferenceService(
            id=prepared.service_id,
            name=prepared.name,
            engine=prepared.engine,
            model_ref=prepared.model.ref,
            model_file=str(prepared.model.path),
            server_kind=prepared.server_kind,
            host=endpoint_host(options.bind_address or LOOPBACK),
            port=prepared.host_port,
            state=ServiceState.CREATING,
            options=options,
            gpu_vendor=prepared.plan.passthrough.vendor,
            diagnosis=prepared.plan.diagnosis,
            image=prepared.spec.image if prepared.spec else None,
            spec=prepared.spec,
            api_key=prepared.api_key,
        )

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
            await self._backend(service).start(service)
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
            await wait_ready(
                service.endpoint,
                within=within,
                dead=lambda: self._backend(service).why_dead(service),
                server_kind=service.server_kind,
                api_key=service.api_key,
            )
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
        self, request: ServeRequest, *, wait: bool = True, ready_timeout: float | None = None
    ) -> InferenceService:
        """create() then start(): the service keeps running after this returns."""
        service = await self.create(request)
        return await self.start(service, wait=wait, ready_timeout=ready_timeout)

    # ----------------------------------------------------------------- stop / restart / delete

    async def stop(self, service: InferenceService | str, grace: int = 10) -> InferenceService:
        """Stop (SIGTERM, SIGKILL after `grace` seconds); the service can start again."""
        service = await self._resolve(service)
        await self._backend(service).stop(service, grace)
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
        await self._backend(service).remove(service)
        await asyncio.to_thread(self.keys.delete, service.endpoint)
        self._services.pop(service.id, None)
        self._misses.pop(service.id, None)
        self._emit("removed", service, "removed")

    # ----------------------------------------------------------------- finding services

    def _backend(self, service: InferenceService) -> ServiceBackend:
        return self.backends[service.engine]

    async def list_services(self) -> list[InferenceService]:
        """Every Podlab service of both engines, found again from labels and records."""
        found: dict[str, InferenceService] = {}
        problems: list[str] = []
        for backend in self.backends.values():
            listing = await backend.listing()
            if listing.problem:
                problems.append(listing.problem)
            for service in listing.services:
                service.api_key = await asyncio.to_thread(self.keys.get, service.endpoint)
            await self._probe(listing.services)
            for service in listing.services:
                found[service.id] = service
        self.engine_problem = problems[0] if problems else ""
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
        if fresh.state == ServiceState.EXITED and fresh.error:
            known.error = fresh.error
        known.container_id = fresh.container_id or known.container_id
        known.api_key = fresh.api_key or known.api_key
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

    async def _probe(self, services: list[InferenceService]) -> None:
        """Check each running (STARTING) service of a listing, all at once; those that pass
        become READY.

        A service not known to be ready gets the readiness check (`readiness_path`, else
        `/v1/models`, answering 200). One this manager already knows as READY, in the same
        container or process, only has to answer HTTP at all (`liveness_path`, a route that
        does not touch the model): llama-cpp-python answers `/v1/models` only between two
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
        paths = dict.fromkeys((readiness_path(service.server_kind), "/v1/models"))
        for path in paths:
            if await probe_ready(http, service.endpoint, path, service.api_key) == 200:
                return True
        return False

    @staticmethod
    async def _alive(http: httpx.AsyncClient, service: InferenceService) -> bool:
        """The server's HTTP side answers (without touching its model; see `_probe`): 200,
        or a client error (e.g. a 404 from a custom image without the route); a 5xx (e.g.
        llama.cpp's 503 while it loads a model) or no answer within `probe_timeout` is not."""
        path = liveness_path(service.server_kind)
        status = await probe_ready(http, service.endpoint, path, service.api_key)
        return status is not None and status < 500

    # ----------------------------------------------------------------- logs and stats

    async def logs(
        self, service: InferenceService | str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[str]:
        """The server's log lines; with follow, new ones until it stops (or the caller stops
        iterating)."""
        service = await self._resolve(service)
        async for line in self._backend(service).logs(service, follow=follow, tail=tail):
            yield line

    async def log_text(self, service: InferenceService, tail: int | None = 200) -> str:
        try:
            return await self._backend(service).log_text(service, tail)
        except (PodlabError, httpx.HTTPError):
            return ""

    async def stats(self, service: InferenceService | str) -> dict[str, Any]:
        """{"memory_bytes": int|None, "cpu_percent": float|None} of a running service."""
        service = await self._resolve(service)
        return await self._backend(service).stats(service)

    def known(self) -> list[InferenceService]:
        """The services as last seen, without asking Podman (for views between refreshes)."""
        return sorted(self._services.values(), key=lambda s: s.created)


__all__ = [
    "ServiceEvent",
    "ServiceListener",
    "ServiceManager",
    "liveness_path",
    "readiness_path",
    "wait_ready",
]
