"""Unattended evaluation runs: for each cell, start its server, ask every item, score the
answers, stop the server, go on to the next cell.

Cells run one after another so models that do not fit in memory together still all run. Every
answer is stored as soon as it is scored: a run that is paused, cancelled, or killed with its
process resumes from the first item without a stored result. A cell whose server cannot start,
crashes or stops answering is recorded as failed with the reason, and the run goes on.

Answers are asked at temperature 0 with a fixed seed (both stored with the run), so a run can be
repeated. While a cell runs, the server's memory is sampled (process RSS of the local engine and
its children through psutil; container statistics for Podman) and its peak stored, with the
machine's energy where RAPL or nvidia-smi expose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import psutil

from podlab import __version__
from podlab.core.chat.client import ChatClient, Done, GenerationParams
from podlab.core.chat.energy import EnergyMeter, Measurement
from podlab.core.errors import PodlabError
from podlab.core.evaluate.promptset import PromptItem, PromptSet
from podlab.core.evaluate.results import (
    FINISHED_CELL_STATES,
    CellRecord,
    CellSpec,
    ItemRecord,
    RunConfig,
    RunRecord,
)
from podlab.core.evaluate.scorers import DETERMINISTIC, Judge, JudgeConfig, Score, score_answer
from podlab.core.evaluate.store import EvalStore
from podlab.core.serving.container_spec import ServiceOptions
from podlab.core.serving.inference import InferenceService
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceManager
from podlab.core.tasks import Task

log = logging.getLogger(__name__)

DEFAULT_SEED = 42
DEFAULT_MAX_TOKENS = 256
MEMORY_INTERVAL_S = 0.5
MAX_FAILURES_IN_A_ROW = 3
"""Items in a row that get no answer from a server that still runs: the cell fails (a server
that errors on everything would otherwise be asked the whole set)."""


def new_run_config(
    prompt_set: PromptSet,
    cells: Sequence[CellSpec],
    *,
    params: GenerationParams | None = None,
    judge: JudgeConfig | None = None,
    item_timeout_s: float = 120.0,
    ready_timeout_s: float = 180.0,
) -> RunConfig:
    """A run's configuration: greedy decoding (temperature 0) with a seed unless `params` says
    otherwise, so the same cell gives the same answers again."""
    chosen = params or GenerationParams()
    if chosen.temperature is None:
        chosen.temperature = 0.0
    if chosen.seed is None:
        chosen.seed = DEFAULT_SEED
    if chosen.max_tokens is None:
        chosen.max_tokens = DEFAULT_MAX_TOKENS
    if not cells:
        raise PodlabError("an evaluation needs at least one model", "pass --model")
    return RunConfig(
        prompt_set=prompt_set,
        cells=list(cells),
        params=chosen.to_dict(),
        judge=None if judge is None else judge.to_dict(),
        podlab_version=__version__,
        item_timeout_s=item_timeout_s,
        ready_timeout_s=ready_timeout_s,
    )


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands; `state` is one of starting (a server), running, cell-done,
    cell-failed, paused, cancelled, finished."""

    run_id: int
    state: str
    cell_index: int
    cells: int
    cell_label: str
    items_done: int
    items: int
    message: str = ""

    @property
    def fraction(self) -> float:
        """0..1 over the whole run (cells weigh the same)."""
        if self.cells == 0:
            return 1.0
        within = self.items_done / self.items if self.items else 0.0
        return min(1.0, (self.cell_index + within) / self.cells)


ProgressListener = Callable[[RunProgress], None]


@dataclass
class ServedCell:
    """A cell's server while it runs."""

    base_url: str
    model: str | None
    api_key: str | None = field(default=None, repr=False)
    service: InferenceService | None = None
    model_sha256: str | None = None
    image_digest: str | None = None


class CellFailed(Exception):
    """The cell's server could not start, crashed or stopped answering."""


