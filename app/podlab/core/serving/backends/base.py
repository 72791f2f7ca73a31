"""What `ServiceManager` needs from a place that runs inference services.

A backend owns its containers or processes: it creates, starts, stops and removes them, reads
their logs and resource use, finds them again after a restart and says why one died. States,
events, readiness and the device reading are the manager's, the same for every backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from podlab.core.serving.inference import EngineName, InferenceService
from podlab.core.serving.planning import PreparedService

Progress = Callable[[str], None]
"""One line for people while a backend creates a service ("pulling IMAGE", a pull line)."""


@dataclass
class Listing:
    """What a backend found: its services (STARTING while they run: the manager checks which
    answer), and why it could not look ("" when it could)."""

    services: list[InferenceService] = field(default_factory=list)
    problem: str = ""


class ServiceBackend(Protocol):
    name: EngineName

    async def ensure_reachable(self) -> None:
        """Raise PodlabError when nothing can be created now (e.g. Podman is not running)."""
        ...

    async def create(
        self,
        service: InferenceService,
        prepared: PreparedService,
        *,
        pull: bool,
        progress: Progress,
    ) -> None:
        """Make the container or record of a prepared service, without starting it."""
        ...

    async def start(self, service: InferenceService) -> None:
        """Start it (PodlabError when it cannot); readiness is the manager's to wait for."""
        ...

    async def stop(self, service: InferenceService, grace: int) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds."""
        ...

    async def remove(self, service: InferenceService) -> None:
        """Stop it and remove what `create` made."""
        ...

    def logs(
        self, service: InferenceService, *, follow: bool, tail: int | None
    ) -> AsyncIterator[str]:
        """The server's log lines; with follow, new ones until it stops."""
        ...

    async def log_text(self, service: InferenceService, tail: int | None) -> str:
        """The log as one text (PodlabError or httpx.HTTPError when it cannot be read)."""
        ...

    async def stats(self, service: InferenceService) -> dict[str, Any]:
        """{"memory_bytes": int|None, "cpu_percent": float|None}."""
        ...

    async def listing(self) -> Listing:
        """Every service of this backend, found again from labels or records."""
        ...

    async def ports_in_use(self) -> set[int]:
        """Host ports its services hold (so that a new service picks another)."""
        ...

    async def why_dead(self, service: InferenceService) -> str | None:
        """Why a service that should be starting is gone (None while it runs)."""
        ...
