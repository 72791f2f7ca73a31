"""The local backend: each service is a llama-cpp-python subprocess with a JSON record.

The processes, records and log files are `LocalEngine`'s; this backend maps them to services.
Servers are found again after a restart through their records (see `local_server`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from podlab.core.errors import PodlabError
from podlab.core.serving.backends.base import Listing, Progress
from podlab.core.serving.container_spec import ServiceOptions
from podlab.core.serving.crash import describe_exit
from podlab.core.serving.inference import EngineName, InferenceService, ServiceState
from podlab.core.serving.local_server import LocalEngine, LocalRecord
from podlab.core.serving.planning import PreparedService


class LocalBackend:
    """Services as local llama-cpp-python servers (no container, no Podman)."""

    name: EngineName = "local"

    def __init__(self, local: LocalEngine) -> None:
        self.local = local

    async def ensure_reachable(self) -> None:
        """Nothing to reach: planning checked that llama-cpp-python is installed."""

    async def create(
        self,
        service: InferenceService,
        prepared: PreparedService,
        *,
        pull: bool,
        progress: Progress,
    ) -> None:
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

    async def start(self, service: InferenceService) -> None:
        record = self._record(service)
        if self.local.is_alive(record):
            await self.local.terminate(record)
        if not await asyncio.to_thread(Path(service.model_file).is_file):
            raise PodlabError(f"the model file {service.model_file} is gone")
        service.pid = await asyncio.to_thread(self.local.spawn, record, service.api_key)

    async def stop(self, service: InferenceService, grace: int) -> None:
        await self.local.terminate(self._record(service), grace=grace)
        service.pid = None

    async def remove(self, service: InferenceService) -> None:
        record = self._record(service)
        await self.local.terminate(record)
        await asyncio.to_thread(self.local.forget, record)

    async def logs(
        self, service: InferenceService, *, follow: bool, tail: int | None
    ) -> AsyncIterator[str]:
        record = self._record(service)
        async for line in self.local.follow_log(record, follow=follow, tail=tail):
            yield line

    async def log_text(self, service: InferenceService, tail: int | None) -> str:
        return await asyncio.to_thread(self.local.log_text, self._record(service), tail)

    async def stats(self, service: InferenceService) -> dict[str, Any]:
        return await self.local.stats(self._record(service))

    async def listing(self) -> Listing:
        services: list[InferenceService] = []
        for record in await asyncio.to_thread(self.local.records):
            alive = self.local.is_alive(record)
            if alive:
                state = ServiceState.STARTING
            elif record.stopped:
                state = ServiceState.STOPPED
            else:
                state = ServiceState.EXITED
            died = await self._exit_reason(record) if state == ServiceState.EXITED else ""
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
                error=died,
            )
            services.append(service)
        return Listing(services)

    async def ports_in_use(self) -> set[int]:
        return {record.port for record in self.local.records()}

    async def why_dead(self, service: InferenceService) -> str | None:
        record = self._record(service)
        if self.local.is_alive(record):
            return None
        return "the server " + await self._exit_reason(record)

    async def _exit_reason(self, record: LocalRecord) -> str:
        """How a local server ended: its exit status when this process started it, else the
        crash its log reports (see `crash`)."""
        code = self.local.exit_code(record)
        log = "" if code is not None else await asyncio.to_thread(self.local.log_text, record, 200)
        return describe_exit(code, log_text=log)

    def _record(self, service: InferenceService) -> LocalRecord:
        for record in self.local.records():
            if record.id == service.id:
                return record
        raise PodlabError(f"the local service {service.id} has no record any more")