class EvalRunner:
    """Runs stored runs. `pause()` and `cancel()` may be called from any task; `run()` of a
    paused, cancelled-midway or orphaned run resumes it."""

    def __init__(
        self,
        store: EvalStore,
        services: ServiceManager | None = None,
        *,
        judge_api_key: str | None = None,
        endpoint_api_keys: Mapping[str, str] | None = None,
        energy: EnergyMeter | None = None,
        memory_interval_s: float = MEMORY_INTERVAL_S,
    ) -> None:
        self.store = store
        self._services = services
        self.judge_api_key = judge_api_key
        self.endpoint_api_keys = dict(endpoint_api_keys or {})
        """API keys of endpoint cells by URL (a Podlab service's own key), never stored."""
        self.energy = energy if energy is not None else EnergyMeter()
        self.memory_interval_s = memory_interval_s
        self._pause = asyncio.Event()
        self._cancel = asyncio.Event()
        self.current: ServedCell | None = None
        """The server of the cell running now (tests kill it to check crash handling)."""

    @property
    def services(self) -> ServiceManager:
        if self._services is None:
            self._services = ServiceManager()
        return self._services

    def pause(self) -> None:
        """Stop after the item being asked; the run is stored as paused."""
        self._pause.set()

    def cancel(self) -> None:
        """Stop now (the item being asked is dropped); the run is stored as cancelled."""
        self._cancel.set()

    async def run(self, run_id: int, progress: ProgressListener | None = None) -> RunRecord:
        """Run (or resume) a run to its end, a pause or a cancel; returns the stored run."""
        run = self.store.get_run(run_id)
        if run.status == "running" and not self.store.is_orphaned(run):
            raise PodlabError(
                f"evaluation run {run_id} is running in process {run.owner_pid}",
                "pause or cancel it there first",
            )
        self._pause.clear()
        self._cancel.clear()
        self.store.set_run_status(run_id, "running", owner_pid=os.getpid())
        report = progress or (lambda _progress: None)
        judge = None
        if run.config.judge is not None:
            judge_config = JudgeConfig.from_dict(run.config.judge)
            judge_config.api_key = self.judge_api_key
            judge = Judge(judge_config)
        final = "finished"
        try:
            cells = self.store.cells(run_id)
            for index, cell in enumerate(cells):
                if cell.status in FINISHED_CELL_STATES:
                    continue
                outcome = await self._run_cell(run, cell, index, len(cells), judge, report)
                if outcome in ("paused", "cancelled"):
                    final = outcome
                    break
        except asyncio.CancelledError:
            self.store.set_run_status(run_id, "cancelled")
            raise
        except BaseException as exc:
            self.store.set_run_status(run_id, "failed", error=str(exc))
            raise
        finally:
            if judge is not None:
                await judge.aclose()
        self.store.set_run_status(run_id, final)
        finished = sum(1 for c in self.store.cells(run_id) if c.status in FINISHED_CELL_STATES)
        report(RunProgress(run_id, final, finished, len(cells), "", 0, 0))
        return self.store.get_run(run_id)

    # -- one cell ------------------------------------------------------------------------------

    async def _run_cell(
        self,
        run: RunRecord,
        cell: CellRecord,
        index: int,
        count: int,
        judge: Judge | None,
        report: ProgressListener,
    ) -> str:
        items = run.config.prompt_set.items
        done_ids = self.store.finished_item_ids(cell.id)
        todo = [(position, item) for position, item in enumerate(items) if item.id not in done_ids]

        def tell(state: str, message: str = "") -> None:
            report(
                RunProgress(
                    run.id, state, index, count, cell.label, len(done_ids), len(items), message
                )
            )

        self.store.update_cell(
            cell.id, status="running", error="", started=cell.started or time.time()
        )
        tell("starting", f"starting {cell.label}")
        served: ServedCell | None = None
        sampler: MemorySampler | None = None
        measurement: Measurement | None = None
        outcome = "cell-done"
        try:
            if cell.status == "running":  # its process was killed: its server may be left
                await self._remove_leftover(service_name(run, cell.position))
            served = await self._start(cell.spec, run.config, service_name(run, cell.position))
            self.current = served
            self.store.update_cell(
                cell.id,
                endpoint=served.base_url,
                model_sha256=served.model_sha256,
                image_digest=served.image_digest,
            )
            sampler = await MemorySampler.for_served(self.services, served, self.memory_interval_s)
            if sampler is not None:
                sampler.start()
            measurement = await asyncio.to_thread(self.energy.measure)
            params = GenerationParams.from_dict(run.config.params)
            failures = 0
            async with ChatClient(
                served.base_url, served.api_key, read_timeout=run.config.item_timeout_s
            ) as client:
                for position, item in todo:
                    if self._cancel.is_set():
                        outcome = "cancelled"
                        break
                    if self._pause.is_set():
                        outcome = "paused"
                        break
                    tell("running", item.id)
                    record = await self._ask(client, served, cell, position, item, params, run)
                    if record is None:  # cancelled while asking
                        outcome = "cancelled"
                        break
                    if record.status == "done":
                        record = await _scored(record, item, judge)
                    self.store.save_item(record)
                    done_ids.add(item.id)
                    failures = failures + 1 if record.status == "failed" else 0
                    if failures:
                        await self._check_alive(served, record.error)
                    if failures >= MAX_FAILURES_IN_A_ROW:
                        raise CellFailed(
                            f"{failures} items in a row got no answer; the last: {record.error}"
                        )
        except CellFailed as exc:
            outcome = "cell-failed"
            self.store.update_cell(cell.id, status="failed", error=str(exc), finished=time.time())
        except PodlabError as exc:
            outcome = "cell-failed"
            message = exc.message + (f" ({exc.hint})" if exc.hint else "")
            self.store.update_cell(cell.id, status="failed", error=message, finished=time.time())
        finally:
            self.current = None
            await self._finish_cell(cell, sampler, measurement)
            if served is not None:
                await self._stop(served)
        if outcome == "cell-done":
            self.store.update_cell(cell.id, status="done", finished=time.time())
        elif outcome in ("paused", "cancelled"):
            self.store.update_cell(cell.id, status="pending")
        tell(outcome, self.store.cell(cell.id).error)
        return outcome

    async def _ask(
        self,
        client: ChatClient,
        served: ServedCell,
        cell: CellRecord,
        position: int,
        item: PromptItem,
        params: GenerationParams,
        run: RunRecord,
    ) -> ItemRecord | None:
        """Ask one item; a cancel drops it (None), a stall past the item timeout is a failed
        cell (the server stopped answering)."""
        stream = client.stream_chat(item.messages(), served.model, params)
        asking = asyncio.ensure_future(_last_done(stream))
        cancelled = asyncio.ensure_future(self._cancel.wait())
        try:
            finished, _ = await asyncio.wait(
                {asking, cancelled},
                timeout=run.config.item_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        except asyncio.CancelledError:  # the whole run was cancelled (its task)
            asking.cancel()
            raise
        finally:
            cancelled.cancel()
        if asking not in finished:
            asking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asking
            await stream.aclose()
            if self._cancel.is_set():
                return None
            raise CellFailed(
                f"the server gave no complete answer to item {item.id!r} within "
                f"{run.config.item_timeout_s:g} s"
            )
        done = asking.result()
        return _item_record(cell.id, position, item, done)

    async def _check_alive(self, served: ServedCell, error: str) -> None:
        """After a failed item: a server that is gone fails the cell."""
        if served.service is None:
            return
        backend = self.services.backends[served.service.engine]
        try:
            dead = await backend.why_dead(served.service)
        except PodlabError as exc:
            dead = exc.message
        if dead:
            raise CellFailed(f"the server crashed: {dead} (last error: {error})")

    async def _finish_cell(
        self, cell: CellRecord, sampler: MemorySampler | None, measurement: Measurement | None
    ) -> None:
        fields: dict[str, Any] = {}
        if sampler is not None:
            await sampler.stop()
            peak = max(sampler.peak or 0, cell.peak_memory_bytes or 0)
            if peak:
                fields["peak_memory_bytes"] = peak
                fields["memory_source"] = sampler.source
        if measurement is not None:
            report = await asyncio.to_thread(measurement.stop)
            if report.joules is not None:
                fields["energy_j"] = report.joules + (cell.energy_j or 0.0)
                fields["energy_source"] = ", ".join(sorted(report.by_source)) or None
        if fields:
            self.store.update_cell(cell.id, **fields)

    # -- servers -------------------------------------------------------------------------------

    async def _remove_leftover(self, name: str) -> None:
        for service in await self.services.list_services():
            if service.name == name:
                log.info("removing %s, left by an evaluation that was killed", name)
                with contextlib.suppress(PodlabError):
                    await self.services.delete(service)

    async def _start(self, spec: CellSpec, config: RunConfig, name: str) -> ServedCell:
        if spec.backend == "endpoint":
            api_key = self.endpoint_api_keys.get(spec.model)
            async with ChatClient(spec.model, api_key) as client:
                models = await client.list_models()
            return ServedCell(spec.model, models[0] if models else None, api_key)
        model = f"{spec.model}:{spec.quant}" if spec.quant else spec.model
        options = ServiceOptions(image=spec.image)
        if spec.ctx:
            options.ctx_size = spec.ctx
        request = ServeRequest(model, engine=spec.backend, options=options, name=name)
        service: InferenceService | None = None
        try:
            service = await self.services.create(request)
            await self.services.start(service, ready_timeout=config.ready_timeout_s)
        except PodlabError as exc:
            if service is not None:
                with contextlib.suppress(PodlabError):
                    await self.services.delete(service)
            raise CellFailed(
                "the server did not start: " + exc.message + (f"\n{exc.hint}" if exc.hint else "")
            ) from None
        digest = None
        if service.engine == "podman" and service.image:
            with contextlib.suppress(PodlabError):
                digest = await self.services.engine.image_digest(service.image)
        return ServedCell(
            base_url=service.endpoint,
            model=service.model_ref,
            api_key=service.api_key,
            service=service,
            model_sha256=await asyncio.to_thread(file_sha256, Path(service.model_file)),
            image_digest=digest,
        )

    async def _stop(self, served: ServedCell) -> None:
        """Stop and remove the cell's service, so the next cell has the memory."""
        if served.service is None:
            return
        try:
            await self.services.delete(served.service)
        except PodlabError as exc:
            log.warning("could not remove evaluation service %s: %s", served.service.name, exc)


def service_name(run: RunRecord, position: int) -> str:
    """The name of a cell's service, found again to remove it after a killed run; the run's
    creation time makes it unique across databases (Podman names must be)."""
    token = hashlib.sha256(repr(run.created).encode()).hexdigest()[:8]
    return f"podlab-eval-{run.id}-{position + 1}-{token}"


async def _last_done(stream: Any) -> Done:
    done: Done | None = None
    async for event in stream:
        if isinstance(event, Done):
            done = event
    assert done is not None, "every stream ends with Done"
    return done


def _item_record(cell_id: int, position: int, item: PromptItem, done: Done) -> ItemRecord:
    """Timings in llama-bench terms: the server's own `timings` where llama.cpp sent them,
    else measured here (prompt time = time to first token, generation = first to last)."""
    metrics = done.metrics
    values = done.timings.values if done.timings is not None else {}
    prompt_tokens = metrics.prompt_tokens
    completion_tokens = metrics.tokens
    if values.get("predicted_ms") and values.get("predicted_n"):
        source = "server"
        prompt_n = values.get("prompt_n")
        prompt_tokens = int(prompt_n) if prompt_n is not None else prompt_tokens
        prompt_ms = values.get("prompt_ms")
        gen_tokens: int | None = int(values["predicted_n"])
        gen_ms: float | None = values["predicted_ms"]
    else:
        source = "client"
        prompt_ms = metrics.ttft_ms
        gen_tokens = completion_tokens - 1 if completion_tokens > 1 else None
        gen_ms = None
        if gen_tokens and metrics.tokens_per_s:
            gen_ms = gen_tokens / metrics.tokens_per_s * 1000.0
    failed = done.error is not None or done.interrupted
    return ItemRecord(
        cell_id=cell_id,
        item_id=item.id,
        position=position,
        status="failed" if failed else "done",
        answer=done.text,
        scorer=item.scorer.name,
        error=(done.error or "the answer was interrupted") if failed else "",
        ttft_ms=metrics.ttft_ms,
        total_ms=metrics.total_ms,
        prompt_tokens=prompt_tokens,
        prompt_ms=prompt_ms,
        gen_tokens=gen_tokens,
        gen_ms=gen_ms,
        completion_tokens=completion_tokens,
        timing_source="server" if source == "server" else "client",
        finish_reason=done.finish_reason,
    )


async def _scored(record: ItemRecord, item: PromptItem, judge: Judge | None) -> ItemRecord:
    if item.scorer.name in DETERMINISTIC:
        score = score_answer(item, record.answer)
    elif judge is not None:
        score = await judge.score(item, record.answer)
    else:
        score = Score(None, "no judge model was chosen for this run", "error")
    return _with_score(record, score)


def _with_score(record: ItemRecord, score: Score) -> ItemRecord:
    return replace(record, score=score.value, score_state=score.state, score_detail=score.detail)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str | None:
    """The sha256 of a model file (a folder: None), remembered per path, size and mtime."""
    try:
        info = path.stat()
    except OSError:
        return None
    if not path.is_file():
        return None
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


# ---------------------------------------------------------------------------------------------
# Memory


def process_tree_rss(pid: int) -> int | None:
    """RSS of a process and its children (the local engine's server), None when it is gone."""
    try:
        process = psutil.Process(pid)
        total = int(process.memory_info().rss)
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                total += int(child.memory_info().rss)
        return total
    except psutil.Error:
        return None


def _rss_reader(pid: int) -> Callable[[], Any]:
    async def read() -> int | None:
        return await asyncio.to_thread(process_tree_rss, pid)

    return read


async def _local_container_pid(services: ServiceManager, container: str) -> int | None:
    """The host pid of a container's first process when it runs on this machine: the pid's
    cgroup names the container (a remote Podman's or a VM's pids are not ours)."""
    try:
        state = await services.engine.container_state(container)
    except (PodlabError, httpx.HTTPError):
        return None
    pid = (state or {}).get("Pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        cgroups = await asyncio.to_thread(Path(f"/proc/{pid}/cgroup").read_text)
    except OSError:
        return None
    return pid if container in cgroups else None


class MemorySampler:
    """Samples a server's memory in the background and keeps the peak."""

    def __init__(
        self, read: Callable[[], Any], source: str, interval_s: float = MEMORY_INTERVAL_S
    ) -> None:
        self._read = read
        self.source = source
        self.interval_s = interval_s
        self.peak: int | None = None
        self.last: int | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def for_served(
        cls, services: ServiceManager, served: ServedCell, interval_s: float = MEMORY_INTERVAL_S
    ) -> MemorySampler | None:
        """The local engine: RSS of the server's process tree. Podman: the same for the
        container's processes when they run on this machine (seen in /proc), else container
        statistics. RSS counts the model's weights mapped from the file; a container's memory
        cgroup misses the pages of a model file another process read first."""
        service = served.service
        if service is None:
            return None  # an endpoint: not Podlab's process
        if service.engine == "local":
            pid = service.pid
            if pid is None:
                return None
            return cls(_rss_reader(pid), "process RSS", interval_s)
        container = service.container_id or service.id
        pid = await _local_container_pid(services, container)
        if pid is not None:
            return cls(_rss_reader(pid), "container process RSS", interval_s)

        async def read_stats() -> int | None:
            stats = await services.engine.container_stats(container)
            value = stats.get("memory_bytes")
            return int(value) if value else None

        return cls(read_stats, "container stats", interval_s)

    async def sample(self) -> int | None:
        """One reading now (also taken by the background loop)."""
        try:
            value: int | None = await self._read()
        except (PodlabError, OSError) as exc:
            log.debug("memory sample failed: %s", exc)
            return None
        if value:
            self.last = value
            self.peak = value if self.peak is None else max(self.peak, value)
        return value

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.sample()


def task_progress(task: Task) -> ProgressListener:
    """A progress listener that reports into a Lab task (the Tasks panel)."""

    def report(progress: RunProgress) -> None:
        where = f"cell {progress.cell_index + 1}/{progress.cells}"
        detail = f"{where} {progress.cell_label}: {progress.items_done}/{progress.items}"
        if progress.message:
            detail += f" · {progress.message}"
        task.report(progress.fraction, detail)

    return report
