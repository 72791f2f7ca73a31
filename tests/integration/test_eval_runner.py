"""The evaluation runner on real servers: SmolLM2 and Gemma 3 270M started and stopped one after
another by the local engine (and a cell on Podman), at temperature 0 with a seed; a killed
`podlab eval` resumes without repeating items; a server killed mid-run fails its cell and the
next cell runs; the judge against the fault server (unparseable verdicts) and a real model;
memory figures against what psutil reports for the server process."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from podlab.core.chat.client import GenerationParams
from podlab.core.evaluate.promptset import PromptSet, load_prompt_set
from podlab.core.evaluate.results import CellSpec
from podlab.core.evaluate.runner import (
    EvalRunner,
    MemorySampler,
    RunProgress,
    ServedCell,
    new_run_config,
)
from podlab.core.evaluate.scorers import JudgeConfig, score_answer
from podlab.core.evaluate.store import EvalStore
from podlab.core.paths import Locations
from podlab.core.serving.container_spec import ServiceOptions
from podlab.core.serving.local_server import LocalEngine
from podlab.core.serving.planning import ServeRequest
from podlab.core.serving.services import ServiceManager
from tests import harness

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from faultserver import ANSWER_TEXT, FaultServer

pytestmark = pytest.mark.integration

TEN_ITEMS = Path(__file__).resolve().parents[1] / "data" / "eval" / "ten-items.yaml"
REPO = Path(__file__).resolve().parents[2]
PARAMS = GenerationParams(max_tokens=12)


@pytest.fixture
def ten_items() -> PromptSet:
    return load_prompt_set(TEN_ITEMS)


@pytest.fixture
def store() -> Iterator[EvalStore]:
    with EvalStore.open_default() as opened:
        yield opened


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_scores_recompute(store: EvalStore, run_id: int, prompt_set: PromptSet) -> None:
    """Every stored score equals the score computed again from the stored answer."""
    for cell in store.cells(run_id):
        for record in store.items(cell.id):
            if record.status != "done":
                continue
            again = score_answer(prompt_set.item(record.item_id), record.answer)
            assert (record.score, record.score_detail) == (again.value, again.detail), record


def live_local_servers() -> list[int]:
    records = LocalEngine(Locations.default()).records()
    return [r.pid for r in records if r.pid is not None and psutil.pid_exists(r.pid)]


async def test_two_models_run_one_after_another_on_the_local_engine(
    service_manager: ServiceManager,
    store: EvalStore,
    ten_items: PromptSet,
    smollm2_model: Path,
    gemma3_model: Path,
) -> None:
    cells = [CellSpec(str(smollm2_model), ctx=1024), CellSpec(str(gemma3_model), ctx=1024)]
    run = store.create_run(new_run_config(ten_items, cells, params=PARAMS))
    seen: list[RunProgress] = []
    servers_while_running: list[int] = []

    def progress(event: RunProgress) -> None:
        seen.append(event)
        if event.state == "running":
            servers_while_running.append(len(live_local_servers()))

    finished = await EvalRunner(store, service_manager).run(run.id, progress)

    assert finished.status == "finished" and finished.owner_pid is None
    first, second = store.cells(run.id)
    for cell, model in ((first, smollm2_model), (second, gemma3_model)):
        assert cell.status == "done", cell.error
        assert cell.model_sha256 == sha256_of(model)
        assert [r.item_id for r in store.items(cell.id)] == [i.id for i in ten_items.items]
        assert all(r.status == "done" and r.answer for r in store.items(cell.id))
        assert cell.memory_source == "process RSS" and cell.peak_memory_bytes
    assert first.finished is not None and second.started is not None
    assert first.finished <= second.started  # one after another, never together
    assert max(servers_while_running) == 1
    assert live_local_servers() == []  # every cell's server was stopped
    assert_scores_recompute(store, run.id, ten_items)
    summaries = store.summary(run.id)
    for summary in summaries:
        assert summary.failed == 0 and summary.quality.scored == 10
        assert summary.tg_tokens_per_s and summary.ttft_p50_ms
        assert summary.quality.ci_low is not None and summary.quality.ci_high is not None
        assert summary.quality.ci_low <= summary.quality.mean <= summary.quality.ci_high  # type: ignore[operator]
    assert [e.state for e in seen].count("cell-done") == 2 and seen[-1].state == "finished"


async def test_a_server_killed_mid_run_fails_its_cell_and_the_next_cell_runs(
    service_manager: ServiceManager, store: EvalStore, ten_items: PromptSet, smollm2_model: Path
) -> None:
    cells = [CellSpec(str(smollm2_model), ctx=1024), CellSpec(str(smollm2_model), ctx=2048)]
    run = store.create_run(new_run_config(ten_items, cells, params=PARAMS))
    runner = EvalRunner(store, service_manager)
    killed: list[int] = []

    def progress(event: RunProgress) -> None:
        current = runner.current
        if event.cell_index == 0 and event.items_done == 3 and not killed and current:
            assert current.service is not None and current.service.pid is not None
            os.kill(current.service.pid, signal.SIGKILL)
            killed.append(current.service.pid)

    finished = await runner.run(run.id, progress)

    assert killed and finished.status == "finished"
    crashed, next_cell = store.cells(run.id)
    assert crashed.status == "failed" and "crashed" in crashed.error
    stored = store.items(crashed.id)
    assert [r.status for r in stored[:3]] == ["done"] * 3
    assert stored[3].status == "failed" and stored[3].error  # the item asked when it died
    assert len(stored) == 4  # nothing asked after the crash
    assert next_cell.status == "done" and len(store.items(next_cell.id)) == 10
    assert live_local_servers() == []
    assert_scores_recompute(store, run.id, ten_items)


def cli_env() -> dict[str, str]:
    """This checkout's podlab first, as the tests import it."""
    paths = [str(REPO / "app"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def eval_cli(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "podlab", "eval", *args],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def stored_items(path: Path) -> dict[str, float]:
    """item id -> when it was stored, read the way another process would."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT item_id, created FROM items").fetchall())


def test_a_killed_cli_run_resumes_without_repeating_finished_items(
    store: EvalStore, smollm2_model: Path
) -> None:
    database = Locations.default().eval_database_file
    runner = eval_cli("run", str(TEN_ITEMS), "--model", str(smollm2_model), "--max-tokens", "12")
    try:
        deadline = time.monotonic() + 180
        while len(stored_items(database)) < 4:
            assert runner.poll() is None, runner.communicate()
            assert time.monotonic() < deadline, "no items stored in time"
            time.sleep(0.1)
        runner.kill()  # SIGKILL: no clean-up of any kind
        runner.wait(10)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    before = stored_items(database)
    (run,) = store.list_runs()
    assert run.status == "running" and store.is_orphaned(run)
    assert len(live_local_servers()) == 1  # the killed runner's server is still there
    listing = subprocess.run(
        [sys.executable, "-m", "podlab", "eval", "list"],
        env=cli_env(),
        capture_output=True,
        check=True,
    )
    assert b"killed (resumable)" in listing.stdout

    resumed = eval_cli("resume", str(run.id))
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err.decode()
    after = stored_items(database)
    assert len(after) == 10
    assert {key: after[key] for key in before} == before  # finished items were not asked again
    assert store.get_run(run.id).status == "finished"
    assert live_local_servers() == []  # the leftover server was removed, the new one stopped
    assert b"run " + str(run.id).encode() + b" finished" in err
    assert b"| ten-items" not in out and b"ten-items" in out


async def test_judge_records_unparseable_verdicts_from_the_fault_server(
    store: EvalStore,
) -> None:
    judged = PromptSet.from_dict(
        {
            "name": "judged",
            "sha256": "0" * 64,
            "items": [
                {
                    "id": "with-ref",
                    "prompt": "Capital of France?",
                    "reference": "Paris",
                    "scorer": {"name": "judge", "params": {}},
                },
                {
                    "id": "no-ref",
                    "prompt": "Write a haiku.",
                    "reference": None,
                    "scorer": {"name": "judge", "params": {}},
                },
            ],
        }
    )
    async with FaultServer() as answers, FaultServer() as judge:
        config = new_run_config(
            judged,
            [CellSpec(answers.url, backend="endpoint")],
            judge=JudgeConfig(endpoint=judge.url, model="fault-model"),
        )
        run = store.create_run(config)
        finished = await EvalRunner(store).run(run.id)
        judge_prompts = [r.body["messages"][0]["content"] for r in judge.chat_requests()]
    assert finished.status == "finished"
    (cell,) = store.cells(run.id)
    with_ref, no_ref = store.items(cell.id)
    for record in (with_ref, no_ref):
        assert record.answer == ANSWER_TEXT
        assert (record.score, record.score_state) == (None, "unparseable")
        assert "Hello, wörld!" in record.score_detail
    (summary,) = store.summary(run.id)
    assert summary.unparseable == 2 and summary.quality.scored == 0
    assert summary.quality.mean is None  # unparseable is not scored as 0
    # Both orders for the item with a reference, one question for the one without.
    assert len(judge_prompts) == 3
    first, second, single = judge_prompts
    assert first.index(ANSWER_TEXT) < first.index("Paris")
    assert second.index("Paris") < second.index(ANSWER_TEXT)
    assert "PASS or FAIL" in single


async def test_an_endpoint_cell_sends_the_key_given_for_its_url_and_stores_none(
    store: EvalStore, ten_items: PromptSet
) -> None:
    """A Podlab service asks for its own key: the runner passes the key given for the cell's
    URL, and the key is nowhere in the stored run."""
    key = "eval-endpoint-secret"
    async with FaultServer(api_key=key) as server:
        run = store.create_run(
            new_run_config(ten_items, [CellSpec(server.url, backend="endpoint")], params=PARAMS)
        )
        refused = await EvalRunner(store).run(run.id)
        (cell,) = store.cells(run.id)
        assert refused.status == "finished" and cell.status == "failed"  # 401 without the key

        again = store.create_run(refused.config)
        finished = await EvalRunner(store, endpoint_api_keys={server.url: key}).run(again.id)
    assert finished.status == "finished"
    (cell,) = store.cells(again.id)
    assert cell.status == "done", cell.error
    stored = store.items(cell.id)
    assert len(stored) == len(ten_items.items)
    assert all(record.status == "done" and record.answer == ANSWER_TEXT for record in stored)
    files = [store.path, Path(f"{store.path}-wal")]
    assert all(key.encode() not in path.read_bytes() for path in files if path.exists())


async def test_a_real_model_judges_the_whole_loop(
    store: EvalStore, smollm2_server: harness.LlamaServer, gemma3_server: harness.LlamaServer
) -> None:
    judged = PromptSet.from_dict(
        {
            "name": "judged",
            "sha256": "1" * 64,
            "items": [
                {
                    "id": "france",
                    "prompt": "What is the capital of France?",
                    "reference": "Paris",
                    "scorer": {"name": "judge", "params": {}},
                },
                {
                    "id": "sum",
                    "prompt": "What is 2 + 2?",
                    "reference": "4",
                    "scorer": {"name": "judge", "params": {}},
                },
            ],
        }
    )
    config = new_run_config(
        judged,
        [CellSpec(smollm2_server.base_url, backend="endpoint")],
        params=PARAMS,
        judge=JudgeConfig(endpoint=gemma3_server.base_url),
    )
    run = store.create_run(config)
    finished = await EvalRunner(store).run(run.id)
    assert finished.status == "finished"
    (cell,) = store.cells(run.id)
    records = store.items(cell.id)
    assert [r.status for r in records] == ["done", "done"]
    for record in records:
        assert record.score_state in ("scored", "unparseable"), record
        if record.score_state == "scored":
            assert record.score in (0.0, 0.5, 1.0)
            assert record.score_detail.startswith("answer first: ")
        else:
            assert record.score is None and "order 1" in record.score_detail
    # Greedy decoding with a seed: Gemma 3 270M's verdicts are the same every time, and at
    # least one of them reads ("I think the answer is A." in both orders: position bias, 0.5).
    assert any(record.score_state == "scored" for record in records)


async def test_memory_figures_match_psutil_for_a_local_server(
    service_manager: ServiceManager, smollm2_model: Path
) -> None:
    service = await service_manager.serve(
        ServeRequest(smollm2_model, engine="local", options=ServiceOptions(ctx_size=1024))
    )
    assert service.pid is not None
    served = ServedCell(service.endpoint, service.model_ref, service=service)
    sampler = await MemorySampler.for_served(service_manager, served, 0.5)
    assert sampler is not None and sampler.source == "process RSS"
    ours = await sampler.sample()
    theirs = psutil.Process(service.pid).memory_info().rss
    assert ours and abs(ours - theirs) <= 0.10 * theirs
    await service_manager.delete(service)


async def test_one_cell_on_podman_with_container_memory(
    service_manager: ServiceManager,
    store: EvalStore,
    ten_items: PromptSet,
    smollm2_model: Path,
    model_server_image: str,
    podman_client: Any,
) -> None:
    cells = [CellSpec(str(smollm2_model), backend="podman", image=model_server_image, ctx=1024)]
    run = store.create_run(new_run_config(ten_items, cells, params=PARAMS))
    runner = EvalRunner(store, service_manager)
    compared: list[tuple[int, int]] = []
    checks: list[asyncio.Future[None]] = []

    async def compare_memory(served: ServedCell) -> None:
        """The runner's reading and psutil's RSS of the container's processes, together."""
        assert served.service is not None and served.service.container_id
        container = podman_client.containers.get(served.service.container_id)
        pid = int(container.attrs["State"]["Pid"])
        sampler = await MemorySampler.for_served(service_manager, served, 0.5)
        # The server's processes are on this machine: their RSS, as psutil reads it.
        assert sampler is not None and sampler.source == "container process RSS"
        ours = await sampler.sample()
        init = psutil.Process(pid)  # the container's init; the server is its child
        theirs = sum(p.memory_info().rss for p in (init, *init.children(recursive=True)))
        assert ours is not None
        compared.append((ours, theirs))

    def progress(event: RunProgress) -> None:
        if event.state == "running" and event.items_done == 2 and runner.current is not None:
            checks.append(asyncio.ensure_future(compare_memory(runner.current)))

    finished = await runner.run(run.id, progress)
    await asyncio.gather(*checks)
    assert finished.status == "finished"
    (cell,) = store.cells(run.id)
    assert cell.status == "done", cell.error
    assert cell.memory_source == "container process RSS" and cell.peak_memory_bytes
    assert cell.image_digest and cell.image_digest.startswith(("sha256:", ""))
    assert cell.model_sha256 == sha256_of(smollm2_model)
    assert len(store.items(cell.id)) == 10
    assert_scores_recompute(store, run.id, ten_items)
    ((ours, theirs),) = compared
    assert abs(ours - theirs) <= 0.10 * theirs, (ours, theirs)


async def test_pause_then_resume_and_cancel_against_a_real_http_server(
    store: EvalStore, ten_items: PromptSet
) -> None:
    """Pause stops after the item being asked; run() again asks only the rest. Cancel stops at
    once and the run can still be resumed. Counted on the server's side."""
    async with FaultServer() as server:
        run = store.create_run(
            new_run_config(ten_items, [CellSpec(server.url, backend="endpoint")])
        )
        runner = EvalRunner(store)

        def pause_after_three(event: RunProgress) -> None:
            if event.state == "running" and event.items_done == 3:
                runner.pause()

        paused = await runner.run(run.id, pause_after_three)
        assert paused.status == "paused"
        (cell,) = store.cells(run.id)
        assert cell.status == "pending" and len(store.items(cell.id)) == 4
        assert len(server.chat_requests()) == 4  # the item being asked was finished

        def cancel_after_six(event: RunProgress) -> None:
            if event.state == "running" and event.items_done == 6:
                runner.cancel()

        cancelled = await runner.run(run.id, cancel_after_six)
        assert cancelled.status == "cancelled"
        assert len(store.items(cell.id)) == 6

        finished = await runner.run(run.id)
        assert finished.status == "finished"
        asked = [r.body["messages"][-1]["content"] for r in server.chat_requests()]
    assert len(store.items(cell.id)) == 10
    prompts = [item.prompt for item in ten_items.items]
    # Every item was asked once, except the one a cancel cut off, which was asked again.
    assert sorted(set(asked)) == sorted(prompts)
    assert len(asked) in (10, 11)
    assert store.cell(cell.id).status == "done"


async def test_a_server_that_fails_every_request_fails_its_cell_after_three(
    store: EvalStore, ten_items: PromptSet
) -> None:
    async with (
        FaultServer(default_scenario="http_error") as failing,
        FaultServer() as working,
    ):
        cells = [
            CellSpec(failing.url, backend="endpoint"),
            CellSpec(working.url, backend="endpoint"),
        ]
        run = store.create_run(new_run_config(ten_items, cells))
        finished = await EvalRunner(store).run(run.id)
        assert len(failing.chat_requests()) == 3
    assert finished.status == "finished"
    broken, fine = store.cells(run.id)
    assert broken.status == "failed" and "3 items in a row" in broken.error
    assert [r.status for r in store.items(broken.id)] == ["failed"] * 3
    assert all(r.error for r in store.items(broken.id))
    assert fine.status == "done" and len(store.items(fine.id)) == 10
    failed_summary, _ = store.summary(run.id)
    assert failed_summary.failed == 3 and failed_summary.quality.mean is None
