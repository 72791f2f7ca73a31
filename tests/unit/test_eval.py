"""Evaluate's core without servers: prompt-set files refused with `file:line: problem`, JSONL
import, every deterministic scorer, the judge's verdict parsing, the seeded bootstrap, the
SQLite store's privacy and read API, and the exports."""

from __future__ import annotations

import csv
import io
import json
import random
import stat
import textwrap
from pathlib import Path

import pytest

from podlab.core.errors import ConfigError
from podlab.core.evaluate.promptset import (
    PromptItem,
    ScorerSpec,
    builtin_set_names,
    load_prompt_set,
    resolve_prompt_set,
)
from podlab.core.evaluate.report import compare_runs, export_run
from podlab.core.evaluate.results import CellSpec, ItemRecord, RunConfig
from podlab.core.evaluate.runner import new_run_config
from podlab.core.evaluate.scorers import extract_json, parse_verdict, score_answer
from podlab.core.evaluate.stats import bootstrap_ci, percentile
from podlab.core.evaluate.store import EvalStore
from podlab.core.paths import Locations

pytestmark = pytest.mark.unit


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def item(scorer: str, reference: str | list[str] | None = None, **params: object) -> PromptItem:
    return PromptItem("x", "q", ScorerSpec(scorer, params), reference=reference)


# ---------------------------------------------------------------------------------------------
# Prompt sets


