"""The model store: downloaded, partial and imported models in one place.

Layout of `models_dir` (one folder per model, named by its id):

    <models_dir>/<id>/manifest.json        what Podlab knows: source, url, sha256, size, ...
    <models_dir>/<id>/<file>               a finished download (or an imported copy)
    <models_dir>/<id>/<file>.partial       an unfinished download (never listed as usable)
    <models_dir>/<id>/<file>.partial.json  what a resume needs (url, validator)

Imported models are registered in place by default: their manifest points at the user's file,
and removing them forgets the entry but never deletes that file. Models already on disk in
RamaLama, Ollama or the Hugging Face cache are discovered read-only and never written to.
Manifests are written atomically.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit

from podlab.core.errors import PodlabError
from podlab.core.models.download import (
    Download,
    DownloadError,
    DownloadManager,
    DownloadProgress,
    DownloadResult,
    normalize_sha256,
    resolve_url,
)
from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.paths import Locations, atomic_write_text

if TYPE_CHECKING:
    from podlab.core.models.catalog import Catalog

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
GGUF_MAGIC = b"GGUF"

READY = "ready"
PARTIAL = "partial"
MISSING = "missing"

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
_SHA_IN_NAME = re.compile(r"(?:sha256[-:])?([0-9a-f]{64})$")


# -- safety --------------------------------------------------------------------------------------


def check_name(value: str, what: str = "model id") -> str:
    """Refuse anything that could leave its folder: '/', '\\', '..', a leading '.', NUL."""
    if (
        not value
        or "/" in value
        or "\\" in value
        or "\0" in value
        or ".." in value
        or value.startswith(".")
        or len(value) > 200
    ):
        raise PodlabError(
            f"{what} {value!r} is not allowed",
            hint=f"a {what} must not contain '/', '\\' or '..', nor start with '.'",
        )
    return value


def folder_name(model_id: str) -> str:
    """The folder of a model: its id with ':' as '@', since Podman's `-v SRC:DST` and
    Quadlet's `Volume=` split on ':' (catalog ids look like "qwen3-4b:Q4_K_M")."""
    return check_name(model_id).replace(":", "@")


def _folder_name_or_none(model_id: str) -> str | None:
    try:
        return folder_name(model_id)
    except PodlabError:
        return None


def safe_id(text: str) -> str:
    """Make an id out of a file name or a title: letters, digits and ._+- only."""
    cleaned = _UNSAFE_CHARS.sub("-", text).strip("-.")
    while ".." in cleaned:
        cleaned = cleaned.replace("..", ".")
    return cleaned[:120] or "model"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _is_gguf(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


# -- GGUF metadata -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GGUFMetadata:
    architecture: str | None = None
    name: str | None = None
    parameters: int | None = None
    size_label: str | None = None
    file_type: str | None = None
    """Quantization as llama.cpp names it: Q4_K_M, Q8_0, F16, ..."""
    context_length: int | None = None
    chat_template: str | None = None
    tensor_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "name": self.name,
            "parameters": self.parameters,
            "size_label": self.size_label,
            "file_type": self.file_type,
            "context_length": self.context_length,
            "chat_template": self.chat_template,
            "tensor_count": self.tensor_count,
        }

    @classmethod
    def from_dict(cls, data: Any) -> GGUFMetadata | None:
        if not isinstance(data, dict):
            return None
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


def parse_size_label(label: str | None) -> int | None:
    """ "8B" → 8e9, "270M" → 2.7e8, "8x7B" → 5.6e10; None when unreadable."""
    if not label:
        return None
    match = re.fullmatch(r"(?:(\d+)x)?(\d+(?:\.\d+)?)([KMBT])", label.strip(), re.IGNORECASE)
    if not match:
        return None
    factor = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[match.group(3).upper()]
    experts = int(match.group(1) or 1)
    return round(experts * float(match.group(2)) * factor)


def require_gguf(path: Path, hint: str) -> None:
    """Raise a clear error unless the file starts with the GGUF magic ("GGUF")."""
    if not _is_gguf(path):
        raise PodlabError(f"{path} is not a GGUF file (it does not start with 'GGUF')", hint=hint)


