"""An inference service as plain data: one served model, its state and where it answers.

Both backends (Podman containers, local processes) describe what they run with
`InferenceService`; `ServiceManager` keeps these objects up to date and emits events about them.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from podlab.core.serving.container_spec import ContainerSpec, ServiceOptions
from podlab.core.serving.gpu.host import Diagnosis
from podlab.core.serving.offload import OffloadInfo

EngineName = Literal["podman", "local"]


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
    api_key: str | None = field(default=None, repr=False)
    """The bearer key the server requires (None: it requires none); never in `to_dict`."""

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