def test_yaml_set_reads_defaults_and_per_item_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mine.yaml",
        """
        name: mine
        scorer: numeric
        params: {tolerance: 0.5}
        system: Be brief.
        items:
          - {id: a, prompt: "1+1?", reference: 2}
          - id: b
            prompt: "Say hi"
            reference: hi
            scorer: exact
            system: Be loud.
            tags: [greeting]
        """,
    )
    prompt_set = load_prompt_set(path)
    first, second = prompt_set.items
    assert prompt_set.name == "mine" and len(prompt_set.sha256) == 64
    assert first.scorer == ScorerSpec("numeric", {"tolerance": 0.5})
    assert first.reference == "2" and first.system == "Be brief." and first.line == 6
    assert second.scorer == ScorerSpec("exact", {}) and second.system == "Be loud."
    assert second.tags == ("greeting",)
    assert second.messages() == [
        {"role": "system", "content": "Be loud."},
        {"role": "user", "content": "Say hi"},
    ]


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("items:\n  - {prompt: a, reference: b}\n  - {reference: b}\n", 3, "has no prompt"),
        ("items:\n  - {prompt: a, scorer: fuzzy, reference: b}\n", 2, "unknown scorer 'fuzzy'"),
        ("items:\n  - {prompt: a}\n", 2, "neither a reference nor a scorer"),
        ("items:\n  - {prompt: a, reference: x, scorer: numeric}\n", 2, "a number as its"),
        ("items:\n  - {prompt: a, scorer: regex, params: {pattern: '(a'}}\n", 2, "not compile"),
        ("items:\n  - {prompt: a, scorer: json_schema}\n", 2, "needs a 'schema'"),
        (
            "items:\n  - {prompt: a, scorer: json_schema, params: {schema: {type: 7}}}\n",
            2,
            "JSON Schema is not valid",
        ),
        (
            "items:\n  - {id: a, prompt: a, reference: b}\n  - {id: a, prompt: c, reference: d}\n",
            3,
            "duplicate item id 'a' (first at line 2)",
        ),
        ("items:\n  - {prompt: a, reference: b, colour: red}\n", 2, "unknown key 'colour'"),
        ("title: x\nitems: []\n", 1, "unknown key 'title'"),
        ("items:\n  - {prompt: a, reference: b\n", 3, "not valid YAML"),
        ("items:\n  - {prompt: a, reference: b, tags: 3}\n", 2, "'tags' must be"),
    ],
)
def test_broken_yaml_is_refused_with_file_and_line(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, "broken.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_prompt_set(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert problem in str(caught.value)


def test_empty_set_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.yaml", "items: []\n")
    with pytest.raises(ConfigError, match="has no items"):
        load_prompt_set(path)


def test_jsonl_imports_the_common_shapes(tmp_path: Path) -> None:
    lines = [
        {"input": "2+2?", "ideal": "4"},
        {"question": "Capital of Peru?", "answer": ["Lima", "lima"], "extra": 1},
        {
            "input": [
                {"role": "system", "content": "Terse."},
                {"role": "user", "content": "Colour of grass?"},
            ],
            "target": "green",
            "scorer": "exact",
        },
        {"prompt": "Any JSON", "scorer": "json_schema", "params": {"schema": {"type": "object"}}},
        {"id": "last", "prompt": "x", "output": "y"},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    prompt_set = load_prompt_set(path)
    one, two, three, four, five = prompt_set.items
    assert (one.id, one.prompt, one.reference, one.scorer.name) == ("1", "2+2?", "4", "contains")
    assert two.reference == ["Lima", "lima"]
    assert (three.system, three.prompt, three.scorer.name) == (
        "Terse.",
        "Colour of grass?",
        "exact",
    )
    assert four.reference is None and four.scorer.name == "json_schema"
    assert five.id == "last" and five.line == 5
    assert prompt_set.name == "set"


def test_broken_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "set.jsonl"
    path.write_text('{"input": "a", "ideal": "b"}\n\n{"input": "c", "ideal": \n', "utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}:3: is not valid JSON"):
        load_prompt_set(path)
    path.write_text('{"input": "a", "ideal": "b"}\n["not", "an", "object"]\n', "utf-8")
    with pytest.raises(ConfigError, match=rf"^{path}:2: each line must be a JSON object"):
        load_prompt_set(path)


def test_builtin_sets_load_and_an_unknown_name_lists_them() -> None:
    names = builtin_set_names()
    assert {"arithmetic", "facts", "extract-json", "format"} <= set(names)
    for name in names:
        prompt_set = resolve_prompt_set(name)
        assert prompt_set.items and prompt_set.name == name
    with pytest.raises(ConfigError) as caught:
        resolve_prompt_set("no-such-set")
    assert "arithmetic" in caught.value.hint


# ---------------------------------------------------------------------------------------------
# Scorers


@pytest.mark.parametrize(
    ("scored", "answer", "value"),
    [
        (item("exact", "Paris"), " paris. ", 1.0),
        (item("exact", "Paris"), "Paris is the capital", 0.0),
        (item("exact", "Paris", case_sensitive=True), "paris", 0.0),
        (item("exact", ["4", "four"]), "Four", 1.0),
        (item("contains", "Paris"), "The capital is PARIS.", 1.0),
        (item("contains", ["Lima", "Cusco"]), "It is Quito.", 0.0),
        (item("regex", None, pattern=r"^\d+$", fullmatch=True), " 42 ", 1.0),
        (item("regex", None, pattern=r"^\d+$", fullmatch=True), "42 apples", 0.0),
        (item("regex", None, pattern="HELLO", case_sensitive=True), "hello", 0.0),
        (item("regex", r"h.llo"), "Say HELLO", 1.0),
        (item("numeric", "42"), "6 * 7 = 42.", 1.0),
        (item("numeric", "42"), "It is 41.", 0.0),
        (item("numeric", "4.5", tolerance=0.01), "about 4.501", 1.0),
        (item("numeric", "1000", relative_tolerance=0.01), "1,009", 1.0),
        (item("numeric", "1000", relative_tolerance=0.01), "1,011", 0.0),
        (item("numeric", "7"), "seven", 0.0),
    ],
)
def test_deterministic_scorers(scored: PromptItem, answer: str, value: float) -> None:
    assert score_answer(scored, answer).value == value


def test_json_schema_scorer_finds_json_in_fences_and_text_and_says_what_is_wrong() -> None:
    schema = {
        "type": "object",
        "required": ["name", "age"],
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    scored = item("json_schema", schema=schema)
    assert score_answer(scored, '{"name": "Al", "age": 3}').value == 1.0
    assert score_answer(scored, 'Here:\n```json\n{"name": "Al", "age": 3}\n```').value == 1.0
    assert score_answer(scored, 'Sure! {"name": "Al", "age": 3} Done.').value == 1.0
    wrong = score_answer(scored, '{"name": "Al", "age": "three"}')
    assert wrong.value == 0.0 and wrong.detail.startswith("age: ")
    assert score_answer(scored, "no json here").detail == "no JSON value in the answer"
    with pytest.raises(ValueError):
        extract_json("{broken")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A", "A"),
        ("b.", "B"),
        ("**TIE**", "TIE"),
        ("Verdict: B", "B"),
        ("Answer A is better", None),
        ("\n\nI think the answer is A.", "A"),
        ("The verdict is **B**", "B"),
        ("A is wrong, so the answer is B", "B"),
        ("A is wrong", None),
        ("TIE\nBoth say Paris.", "TIE"),
        ("Hello, wörld! 日本語 🙂 done.", None),
        ("", None),
        ("PASS", None),
    ],
)
def test_judge_verdicts_are_read_strictly(reply: str, verdict: str | None) -> None:
    assert parse_verdict(reply, ("A", "B", "TIE")) == verdict


# ---------------------------------------------------------------------------------------------
# Statistics


def test_bootstrap_ci_is_seeded_and_covers_the_mean() -> None:
    rng = random.Random(7)
    values = [float(rng.random() < 0.7) for _ in range(200)]
    first = bootstrap_ci(values)
    assert first == bootstrap_ci(values)  # seeded: the same answers, the same interval
    assert first is not None
    mean = sum(values) / len(values)
    low, high = first
    assert low < mean < high
    # The width follows the binomial standard error (about ±1.96·sqrt(p(1-p)/n)).
    expected = 2 * 1.96 * (mean * (1 - mean) / len(values)) ** 0.5
    assert abs((high - low) - expected) < 0.35 * expected
    assert bootstrap_ci([]) is None and bootstrap_ci([0.5]) == (0.5, 0.5)
    assert bootstrap_ci([1.0] * 10) == (1.0, 1.0)


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) is None
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)


# ---------------------------------------------------------------------------------------------
# Store and exports


