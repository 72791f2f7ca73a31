"""The model catalog: bundled data, user files merged by id, Podman AI Lab JSON, validation with
file and line, and the `podlab catalog` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from podlab.core.errors import ConfigError
from podlab.core.models.catalog import (
    check_url,
    guess_quantization,
    load_catalog,
    user_catalog_files,
)
from podlab.core.paths import Locations

pytestmark = pytest.mark.unit

DATA = Path(__file__).resolve().parent.parent / "data" / "catalog"
AI_LAB_JSON = DATA / "podman-ai-lab-catalog.json"
PINNED_HF = re.compile(r"^https://huggingface\.co/[^/]+/[^/]+/resolve/[^/]+/[^/].*$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's catalog folder, inside a temporary XDG_CONFIG_HOME."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    directory = Locations.default().user_catalog_dir
    directory.mkdir(parents=True)
    return directory


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def errors_for(errors: list[ConfigError], path: Path) -> list[ConfigError]:
    return [e for e in errors if e.path == str(path)]


# --- the bundled catalog --------------------------------------------------------------------


def test_bundled_catalog_loads_without_errors(user_dir: Path) -> None:
    loaded = load_catalog()
    assert loaded.errors == []
    catalog = loaded.catalog
    assert len(catalog) >= 25
    ids = set(catalog.models)
    for expected in (
        "granite-3.3-8b-instruct",
        "granite-4.0-micro",
        "llama-3.1-8b-instruct",
        "llama-3.2-1b-instruct",
        "llama-3.2-3b-instruct",
        "mistral-7b-instruct-v0.3",
        "qwen2.5-1.5b-instruct",
        "qwen3-4b",
        "phi-4-mini-instruct",
        "gemma-3-4b-it",
        "deepseek-r1-distill-qwen-1.5b",
        "deepseek-r1-distill-qwen-7b",
        "deepseek-r1-distill-llama-8b",
        "smollm2-135m-instruct",
        "smollm2-360m-instruct",
        "smollm2-1.7b-instruct",
        "gpt-oss-20b",
    ):
        assert expected in ids
    embedders = [m for m in catalog if "embedding" in m.capabilities]
    assert len(embedders) >= 2


def test_bundled_variants_are_pinned_and_checkable(user_dir: Path) -> None:
    catalog = load_catalog().catalog
    seen: set[str] = set()
    for model in catalog:
        assert model.variants, model.id
        assert model.name and model.license and model.publisher
        assert model.backend == "llama-cpp"
        assert model.provenance, f"{model.id} says where its facts come from"
        for variant in model.variants:
            assert PINNED_HF.match(variant.url), variant.url
            assert variant.sha256 is None or HEX64.match(variant.sha256), variant.id
            assert variant.size is None or variant.size > 0
            assert variant.file_name == variant.url.rsplit("/", 1)[1]
            assert variant.quantization
            assert variant.id not in seen
            seen.add(variant.id)
    # The file every test suite can run is fully described, pinned to a commit.
    smol = catalog.model("smollm2-135m-instruct")
    assert smol is not None and smol.default_variant is not None
    assert "/resolve/ab810cf68114990406fdf996510dd3d3c6adbdf5/" in smol.default_variant.url
    assert smol.default_variant.size == 98362432
    assert smol.default_variant.sha256 == (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    )


def test_find_variant_accepts_model_quant_and_variant_ids(user_dir: Path) -> None:
    catalog = load_catalog().catalog
    model, variant = catalog.find_variant("llama-3.2-1b-instruct") or (None, None)
    assert model is not None and variant is model.variants[0]
    found = catalog.find_variant("llama-3.2-1b-instruct:Q8_0")
    assert found is not None and found[1].quantization == "Q8_0"
    found = catalog.find_variant("llama-3.2-1b-instruct:q4_0")
    assert found is not None and found[1].quantization == "Q4_0"
    found = catalog.find_variant("gemma-3-4b-it:QAT-Q4_0")
    assert found is not None and found[1].file_name.startswith("google_gemma-3-4b-it-qat")
    assert catalog.find_variant("llama-3.2-1b-instruct:Q2_K") is None
    assert catalog.find_variant("no-such-model") is None
    embedders = {m.id for m in catalog if "embedding" in m.capabilities}
    assert embedders <= {m.id for m in catalog.search("EMBED")}
    assert [m.id for m in catalog.search("Qwen3 30B")] == ["qwen3-30b-a3b"]


# --- user files -----------------------------------------------------------------------------


def test_user_yaml_overrides_bundled_by_id(user_dir: Path) -> None:
    user_file = write(
        user_dir / "mine.yaml",
        """
        version: 1
        models:
          - id: qwen3-4b
            name: My Qwen3
            capabilities: [chat]
            variants:
              - url: https://example.org/models/qwen3-4b-Q5_K_M.gguf
                sha256: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
                size: 123
          - id: tiny-local
            name: Tiny local model
            url: hf://acme/tiny-GGUF/tiny-q8_0.gguf
        """,
    )
    loaded = load_catalog()
    assert loaded.errors == []
    assert str(user_file) in loaded.files
    qwen = loaded.catalog.model("qwen3-4b")
    assert qwen is not None
    assert qwen.name == "My Qwen3" and qwen.source == str(user_file)
    assert [v.id for v in qwen.variants] == ["qwen3-4b:Q5_K_M"]
    assert qwen.variants[0].sha256 == "a" * 64
    tiny = loaded.catalog.model("tiny-local")
    assert tiny is not None and tiny.variants[0].file_name == "tiny-q8_0.gguf"
    assert tiny.variants[0].quantization == "Q8_0"
    assert len(loaded.catalog) == len(load_catalog(include_user_dir=False).catalog) + 1


def test_extra_files_win_over_the_user_folder(user_dir: Path, tmp_path: Path) -> None:
    template = """
        version: 1
        models:
          - id: shared-id
            name: {name}
            url: https://example.org/{name}.gguf
        """
    write(user_dir / "a.yaml", template.format(name="from-folder"))
    extra = write(tmp_path / "extra.yml", template.format(name="from-extra"))
    model = load_catalog(extra_files=[extra]).catalog.model("shared-id")
    assert model is not None and model.name == "from-extra"
    assert user_catalog_files() == [user_dir / "a.yaml"]


def test_podman_ai_lab_json_loads_and_merges(user_dir: Path) -> None:
    copy = user_dir / "ai-lab.json"
    shutil.copyfile(AI_LAB_JSON, copy)
    bundled = load_catalog(include_user_dir=False).catalog
    loaded = load_catalog()
    catalog = loaded.catalog
    raw = json.loads(AI_LAB_JSON.read_text(encoding="utf-8"))

    # Its OpenVINO entry is a whole repository ('huggingface:/org/repo', id with '/'): refused.
    problems = errors_for(loaded.errors, copy)
    assert len(problems) == 1, problems
    assert "OpenVINO/mistral-7B-instruct-v0.2-int4-ov" in problems[0].problem
    assert problems[0].line == line_of(copy, '"id": "OpenVINO/mistral-7B')
    assert loaded.errors == problems

    assert len(catalog) == len(bundled) + len(raw["models"]) - 1
    granite = catalog.model("hf.ibm-granite.granite-4.0-micro-GGUF")
    assert granite is not None
    variant = granite.variants[0]
    assert variant.id == "hf.ibm-granite.granite-4.0-micro-GGUF:Q4_K_M"
    assert variant.file_name == "granite-4.0-micro-Q4_K_M.gguf"
    assert variant.sha256 == "6c02683809a8dc4eb05c78d44bc63bcd707703b078998fa58829c858ab337bb0"
    assert variant.memory == 2100000000
    assert granite.properties == {"jinja": "true"}
    assert granite.license == "Apache-2.0"
    assert granite.source == str(copy)
    whisper = catalog.model("hf.ggerganov.whisper.cpp")
    assert whisper is not None and whisper.backend == "whisper-cpp"
    assert whisper.variants[0].file_name == "ggml-small.bin"
    phi = catalog.model("hf.microsoft.Phi-4-reasoning-plus")
    assert phi is not None and phi.license == "MIT"
    # Emoji written as JSON surrogate escapes come through intact.
    reasoning = catalog.model("hf.microsoft.Phi-4-mini-reasoning")
    assert reasoning is not None and "\U0001f4f0" in reasoning.description
    # Its recipes and categories are accepted without a word (the only error is the one above).
    assert raw["recipes"] and raw["categories"]


def test_json_error_lines_survive_tab_indentation(tmp_path: Path) -> None:
    path = tmp_path / "tabs.json"
    path.write_text(
        '{\n\t"version": "1.0",\n\t"models": [\n\t\t{\n\t\t\t"id": "a/b",\n'
        '\t\t\t"name": "x",\n\t\t\t"description": "d",\n'
        '\t\t\t"url": "https://example.org/x.gguf"\n\t\t}\n\t]\n}\n',
        encoding="utf-8",
    )
    loaded = load_catalog(extra_files=[path], include_user_dir=False)
    assert [(e.line, "must not contain '/'" in e.problem) for e in loaded.errors] == [(5, True)]


# --- broken files ---------------------------------------------------------------------------


def test_yaml_syntax_error_reports_file_and_line(user_dir: Path) -> None:
    broken = write(
        user_dir / "broken.yaml",
        """
        version: 1
        models:
          - id: fine
            name: Fine
             url: https://example.org/x.gguf
        """,
    )
    loaded = load_catalog()
    (error,) = loaded.errors
    assert error.path == str(broken)
    assert error.line == line_of(broken, "url:")
    assert str(error).startswith(f"{broken}:{error.line}: not valid YAML")
    assert len(loaded.catalog) >= 25  # the bundled catalog is still there

    # An unterminated quote fails at the end of the file: the message says where it began.
    write(broken, 'version: 1\nmodels:\n  - id: "fine\n    name: x\n')
    (error,) = load_catalog().errors
    assert error.line == 5
    assert "while scanning a quoted scalar at line 3" in error.problem


def test_json_syntax_error_reports_file_and_line(user_dir: Path) -> None:
    broken = user_dir / "broken.json"
    broken.write_text('{\n  "version": "1.0",\n  "models": [\n    {"id": "x",}\n  ]\n}\n')
    loaded = load_catalog()
    (error,) = loaded.errors
    assert (error.path, error.line) == (str(broken), 4)
    assert "not valid JSON" in error.problem


def test_broken_user_file_never_hides_the_bundled_catalog(user_dir: Path) -> None:
    (user_dir / "garbage.yaml").write_bytes(b"\xff\xfe not text at all")
    write(user_dir / "list.yaml", "- just\n- a list\n")
    write(user_dir / "nothing.yml", "")
    (user_dir / "notes.txt").write_text("not a catalog")
    loaded = load_catalog()
    assert len(loaded.catalog) == len(load_catalog(include_user_dir=False).catalog)
    problems = sorted(Path(e.path).name for e in loaded.errors)
    assert problems == ["garbage.yaml", "list.yaml"]


def test_bad_entries_are_skipped_and_good_ones_kept(user_dir: Path) -> None:
    path = write(
        user_dir / "mixed.yaml",
        """
        version: 1
        models:
          - id: good-one
            name: Good
            url: https://example.org/good-Q4_K_M.gguf
          - id: no-name
            url: https://example.org/x.gguf
          - id: bad-capability
            name: Bad capability
            capabilities: [chat, telepathy]
            url: https://example.org/x.gguf
          - id: bad-backend
            name: Bad backend
            backend: tensorflow
            url: https://example.org/x.gguf
          - id: bad-type
            name: Bad type
            parameters: lots
            url: https://example.org/x.gguf
          - id: bad-sha
            name: Bad sha
            url: https://example.org/x.gguf
            sha256: 1234abcd
          - id: good-one
            name: Duplicate of the first
            url: https://example.org/other.gguf
          - id: no-file
            name: Nothing to download
          - id: some-bad-variants
            name: Keeps its good variant
            contex_length: 4096
            variants:
              - url: http://example.org/plain-http.gguf
              - url: https://example.org/ok-Q8_0.gguf
              - id: some-bad-variants:Q8_0
                url: https://example.org/again-Q8_0.gguf
          - just a string
        """,
    )
    loaded = load_catalog()
    catalog = loaded.catalog
    assert catalog.model("good-one") is not None
    assert catalog.model("good-one").name == "Good"  # type: ignore[union-attr]
    for skipped in ("no-name", "bad-capability", "bad-backend", "bad-type", "bad-sha", "no-file"):
        assert catalog.model(skipped) is None
    partial = catalog.model("some-bad-variants")
    assert partial is not None
    assert [v.url for v in partial.variants] == ["https://example.org/ok-Q8_0.gguf"]

    found = sorted((e.line or 0, e.problem) for e in errors_for(loaded.errors, path))
    expected = sorted(
        [
            (line_of(path, "- id: no-name"), "missing required field 'name'"),
            (line_of(path, "[chat, telepathy]"), "unknown capability 'telepathy'"),
            (line_of(path, "backend: tensorflow"), "unknown backend 'tensorflow'"),
            (line_of(path, "parameters: lots"), "'parameters' must be a whole number"),
            (line_of(path, "sha256: 1234abcd"), "'sha256' must be 64 hexadecimal digits"),
            (line_of(path, "name: Duplicate") - 1, "duplicate model id 'good-one'"),
            (line_of(path, "- id: no-file"), "needs 'variants' (or a single 'url')"),
            (line_of(path, "contex_length"), "unknown field 'contex_length' ignored"),
            (line_of(path, "plain-http"), "only https:// and hf:// URLs are allowed"),
            (line_of(path, "- id: some-bad-variants:"), "duplicate variant id"),
            (line_of(path, "- just a string"), "a model must be a mapping"),
        ]
    )
    assert len(found) == len(expected), found
    for (line, problem), (want_line, fragment) in zip(found, expected, strict=True):
        assert fragment in problem and line == want_line, (line, problem, want_line, fragment)


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("id", "../escape", "must not contain '/'"),
        ("id", "..", "must not contain '..'"),
        ("id", "a..b", "must not contain '..'"),
        ("id", ".hidden", "must not start with '.'"),
        ("id", "back\\\\slash", "must not contain '/' or '\\'"),
        ("file_name", "../../etc/passwd", "must not contain '/'"),
        ("file_name", "..\\\\evil.gguf", "must not contain '/' or '\\'"),
        ("file_name", ".bashrc", "must not start with '.'"),
        ("url", "file:///etc/passwd", "only https:// and hf:// URLs are allowed"),
        ("url", "http://example.org/x.gguf", "only https:// and hf:// URLs are allowed"),
        ("url", "huggingface:/org/repo", "only https:// and hf:// URLs are allowed"),
        ("url", "hf://org/repo", "must look like hf://org/repo/file"),
        ("url", "https://example.org/..", "must not contain '..'"),
    ],
)
def test_unsafe_ids_file_names_and_urls_are_refused(
    tmp_path: Path, field: str, value: str, problem: str
) -> None:
    entry = {"id": "model", "name": "Model", "url": "https://example.org/m.gguf"}
    entry[field] = value
    lines = [f'    {key}: "{val}"' for key, val in entry.items()]
    path = tmp_path / "unsafe.yaml"
    path.write_text("version: 1\nmodels:\n  - " + "\n".join(lines)[4:] + "\n", encoding="utf-8")
    loaded = load_catalog(extra_files=[path], include_user_dir=False, include_bundled=False)
    assert len(loaded.catalog) == 0
    (error,) = loaded.errors
    assert problem in error.problem
    assert error.line == line_of(path, f"{field}:")


def test_unsafe_ids_from_ai_lab_json_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.json"
    models = [
        {"id": "../../x", "name": "n", "description": "d", "url": "https://e.org/a.gguf"},
        {"id": "ok", "name": "n", "description": "d", "url": "https://e.org/%2E%2E"},
        {"id": "fine", "name": "n", "description": "d", "url": "https://e.org/f-Q4_0.gguf"},
    ]
    path.write_text(json.dumps({"version": "1.0", "models": models}, indent=2))
    loaded = load_catalog(extra_files=[path], include_user_dir=False, include_bundled=False)
    assert list(loaded.catalog.models) == ["fine"]
    assert loaded.catalog.models["fine"].backend == "none"
    assert len(loaded.errors) == 2


def test_unknown_version_skips_the_file_with_an_error(user_dir: Path) -> None:
    data = json.loads(AI_LAB_JSON.read_text(encoding="utf-8"))
    data["version"] = "2.0"
    path = user_dir / "future.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    loaded = load_catalog()
    (error,) = loaded.errors
    assert error.line == line_of(path, '"version"')
    assert "unsupported catalog version '2.0'" in error.problem
    assert "file skipped" in error.problem
    assert len(loaded.catalog) == len(load_catalog(include_user_dir=False).catalog)

    write(user_dir / "future.json", '{"models": []}')
    (error,) = load_catalog().errors
    assert "missing 'version'" in error.problem


def test_alias_bombs_and_cycles_fail_cleanly(tmp_path: Path) -> None:
    bomb = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        bomb.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    bomb_file = tmp_path / "bomb.yaml"
    bomb_file.write_text("\n".join(bomb) + "\nmodels: *a8\n")
    cycle_file = tmp_path / "cycle.yaml"
    cycle_file.write_text("version: 1\nmodels: &m [*m]\n")
    loaded = load_catalog(
        extra_files=[bomb_file, cycle_file], include_user_dir=False, include_bundled=False
    )
    assert len(loaded.errors) == 2
    assert len(loaded.catalog) == 0


def test_helpers() -> None:
    assert guess_quantization("Meta-Llama-3.1-8B-Instruct.Q4_K_M.gguf") == "Q4_K_M"
    assert guess_quantization("smollm2-360m-instruct-q8_0.gguf") == "Q8_0"
    assert guess_quantization("nomic-embed-text-v1.5.f16.gguf") == "F16"
    assert guess_quantization("gpt-oss-20b-mxfp4.gguf") == "MXFP4"
    assert guess_quantization("ggml-small.bin") is None
    assert check_url("https://huggingface.co/a/b/resolve/main/c.gguf") is None
    assert check_url("hf://org/repo/dir/file.gguf") is None
    assert check_url("https:///nohost") is not None
    assert check_url("https://example.org/with space.gguf") is not None


# --- the command line -----------------------------------------------------------------------


def run_podlab(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for name in ("CONFIG", "DATA", "CACHE", "STATE"):
        env[f"XDG_{name}_HOME"] = str(tmp_path / f"cli-{name.lower()}")
    return subprocess.run(
        [sys.executable, "-m", "podlab", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_cli_list_json_has_the_documented_keys(tmp_path: Path) -> None:
    result = run_podlab(tmp_path, "catalog", "list", "--json")
    assert result.returncode == 0, result.stderr
    models = json.loads(result.stdout)
    assert len(models) >= 25
    keys = {
        "id",
        "name",
        "url",
        "license",
        "sha256",
        "size",
        "memory",
        "quantization",
        "backend",
        "publisher",
        "parameters",
        "context_length",
        "capabilities",
        "variants",
    }
    for model in models:
        assert keys <= set(model), keys - set(model)
        assert model["url"] == model["variants"][0]["url"]
        assert model["sha256"] == model["variants"][0]["sha256"]
    smol = next(m for m in models if m["id"] == "smollm2-135m-instruct")
    assert smol["size"] == 98362432 and smol["quantization"] == "Q4_1"


def test_cli_warns_about_broken_files_and_still_lists(tmp_path: Path) -> None:
    user_dir = tmp_path / "cli-config" / "podlab" / "catalogs"
    user_dir.mkdir(parents=True)
    broken = write(user_dir / "broken.yaml", "version: 1\nmodels: [\n")
    extra = write(
        tmp_path / "extra.yaml",
        """
        version: 1
        models:
          - id: extra-model
            name: Extra searchable model
            url: https://example.org/extra-Q4_0.gguf
        """,
    )
    result = run_podlab(
        tmp_path, "catalog", "list", "--catalog", str(extra), "--search", "searchable"
    )
    assert result.returncode == 0
    assert f"podlab: warning: {broken}:" in result.stderr
    assert "extra-model" in result.stdout and "qwen3" not in result.stdout
    assert result.stdout.splitlines()[0].split()[:2] == ["ID", "NAME"]


def test_cli_show_prints_variants_and_rejects_unknown_ids(tmp_path: Path) -> None:
    result = run_podlab(tmp_path, "catalog", "show", "llama-3.2-1b-instruct")
    assert result.returncode == 0, result.stderr
    assert "llama-3.2-1b-instruct:Q8_0" in result.stdout
    assert "Llama 3.2 Community License" in result.stdout

    result = run_podlab(tmp_path, "catalog", "show", "llama-3.2-1b-instruct:Q4_0", "--json")
    shown = json.loads(result.stdout)
    assert shown["selected_variant"] == "llama-3.2-1b-instruct:Q4_0"
    assert len(shown["variants"]) == 3

    result = run_podlab(tmp_path, "catalog", "show", "lama-3.2-1b-instruct")
    assert result.returncode == 1
    assert "no model or variant 'lama-3.2-1b-instruct'" in result.stderr
    assert "hint: did you mean llama-3.2-1b-instruct" in result.stderr
    assert "Traceback" not in result.stderr
