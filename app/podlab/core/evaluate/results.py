"""The records of an evaluation: a run (its whole configuration), its cells (one model x
quantization x image x context size each) and the answer of every cell to every item.

Plain data shared by the store, the runner, the statistics and the exports, so that each of
them reads the same fields under the same names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from podlab.core.evaluate.promptset import PromptSet

RunStatus = Literal["pending", "running", "paused", "finished", "cancelled", "failed"]
CellStatus = Literal["pending", "running", "done", "failed", "cancelled"]
ItemStatus = Literal["done", "failed"]
Backend = Literal["local", "podman", "endpoint"]
TimingSource = Literal["server", "client"]
FINISHED_CELL_STATES: frozenset[str] = frozenset({"done", "failed"})


@dataclass(frozen=True)
class CellSpec:
    """What one cell serves. `model` is a downloaded model, a catalog id or a file (local and
    podman backends) or an OpenAI-compatible URL (endpoint backend); None fields mean the
    backend's default."""

    model: str
    backend: Backend = "local"
    quant: str | None = None
    image: str | None = None
    ctx: int | None = None

    @property
    def label(self) -> str:
        """A short name for tables and charts: "model · Q4_K_M · cuda · 4096 · podman" (a
        model file by its name, not its whole path)."""
        model = self.model
        if "/" in model and "://" not in model:
            model = model.rstrip("/").rsplit("/", 1)[-1]
        parts = [model, self.quant, self.image, str(self.ctx) if self.ctx else None]
        return " · ".join(part for part in (*parts, self.backend) if part)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CellSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass
class RunConfig:
    """Everything that decides a run's results, stored with it so a result can be reproduced
    and a resumed run goes on with exactly the same settings."""

    prompt_set: PromptSet
    cells: list[CellSpec]
    params: dict[str, Any] = field(default_factory=dict)
    """GenerationParams.to_dict(): temperature 0 and a seed unless the user changed them."""
    judge: dict[str, Any] | None = None
    """JudgeConfig.to_dict() (no API key), or None."""
    podlab_version: str = ""
    item_timeout_s: float = 120.0
    ready_timeout_s: float = 180.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_set": self.prompt_set.to_dict(),
            "cells": [cell.to_dict() for cell in self.cells],
            "params": dict(self.params),
            "judge": self.judge,
            "podlab_version": self.podlab_version,
            "item_timeout_s": self.item_timeout_s,
            "ready_timeout_s": self.ready_timeout_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        return cls(
            prompt_set=PromptSet.from_dict(data["prompt_set"]),
            cells=[CellSpec.from_dict(cell) for cell in data.get("cells") or ()],
            params=dict(data.get("params") or {}),
            judge=data.get("judge"),
            podlab_version=str(data.get("podlab_version") or ""),
            item_timeout_s=float(data.get("item_timeout_s") or 120.0),
            ready_timeout_s=float(data.get("ready_timeout_s") or 180.0),
        )


@dataclass(frozen=True)
class RunRecord:
    """A stored run. `owner_pid`: the process running it now (a stale one means it was killed
    and can be resumed)."""

    id: int
    created: float
    updated: float
    status: RunStatus
    config: RunConfig
    error: str = ""
    owner_pid: int | None = None

    @property
    def set_name(self) -> str:
        return self.config.prompt_set.name

    @property
    def set_sha256(self) -> str:
        return self.config.prompt_set.sha256


@dataclass(frozen=True)
class CellRecord:
    """One cell of a run and what was learnt about its server while it ran."""

    id: int
    run_id: int
    position: int
    spec: CellSpec
    status: CellStatus = "pending"
    error: str = ""
    model_sha256: str | None = None
    image_digest: str | None = None
    endpoint: str | None = None
    peak_memory_bytes: int | None = None
    memory_source: str | None = None
    """How the memory was read: "process RSS" (local engine) or "container stats" (Podman)."""
    energy_j: float | None = None
    energy_source: str | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def label(self) -> str:
        return self.spec.label


@dataclass(frozen=True)
class ItemRecord:
    """One cell's answer to one item with its score and timings.

    pp/tg in llama-bench's terms: `prompt_tokens` over `prompt_ms` and `gen_tokens` over
    `gen_ms`; `timing_source` "server" when llama.cpp's `timings` gave them, else "client"
    (prompt time = time to first token, generation time = first to last token).
    """

    cell_id: int
    item_id: str
    position: int
    status: ItemStatus
    answer: str = ""
    scorer: str = ""
    score: float | None = None
    score_state: str = "scored"
    score_detail: str = ""
    error: str = ""
    ttft_ms: float | None = None
    total_ms: float | None = None
    prompt_tokens: int | None = None
    prompt_ms: float | None = None
    gen_tokens: int | None = None
    gen_ms: float | None = None
    completion_tokens: int | None = None
    """Every token of the answer (`gen_tokens` leaves out the first on the client side, whose
    time is in the time to first token)."""
    timing_source: TimingSource | None = None
    finish_reason: str | None = None