def stored_run(store: EvalStore, scores: list[list[float]]) -> int:
    """A run of the arithmetic set with one cell per list of scores (answers as stored)."""
    prompt_set = resolve_prompt_set("arithmetic")
    cells = [CellSpec(f"model-{n}", quant="Q4_K_M") for n in range(len(scores))]
    run = store.create_run(new_run_config(prompt_set, cells))
    for cell, values in zip(store.cells(run.id), scores, strict=True):
        for position, (entry, value) in enumerate(zip(prompt_set.items, values, strict=False)):
            store.save_item(
                ItemRecord(
                    cell_id=cell.id,
                    item_id=entry.id,
                    position=position,
                    status="done",
                    answer=f"answer | {position}\nline two",
                    scorer=entry.scorer.name,
                    score=value,
                    ttft_ms=100.0 + position,
                    prompt_tokens=20,
                    prompt_ms=50.0,
                    gen_tokens=9,
                    gen_ms=90.0,
                    completion_tokens=10,
                    timing_source="client",
                )
            )
        store.update_cell(cell.id, status="done", peak_memory_bytes=300 * 1024**2)
    store.set_run_status(run.id, "finished")
    return run.id


def test_store_is_private_and_reads_back_runs_cells_items(tmp_path: Path) -> None:
    locations = Locations(tmp_path / "c", tmp_path / "d", tmp_path / "ca", tmp_path / "s")
    store = EvalStore.open_default(locations)
    path = locations.eval_database_file
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    run_id = stored_run(store, [[1.0] * 10, [1.0, 0.0] * 5])
    for sidecar in path.parent.glob("eval.sqlite3-*"):
        assert stat.S_IMODE(sidecar.stat().st_mode) == 0o600, sidecar
    (run,) = store.list_runs()
    assert run.id == run_id and run.status == "finished" and run.set_name == "arithmetic"
    assert run.config.params == {"temperature": 0.0, "seed": 42, "max_tokens": 256}
    assert run.config.prompt_set == resolve_prompt_set("arithmetic")
    first, second = store.cells(run_id)
    assert [item.item_id for item in store.items(first.id)] == [
        entry.id for entry in run.config.prompt_set.items
    ]
    side_by_side = store.answers(run_id, "add-small")
    assert set(side_by_side) == {first.id, second.id}
    summary_one, summary_two = store.summary(run_id)
    assert summary_one.quality.mean == 1.0 and summary_two.quality.mean == 0.5
    assert summary_two.quality.ci_low is not None and summary_two.quality.ci_low < 0.5
    assert summary_one.tg_tokens_per_s == pytest.approx(100.0)  # 9 tokens / 90 ms
    assert summary_one.pp_tokens_per_s == pytest.approx(400.0)  # 20 tokens / 50 ms
    assert summary_one.ttft_p50_ms == pytest.approx(104.5)
    assert summary_one.generated_tokens == 100
    store.close()
    reopened = EvalStore(path)
    assert reopened.summary(run_id) == [summary_one, summary_two]
    assert reopened.finished_item_ids(first.id) == {e.id for e in run.config.prompt_set.items}
    reopened.close()


def test_exports_hold_what_the_store_holds(tmp_path: Path) -> None:
    store = EvalStore(tmp_path / "eval.sqlite3")
    run_id = stored_run(store, [[1.0] * 10, [0.0] * 10])
    rows = list(csv.DictReader(io.StringIO(export_run(store, run_id, "csv"))))
    assert len(rows) == 20
    cells = store.cells(run_id)
    stored = {(c.label, i.item_id): i for c in cells for i in store.items(c.id)}
    for row in rows:
        record = stored[(row["cell"], row["item_id"])]
        assert float(row["score"]) == record.score and row["answer"] == record.answer
    data = json.loads(export_run(store, run_id, "json"))
    assert data["config"]["prompt_set"]["sha256"] == store.get_run(run_id).set_sha256
    assert [s["quality"]["mean"] for s in data["summary"]] == [1.0, 0.0]
    assert len(data["cells"][0]["items"]) == 10
    markdown = export_run(store, run_id, "md")
    assert "| model-0 · Q4_K_M · local | done | 1.00 [1.00, 1.00]" in markdown
    assert "| model-1 · Q4_K_M · local | done | 0.00 [0.00, 0.00]" in markdown
    with pytest.raises(ValueError):
        export_run(store, run_id, "xml")


def test_compare_flags_a_drop_beyond_the_earlier_interval(tmp_path: Path) -> None:
    store = EvalStore(tmp_path / "eval.sqlite3")
    before = stored_run(store, [[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]] * 2)
    after = stored_run(
        store,
        [
            [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
            [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        ],
    )
    same, dropped = compare_runs(store, before, after)
    assert not same.dropped and same.delta == pytest.approx(0.0)
    assert dropped.dropped and dropped.delta == pytest.approx(-0.6)


def test_run_config_round_trips(tmp_path: Path) -> None:
    config = new_run_config(resolve_prompt_set("format"), [CellSpec("m", "podman", ctx=2048)])
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.cells[0].label == "m · 2048 · podman"
