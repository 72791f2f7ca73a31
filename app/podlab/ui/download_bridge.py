"""Qt side of models: downloads run as Lab tasks, and one shared store, catalog and host facts.

The Catalog and Models pages both use `bridge_for(lab)`: one `ModelStore`, one
`DownloadManager` (so `max_parallel_downloads` holds across pages), the catalog loaded once in
a thread, and the host facts read once in a thread. A download is a `TaskManager` task, so the
Tasks page lists it with its bytes, rate and ETA, and cancelling it there stops it (the partial
file stays for a resume). Signals tell the pages when to repaint.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from podlab.core.errors import PodlabError
from podlab.core.lab import Lab
from podlab.core.models.catalog import Catalog, CatalogLoad, load_catalog, user_catalog_files
from podlab.core.models.download import (
    DownloadManager,
    DownloadProgress,
    DownloadState,
    format_bytes,
)
from podlab.core.models.hardware import HostFacts, read_host_facts
from podlab.core.models.modelinfo import ModelInfo, ModelVariant
from podlab.core.models.store import PARTIAL, DiskUsage, ModelStore, RemoveResult, StoredModel
from podlab.core.tasks import Task
from podlab.ui import background
from podlab.ui.models.formatting import duration_text


def progress_detail(event: DownloadProgress) -> str:
    """One line for the Tasks page: "12.0 MiB of 98.0 MiB · 5.1 MiB/s · 17 s left"."""
    parts = [format_bytes(event.done) + (f" of {format_bytes(event.total)}" if event.total else "")]
    state = event.state
    if state in (DownloadState.DOWNLOADING, DownloadState.STALLED):
        parts.append(f"{format_bytes(event.rate)}/s")
        if event.eta is not None and state is DownloadState.DOWNLOADING:
            parts.append(f"{duration_text(event.eta)} left")
    if state is not DownloadState.DOWNLOADING:
        parts.append(state.value + (f": {event.message}" if event.message else ""))
    return " · ".join(parts)


class DownloadBridge(QObject):
    """Shared by the model pages of one Lab; see the module doc."""

    sig_store_changed = Signal()
    """Emitted after the store changed: a download ended, a model was imported or removed."""

    sig_download_progress = Signal(str, object)
    """Emitted with (store model id, fraction 0..1 or None) while a download runs."""

    sig_download_finished = Signal(str, str)
    """Emitted with (store model id, "" on success, "cancelled", or the error message and its
    hint) when a download ends."""

    def __init__(self, lab: Lab, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.lab = lab
        self._store: ModelStore | None = None
        self._store_dir: str | None = None
        self.manager = DownloadManager.from_settings(lab.settings)
        self._active: dict[str, Task] = {}
        self._catalog: CatalogLoad | None = None
        self._catalog_lock = asyncio.Lock()
        self._facts: HostFacts | None = None
        self._facts_task: asyncio.Future[HostFacts] | None = None

    # -- store -----------------------------------------------------------------------------------

    @property
    def store(self) -> ModelStore:
        """The store of the models folder in the settings (the data folder when empty)."""
        wanted = self.lab.settings.models_dir
        if self._store is None or wanted != self._store_dir:
            folder = Path(wanted) if wanted else self.lab.locations.models_dir
            self._store = ModelStore(folder)
            self._store_dir = wanted
        return self._store

    async def list_models(self) -> list[StoredModel]:
        """Own entries and discovered ones, read in a thread (discovery walks other folders)."""
        return await asyncio.to_thread(self.store.list_models)

    async def disk_usage(self) -> DiskUsage:
        return await asyncio.to_thread(self.store.disk_usage)

    async def import_gguf(self, path: Path, *, copy: bool = False) -> StoredModel:
        """Register the file at once; then hash it as a task (a thread reads it), and when it
        is byte for byte a catalog file, link it to that entry (see `ModelStore.recognise`)."""
        entry = await asyncio.to_thread(self.store.import_gguf, path, copy=copy)
        self.sig_store_changed.emit()
        if entry.variant_id is None:
            self.start_recognise(entry)
        return entry

    def start_recognise(self, entry: StoredModel) -> Task:
        """Hash an imported file and link it to its catalog entry, as a Tasks page task."""
        store_id = entry.id

        async def work(task: Task) -> None:
            task.report(detail="computing its sha256")
            load = await self.catalog()
            found = await asyncio.to_thread(self.store.recognise, store_id, load.catalog)
            if found is not None and found.variant_id:
                task.report(1.0, f"the catalog's {found.name} ({found.variant_id})")
            else:
                task.report(1.0, "not a catalog file")
            if found is not None and found.sha256:
                task.add_log(f"sha256 {found.sha256}")
            self.sig_store_changed.emit()

        return self.lab.tasks.start(f"Recognise {entry.name}", "import", work)

    async def remove(self, model_id: str) -> RemoveResult:
        task = self._active.get(model_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task._handle or asyncio.sleep(0), return_exceptions=True)
        result = await asyncio.to_thread(self.store.remove, model_id)
        self.sig_store_changed.emit()
        return result

    # -- catalog and host ------------------------------------------------------------------------

    async def catalog(self, *, reload: bool = False) -> CatalogLoad:
        """The bundled catalog merged with the user's files, loaded in a thread once."""
        async with self._catalog_lock:
            if self._catalog is None or reload:
                folder = self.lab.locations.user_catalog_dir
                self._catalog = await asyncio.to_thread(
                    lambda: load_catalog(user_catalog_files(folder), include_user_dir=False)
                )
            return self._catalog

    @property
    def loaded_catalog(self) -> Catalog | None:
        return self._catalog.catalog if self._catalog is not None else None

    async def host_facts(self) -> HostFacts:
        """CPU, RAM and GPUs, probed once in a thread (nvidia-smi and friends can be slow)."""
        if self._facts is not None:
            return self._facts
        if self._facts_task is None:
            self._facts_task = background.start(
                asyncio.to_thread(read_host_facts), "read the host facts", awaited=True
            )
        self._facts = await asyncio.shield(self._facts_task)
        return self._facts

    # -- downloads -------------------------------------------------------------------------------

    def active_task(self, store_id: str) -> Task | None:
        """The running download task of a store id (a catalog variant's id), if any."""
        return self._active.get(store_id)

    def start_pull(self, model: ModelInfo, variant: ModelVariant) -> Task:
        """Download a catalog variant as a task; a second call while it runs returns the same."""
        store_id = variant.id
        if store_id in self._active:
            return self._active[store_id]
        label = f"{model.name} {variant.quantization or ''}".strip()

        async def work(task: Task) -> None:
            await self._pull(task, store_id, variant, model=model)

        return self._start(store_id, f"Download {label}", work)

    def start_resume(self, entry: StoredModel) -> Task:
        """Finish a partial download, from its catalog variant when the catalog still has it."""
        if entry.state != PARTIAL or entry.read_only:
            raise PodlabError(f"{entry.name} is not an unfinished download")
        if entry.id in self._active:
            return self._active[entry.id]
        catalog = self.loaded_catalog
        found = (
            catalog.find_variant(entry.variant_id)
            if catalog is not None and entry.variant_id
            else None
        )

        async def work(task: Task) -> None:
            if found is not None and found[1].id == entry.id:
                model, variant = found
                await self._pull(task, entry.id, variant, model=model)
            elif entry.url:
                await self._pull(task, entry.id, entry.url, sha256=entry.sha256, model_id=entry.id)
            else:
                raise PodlabError(f"{entry.name} has no URL to resume from")

        return self._start(entry.id, f"Resume {entry.name}", work)

    def _start(
        self, store_id: str, name: str, work: Callable[[Task], Coroutine[Any, Any, None]]
    ) -> Task:
        task = self.lab.tasks.start(name, "download", work)
        self._active[store_id] = task
        self.sig_download_progress.emit(store_id, None)
        return task

    async def _pull(
        self,
        task: Task,
        store_id: str,
        source: ModelVariant | str,
        *,
        model: ModelInfo | None = None,
        sha256: str | None = None,
        model_id: str | None = None,
    ) -> None:
        last_state: list[DownloadState | None] = [None]

        def on_progress(event: DownloadProgress) -> None:
            if event.state is not last_state[0]:
                last_state[0] = event.state
                task.add_log(
                    f"{event.state.value}" + (f": {event.message}" if event.message else "")
                )
            task.report(event.fraction, progress_detail(event))
            self.sig_download_progress.emit(store_id, event.fraction)

        error = ""
        try:
            entry = await self.store.pull(
                source,
                model=model,
                sha256=sha256,
                model_id=model_id,
                manager=self.manager,
                on_progress=on_progress,
                stall_seconds=self.lab.settings.download_stall_seconds,
            )
            checked = {
                "expected": "verified against the catalog's sha256",
                "server": "verified against the digest the server published",
                "computed": "no published digest: recorded",
            }.get(entry.sha256_source or "", "")
            task.add_log(f"saved {entry.path}")
            if entry.sha256:
                task.add_log(f"sha256 {entry.sha256}" + (f" ({checked})" if checked else ""))
            task.report(1.0, f"{format_bytes(entry.size)} · done")
        except asyncio.CancelledError:
            error = "cancelled"
            raise
        except PodlabError as exc:
            error = f"{exc.message}. {exc.hint}" if exc.hint else exc.message
            raise
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            raise
        finally:
            self._active.pop(store_id, None)
            self.sig_download_finished.emit(store_id, error)
            self.sig_store_changed.emit()

    async def aclose(self) -> None:
        """Cancel running downloads (partials stay) and close the HTTP connections."""
        for task in list(self._active.values()):
            task.cancel()
        handles = [t._handle for t in self._active.values() if t._handle is not None]
        await asyncio.gather(*handles, return_exceptions=True)
        await self.manager.aclose()


_Bridges = dict[int, tuple[weakref.ref[Lab], "DownloadBridge"]]
_bridges: _Bridges = {}


def bridge_for(lab: Lab) -> DownloadBridge:
    """The one DownloadBridge of a Lab (created on first use)."""
    key = id(lab)
    found = _bridges.get(key)
    if found is not None and found[0]() is lab:
        return found[1]
    bridge = DownloadBridge(lab)

    def forget(_ref: weakref.ref[Lab], bridges: _Bridges = _bridges) -> None:
        # Bound at definition: at interpreter exit the module's globals may already be None.
        bridges.pop(key, None)

    _bridges[key] = (weakref.ref(lab, forget), bridge)
    return bridge