def read_gguf_metadata(path: Path) -> GGUFMetadata:
    """Read what a GGUF file says about itself (memory-mapped; the tensors are not read)."""
    require_gguf(path, "Podlab imports GGUF models (llama.cpp format); convert other formats first")
    try:
        from gguf import GGUFReader, GGUFValueType, LlamaFileType

        reader = GGUFReader(str(path), "r")
    except Exception as exc:
        raise PodlabError(f"cannot read GGUF metadata from {path}: {exc}") from exc

    def value(key: str) -> Any:
        item = reader.fields.get(key)
        if item is None or not item.types or not item.parts:
            return None
        kind = item.types[0]
        if kind == GGUFValueType.ARRAY:
            return None
        if kind == GGUFValueType.STRING:
            return bytes(item.parts[-1]).decode("utf-8", errors="replace")
        return item.parts[-1].tolist()[0]

    def text(key: str) -> str | None:
        result = value(key)
        return result if isinstance(result, str) else None

    def number(key: str) -> int | None:
        result = value(key)
        return (
            int(result)
            if isinstance(result, int | float) and not isinstance(result, bool)
            else None
        )

    architecture = text("general.architecture")
    size_label = text("general.size_label")
    parameters = sum(int(t.n_elements) for t in reader.tensors) or parse_size_label(size_label)
    file_type = None
    code = number("general.file_type")
    if code is not None:
        try:
            file_type = LlamaFileType(code).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            file_type = str(code)
    return GGUFMetadata(
        architecture=architecture,
        name=text("general.name"),
        parameters=parameters,
        size_label=size_label,
        file_type=file_type,
        context_length=number(f"{architecture}.context_length") if architecture else None,
        chat_template=text("tokenizer.chat_template"),
        tensor_count=len(reader.tensors),
    )


# -- entries -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredModel:
    """One model the store knows: Podlab's own, imported, or discovered in another tool."""

    id: str
    name: str
    source: str
    """"catalog" or "url" (downloaded), "imported", "ollama", "huggingface", "ramalama"."""
    state: str
    """"ready", "partial" (download unfinished) or "missing" (the file is gone)."""
    path: Path
    """The model file (for a partial: where it will be once finished)."""
    size: int | None = None
    """Bytes of the finished file (expected size for a partial, when known)."""
    done: int | None = None
    """Bytes downloaded so far, for a partial."""
    sha256: str | None = None
    sha256_source: str | None = None
    """"expected"/"server" (verified), "computed" (recorded), "ollama"/"huggingface" (blob)."""
    url: str | None = None
    catalog_id: str | None = None
    variant_id: str | None = None
    quantization: str | None = None
    managed: bool = False
    """Podlab owns the file: removing the model deletes it."""
    read_only: bool = False
    """Discovered in another tool's store; Podlab never changes it."""
    added: str | None = None
    metadata: GGUFMetadata | None = None
    manifest_dir: Path | None = None

    @property
    def usable(self) -> bool:
        return self.state == READY

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "source": self.source,
            "state": self.state,
            "usable": self.usable,
            "path": str(self.path),
            "size": self.size,
            "done": self.done,
            "sha256": self.sha256,
            "sha256_source": self.sha256_source,
            "url": self.url,
            "catalog_id": self.catalog_id,
            "variant_id": self.variant_id,
            "quantization": self.quantization,
            "managed": self.managed,
            "read_only": self.read_only,
            "added": self.added,
            "metadata": self.metadata.to_dict() if self.metadata else None,
        }


@dataclass(frozen=True)
class DiskUsage:
    models_dir: Path
    used: int
    """Bytes of Podlab's own files (finished and partial) under models_dir."""
    partial: int
    """Of which unfinished downloads."""
    external: int
    """Bytes of imported-in-place and discovered models (not Podlab's, not counted in used)."""
    free: int | None
    """Free bytes on the models_dir file system."""
    models: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "models_dir": str(self.models_dir),
            "used": self.used,
            "partial": self.partial,
            "external": self.external,
            "free": self.free,
            "models": self.models,
        }


@dataclass(frozen=True)
class RemoveResult:
    id: str
    deleted_bytes: int
    kept_path: Path | None
    """The user's own file, left in place (imported without copy)."""


@dataclass
class PullJob:
    """A pull prepared by `ModelStore.prepare_pull`: run `download`, then `finish_pull`."""

    id: str
    download: Download
    manifest: dict[str, Any]
    existing: StoredModel | None = None


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def default_ramalama_roots() -> list[Path]:
    roots = []
    if env := os.environ.get("RAMALAMA_STORE"):
        roots.append(Path(env))
    data_home = os.environ.get("XDG_DATA_HOME") or str(_home() / ".local" / "share")
    roots.append(Path(data_home) / "ramalama")
    roots.append(Path("/var/lib/ramalama"))
    return roots


