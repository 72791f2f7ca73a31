"""What the catalog knows about a model: plain, immutable data shared by every layer.

A model (e.g. "Qwen3 4B") has one or more variants, one per downloadable file (usually one per
quantization). Unknown facts are None: the catalog never invents a value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CAPABILITIES = ("chat", "completion", "embedding", "tools", "reasoning", "vision")
BACKENDS = ("llama-cpp", "vllm", "whisper-cpp", "openvino", "none")


@dataclass(frozen=True)
class ModelVariant:
    """One downloadable file of a model."""

    id: str
    """Unique across the catalog, e.g. "qwen3-4b:Q4_K_M"; safe as a path component."""
    url: str
    """https:// URL pinned to a revision, or hf://org/repo/file (resolved by the downloader)."""
    file_name: str
    """Name the file is stored under; never contains '/' or '..'."""
    quantization: str | None = None
    sha256: str | None = None
    size: int | None = None
    """Bytes."""
    memory: int | None = None
    """Bytes of RAM the publisher says it needs, when published."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (unknown values stay None)."""
        return {
            "id": self.id,
            "url": self.url,
            "file_name": self.file_name,
            "quantization": self.quantization,
            "sha256": self.sha256,
            "size": self.size,
            "memory": self.memory,
        }


@dataclass(frozen=True)
class ModelInfo:
    """One model of the catalog with its variants."""

    id: str
    name: str
    description: str = ""
    """Markdown model card."""
    publisher: str | None = None
    license: str | None = None
    """SPDX identifier where one exists (e.g. Apache-2.0), else the license's own name."""
    parameters: int | None = None
    """Parameter count."""
    context_length: int | None = None
    architecture: str | None = None
    backend: str = "llama-cpp"
    capabilities: tuple[str, ...] = ()
    properties: dict[str, str] = field(default_factory=dict)
    """Server hints (chatFormat, jinja, ...) that become MODEL_* env vars of the server."""
    variants: tuple[ModelVariant, ...] = ()
    source: str = ""
    """The catalog file this entry came from (bundled or user file), for error messages."""
    provenance: str = ""
    """Where the catalog's facts about this model come from (the `source:` note of an entry)."""

    @property
    def default_variant(self) -> ModelVariant | None:
        return self.variants[0] if self.variants else None

    def variant(self, variant_id: str) -> ModelVariant | None:
        for variant in self.variants:
            if variant.id == variant_id or variant.quantization == variant_id:
                return variant
        wanted = variant_id.casefold()
        for variant in self.variants:
            if variant.quantization is not None and variant.quantization.casefold() == wanted:
                return variant
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; url/sha256/size/memory/quantization are the default variant's."""
        default = self.default_variant
        return {
            "id": self.id,
            "name": self.name,
            "publisher": self.publisher,
            "description": self.description,
            "license": self.license,
            "parameters": self.parameters,
            "context_length": self.context_length,
            "architecture": self.architecture,
            "backend": self.backend,
            "capabilities": list(self.capabilities),
            "properties": dict(self.properties),
            "url": default.url if default else None,
            "file_name": default.file_name if default else None,
            "quantization": default.quantization if default else None,
            "sha256": default.sha256 if default else None,
            "size": default.size if default else None,
            "memory": default.memory if default else None,
            "variants": [variant.to_dict() for variant in self.variants],
            "source": self.source,
            "provenance": self.provenance,
        }