def default_ollama_root() -> Path:
    return Path(os.environ.get("OLLAMA_MODELS") or _home() / ".ollama" / "models")


def default_hf_hub() -> Path:
    if env := os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env)
    if hf_home := os.environ.get("HF_HOME"):
        return Path(hf_home) / "hub"
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(_home() / ".cache")
    return Path(cache_home) / "huggingface" / "hub"


@dataclass(frozen=True)
class DiscoveryRoots:
    """Where other tools keep models; each read-only. Empty lists/None turn a source off."""

    ramalama: Sequence[Path] = ()
    ollama: Path | None = None
    hf_hub: Path | None = None

    @classmethod
    def default(cls) -> DiscoveryRoots:
        return cls(default_ramalama_roots(), default_ollama_root(), default_hf_hub())

    @classmethod
    def none(cls) -> DiscoveryRoots:
        return cls()


class StoreSettings(Protocol):
    """The part of podlab.core.settings.Settings the store reads."""

    models_dir: str
    download_stall_seconds: float


# -- the store -----------------------------------------------------------------------------------


class ModelStore:
    def __init__(self, models_dir: Path | str, *, discover: DiscoveryRoots | None = None) -> None:
        self.models_dir = Path(models_dir).expanduser()
        self.roots = DiscoveryRoots.default() if discover is None else discover

    @classmethod
    def from_settings(
        cls, settings: StoreSettings, *, discover: DiscoveryRoots | None = None
    ) -> ModelStore:
        folder = Path(settings.models_dir) if settings.models_dir else None
        return cls(folder or Locations.default().models_dir, discover=discover)

    # -- manifests ---------------------------------------------------------------------------

    def _model_dir(self, model_id: str) -> Path:
        folder = self.models_dir / folder_name(model_id)
        if folder.resolve().parent != self.models_dir.resolve():
            raise PodlabError(f"model id {model_id!r} is not allowed")
        return folder

    def _read_manifest(self, folder: Path) -> dict[str, Any] | None:
        try:
            data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable %s: %s", folder / MANIFEST_NAME, exc)
            return None
        if not isinstance(data, dict):
            log.warning("ignoring %s: not a JSON object", folder / MANIFEST_NAME)
            return None
        manifest: dict[str, Any] = data
        model_id = manifest.get("id")
        if not isinstance(model_id, str) or _folder_name_or_none(model_id) != folder.name:
            log.warning("ignoring %s: it does not describe %s", folder / MANIFEST_NAME, folder.name)
            return None
        return manifest

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        folder = self._model_dir(str(manifest["id"]))
        atomic_write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")

    def _entry(self, folder: Path, manifest: dict[str, Any]) -> StoredModel:
        metadata = GGUFMetadata.from_dict(manifest.get("gguf"))
        imported = manifest.get("imported_path")
        copied = bool(manifest.get("copied", True))
        file_name = str(manifest.get("file_name") or "")
        if imported and not copied:
            path = Path(imported)
        else:
            path = folder / check_name(file_name, "file name")
        partial = path.with_name(path.name + ".partial")
        size = manifest.get("size")
        done = None
        if path.is_file():
            state = READY
            size = path.stat().st_size
        elif (imported and not copied) or not partial.exists():
            state = MISSING
        else:
            state = PARTIAL
            done = partial.stat().st_size
        quantization = manifest.get("quantization") or (metadata.file_type if metadata else None)
        return StoredModel(
            id=str(manifest["id"]),
            name=str(manifest.get("name") or manifest["id"]),
            source=str(manifest.get("source") or "url"),
            state=state,
            path=path,
            size=size if isinstance(size, int) else None,
            done=done,
            sha256=manifest.get("sha256"),
            sha256_source=manifest.get("sha256_source"),
            url=manifest.get("url"),
            catalog_id=manifest.get("catalog_id"),
            variant_id=manifest.get("variant_id"),
            quantization=quantization,
            managed=not imported or copied,
            read_only=False,
            added=manifest.get("added"),
            metadata=metadata,
            manifest_dir=folder,
        )

    def own(self) -> list[StoredModel]:
        """Podlab's own entries (downloaded, partial, imported), sorted by id."""
        entries = []
        if not self.models_dir.is_dir():
            return []
        for folder in sorted(self.models_dir.iterdir()):
            if folder.name.startswith(".") or folder.is_symlink() or not folder.is_dir():
                continue
            manifest = self._read_manifest(folder)
            if manifest is None:
                continue
            try:
                entries.append(self._entry(folder, manifest))
            except (OSError, PodlabError) as exc:
                log.warning("ignoring %s: %s", folder, exc)
        return entries

    def list_models(self, *, discovered: bool = True) -> list[StoredModel]:
        """Everything: Podlab's own models first, then those found in other tools' stores."""
        entries = self.own()
        if discovered:
            entries.extend(self.discover())
        return entries

    def get(self, model_id: str) -> StoredModel | None:
        for entry in self.list_models():
            if entry.id == model_id:
                return entry
        return None

    def path_of(self, model_id: str) -> Path:
        """The file of a usable model; a partial or missing one is an error, never a path."""
        entry = self.get(model_id)
        if entry is None:
            raise PodlabError(f"no model {model_id!r}", hint="see `podlab models list`")
        if not entry.usable:
            done = f" ({entry.done} bytes so far)" if entry.done is not None else ""
            raise PodlabError(
                f"model {model_id!r} is not ready: {entry.state}{done}",
                hint="pull it again to finish the download" if entry.state == PARTIAL else "",
            )
        return entry.path

    # -- pull ----------------------------------------------------------------------------------

    def prepare_pull(
        self,
        source: ModelVariant | str,
        *,
        sha256: str | None = None,
        model: ModelInfo | None = None,
        model_id: str | None = None,
        **download_options: Any,
    ) -> PullJob:
        """Write the manifest and build the Download (or find the model already present)."""
        expected = normalize_sha256(sha256)
        if isinstance(source, ModelVariant):
            model_id = check_name(model_id or source.id)
            file_name = check_name(source.file_name, "file name")
            url = source.url
            expected = expected or normalize_sha256(source.sha256)
            size = source.size
            manifest: dict[str, Any] = {
                "source": "catalog",
                "name": f"{model.name} {source.quantization or ''}".strip() if model else source.id,
                "catalog_id": model.id if model else None,
                "variant_id": source.id,
                "quantization": source.quantization,
            }
        else:
            url = source
            resolved = resolve_url(url)
            file_name = check_name(unquote(urlsplit(resolved).path.rsplit("/", 1)[-1]), "file name")
            size = None
            if model_id is None:
                model_id = self._free_id(safe_id(file_name.removesuffix(".gguf")), url)
            model_id = check_name(model_id)
            manifest = {"source": "url", "name": file_name}
        folder = self._model_dir(model_id)
        existing_manifest = self._read_manifest(folder)
        if existing_manifest is not None and existing_manifest.get("id") != model_id:
            raise PodlabError(
                f"{model_id!r} would share its folder with {existing_manifest.get('id')!r}",
                hint=f"remove that one first: podlab models rm {existing_manifest.get('id')}",
            )
        if existing_manifest is not None:
            if existing_manifest.get("imported_path") and not existing_manifest.get("copied"):
                raise PodlabError(
                    f"{model_id!r} is an imported model",
                    hint="remove it first (your file is kept) to download it instead",
                )
            entry = self._entry(folder, existing_manifest)
            same = entry.url in (None, url) and (expected is None or entry.sha256 == expected)
            if entry.state == READY and same:
                return PullJob(model_id, Download(url, entry.path), existing_manifest, entry)
            if existing_manifest.get("file_name") != file_name:
                raise PodlabError(
                    f"{model_id!r} already exists with another file",
                    hint=f"remove it first: podlab models rm {model_id}",
                )
        dest = folder / file_name
        manifest = {
            "format": MANIFEST_FORMAT,
            "id": model_id,
            **manifest,
            "file_name": file_name,
            "url": url,
            "sha256": expected,
            "sha256_source": "expected" if expected else None,
            "size": size,
            "added": (existing_manifest or {}).get("added") or _now(),
        }
        self._write_manifest(manifest)
        download = Download(url, dest, sha256=expected, size=size, **download_options)
        return PullJob(model_id, download, manifest)

    def finish_pull(self, job: PullJob, result: DownloadResult) -> StoredModel:
        """Record a finished download in its manifest."""
        manifest = dict(job.manifest)
        manifest.update(
            sha256=result.sha256,
            sha256_source=result.sha256_source,
            size=result.size,
            completed=_now(),
        )
        with contextlib.suppress(PodlabError):
            manifest["gguf"] = read_gguf_metadata(result.path).to_dict()
            if not manifest.get("quantization"):
                manifest["quantization"] = manifest["gguf"].get("file_type")
        self._write_manifest(manifest)
        return self._entry(self._model_dir(job.id), manifest)

    def abandon_pull(self, job: PullJob) -> None:
        """After a failed or cancelled pull: forget it when nothing worth resuming is left."""
        folder = self._model_dir(job.id)
        dest = job.download.dest
        partial = job.download.partial_path
        if dest.exists():
            return
        with contextlib.suppress(OSError):
            if partial.exists() and partial.stat().st_size > 0:
                return
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
            job.download.state_path.unlink(missing_ok=True)
            (folder / MANIFEST_NAME).unlink(missing_ok=True)
            folder.rmdir()

    async def pull(
        self,
        source: ModelVariant | str,
        *,
        sha256: str | None = None,
        model: ModelInfo | None = None,
        model_id: str | None = None,
        manager: DownloadManager | None = None,
        on_progress: Callable[[DownloadProgress], None] | None = None,
        on_start: Callable[[PullJob], None] | None = None,
        **download_options: Any,
    ) -> StoredModel:
        """Download a catalog variant or a URL into the store; resumes a partial of it."""
        job = self.prepare_pull(
            source, sha256=sha256, model=model, model_id=model_id, **download_options
        )
        if job.existing is not None:
            return job.existing
        if on_progress is not None:
            job.download.add_listener(on_progress)
        if on_start is not None:
            on_start(job)
        try:
            if manager is not None:
                result = await manager.run(job.download)
            else:
                result = await job.download.run()
        except (DownloadError, asyncio.CancelledError):
            self.abandon_pull(job)
            raise
        return self.finish_pull(job, result)

    def _free_id(self, base: str, url: str) -> str:
        candidate, n = base, 1
        while True:
            manifest = self._read_manifest(self._model_dir(candidate))
            if manifest is None or manifest.get("url") == url:
                return candidate
            n += 1
            candidate = f"{base}-{n}"

    # -- import --------------------------------------------------------------------------------

    def import_gguf(
        self, path: Path | str, *, copy: bool = False, model_id: str | None = None
    ) -> StoredModel:
        """Register a GGUF file; in place by default (your file stays yours), or copied in."""
        source = Path(path).expanduser()
        if not source.is_file():
            raise PodlabError(f"no such file: {source}")
        source = source.resolve()
        metadata = read_gguf_metadata(source)
        if model_id is None:
            base = safe_id(source.name.removesuffix(".gguf"))
            model_id, n = base, 1
            while (found := self._read_manifest(self._model_dir(model_id))) is not None:
                if found.get("imported_path") == str(source) and bool(found.get("copied")) == copy:
                    return self._entry(self._model_dir(model_id), found)
                n += 1
                model_id = f"{base}-{n}"
        model_id = check_name(model_id)
        folder = self._model_dir(model_id)
        if self._read_manifest(folder) is not None:
            raise PodlabError(f"a model {model_id!r} exists already", hint="choose another id")
        file_name = check_name(source.name, "file name")
        manifest: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "id": model_id,
            "source": "imported",
            # The file's name, which the user chose and knows; a GGUF's internal name is often
            # a training run's ("Smollm2 135M 8k Lc100K Mix1 Ep2").
            "name": source.name.removesuffix(".gguf"),
            "file_name": file_name,
            "url": None,
            "imported_path": str(source),
            "copied": copy,
            "sha256": None,
            "sha256_source": None,
            "size": source.stat().st_size,
            "quantization": metadata.file_type,
            "added": _now(),
            "gguf": metadata.to_dict(),
        }
        if copy:
            folder.mkdir(parents=True, exist_ok=True)
            manifest["sha256"] = _copy_with_sha256(source, folder / file_name)
            manifest["sha256_source"] = "computed"
        self._write_manifest(manifest)
        return self._entry(folder, manifest)

    def recognise(self, model_id: str, catalog: Catalog) -> StoredModel | None:
        """Hash an imported file (streaming; seconds per GB, so callers run it in a thread)
        and link it to the catalog variant with that sha256: the Catalog then shows it as on
        this machine and serves it, under the catalog's name. Returns the entry, or None when
        it is gone."""
        folder = self._model_dir(model_id)
        manifest = self._read_manifest(folder)
        if manifest is None:
            return None
        entry = self._entry(folder, manifest)
        if entry.state != READY:
            return entry
        if not manifest.get("sha256"):
            manifest["sha256"] = sha256_of_file(entry.path)
            manifest["sha256_source"] = "computed"
        found = catalog.find_sha256(str(manifest["sha256"]))
        if found is not None:
            model, variant = found
            if variant.size is None or variant.size == entry.size:
                manifest.update(
                    catalog_id=model.id,
                    variant_id=variant.id,
                    name=model.name,
                    quantization=variant.quantization or manifest.get("quantization"),
                )
        self._write_manifest(manifest)
        return self._entry(folder, manifest)

    # -- remove --------------------------------------------------------------------------------

    def remove(self, model_id: str) -> RemoveResult:
        """Delete a downloaded model; for one imported in place, forget it and keep the file."""
        for entry in self.discover():
            if entry.id == model_id:
                raise PodlabError(
                    f"{model_id!r} belongs to {entry.source.capitalize()}; Podlab only reads it",
                    hint=f"remove it with {entry.source}'s own tools",
                )
        folder = self._model_dir(model_id)
        manifest = self._read_manifest(folder)
        if manifest is None or manifest.get("id") != model_id:
            raise PodlabError(f"no model {model_id!r}", hint="see `podlab models list`")
        entry = self._entry(folder, manifest)
        if folder.is_symlink():  # pragma: no cover - _model_dir refuses these
            raise PodlabError(f"{folder} is a symbolic link; not removing it")
        deleted = 0
        for item in folder.iterdir():
            with contextlib.suppress(OSError):
                if item.is_file() and not item.is_symlink():
                    deleted += item.stat().st_size if item.name != MANIFEST_NAME else 0
        shutil.rmtree(folder)
        kept = entry.path if not entry.managed else None
        return RemoveResult(model_id, deleted, kept)

    # -- disk usage ----------------------------------------------------------------------------

    def disk_usage(self) -> DiskUsage:
        used = partial = external = 0
        entries = self.list_models()
        for entry in entries:
            if entry.managed:
                if entry.state == READY:
                    used += entry.size or 0
                elif entry.state == PARTIAL:
                    used += entry.done or 0
                    partial += entry.done or 0
            elif entry.state == READY:
                external += entry.size or 0
        free = None
        with contextlib.suppress(OSError):
            existing = self.models_dir
            while not existing.exists() and existing != existing.parent:
                existing = existing.parent
            free = shutil.disk_usage(existing).free
        return DiskUsage(self.models_dir, used, partial, external, free, len(entries))

    # -- discovery (read-only) -----------------------------------------------------------------

    def discover(self) -> list[StoredModel]:
        """Models in RamaLama, Ollama and Hugging Face cache folders; never written to."""
        entries: list[StoredModel] = []
        seen: set[Path] = set()
        for finder in (self._discover_ollama, self._discover_hf, self._discover_ramalama):
            try:
                found = finder()
            except OSError as exc:
                log.warning("model discovery failed: %s", exc)
                continue
            for entry in found:
                key = entry.path.resolve()
                if key not in seen:
                    seen.add(key)
                    entries.append(entry)
        return entries

    def _discover_ollama(self) -> list[StoredModel]:
        root = self.roots.ollama
        if root is None or not (root / "manifests").is_dir():
            return []
        entries = []
        for manifest_path in sorted((root / "manifests").rglob("*")):
            if not manifest_path.is_file():
                continue
            parts = manifest_path.relative_to(root / "manifests").parts
            if len(parts) < 3:
                continue
            try:
                data = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            layers = data.get("layers") if isinstance(data, dict) else None
            layer = next(
                (
                    item
                    for item in layers or []
                    if isinstance(item, dict) and item.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE
                ),
                None,
            )
            if layer is None:
                continue
            digest = str(layer.get("digest", ""))
            match = re.fullmatch(r"sha256[:-]([0-9a-f]{64})", digest)
            if not match:
                continue
            blob = root / "blobs" / f"sha256-{match.group(1)}"
            if not blob.is_file():
                continue
            host, *middle, tag = parts
            name = "/".join(middle)
            if host == "registry.ollama.ai":
                name = name.removeprefix("library/")
            else:
                name = f"{host}/{name}"
            entries.append(
                StoredModel(
                    id=f"ollama:{name}:{tag}",
                    name=f"{name}:{tag}",
                    source="ollama",
                    state=READY,
                    path=blob,
                    size=blob.stat().st_size,
                    sha256=match.group(1),
                    sha256_source="ollama",
                    read_only=True,
                )
            )
        return entries

    def _discover_hf(self) -> list[StoredModel]:
        hub = self.roots.hf_hub
        if hub is None or not hub.is_dir():
            return []
        entries = []
        for repo_dir in sorted(hub.glob("models--*")):
            repo = "/".join(repo_dir.name.split("--")[1:])
            snapshots = repo_dir / "snapshots"
            if not repo or not snapshots.is_dir():
                continue
            seen_blobs: set[Path] = set()
            for snapshot in sorted(snapshots.iterdir()):
                for file in sorted(snapshot.rglob("*.gguf")):
                    shard = _SHARD_RE.search(file.name)
                    if shard and int(shard.group(1)) != 1:
                        continue
                    blob = file.resolve()
                    if not blob.is_file() or blob in seen_blobs:
                        continue
                    seen_blobs.add(blob)
                    relative = file.relative_to(snapshot).as_posix()
                    size = blob.stat().st_size
                    if shard:
                        size = sum(
                            p.resolve().stat().st_size
                            for p in file.parent.glob(
                                file.name.replace(f"-{shard.group(1)}-of-", "-*-of-")
                            )
                            if p.resolve().is_file()
                        )
                    match = _SHA_IN_NAME.fullmatch(blob.name)
                    entries.append(
                        StoredModel(
                            id=f"hf:{repo}/{relative}",
                            name=f"{repo} {relative}",
                            source="huggingface",
                            state=READY,
                            path=file,
                            size=size,
                            sha256=match.group(1) if match else None,
                            sha256_source="huggingface" if match else None,
                            url=f"hf://{repo}/{relative}@{snapshot.name}",
                            read_only=True,
                        )
                    )
        return entries

    def _discover_ramalama(self) -> list[StoredModel]:
        entries = []
        for root in self.roots.ramalama:
            candidates: list[tuple[Path, str]] = []
            store = root / "store"
            if store.is_dir():
                for file in sorted(store.rglob("*")):
                    parts = file.relative_to(store).parts
                    if "snapshots" not in parts or not file.is_file():
                        continue
                    index = parts.index("snapshots")
                    model = "/".join(parts[:index])
                    inner = "/".join(parts[index + 2 :])
                    candidates.append((file, f"{model}/{inner}"))
            legacy = root / "models"
            if legacy.is_dir():
                for file in sorted(legacy.rglob("*")):
                    if file.is_file():
                        candidates.append((file, file.relative_to(legacy).as_posix()))
            for file, label in candidates:
                blob = file.resolve()
                if not _is_gguf(blob):
                    continue
                match = _SHA_IN_NAME.search(blob.name)
                entries.append(
                    StoredModel(
                        id=f"ramalama:{label}",
                        name=label,
                        source="ramalama",
                        state=READY,
                        path=file,
                        size=blob.stat().st_size,
                        sha256=match.group(1) if match else None,
                        sha256_source="ramalama" if match else None,
                        read_only=True,
                    )
                )
        return entries


def sha256_of_file(path: Path) -> str:
    """The file's sha256, read 1 MiB at a time."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as reader:
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise PodlabError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def _copy_with_sha256(source: Path, dest: Path) -> str:
    """Copy through a .partial file, hashing on the way; fsync and rename at the end."""
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    try:
        with source.open("rb") as reader, partial.open("wb") as writer:
            while chunk := reader.read(1 << 20):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        os.replace(partial, dest)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise PodlabError(f"cannot copy {source} to {dest}: {exc.strerror or exc}") from exc
    return digest.hexdigest()


__all__ = [
    "MISSING",
    "PARTIAL",
    "READY",
    "DiscoveryRoots",
    "DiskUsage",
    "GGUFMetadata",
    "ModelStore",
    "PullJob",
    "RemoveResult",
    "StoredModel",
    "check_name",
    "parse_size_label",
    "read_gguf_metadata",
    "safe_id",
    "sha256_of_file",
]
